"""Where the pytest processes' own CPU goes during ``meshproof test``: a CPU profile per process.

Usage: .venv/bin/python bench/profile_suites.py [--out DIR] [--top 40] [-- MESHPROOF_TEST_ARGS...]

Runs ``meshproof test`` with this file loaded as a pytest plugin (``-p profile_suites``) into the
controller and every pytest-xdist worker: each profiles its main thread with :mod:`cProfile` on
:func:`time.process_time` (CPU seconds, not wall time, so waits cost nothing in the profile) from
``pytest_configure`` to ``pytest_unconfigure`` and writes ``pytest-<worker>.prof`` into ``--out``.
Then prints, per process and summed over them, the functions with the most CPU (inclusive and
own). The profiler slows Python code (about 1.5-2x); compare functions' shares, not the totals.
Never run from tests.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ENV_OUT = "MESHPROOF_PROFILE_DIR"

_profile: cProfile.Profile | None = None


# --------------------------------------------------------------------------- the pytest plugin


def pytest_configure(config: Any) -> None:
    global _profile
    if not os.environ.get(ENV_OUT):
        return
    _profile = cProfile.Profile(time.process_time)
    _profile.enable()


def pytest_unconfigure(config: Any) -> None:
    global _profile
    if _profile is None:
        return
    _profile.disable()
    workerinput = getattr(config, "workerinput", None)
    name = str(workerinput["workerid"]) if workerinput else "main"
    out = Path(os.environ[ENV_OUT])
    out.mkdir(parents=True, exist_ok=True)
    _profile.dump_stats(out / f"pytest-{name}.prof")
    _profile = None


# --------------------------------------------------------------------------- the bench


def _print(stats: pstats.Stats, title: str, top: int) -> None:
    for key in ("cumulative", "tottime"):
        buf = io.StringIO()
        stats.stream = buf  # type: ignore[attr-defined]
        stats.sort_stats(key).print_stats(top)
        print(f"===== {title}: by {key}")
        print("\n".join(line for line in buf.getvalue().splitlines() if line.strip())[-8000:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/meshproof-profile"))
    ap.add_argument("--state", type=Path, default=Path("/tmp/meshproof-profile/state"))
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("args", nargs="*", help="more arguments for `meshproof test`")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for old in a.out.glob("pytest-*.prof"):
        old.unlink()
    cmd = [sys.executable, "-c", "from harness.cli import main; main()", "test", "--state", str(a.state)]
    cmd += [*a.args, "-p", "profile_suites"]
    env = {**os.environ, ENV_OUT: str(a.out), "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "bench")])}
    code = subprocess.run(cmd, cwd=REPO, env=env, check=False).returncode
    files = sorted(a.out.glob("pytest-*.prof"))
    if not files:
        print(f"no profiles written into {a.out} (exit {code})")
        return 1
    for f in files:
        _print(pstats.Stats(str(f)), f.stem, a.top)
    _print(pstats.Stats(*map(str, files)), "all pytest processes", a.top)
    return code


if __name__ == "__main__":
    sys.exit(main())
