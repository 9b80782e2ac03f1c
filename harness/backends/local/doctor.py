"""``meshproof doctor`` for the local backend: Go, Node and npm, each pinned Istio release's binaries
(with the last failed build's error) and Jaeger. Built by :mod:`harness.toolchain`; probed here."""

from __future__ import annotations

from dataclasses import replace

from harness.doctor import ToolStatus, probe
from harness.errors import CommandFailed, StateError
from harness.settings import Settings
from harness.toolchain import jaeger
from harness.toolchain.istio_local import SETUP_HINT, install_error, load, release
from harness.versions import ISTIO_RELEASES


def backend_doctor(settings: Settings) -> list[ToolStatus]:
    """Everything the local backend needs, found or not: the tools, the releases, Jaeger."""
    return doctor(settings) + jaeger_doctor(settings)


def doctor(settings: Settings) -> list[ToolStatus]:
    """Go/Node/npm, then the binaries of every pinned release (``name (label)``).

    The default release is required; the others are optional (installed lazily by
    ``meshproof install --istio LABEL`` or an upgrade check). A failed build shows its error.
    """
    out = [
        probe(
            "go",
            "local",
            "building istiod/pilot-agent",
            "install Go >= 1.26",
            ["version"],
            pattern=r"go(\d[\w.]*)",
        ),
        probe("node", "local", "running the sample service", "install Node.js >= 20", ["--version"]),
        probe(
            "npm", "local", "installing the sample service", "install npm (comes with Node.js)", ["--version"]
        ),
    ]
    for label in ISTIO_RELEASES:
        out += _release_doctor(settings.with_overrides(istio_version=label), settings.istio_version)
    return out


def _release_doctor(settings: Settings, default: str) -> list[ToolStatus]:
    rel = release(settings)
    optional = rel.label != default
    needed_for = f"Istio {rel.label} embedded mesh" + (" (optional: upgrades)" if optional else "")
    hint = f"meshproof install --istio {rel.label}" if optional else SETUP_HINT
    names = ("meshproof-istiod", "pilot-agent", "envoy")
    try:
        inst = load(settings)
    except StateError:
        error = install_error(settings)
        how = f"{hint}; the last build failed: {error}" if error else hint
        return [
            ToolStatus(f"{name} ({rel.label})", "local", needed_for, False, how_to_get=how, optional=optional)
            for name in names
        ]
    out = []
    try:
        for name, path, argv in (
            ("meshproof-istiod", inst.istiod, None),
            ("pilot-agent", inst.pilot_agent, ["version", "-s"]),
            ("envoy", inst.envoy, ["--version"]),
        ):
            st = probe(
                name,
                "local",
                needed_for,
                hint,
                argv,
                path=path,
                pattern=r"/(\d+\.\d+\.\d+)/" if name == "envoy" else r"client version: (\S+)",
            )
            version = inst.label if name == "meshproof-istiod" else st.version
            out.append(replace(st, name=f"{name} ({rel.label})", version=version, optional=optional))
    except CommandFailed:
        pass
    return out


def jaeger_doctor(settings: Settings) -> list[ToolStatus]:
    needed = "tracing in the embedded mesh (Jaeger)"
    try:
        inst = jaeger.load(settings.cache_dir)
    except StateError:
        return [ToolStatus("jaeger", "local", needed, False, how_to_get=jaeger.SETUP_HINT)]
    return [
        probe(
            "jaeger",
            "local",
            needed,
            jaeger.SETUP_HINT,
            ["version"],
            path=inst.binary,
            pattern=r"(v\d+\.\d+\.\d+)",
        )
    ]
