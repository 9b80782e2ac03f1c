"""The main job's wall time and where it goes: startup, propagation waits, traffic, teardown.

Usage: .venv/bin/python bench/bench_suites.py [--runs 1] [--ref GIT_REF] [-- PYTEST_ARGS...]

Runs ``meshproof test`` (the suites on the embedded local mesh, exactly what ``./scripts/run``
runs after setup) and splits its wall time using pytest's own per-phase durations and the
suites' evidence report (``suites-report.json``):

``session``
    what pytest spends outside the tests' own phases: start-up, collection, and the session-scoped
    mesh's start and stop where the plugin brings it up around the session.
``startup``
    the first test's setup (session fixtures the plugin did not already start).
``propagation``
    seconds every ``apply`` waited for all proxies to ACK (the ``ACK x s`` of each check's
    notes) plus the config restores in the tests' teardowns.
``traffic``
    the checks' own wall time minus their ACK waits (sampling, convergence, verdicts).
``teardown``
    the last test's teardown (mesh down), and pytest's exit.
``other``
    what is left (test bodies outside checks, fixtures, collection).

With ``--ref``, the same is taken for that git ref in a temporary worktree, run by this
interpreter, alternating with the current tree so the shared machine's load hits both alike.
Prints JSON; copy the numbers into docs/BENCHMARKS.md. Never run from tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import proc

REPO = Path(__file__).resolve().parents[1]
_DURATION = re.compile(r"^\s*([\d.]+)s (setup|call|teardown)\s+(\S+)", re.M)
_SUMMARY = re.compile(r"meshproof test summary .*?([\d.]+) s")
_ACK = re.compile(r"ACK ([\d.]+)s")


@contextmanager
def ref_checkout(ref: str | None) -> Iterator[Path | None]:
    if ref is None:
        yield None
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-ref-"))
    tree = tmp / "tree"
    proc.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), ref])
    modules = REPO / "sample-service" / "node_modules"  # the sample app's npm packages (not in git)
    if modules.is_dir():
        (tree / "sample-service" / "node_modules").symlink_to(modules)
    try:
        yield tree
    finally:
        proc.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
        proc.run(["git", "-C", str(REPO), "worktree", "prune"], check=False)


def one_run(tree: Path, pytest_args: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-suites-") as tmp:
        state = Path(tmp) / "state"
        state.mkdir()
        base = Path(tmp) / "pytest"
        argv = [
            sys.executable,
            "-m",
            "harness.cli",
            "test",
            "--state",
            str(state),
            "--",
            "suites/",
            "--durations=0",
            "--durations-min=0",
            "-p",
            "no:cacheprovider",
            f"--basetemp={base}",
            *pytest_args,
        ]
        t0 = time.monotonic()
        p = proc.run(argv, cwd=tree, env={"PYTHONPATH": str(tree)}, timeout=1800, check=False)
        wall = time.monotonic() - t0
        m = _SUMMARY.search(p.stdout)
        if not m:
            raise SystemExit(f"meshproof test in {tree} exited {p.returncode}:\n{p.stdout[-3000:]}")
        failed = re.findall(r"^(?:FAILED|ERROR)\s+(\S+)", p.stdout, re.M)
        report_path = base / "suites-report.json"
        records = json.loads(report_path.read_text())["checks"] if report_path.is_file() else []
    phases = [(float(s), phase, node) for s, phase, node in _DURATION.findall(p.stdout)]
    tests = list(dict.fromkeys(node for _, _, node in phases))
    by = {(node, phase): s for s, phase, node in phases}
    first_setup = by.get((tests[0], "setup"), 0.0) if tests else 0.0
    last_teardown = by.get((tests[-1], "teardown"), 0.0) if tests else 0.0
    restores = sum(by.get((t, "teardown"), 0.0) for t in tests[:-1])
    acks = sum(float(a) for r in records for a in _ACK.findall(r.get("notes", "")))
    checks = sum(float(r["wall_s"]) for r in records)
    in_tests = sum(s for s, _, _ in phases)
    summary_s = float(m.group(1))
    out: dict[str, Any] = {
        "summary_s": summary_s,
        "process_s": wall,
        "startup_s": first_setup,
        "propagation_s": acks + restores,
        "traffic_s": checks - acks,
        "teardown_s": last_teardown,
        "session_s": summary_s - in_tests,
        "exit": p.returncode,
        "failed": failed,
        "checks": len(records),
        "requests": sum(int(r["requests"]) for r in records),
    }
    out["other_s"] = summary_s - sum(
        out[k] for k in ("startup_s", "propagation_s", "traffic_s", "teardown_s", "session_s")
    )
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--ref", help="also run the suites of this git ref, alternating")
    ap.add_argument("pytest_args", nargs="*")
    a = ap.parse_args()
    current: list[dict[str, Any]] = []
    before: list[dict[str, Any]] = []
    with ref_checkout(a.ref) as ref_tree:
        for i in range(a.runs):
            if ref_tree is not None:
                before.append(one_run(ref_tree, a.pytest_args))
                print(f"run {i + 1} {a.ref}: {json.dumps(before[-1])}", file=sys.stderr)
            current.append(one_run(REPO, a.pytest_args))
            print(f"run {i + 1} current: {json.dumps(current[-1])}", file=sys.stderr)

    def median(rows: list[dict[str, Any]]) -> dict[str, float]:
        numeric = [k for k, v in rows[0].items() if isinstance(v, int | float)]
        return {k: round(statistics.median(float(r[k]) for r in rows), 2) for k in numeric}

    out: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "load_1m": os.getloadavg()[0]},
        "current": {"runs": current, "median": median(current)},
    }
    if before:
        out["ref"] = {"ref": a.ref, "runs": before, "median": median(before)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
