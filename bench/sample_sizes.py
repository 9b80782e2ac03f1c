"""Which exact sample sizes a ``meshproof test`` run still computes: entries for harness/traffic/sizes.py.

Usage: .venv/bin/python bench/sample_sizes.py [--out DIR] [-- MESHPROOF_TEST_ARGS...]

Runs ``meshproof test`` with this file loaded as a pytest plugin (``-p sample_sizes``) into the
controller and every pytest-xdist worker: each records the designs whose exact sample size it had
to compute (a miss of :mod:`harness.traffic.sizes`), with the CPU seconds each took, into
``--out``. Then prints them as the table's entries (paste them into ``harness/traffic/sizes.py``;
``tests/unit/traffic/test_sizes.py`` recomputes every entry). Never run from tests.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ENV_OUT = "MESHPROOF_SIZES_DIR"

_seen: list[list[Any]] = []


# --------------------------------------------------------------------------- the pytest plugin


def _record(name: str) -> None:
    from harness.traffic import stats

    compute = getattr(stats, name)

    def recorded(*args: Any) -> int:
        t0 = time.process_time()
        n = compute(*args)
        _seen.append(
            [name, [list(a) if isinstance(a, tuple) else a for a in args], n, time.process_time() - t0]
        )
        return int(n)

    setattr(stats, name, recorded)


def pytest_configure(config: Any) -> None:
    if os.environ.get(ENV_OUT):
        _record("_compute_required_n")
        _record("_compute_proportion_n")


def pytest_unconfigure(config: Any) -> None:
    if not os.environ.get(ENV_OUT):
        return
    workerinput = getattr(config, "workerinput", None)
    name = str(workerinput["workerid"]) if workerinput else "main"
    out = Path(os.environ[ENV_OUT])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"sizes-{name}.json").write_text(json.dumps(_seen))


# --------------------------------------------------------------------------- the bench


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/meshproof-sizes"))
    ap.add_argument("--state", type=Path, default=Path("/tmp/meshproof-sizes/state"))
    ap.add_argument("args", nargs="*", help="more arguments for `meshproof test`")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for old in a.out.glob("sizes-*.json"):
        old.unlink()
    cmd = [sys.executable, "-c", "from harness.cli import main; main()", "test", "--state", str(a.state)]
    cmd += [*a.args, "-p", "sample_sizes"]
    env = {**os.environ, ENV_OUT: str(a.out), "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "bench")])}
    code = subprocess.run(cmd, cwd=REPO, env=env, check=False).returncode
    rows = [row for f in sorted(a.out.glob("sizes-*.json")) for row in json.loads(f.read_text())]
    print(f"{len(rows)} sample sizes computed, {sum(r[3] for r in rows):.2f} CPU-s (exit {code})")
    for name, args, n, _cpu in sorted(rows, key=lambda r: (r[0], str(r[1]))):
        table = "WEIGHTS" if name == "_compute_required_n" else "PROPORTIONS"
        key = (tuple(args[0]), *args[1:]) if table == "WEIGHTS" else tuple(args)
        print(f"{table}: {key!r}: {n},")
    return code


if __name__ == "__main__":
    sys.exit(main())
