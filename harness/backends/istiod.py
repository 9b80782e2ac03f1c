"""Reading istiod's debug and monitoring endpoints, for both backends.

- ``/debug/syncz``: per connected proxy and xDS type, the nonce last sent and last ACKed (what
  ``istioctl proxy-status`` shows): :func:`parse_syncz` -> :class:`ProxySync`.
- ``/metrics``: ``pilot_inbound_updates{type="config"}`` (config events received) and
  ``pilot_debounce_time_count`` (debounced pushes started): :class:`PushCounters`.

Parsers take the decoded body; :func:`read_syncz` and :func:`read_push_counters` fetch it with an
injected httpx client (the local backend reaches istiod directly, the kube one via port-forwards).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.errors import BackendError
from harness.prometheus import metric_sum

if TYPE_CHECKING:  # loaded lazily: attaching to a mesh (`meshproof send`) needs no HTTP client
    import httpx

TYPE_NAMES = {
    "type.googleapis.com/envoy.config.cluster.v3.Cluster": "CDS",
    "type.googleapis.com/envoy.config.listener.v3.Listener": "LDS",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration": "RDS",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment": "EDS",
    "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig": "ECDS",
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret": "SDS",
}
# Older istiod (and the top level of current syncz entries): per-type field prefixes.
_LEGACY = {"cluster": "CDS", "listener": "LDS", "route": "RDS", "endpoint": "EDS", "extensionconfig": "ECDS"}


def short_type(type_url: str) -> str:
    return TYPE_NAMES.get(type_url, type_url.rpartition("/")[2] or type_url)


def push_version(nonce: str) -> str:
    """istiod nonces are ``<push version><uuid>``; the push version is ``<RFC3339 time>/<count>``."""
    return nonce[:-36] if len(nonce) > 36 else nonce


@dataclass(frozen=True)
class TypeSync:
    type: str  # short name, e.g. CDS
    sent: str
    acked: str
    error: str = ""

    @property
    def synced(self) -> bool:
        """Nothing sent (not watched) or the last sent nonce ACKed."""
        return not self.sent or self.sent == self.acked

    @property
    def nacked(self) -> bool:
        return not self.synced and bool(self.error)


@dataclass(frozen=True)
class ProxySync:
    proxy: str  # "<pod>.<namespace>"
    proxy_type: str
    types: tuple[TypeSync, ...]
    istiod: str = ""

    @property
    def pending(self) -> tuple[str, ...]:
        return tuple(t.type for t in self.types if not t.synced)

    @property
    def synced(self) -> bool:
        return not self.pending

    @property
    def status(self) -> str:
        """Like the columns of ``istioctl proxy-status``: SYNCED, or the STALE/NACKED types."""
        if self.synced:
            return "SYNCED"
        return ", ".join(f"{t.type} {'NACKED' if t.nacked else 'STALE'}" for t in self.types if not t.synced)


def parse_syncz(data: Any, istiod: str = "") -> list[ProxySync]:
    """Entries of ``/debug/syncz`` (both the per-type ``resources`` map and the older flat fields)."""
    if not isinstance(data, list):
        raise BackendError(f"istiod {istiod or ''} /debug/syncz did not return a list: {str(data)[:200]}")
    out = []
    for e in data:
        if not isinstance(e, dict) or not e.get("proxy"):
            continue
        types: dict[str, TypeSync] = {}
        for prefix, name in _LEGACY.items():
            sent, acked = str(e.get(f"{prefix}_sent") or ""), str(e.get(f"{prefix}_acked") or "")
            if sent or acked:
                types[name] = TypeSync(name, sent, acked)
        resources = e.get("resources")
        if isinstance(resources, dict):
            for url, r in resources.items():
                if not isinstance(r, dict):
                    continue
                name = short_type(str(url))
                types[name] = TypeSync(
                    name, str(r.get("sent") or ""), str(r.get("acked") or ""), str(r.get("lastError") or "")
                )
        out.append(
            ProxySync(
                str(e["proxy"]),
                str(e.get("proxy_type") or ""),
                tuple(sorted(types.values(), key=lambda t: t.type)),
                istiod,
            )
        )
    return out


@dataclass(frozen=True)
class PushCounters:
    config_updates: float | None  # pilot_inbound_updates{type="config"}
    pushes: float | None  # pilot_debounce_time_count

    @classmethod
    def from_metrics(cls, text: str) -> PushCounters:
        return cls(
            metric_sum(text, "pilot_inbound_updates", {"type": "config"}),
            metric_sum(text, "pilot_debounce_time_count"),
        )


def read_syncz(http: httpx.Client, istiod_url: str) -> list[ProxySync]:
    """``/debug/syncz`` of the istiod at ``istiod_url`` (raises httpx.HTTPError when unreachable)."""
    r = http.get(f"{istiod_url}/debug/syncz")
    r.raise_for_status()
    return parse_syncz(r.json(), istiod_url)


def read_push_counters(http: httpx.Client, monitoring_url: str) -> PushCounters:
    """istiod's push counters from its monitoring port's ``/metrics``."""
    r = http.get(f"{monitoring_url}/metrics")
    r.raise_for_status()
    return PushCounters.from_metrics(r.text)
