"""Where the main job's CPU goes, per process kind, and the wall-time floor it implies.

Usage: .venv/bin/python bench/bench_cpu.py [--state DIR] [-- MESHPROOF_TEST_ARGS...]

Runs ``meshproof test`` (what ``./scripts/run`` runs after setup) and reads, five times a second,
the CPU time (utime + stime from ``/proc/<pid>/stat``) of every process descended from it, until
it exits. Each process counts once, with its last reading (a process that lives less than 0.2 s
may be missed: nothing here does). Processes are grouped by kind: the mesh's own (Envoy, the
sample service's node, Jaeger, istiod, pilot-agent) and the harness's (pytest and its xdist
workers, Locust, the chart worker, the supervisor).

The mesh's CPU divided by the cores is a floor for the wall time no harness work can go below:
it is the cost of serving the requests the checks need at their stated alpha, power and minimum
detectable deviation (``requests`` counts the checks' own, from ``suites-report.json``; the
under-load checks' Locust requests come on top). CPU seconds move less with the machine's load
than wall time does, but a busy machine still inflates them (cache and frequency): compare runs
taken side by side. Prints JSON. Never run from tests.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
MESH = ("envoy", "node", "jaeger", "istiod", "pilot-agent")


def _kind(comm: str, cmdline: list[str]) -> str:
    if comm == "meshproof-istio":  # our launcher of istiod (the name is cut at 15 characters)
        return "istiod"
    if comm in MESH:
        return comm
    if comm == "meshproof-analy":  # our Go validator (Istio's analyzers): the harness's work
        return "validator"
    if not comm.startswith("python") and comm != "meshproof":
        return comm
    text = " ".join(cmdline)
    for needle, kind in (
        ("locust", "locust"),
        ("harness.load.chart", "chart"),
        ("supervisor", "supervisor"),
        ("execnet", "pytest"),
        ("exec(eval(sys.stdin", "pytest"),  # an xdist worker, started by execnet
        ("xdist", "pytest"),
        ("pytest", "pytest"),
    ):
        if needle in text:
            return kind
    return "cli"


def _snapshot() -> dict[str, tuple[int, str, float, str]]:
    """pid -> (ppid, start time, cpu seconds, comm) of every process now."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        out[pid] = (int(fields[1]), fields[19], (int(fields[11]) + int(fields[12])) / TICK, comm)
    return out


class CpuPoll:
    def __init__(self, root: int) -> None:
        self.root = str(root)
        self.seen: dict[tuple[str, str], tuple[str, float]] = {}
        self.stop = threading.Event()

    def _descends(self, pid: str, procs: dict[str, tuple[int, str, float, str]]) -> bool:
        for _ in range(64):
            if pid == self.root:
                return True
            if pid not in procs or pid in ("0", "1"):
                return False
            pid = str(procs[pid][0])
        return False

    def poll(self) -> None:
        procs = _snapshot()
        for pid, (_ppid, start, cpu, comm) in procs.items():
            if not self._descends(pid, procs):
                continue
            key = (pid, start)
            kind = self.seen[key][0] if key in self.seen else None
            if kind is None:
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
                except OSError:
                    cmdline = []
                kind = _kind(comm, cmdline)
            self.seen[key] = (kind, cpu)

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.poll()

    def by_kind(self) -> dict[str, float]:
        total: collections.Counter[str] = collections.Counter()
        for kind, cpu in self.seen.values():
            total[kind] += cpu
        return {k: round(v, 1) for k, v in total.most_common()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", type=Path, default=Path("/tmp/meshproof-bench-cpu"))
    ap.add_argument("args", nargs="*", help="more arguments for `meshproof test`")
    a = ap.parse_args()
    cmd = [
        sys.executable,
        "-c",
        "from harness.cli import main; main()",
        "test",
        "--state",
        str(a.state),
        *a.args,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    poll = CpuPoll(p.pid)
    thread = threading.Thread(target=poll.run, daemon=True)
    thread.start()
    output, _ = p.communicate()
    wall = time.monotonic() - t0
    poll.stop.set()
    thread.join()
    kinds = poll.by_kind()
    mesh = sum(v for k, v in kinds.items() if k in MESH)
    cores = os.cpu_count() or 1
    requests = None
    report = a.state / "suites-report.json"
    if report.is_file():
        requests = sum(int(c.get("requests") or 0) for c in json.loads(report.read_text())["checks"])
    summary = next((line for line in output.splitlines() if "meshproof test summary" in line), "")
    doc = {
        "exit": p.returncode,
        "wall_s": round(wall, 1),
        "summary": summary.strip(),
        "cores": cores,
        "cpu_s": round(sum(kinds.values()), 1),
        "mesh_cpu_s": round(mesh, 1),
        "harness_cpu_s": round(sum(kinds.values()) - mesh, 1),
        "floor_s": round(mesh / cores, 1),
        "check_requests": requests,
        "by_kind": kinds,
        "loadavg": os.getloadavg(),
    }
    print(json.dumps(doc, indent=1))
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
