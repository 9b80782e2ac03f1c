"""What changed in the Envoy configuration istiod generated for a proxy (pure, no I/O).

A proxy's ``/config_dump`` is normalised before comparison:

- only the dynamic xDS resources istiod generated are kept: active clusters, active listeners,
  route configurations, and the names of the secrets (their bodies hold certificate dates);
  the bootstrap is left out (it holds our own process ports and pilot-agent's version metadata);
- ``version_info`` and ``last_updated`` are removed everywhere;
- resources are keyed by type and name, so the order Envoy lists them in does not matter.
  Order *inside* a resource (routes, HTTP filters) is kept: Envoy evaluates it in order.

:func:`diff` lists, per resource, the leaf paths whose values changed. Lists whose elements all
carry a distinct ``name`` are keyed by it (``http_filters[envoy.filters.http.router]``), so an
insertion does not shift every later index. :func:`classify` splits differences into those a
reviewed allowance covers (a release's known changes, with the reason) and unexpected ones.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DROP_KEYS = frozenset({"version_info", "last_updated"})
MAX_PATHS = 12  # changed paths listed per resource (the count is always complete)


def _strip(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip(v) for k, v in sorted(value.items()) if k not in DROP_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def normalise(config_dump: Mapping[str, Any]) -> dict[str, Any]:
    """``{"cluster/NAME": body, "listener/NAME": body, "route/NAME": body, "secret/NAME": {}}``."""
    out: dict[str, Any] = {}
    for section in config_dump.get("configs", []):
        kind = str(section.get("@type", "")).rsplit(".", 1)[-1]
        if kind == "ClustersConfigDump":
            for c in section.get("dynamic_active_clusters", []):
                body = c.get("cluster", {})
                out[f"cluster/{body.get('name', '?')}"] = _strip(body)
        elif kind == "ListenersConfigDump":
            for item in section.get("dynamic_listeners", []):
                body = (item.get("active_state") or {}).get("listener")
                if body is not None:
                    out[f"listener/{item.get('name', body.get('name', '?'))}"] = _strip(body)
        elif kind == "RoutesConfigDump":
            for r in section.get("dynamic_route_configs", []):
                body = r.get("route_config", {})
                out[f"route/{body.get('name', '?')}"] = _strip(body)
        elif kind == "SecretsConfigDump":
            for sec in section.get("dynamic_active_secrets", []):
                out[f"secret/{sec.get('name', '?')}"] = {}
    return dict(sorted(out.items()))


def _named(items: Sequence[Any]) -> bool:
    names = [i.get("name") for i in items if isinstance(i, Mapping)]
    return (
        len(names) == len(items) > 0
        and all(isinstance(n, str) for n in names)
        and len(set(names)) == len(names)
    )


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf path -> JSON-encoded leaf value."""
    out: dict[str, Any] = {}
    if isinstance(value, Mapping):
        if not value:
            out[prefix or "."] = "{}"
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list):
        if not value:
            out[prefix or "."] = "[]"
        keyed = _named(value)
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{v['name'] if keyed else i}]"))
    else:
        out[prefix or "."] = json.dumps(value, sort_keys=True)
    return out


@dataclass(frozen=True)
class PathChange:
    path: str
    before: str | None  # JSON of the leaf, None when absent
    after: str | None

    def __str__(self) -> str:
        def clip(v: str | None) -> str:
            return "(absent)" if v is None else (v if len(v) <= 60 else v[:57] + "...")

        return f"{self.path}: {clip(self.before)} -> {clip(self.after)}"


@dataclass(frozen=True)
class Difference:
    proxy: str  # ns/pod
    resource: str  # kind/name
    change: str  # added, removed or changed
    paths: tuple[PathChange, ...] = ()  # for "changed": every changed leaf
    allowed_by: str = ""  # the allowance that covers it ("" = unexpected)

    @property
    def summary(self) -> str:
        if self.change != "changed":
            return f"{self.proxy}: {self.resource} {self.change}"
        shown = "; ".join(str(p) for p in self.paths[:3])
        more = f" (+{len(self.paths) - 3} more)" if len(self.paths) > 3 else ""
        return f"{self.proxy}: {self.resource} changed {len(self.paths)} field(s): {shown}{more}"

    def as_json(self) -> dict[str, Any]:
        return {
            "proxy": self.proxy,
            "resource": self.resource,
            "change": self.change,
            "changed_fields": len(self.paths),
            "paths": [{"path": p.path, "before": p.before, "after": p.after} for p in self.paths[:MAX_PATHS]],
            "allowed_by": self.allowed_by,
        }


def diff(proxy: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Difference]:
    """Differences between two :func:`normalise` results of one proxy."""
    out: list[Difference] = []
    for key in sorted(set(before) | set(after)):
        if key not in after:
            out.append(Difference(proxy, key, "removed"))
        elif key not in before:
            out.append(Difference(proxy, key, "added"))
        elif before[key] != after[key]:
            a, b = flatten(before[key]), flatten(after[key])
            paths = tuple(
                PathChange(p, a.get(p), b.get(p)) for p in sorted(set(a) | set(b)) if a.get(p) != b.get(p)
            )
            out.append(Difference(proxy, key, "changed", paths))
    return out


@dataclass(frozen=True)
class Allowance:
    """A reviewed, expected difference between two releases: resource and path globs, and why."""

    resource: str  # fnmatch glob over "kind/name"
    reason: str
    path: str = "*"  # fnmatch glob over changed leaf paths (for "changed")
    change: str = "*"  # added, removed, changed or *

    def covers(self, d: Difference) -> bool:
        if not fnmatch.fnmatchcase(d.resource, self.resource):
            return False
        if self.change not in ("*", d.change):
            return False
        if d.change != "changed":
            return True
        return all(fnmatch.fnmatchcase(p.path, self.path) for p in d.paths)


@dataclass(frozen=True)
class Classified:
    allowed: tuple[Difference, ...] = ()
    unexpected: tuple[Difference, ...] = ()
    proxies: int = 0
    resources: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "proxies_compared": self.proxies,
            "resources_compared": self.resources,
            "unexpected": [d.as_json() for d in self.unexpected],
            "allowed": [d.as_json() for d in self.allowed],
        }


#: Why a sidecar's inbound cluster may name another of its pod's Services after a restart, any release
#: pair (the same release's too): not a change the upgrade made.
INBOUND_SERVICE_CHOICE = (
    "istiod built this inbound cluster from another of the Services that select the pod: it takes the "
    "first of the proxy's service targets for the port, an order Istio's own code calls arbitrary, and "
    "applies that Service's DestinationRule inbound (its connection pool; metadata istio.config). "
    "docs/FIDELITY.md, inbound-from-sidecar"
)
_INBOUND_SERVICES = "metadata.filter_metadata.istio.services["
#: what follows from the Service istiod picked: its DestinationRule's connection pool and name
_FROM_THE_CHOSEN_SERVICE = ("circuit_breakers.*", "metadata.filter_metadata.istio.config")


def inbound_service_choice(d: Difference) -> bool:
    """Whether ``d`` is only istiod naming another of the pod's Services on an inbound cluster: the
    Services under ``metadata.filter_metadata.istio.services`` changed, and every other changed path
    is what the chosen Service's DestinationRule sets there (the circuit breakers, ``istio.config``).
    Any other changed field keeps the difference unexpected."""
    if d.change != "changed" or not d.resource.startswith("cluster/inbound|"):
        return False
    if not any(p.path.startswith(_INBOUND_SERVICES) for p in d.paths):
        return False
    return all(
        p.path.startswith(_INBOUND_SERVICES)
        or any(fnmatch.fnmatchcase(p.path, g) for g in _FROM_THE_CHOSEN_SERVICE)
        for p in d.paths
    )


def classify(
    diffs: Iterable[Difference], allowances: Sequence[Allowance]
) -> tuple[list[Difference], list[Difference]]:
    """(allowed, unexpected). A changed resource is allowed when one allowance covers every path,
    or when each of its paths is covered by some allowance, or when it is only istiod's choice of
    another Service for an inbound cluster (:func:`inbound_service_choice`, whatever the releases)."""
    allowed: list[Difference] = []
    unexpected: list[Difference] = []
    for d in diffs:
        if inbound_service_choice(d):
            allowed.append(Difference(d.proxy, d.resource, d.change, d.paths, INBOUND_SERVICE_CHOICE))
            continue
        hit = next((a for a in allowances if a.covers(d)), None)
        if hit is None and d.change == "changed" and d.paths:
            per_path = [
                next(
                    (a for a in allowances if a.covers(Difference(d.proxy, d.resource, d.change, (p,)))), None
                )
                for p in d.paths
            ]
            if all(per_path):
                reasons = sorted({a.reason for a in per_path if a})
                allowed.append(Difference(d.proxy, d.resource, d.change, d.paths, "; ".join(reasons)))
                continue
        if hit is None:
            unexpected.append(d)
        else:
            allowed.append(Difference(d.proxy, d.resource, d.change, d.paths, hit.reason))
    return allowed, unexpected


def allowances_for(table: Mapping[str, Any], from_label: str, to_label: str) -> tuple[Allowance, ...]:
    """The reviewed allowances for ``FROM->TO`` in a table loaded from YAML (none for same release)."""
    if from_label == to_label:
        return ()
    entries = table.get(f"{from_label}->{to_label}") or []
    return tuple(
        Allowance(
            resource=str(e["resource"]),
            reason=str(e["reason"]),
            path=str(e.get("path", "*")),
            change=str(e.get("change", "*")),
        )
        for e in entries
    )
