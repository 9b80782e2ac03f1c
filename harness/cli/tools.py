"""Verbs about the tools a mesh needs: ``doctor`` (what is present) and ``install`` (the local pins)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, is_dataclass
from typing import TYPE_CHECKING

from rich.text import Text

from harness.cli.output import Output, row, table
from harness.errors import MeshproofError
from harness.settings import BACKENDS, Settings

if TYPE_CHECKING:
    from harness.doctor import ToolStatus


def cmd_doctor(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.doctor import probe

    tools: list[ToolStatus] = [
        probe(
            "python",
            "all",
            "the harness itself (Python >= 3.11)",
            "install Python 3.11+",
            ["--version"],
            path=sys.executable,
        ),
        probe(
            "node",
            "all",
            "the sample service and its tests (npm test)",
            "install Node.js >= 20",
            ["--version"],
        ),
        probe("npm", "all", "installing the sample service (npm ci)", "comes with Node.js", ["--version"]),
        probe(
            "go",
            "local",
            "building istiod and pilot-agent",
            "install Go >= 1.26",
            ["version"],
            pattern=r"go(\d[\w.]*)",
        ),
    ]
    notes: list[str] = []
    checked: dict[str, bool] = {}
    for backends, check in ((("local",), _local_doctor), (("kind", "existing"), _kube_doctor)):
        try:
            tools.extend(check(settings))
        except ImportError as e:
            notes.append(f"checks for backend {'/'.join(backends)} are not available: {e}")
            continue
        except MeshproofError as e:
            notes.append(f"checks for backend {'/'.join(backends)} failed: {e}")
            continue
        checked.update(dict.fromkeys(backends, True))
    # Our own probes come first; a backend's entry for a tool probed for "all" backends is a repeat.
    general = {t.name for t in tools if t.backend == "all"}
    unique: dict[tuple[str, str], ToolStatus] = {}
    for t in tools:
        if t.backend == "all" or t.name not in general:
            unique.setdefault((t.name, t.backend), t)
    tools = list(unique.values())
    ready: dict[str, bool | None] = {
        b: (
            all(t.found for t in tools if t.backend in (b, "all") and not t.optional)
            if checked.get(b)
            else None
        )
        for b in BACKENDS
    }
    if args.json:
        out.json({"tools": [t.as_json() for t in tools], "ready": ready, "notes": notes})
        return 0
    for b in ("all", *BACKENDS):
        group = [t for t in tools if t.backend == b]
        if not group:
            continue
        out.print("every backend" if b == "all" else f"backend {b}", style="bold")
        for t in group:
            if t.found:
                found = " ".join(x for x in (t.name, t.version) if x)
                out.print(f"  ok       {found}  {t.path}  (for {t.needed_for})")
            else:
                style = "yellow" if t.optional else "red"
                tag = "optional" if t.optional else "MISSING "
                out.print(f"  {tag}  {t.name}  (for {t.needed_for}). Fix: {t.how_to_get}", style=style)
    out.print("")
    for b, ok in ready.items():
        state = (
            "unknown (no checks available)"
            if ok is None
            else ("ready" if ok else "missing tools (see above)")
        )
        out.print(f"backend {b}: {state}")
    for n in notes:
        out.warn(n)
    return 0


def cmd_install(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from harness.toolchain import istio_local
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
    doc = asdict(installed) if is_dataclass(installed) and not isinstance(installed, type) else {}
    doc["jaeger"] = asdict(jaeger)
    if args.json:
        out.json(doc)
        return 0
    out.print(f"Istio {settings.istio_version} for the local backend", style="bold")
    t = table("what", "value")
    for key, value in doc.items():
        if key not in ("sha256", "jaeger"):
            row(t, key, value)
    row(t, "jaeger", f"{jaeger.version} {jaeger.binary}")
    out.print(t)
    return 0


def _local_doctor(settings: Settings) -> list[ToolStatus]:
    from harness.backends.local.doctor import backend_doctor

    return backend_doctor(settings)


def _kube_doctor(settings: Settings) -> list[ToolStatus]:
    from harness.backends.kube.doctor import backend_doctor

    return backend_doctor(settings)
