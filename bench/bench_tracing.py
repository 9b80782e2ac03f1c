"""Tracing benchmark: Jaeger's build time, resident memory, ingestion delay, the sampling check's N.

Usage: .venv/bin/python bench/bench_tracing.py [--probes 200] [--rebuild]
(the suites' probe helpers: harness.tracing.probes)
Brings up the local mesh from manifests/ in a temp state dir, sends probes through the ingress
one by one at a steady pace and, per probe, measures the seconds from sending it to its
complete trace (3 spans) being visible in Jaeger's query API. Prints JSON; copy the numbers into
docs/BENCHMARKS.md with the machine facts. ``--rebuild`` times ``install(force=True)`` of Jaeger
(warm Go caches: the link and the cached compiles; the cold build is timed by
``meshproof install`` on an empty cache). Never run from tests (no timed assertions there).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from harness.backends.local.backend import LocalBackend
from harness.settings import from_env
from harness.toolchain import jaeger as jaeger_build
from harness.tracing.jaeger import JaegerClient, now_us
from harness.tracing.probes import send_probes, traces_by_probe
from harness.traffic.client import Sampler
from harness.traffic.design import Design
from harness.traffic.stats import latency_quantiles


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def jaeger_pid(query_url: str) -> int:
    """The process whose command line runs our Jaeger binary with this mesh's config."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"/jaeger") and any(b"--config=" in a for a in argv):
            cfg = Path(argv[1].decode().split("=", 1)[1])
            if query_url.rsplit(":", 1)[1] in cfg.read_text():
                return int(d.name)
    raise SystemExit("no Jaeger process found")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--rebuild", action="store_true")
    a = ap.parse_args()
    settings = from_env()
    out: dict[str, object] = {}
    if a.rebuild:
        t0 = time.monotonic()
        jaeger_build.install(settings.cache_dir, force=True)
        out["jaeger_rebuild_warm_s"] = round(time.monotonic() - t0, 1)
    design = Design(settings.alpha, settings.power, settings.min_deviation)
    out["sampling_check_n_at_10pct"] = design.n_proportion(0.10)
    out["completeness_check_n"] = design.n_exact()
    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp:
        backend = LocalBackend(settings.with_overrides(state_dir=Path(tmp)))
        with backend:
            backend.up()
            url = backend.trace_query_url()
            assert url
            pid = jaeger_pid(url)
            out["jaeger_rss_idle_mib"] = round(rss_mib(pid), 1)
            delays: list[float] = []
            with Sampler() as sampler, JaegerClient(url) as jaeger:
                for _ in range(a.probes):
                    (probe,) = send_probes(sampler, backend, n=1)
                    service = "microservice-1.sample"
                    while True:  # benchmark polling (not a test): tight loop until visible
                        found = traces_by_probe(jaeger, service, [probe], slack_s=2)[probe.id]
                        if found and len(found[0].spans) >= 3:
                            delays.append((now_us() - probe.sent_us) / 1e6)
                            break
                        if (now_us() - probe.sent_us) / 1e6 > 60:
                            raise SystemExit(f"probe {probe.id} not visible after 60 s")
                        time.sleep(0.02)
            out["jaeger_rss_after_mib"] = round(rss_mib(pid), 1)
    q = latency_quantiles([d * 1000 for d in delays], (0.5, 0.95))
    out["ingestion_delay_s"] = {
        "p50": round(q["p50"] / 1000, 3),
        "p95": round(q["p95"] / 1000, 3),
        "max": round(max(delays), 3),
        "mean": round(statistics.fmean(delays), 3),
        "probes": len(delays),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
