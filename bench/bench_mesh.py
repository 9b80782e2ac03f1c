"""Embedded local mesh benchmark: up-to-ready, apply-to-effect, resident memory, down.

Usage: .venv/bin/python bench/bench_mesh.py [--runs 3]
(the split is awaited with the suites' converge_split, harness.traffic.split)
Needs the pinned binaries installed (./scripts/setup). Prints JSON; copy the numbers into
docs/BENCHMARKS.md with the machine facts. Never run from tests (no timed assertions there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from harness.backends.local.backend import LocalBackend, group_members
from harness.istio import Bundle, load_paths
from harness.settings import from_env
from harness.traffic.client import Sampler
from harness.traffic.split import attribution, converge_split, expected_split, route_for


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def ingress_vs() -> dict:
    for f in sorted(Path("manifests").rglob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if isinstance(d, dict) and d.get("kind") == "VirtualService" and d["spec"].get("gateways"):
                return d
    raise SystemExit("no ingress VirtualService in manifests/")


def reweighted(vs: dict, v1: int, v2: int, path: Path) -> Path:
    route = vs["spec"]["http"][0]["route"]
    for r in route:
        r["weight"] = v1 if r["destination"].get("subset") == "v1" else v2
    path.write_text(yaml.safe_dump(vs))
    return path


def one_run(tmp: Path) -> dict[str, float]:
    state = Path(tempfile.mkdtemp(prefix="bench-mesh-", dir=tmp))
    settings = from_env().with_overrides(state_dir=state)
    t0 = time.monotonic()
    backend = LocalBackend(settings).up(detach=True)
    up_s = time.monotonic() - t0
    pgid = json.loads((state / "backend.json").read_text())["pgid"]
    rss = rss_kib(group_members(pgid))
    vs = ingress_vs()
    try:
        with Sampler(max_connections=16) as sampler:
            vs_file = reweighted(vs, 50, 50, tmp / "vs-50-50.yaml")
            bundle = Bundle(load_paths([Path("manifests")])).merged(load_paths([vs_file]))
            route = route_for(bundle.ingress_virtual_service())  # type: ignore[arg-type]
            who = attribution(bundle, route, backend.workloads())
            t1 = time.monotonic()
            ack_s = backend.apply([vs_file])
            conv = converge_split(
                sampler,
                backend,
                who,
                expected_split(route),
                batch=200,
                consecutive=3,
                timeout=60,
                concurrency=8,
            )
            effect_s = time.monotonic() - t1
            backend.apply([reweighted(vs, 90, 10, tmp / "vs-90-10.yaml")])
    finally:
        t2 = time.monotonic()
        backend.down()
        down_s = time.monotonic() - t2
    return {
        "up_s": up_s,
        "apply_ack_s": ack_s,
        "apply_to_effect_s": effect_s,
        "converge_batches": conv.batches,
        "rss_mib": rss / 1024,
        "down_s": down_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        runs = [one_run(Path(tmp)) for _ in range(a.runs)]
    keys = runs[0].keys()
    out = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
        },
        "runs": runs,
        "median": {k: round(statistics.median(r[k] for r in runs), 3) for k in keys},
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
