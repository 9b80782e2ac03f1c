"""The sampler's client CPU per request on asyncio's event loop and on uvloop's, side by side.

Usage: .venv/bin/python bench/bench_sampler_loop.py [--rounds 4] [--n 3000] [--state DIR]
(needs uvloop in the venv: ``.venv/bin/python -m pip install uvloop``; not a meshproof dependency)

Brings up the embedded local mesh (or uses the running one of ``--state``) and, round after round,
sends the same ``n`` requests through the ingress (``/api/greet``) with 16 in flight from a
:class:`~harness.traffic.client.Sampler` on each loop in turn (the order alternates per round),
each sampler warmed first. This process's CPU time (``time.process_time``: the sampler, aiohttp
and the loop; the mesh runs in other processes) over the batch, divided by ``n``, is the client's
CPU per request; the batch's wall time gives the throughput, which on 2 shared cores is bound by
the mesh's CPU. Per-round pairs, summarised by their medians. Prints JSON; never run from tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

from bench_sampler import CONNECTIONS, mesh

from harness.backends import attach
from harness.settings import from_env
from harness.traffic import client

try:
    import uvloop
except ImportError:
    sys.exit("bench_sampler_loop.py needs uvloop: .venv/bin/python -m pip install uvloop")

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def batch(loop: str, n: int, state: Path) -> dict[str, float]:
    backend = attach(from_env().with_overrides(state_dir=state))
    with mock.patch.object(asyncio, "new_event_loop", LOOPS[loop]):  # the Sampler's loop
        sampler = client.Sampler(timeout=10.0, max_connections=64)
    with sampler:
        sampler.sample(backend, n=200, concurrency=CONNECTIONS)  # connections and Envoy warm
        cpu0, t0 = time.process_time(), time.perf_counter()
        r = sampler.sample(backend, n=n, concurrency=CONNECTIONS)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    assert r.status_counts() == {200: n}, r.status_counts()
    return {"cpu_ms_per_request": 1000.0 * cpu / n, "rps": n / wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--n", type=int, default=3000, help="requests per batch")
    ap.add_argument("--state", type=Path, help="use the running mesh of this state dir")
    a = ap.parse_args()
    rounds: list[dict[str, float]] = []
    with mesh(a.state) as state:
        for i in range(a.rounds):
            order = ["asyncio", "uvloop"] if i % 2 == 0 else ["uvloop", "asyncio"]
            row: dict[str, float] = {}
            for loop in order:
                for key, value in batch(loop, a.n, state).items():
                    row[f"{loop}_{key}"] = value
            row["cpu_ratio_uvloop_to_asyncio"] = (
                row["uvloop_cpu_ms_per_request"] / row["asyncio_cpu_ms_per_request"]
            )
            rounds.append({k: round(v, 4) for k, v in row.items()})
            print(f"round {i + 1}: {json.dumps(rounds[-1])}", file=sys.stderr)
    print(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()},
                "n": a.n,
                "connections": CONNECTIONS,
                "rounds": rounds,
                "median": {k: round(statistics.median(r[k] for r in rounds), 4) for k in rounds[0]},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
