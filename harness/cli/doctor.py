"""``meshproof doctor``: the tools every backend needs, found or not, with how to get each (``--json``)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from harness.cli.output import Output
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
            "all",
            "building the traffic sampler's engine (every backend), istiod and pilot-agent (local)",
            "install Go >= 1.26",
            ["version"],
            pattern=r"go(\d[\w.]*)",
        ),
        _sampler_engine(settings),
    ]
    notes: list[str] = []
    checked: dict[str, bool] = {}
    from harness.backends import doctor as backend_doctor

    for backends in (("local",), ("kind", "existing")):
        try:
            tools.extend(backend_doctor(settings, backends[0]))
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


def _sampler_engine(settings: Settings) -> ToolStatus:
    """The traffic sampler's engine: built by ``meshproof install`` or on first use (optional here:
    with Go present the first traffic builds it)."""
    from harness.doctor import ToolStatus
    from harness.toolchain import sampler_engine

    built = sampler_engine.installed(settings.cache_dir)
    return ToolStatus(
        sampler_engine.BINARY,
        "all",
        "sending the checks' traffic (built from harness/toolchain/go/sampler)",
        built is not None,
        "",
        str(built or ""),
        "meshproof install (or the first traffic builds it, with Go)",
        optional=True,
    )
