"""Where every Python process of ``meshproof test`` spends its CPU: py-spy over the whole run.

Usage: .venv/bin/python bench/pyspy_suites.py [--out FILE] [--rate 50] [--top 40] [-- MESHPROOF_TEST_ARGS...]
       .venv/bin/python bench/pyspy_suites.py --read FILE [--kind worker] [--top 40]

Needs ``py-spy`` (``.venv/bin/pip install py-spy``; not a dependency of the project). Records
``meshproof test`` with ``py-spy record --subprocesses --nonblocking --format raw`` (every pytest
worker, supervisor, chart worker and Locust process), then prints per process kind the samples'
seconds and the functions with the most of them (inclusive and own). py-spy samples wall-clock
time of threads it thinks active, and with ``--nonblocking`` it also counts threads blocked in a
system call: samples whose innermost frame waits (select, sleep, a socket read, a lock) are left
out, and a busy machine still stretches the rest (a runnable thread waiting for a core is
sampled). Compare shares, not totals; ``bench/bench_cpu.py`` gives the CPU-seconds. Complements
``bench/profile_suites.py`` (cProfile, pytest processes only). Never run from tests.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROCESS = re.compile(r'process \d+:"[^"]*";?')
#: innermost frames that wait rather than compute
BLOCKING = (
    "select (",
    "Clock.sleep",
    "Popen._wait",
    "Popen.wait",
    "SyncStream.read",
    "Event.wait",
    "Condition.wait",
    "Lock.acquire",
    "Thread.join",
    "sleep (",
    "recv",
    "accept (",
    "communicate",
)
KINDS = (
    ("locust", "locust"),
    ("harness.load.chart", "chart"),
    ("supervisor", "supervisor"),
    ("exec(eval", "pytest worker"),
    ("pytest", "pytest controller"),
)


def _kind(process: str) -> str:
    return next((kind for needle, kind in KINDS if needle in process), "cli")


def aggregate(
    path: Path, rate: int
) -> dict[str, tuple[float, collections.Counter[str], collections.Counter[str]]]:
    """Per process kind: seconds sampled, inclusive and own seconds per function (blocking left out)."""
    totals: collections.Counter[str] = collections.Counter()
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    own: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or any(b in stack.rsplit(";", 1)[-1] for b in BLOCKING):
            continue
        seconds = int(count) / rate
        processes = PROCESS.findall(stack)
        rest = stack[stack.rindex(processes[-1]) + len(processes[-1]) :] if processes else stack
        frames = [re.sub(r":\d+\)", ")", f) for f in rest.split(";") if f]
        kind = _kind(processes[-1] if processes else "")
        totals[kind] += seconds
        for f in set(frames):
            inclusive[kind][f] += seconds
        if frames:
            own[kind][frames[-1]] += seconds
    return {kind: (totals[kind], inclusive[kind], own[kind]) for kind in totals}


def report(path: Path, rate: int, top: int, only: str | None) -> None:
    per = aggregate(path, rate)
    for kind, (total, _inc, _own) in sorted(per.items(), key=lambda kv: -kv[1][0]):
        print(f"{total:8.1f} s  {kind}")
    for kind, (_total, inclusive, own) in per.items():
        if only and kind != only:
            continue
        for title, counter in (("inclusive", inclusive), ("own", own)):
            print(f"===== {kind}: by {title}")
            for name, seconds in counter.most_common(top):
                print(f"{seconds:8.2f}  {name}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/meshproof-pyspy/run.txt"))
    ap.add_argument("--state", type=Path, default=Path("/tmp/meshproof-pyspy/state"))
    ap.add_argument("--read", type=Path, help="print a recorded run again (no run)")
    ap.add_argument("--kind", help="only this process kind's functions (e.g. 'pytest worker')")
    ap.add_argument("--rate", type=int, default=50)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("args", nargs="*", help="more arguments for `meshproof test`")
    a = ap.parse_args()
    if a.read:
        report(a.read, a.rate, a.top, a.kind)
        return 0
    spy = shutil.which(
        "py-spy", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    )
    if spy is None:
        print("py-spy not found: .venv/bin/pip install py-spy")
        return 2
    a.out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        spy,
        "record",
        "--subprocesses",
        "--nonblocking",
        "-r",
        str(a.rate),
        "--format",
        "raw",
        "-o",
        str(a.out),
    ]
    cmd += [
        "--",
        sys.executable,
        "-c",
        "from harness.cli import main; main()",
        "test",
        "--state",
        str(a.state),
        *a.args,
    ]
    code = subprocess.run(cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False).returncode
    if a.out.is_file():
        report(a.out, a.rate, a.top, a.kind)
    return code


if __name__ == "__main__":
    sys.exit(main())
