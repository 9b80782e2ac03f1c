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

Idle and waits: ``idle_core_s`` is what the run left of its cores (cores x wall minus its CPU;
``machine_idle_core_s`` what the whole machine left, from ``/proc/stat``: on a busy machine others
use the rest). ``waits`` says where the pytest processes were while that happened, from the
spans ``suites-report.json`` carries per test (:mod:`harness.timeline`: every ``wait.until``,
each traffic batch, each mesh start and stop, with wall-clock times) and each test phase's start
and stop. At every CPU reading each worker is in one category (its outermost span then, else
"test code" inside a test phase, else "outside tests": start-up, collection, scheduling); the
cores' idle time of that interval is split evenly over the workers' categories. Per category:
``wall_s`` (worker-seconds spent in it), ``count`` and ``idle_core_s``. ``pytest_processes``: pytest's
CPU split into the process ``meshproof test`` started (the pytest-xdist controller) and its workers.
``pytest_workers_cpu_s``:
each worker's CPU seconds when its last test ended, and the tests that cost the most of it.
``lanes_together``: what the workers ran at once by lane (a test that keeps the cores busy, or one
of a suite that mostly waits: ``suites.conftest.suite_lane``), with the seconds and idle core-seconds
of each combination: what the lane scheduling of :mod:`harness.schedule` overlaps.
``exit`` is ``meshproof test``'s exit status.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import itertools
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
YOUNG_S = 3.0  # seconds after its start a process's kind is read again (see CpuPoll.poll)
TICKS_NAME = "bench-cpu-ticks.json"  # written into the state dir: (time, the run's CPU so far) per reading
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
        ("-m locust ", "locust"),  # not "locust" anywhere: a checkout path may contain it
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


def _machine_idle() -> float:
    """Idle + iowait core-seconds of the whole machine since boot (``/proc/stat``)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return (int(fields[3]) + int(fields[4])) / TICK


class CpuPoll:
    def __init__(self, root: int) -> None:
        self.root = str(root)
        self.seen: dict[tuple[str, str], tuple[str, float]] = {}
        self.stop = threading.Event()
        self.ticks: list[tuple[float, float]] = []  # (time.time(), the run's CPU seconds so far)
        self.parents: dict[tuple[str, str], str] = {}

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
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        for pid, (_ppid, start, cpu, comm) in procs.items():
            if not self._descends(pid, procs):
                continue
            key = (pid, start)
            kind = self.seen[key][0] if key in self.seen else None
            # A child read between its fork and its exec still shows its parent's name and command
            # line: a young process is classified again until it has run for a while.
            if kind is None or uptime - int(start) / TICK < YOUNG_S:
                try:
                    cmdline = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
                except OSError:
                    cmdline = []
                kind = _kind(comm, cmdline)
            self.seen[key] = (kind, cpu)
            self.parents[key] = str(_ppid)
        self.ticks.append((time.time(), sum(cpu for _kind, cpu in self.seen.values())))

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.poll()

    def pytest_split(self) -> dict[str, float]:
        """pytest's CPU: the process ``meshproof test`` started (the pytest-xdist controller, or
        the one pytest of a run without workers) and the rest (its workers)."""
        out = {"controller": 0.0, "workers": 0.0}
        for key, (kind, cpu) in self.seen.items():
            if kind == "pytest":
                out["controller" if self.parents.get(key) == self.root else "workers"] += cpu
        return {k: round(v, 1) for k, v in out.items()}

    def by_kind(self) -> dict[str, float]:
        total: collections.Counter[str] = collections.Counter()
        for kind, cpu in self.seen.values():
            total[kind] += cpu
        return {k: round(v, 1) for k, v in total.most_common()}


# --------------------------------------------------------------------------- where the run waits

#: A wait's category, from its ``what`` (the first pattern that matches).
WAIT_CATEGORIES = (
    (re.compile(r"ACKed by every proxy|in sync with istiod|new ServiceAccount|drained"), "ack/propagation"),
    (re.compile(r"Locust to spawn"), "locust start"),
    (re.compile(r"Locust|locust"), "locust stop/phases"),
    (re.compile(r"load requests in phase|s of load"), "under load: collecting the load's requests"),
    (re.compile(r"5xx from .* counted"), "outlier: one request at a time"),
    (re.compile(r"ejected|ejection|back in |sampled inside"), "outlier: ejection windows"),
    (re.compile(r"traces? of|trace |spans of probe"), "tracing: ingestion"),
    (re.compile(r"split|converge"), "split convergence"),
    (
        re.compile(r"to conform|to abort|to see aborts|to accept|to run outbound|to enforce|without outlier"),
        "config in effect (observed)",
    ),
    (re.compile(r"chart"), "charts"),
)


def category(kind: str, what: str, session_meshes: set[str], test: str) -> str:
    if kind == "mesh":
        verb, _, root = what.partition(" ")
        if root in session_meshes:
            return f"mesh {verb} (session)"
        return f"another mesh {verb} ({test.split('::')[0].rsplit('/', 1)[-1]})"
    if kind == "traffic":
        return "traffic, one request in flight" if what.endswith("concurrency 1") else "traffic"
    for pattern, name in WAIT_CATEGORIES:
        if pattern.search(what):
            return name
    return "other waits"


def _outermost(spans: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """The spans not inside an earlier one (sorted by start, longest first on ties)."""
    out: list[tuple[float, float, str]] = []
    for start, end, name in sorted(spans, key=lambda s: (s[0], -s[1])):
        if out and end <= out[-1][1]:
            continue
        out.append((start, end, name))
    return out


def where_waited(report: dict, ticks: list[tuple[float, float]], cores: int) -> dict:
    """Per category: worker-seconds in it, its spans, and the run's idle core-seconds it explains."""
    tests = report.get("tests") or []
    by_worker: dict[str, list[dict]] = collections.defaultdict(list)
    for t in tests:
        by_worker[str(t.get("worker", ""))].append(t)
    timelines: dict[str, tuple[list[tuple[float, float, str]], list[tuple[float, float]]]] = {}
    for worker, ts in by_worker.items():
        ups = sorted(
            (s for t in ts for s in t.get("spans", []) if s[0] == "mesh" and s[1].startswith("up ")),
            key=lambda s: s[2],
        )
        session = {ups[0][1].partition(" ")[2]} if ups else set()
        spans = [
            (float(s[2]), float(s[3]), category(s[0], s[1], session, t["id"]))
            for t in ts
            for s in t.get("spans", [])
        ]
        phases = sorted((float(p[0]), float(p[1])) for t in ts for p in (t.get("phases") or {}).values())
        timelines[worker] = (_outermost(spans), phases)
    totals: dict[str, dict[str, float]] = collections.defaultdict(
        lambda: {"wall_s": 0.0, "count": 0, "idle_core_s": 0.0}
    )
    for outer, _phases in timelines.values():
        for _start, _end, name in outer:
            totals[name]["count"] += 1
    workers = max(1, len(timelines))
    for (t0, c0), (t1, c1) in itertools.pairwise(ticks):
        idle = max(0.0, cores * (t1 - t0) - (c1 - c0))
        mid = (t0 + t1) / 2
        for outer, phases in timelines.values():
            name = "outside tests (start-up, collection, scheduling, exit)"
            if any(a <= mid <= b for a, b in phases):
                name = "test code (no wait, no traffic)"
            i = bisect.bisect_right(outer, (mid, math.inf, "")) - 1
            if i >= 0 and outer[i][0] <= mid <= outer[i][1]:
                name = outer[i][2]
            totals[name]["idle_core_s"] += idle / workers
            totals[name]["wall_s"] += t1 - t0
    return {
        name: {k: round(v, 1) if isinstance(v, float) else v for k, v in d.items()}
        for name, d in sorted(totals.items(), key=lambda kv: -kv[1]["idle_core_s"])
    }


def lanes_together(report: dict, ticks: list[tuple[float, float]], cores: int) -> dict:
    """What the workers ran at once, by lane (``suites.conftest.suite_lane``: busy or waits; "-"
    outside tests): per combination, the seconds it lasted and the run's idle core-seconds then.
    Shows what the lane scheduling (:mod:`harness.schedule`) overlaps; empty where the suites
    define no lanes."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # suites/ is no installed package
    try:
        from suites.conftest import suite_lane
    except ImportError:
        return {}
    spans: dict[str, list[tuple[float, float, str]]] = collections.defaultdict(list)
    for t in report.get("tests") or []:
        phases = [p for p in (t.get("phases") or {}).values() if len(p) >= 2]
        if phases:
            start, end = min(float(p[0]) for p in phases), max(float(p[1]) for p in phases)
            spans[str(t.get("worker", ""))].append((start, end, suite_lane(str(t["id"]))))
    totals: dict[str, dict[str, float]] = collections.defaultdict(lambda: {"s": 0.0, "idle_core_s": 0.0})
    for (t0, c0), (t1, c1) in itertools.pairwise(ticks):
        mid = (t0 + t1) / 2
        lanes = sorted(next((lane for a, b, lane in ss if a <= mid <= b), "-") for ss in spans.values())
        key = " + ".join(lanes)
        totals[key]["s"] += t1 - t0
        totals[key]["idle_core_s"] += max(0.0, cores * (t1 - t0) - (c1 - c0))
    return {
        k: {m: round(v, 1) for m, v in d.items()}
        for k, d in sorted(totals.items(), key=lambda kv: -kv[1]["s"])
    }


def pytest_cpu(report: dict) -> dict:
    """Each pytest-xdist worker's CPU seconds by test (from the CPU it had used when each test's
    teardown ended; the first test of a worker carries its start-up and collection too)."""
    ends: dict[str, list[tuple[float, float, str]]] = collections.defaultdict(list)
    for t in report.get("tests") or []:
        teardown = (t.get("phases") or {}).get("teardown") or []
        if len(teardown) >= 3:
            ends[str(t.get("worker", ""))].append((float(teardown[1]), float(teardown[2]), str(t["id"])))
    by_test: list[tuple[float, str]] = []
    workers = {}
    for worker, rows in ends.items():
        rows.sort()
        before = 0.0
        for _end, cpu, test in rows:
            by_test.append((cpu - before, test))
            before = cpu
        workers[worker or "main"] = round(before, 1)
    by_test.sort(reverse=True)
    return {
        "by_worker": workers,
        "top_tests": [[test.split("/")[-1], round(cpu, 2)] for cpu, test in by_test[:15]],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", type=Path, default=Path("/tmp/meshproof-bench-cpu"))
    ap.add_argument(
        "--waits-only",
        action="store_true",
        help=f"run nothing: print the waits of the last run in --state again (from its {TICKS_NAME})",
    )
    ap.add_argument("args", nargs="*", help="more arguments for `meshproof test`")
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    if a.waits_only:
        doc = json.loads((a.state / "suites-report.json").read_text())
        ticks = [tuple(t) for t in json.loads((a.state / TICKS_NAME).read_text())]
        print(
            json.dumps(
                {
                    "waits": where_waited(doc, ticks, cores),
                    "lanes_together": lanes_together(doc, ticks, cores),
                    "pytest_workers_cpu_s": pytest_cpu(doc),
                },
                indent=1,
            )
        )
        return 0
    cmd = [
        sys.executable,
        "-c",
        "import sys; from harness.cli import main; sys.exit(main())",
        "test",
        "--state",
        str(a.state),
        *a.args,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0, idle0 = time.monotonic(), _machine_idle()
    p = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    poll = CpuPoll(p.pid)
    thread = threading.Thread(target=poll.run, daemon=True)
    thread.start()
    output, _ = p.communicate()
    wall = time.monotonic() - t0
    machine_idle = _machine_idle() - idle0
    poll.stop.set()
    thread.join()
    kinds = poll.by_kind()
    mesh = sum(v for k, v in kinds.items() if k in MESH)
    requests, waits, workers_cpu, together = None, {}, {}, {}
    if a.state.is_dir():  # the CPU readings, for --waits-only
        (a.state / TICKS_NAME).write_text(json.dumps([[round(t, 3), round(c, 2)] for t, c in poll.ticks]))
    report = a.state / "suites-report.json"
    if report.is_file():
        doc = json.loads(report.read_text())
        requests = sum(int(c.get("requests") or 0) for c in doc["checks"])
        waits = where_waited(doc, poll.ticks, cores)
        together = lanes_together(doc, poll.ticks, cores)
        workers_cpu = pytest_cpu(doc)
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
        "idle_core_s": round(max(0.0, cores * wall - sum(kinds.values())), 1),
        "machine_idle_core_s": round(machine_idle, 1),
        "check_requests": requests,
        "by_kind": kinds,
        "pytest_processes": poll.pytest_split(),
        "waits": waits,
        "lanes_together": together,
        "pytest_workers_cpu_s": workers_cpu,
        "loadavg": os.getloadavg(),
    }
    print(json.dumps(doc, indent=1))
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
