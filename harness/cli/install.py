"""``meshproof install``: the local backend's pinned Istio and Jaeger, and the traffic sampler's engine,
built into the cache (a no-op when current)."""

from __future__ import annotations

import argparse
from dataclasses import asdict, is_dataclass

from rich.text import Text

from harness.cli.output import Output, row, table
from harness.settings import Settings


def cmd_install(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from harness.toolchain import istio_local, sampler_engine
    from harness.toolchain import jaeger as jaeger_build

    with out.err.status("installing the embedded mesh") as status:

        def progress(message: str) -> None:
            status.update(Text(message))
            out.note(f"• {message}")

        # Istio and Jaeger build side by side: their downloads and links overlap the other's compiles.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="install") as pool:
            jaeger_job = pool.submit(jaeger_build.install, settings.cache_dir, progress, force=args.force)
            installed = istio_local.install(settings, progress, force=args.force)
            jaeger = jaeger_job.result()
        sampler = sampler_engine.ensure(settings.cache_dir, progress)  # every backend's traffic
    doc = asdict(installed) if is_dataclass(installed) and not isinstance(installed, type) else {}
    doc["jaeger"] = asdict(jaeger)
    doc["sampler"] = str(sampler)
    if args.json:
        out.json(doc)
        return 0
    out.print(f"Istio {settings.istio_version} for the local backend", style="bold")
    t = table("what", "value")
    for key, value in doc.items():
        if key not in ("sha256", "jaeger", "sampler"):
            row(t, key, value)
    row(t, "jaeger", f"{jaeger.version} {jaeger.binary}")
    row(t, "sampler", str(sampler))
    out.print(t)
    return 0
