"""Load generators side by side on one mesh path (ingress gateway -> sidecar -> app), in one run:
wrk, Locust FastHttpUser (1 process and --processes 2, through harness.load.LocustRun) and the
harness's own sampler (httpx, threads). Rounds are interleaved so the machine's noise hits all alike;
the ratios are taken within each round.

Usage: .venv/bin/python bench/bench_load.py [--state DIR] [--seconds 15] [--rounds 2] [--connections 32]
Without --state it brings up a local mesh in a temp dir and takes it down. wrk comes from Debian's
package, installed here with apt-get when missing (never a dependency of the harness). Prints JSON;
copy the numbers into docs/BENCHMARKS.md with the machine facts. Never run from tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from harness import proc
from harness.backends import attach
from harness.backends.base import Backend
from harness.load import LoadConfig, LoadTarget, LocustRun
from harness.settings import from_env
from harness.traffic.client import Sampler


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    proc.run([*sudo, "apt-get", "update"], timeout=600)
    proc.run([*sudo, "apt-get", "install", "-y", "wrk"], timeout=600)
    return proc.which("wrk", needed_for="bench_load.py", how_to_get="apt-get install wrk")


@contextlib.contextmanager
def mesh(state: str | None) -> Iterator[Backend]:
    if state:
        yield attach(from_env().with_overrides(state_dir=Path(state)))
        return
    from harness.backends.local.backend import LocalBackend

    tmp = tempfile.mkdtemp(prefix="bench-load-")
    try:
        with LocalBackend(from_env().with_overrides(state_dir=Path(tmp))) as backend:
            backend.up()
            yield backend
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_wrk(wrk: str, url: str, seconds: float, connections: int) -> dict[str, float]:
    out = proc.run(
        [wrk, "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", url], timeout=seconds + 60
    )
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out.stdout)
    return {"rps": rps, "non_2xx": float(non2xx.group(1)) if non2xx else 0.0}


def run_locust(
    target: LoadTarget, seconds: float, users: int, processes: int, workdir: Path
) -> dict[str, float]:
    cfg = LoadConfig(users=users, processes=processes, spawn_timeout=120)
    with LocustRun(cfg, target, workdir=workdir) as run:
        until = run.progress().elapsed_s + seconds
        from harness import wait

        wait.until(lambda: run.progress().elapsed_s >= until, what="the bench window", timeout=seconds + 60)
    report = run.report
    assert report is not None
    steady = report.phase("load")
    return {
        "rps": steady.rps,
        "failures": float(report.failures),
        "cpu_s": report.locust_cpu_s,
        "cpu_share": report.cpu_share,
        "p50_ms": steady.latency.p50_ms,
        "p95_ms": steady.latency.p95_ms,
    }


def run_sampler(backend: Backend, seconds: float, connections: int) -> dict[str, float]:
    with Sampler(max_connections=max(64, connections)) as sampler:
        sent, t0 = 0, time.perf_counter()
        failures = 0
        while time.perf_counter() - t0 < seconds:
            r = sampler.sample(backend, n=20 * connections, concurrency=connections)
            sent += r.total
            failures += sum(1 for x in r.responses if x.status != 200)
        wall = time.perf_counter() - t0
    return {"rps": sent / wall, "failures": float(failures)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", help="state dir of a running mesh (default: bring one up)")
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--connections", type=int, default=32, help="wrk connections = Locust users = sampler threads"
    )
    args = ap.parse_args()
    wrk = ensure_wrk()
    rounds = []
    with mesh(args.state) as backend:
        target = LoadTarget.from_mesh(backend)
        url = target.ingress_url.rstrip("/") + "/api/greet"
        tmp = Path(tempfile.mkdtemp(prefix="bench-load-locust-"))
        for i in range(args.rounds):
            r: dict[str, dict[str, float]] = {}
            r["wrk"] = run_wrk(wrk, url, args.seconds, args.connections)
            r["locust_1"] = run_locust(target, args.seconds, args.connections, 1, tmp / f"r{i}-p1")
            r["locust_2"] = run_locust(target, args.seconds, args.connections, 2, tmp / f"r{i}-p2")
            r["sampler"] = run_sampler(backend, args.seconds, args.connections)
            w = r["wrk"]["rps"]
            r["ratios_to_wrk"] = {k: round(v["rps"] / w, 3) for k, v in r.items() if k != "wrk"}
            rounds.append(r)
            print(json.dumps({"round": i + 1, **r}), flush=True)
        shutil.rmtree(tmp, ignore_errors=True)

    def med(tool: str, key: str = "rps") -> float:
        return round(statistics.median(r[tool][key] for r in rounds), 3)

    summary = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg": os.getloadavg()},
        "seconds": args.seconds,
        "connections": args.connections,
        "rounds": len(rounds),
        "median_rps": {t: med(t) for t in ("wrk", "locust_1", "locust_2", "sampler")},
        "median_ratio_to_wrk": {
            t: round(statistics.median(r["ratios_to_wrk"][t] for r in rounds), 3)
            for t in ("locust_1", "locust_2", "sampler")
        },
        "locust_cpu_share": {t: med(t, "cpu_share") for t in ("locust_1", "locust_2")},
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
