"""meshproof's own check (Istio has none): a Telemetry names only extension providers meshConfig defines.

Istio accepts a Telemetry whose ``providers`` name something meshConfig lacks; istiod then logs
a warning and configures no tracer (or access log) for it, so nothing is traced and nothing
fails. Its analyzer IST0157 only reports an *empty* provider list. Both meshproof backends
define the same providers in meshConfig ``extensionProviders`` (the local backend in its
``mesh.yaml``, kind through the istioctl overlay); :data:`MESH_PROVIDERS` names them.
"""

from __future__ import annotations

from typing import Any

from harness.errors import ConfigProblem
from harness.istio.loader import Document
from harness.istio.model import Bundle

#: meshConfig ``extensionProviders`` every meshproof backend defines (tracing to Jaeger).
MESH_PROVIDERS: tuple[str, ...] = ("jaeger",)
_SECTIONS = ("tracing", "accessLogging", "metrics")


def check_telemetry_providers(doc: Document, bundle: Bundle) -> list[ConfigProblem]:
    """Each ``spec.<tracing|accessLogging|metrics>[i].providers[j].name`` is a defined provider."""
    if doc.group != "telemetry.istio.io" or doc.kind != "Telemetry":
        return []
    problems = []
    known = ", ".join(MESH_PROVIDERS)
    for section in _SECTIONS:
        entries: Any = doc.spec.get(section)
        for i, entry in enumerate(entries if isinstance(entries, list) else []):
            providers = entry.get("providers") if isinstance(entry, dict) else None
            for j, p in enumerate(providers if isinstance(providers, list) else []):
                name = p.get("name") if isinstance(p, dict) else None
                if isinstance(name, str) and name not in MESH_PROVIDERS:
                    problems.append(
                        doc.problem(
                            f"spec.{section}[{i}].providers[{j}].name",
                            f"provider {name!r} is not in meshConfig extensionProviders "
                            f"(defined: {known}); istiod would configure nothing for it",
                            f"name one of: {known}",
                        )
                    )
    return problems
