"""Read a proxy's Envoy admin (``Workload.proxy_admin_url``): the calling side's own evidence.

What the client saw is half the proof; the other half is what the calling proxy believes:
which hosts outlier detection ejected, which limits a cluster runs with, how often its
circuit breaker overflowed. Every backend exposes the admin URL of each proxy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from harness import envoy, wait
from harness.backends.base import Workload


def outbound_cluster(port: int, subset: str | None, host_fqdn: str) -> str:
    """Istio's name for the outbound cluster of ``host:port`` (and subset)."""
    return f"outbound|{port}|{subset or ''}|{host_fqdn}"


@dataclass(frozen=True)
class HostState:
    address: str  # ip:port as the proxy knows the endpoint
    ejected: bool
    rq_total: int
    rq_error: int = 0  # 5xx answers from this host, as the calling proxy counted them


class EnvoyAdmin:
    """Envoy admin of one proxy; ``http`` is a plain client (no proxies from the environment)."""

    def __init__(self, http: httpx.Client, proxy: Workload) -> None:
        self.http = http
        self.proxy = proxy
        self.url = proxy.proxy_admin_url

    # ---- /clusters --------------------------------------------------------------------------
    def _clusters_text(self) -> str:
        r = self.http.get(f"{self.url}/clusters")
        r.raise_for_status()
        return r.text

    def hosts(self, cluster: str) -> dict[str, HostState]:
        """The cluster's endpoints with their outlier flag and request/error counts."""
        flags: dict[str, str] = {}
        totals: dict[str, int] = {}
        errors: dict[str, int] = {}
        for line in self._clusters_text().splitlines():
            parts = line.split("::")
            if len(parts) < 4 or parts[0] != cluster or ":" not in parts[1]:
                continue
            if parts[2] == "health_flags":
                flags[parts[1]] = parts[3]
            elif parts[2] == "rq_total":
                totals[parts[1]] = int(parts[3])
            elif parts[2] == "rq_error":
                errors[parts[1]] = int(parts[3])
        return {
            a: HostState(a, "failed_outlier_check" in flags.get(a, ""), totals.get(a, 0), errors.get(a, 0))
            for a in sorted(set(flags) | set(totals))
        }

    def ejected(self, cluster: str) -> list[str]:
        return sorted(envoy.ejected_hosts(self.http, self.url).get(cluster, []))

    def thresholds(self, cluster: str) -> dict[str, int]:
        """The cluster's default-priority circuit-breaker limits as Envoy runs them."""
        out = {}
        prefix = f"{cluster}::default_priority::"
        for line in self._clusters_text().splitlines():
            if line.startswith(prefix):
                name, _, value = line[len(prefix) :].partition("::")
                out[name] = int(value)
        return out

    # ---- /config_dump -------------------------------------------------------------------------
    def active_cluster(self, cluster: str) -> Mapping[str, Any] | None:
        """The cluster's config as the proxy runs it (``dynamic_active_clusters``), or None."""
        r = self.http.get(
            f"{self.url}/config_dump",
            params={"resource": "dynamic_active_clusters", "name_regex": re.escape(cluster)},
        )
        r.raise_for_status()
        for entry in r.json().get("configs", []):
            c = entry.get("cluster", {})
            if c.get("name") == cluster:
                return c  # type: ignore[no-any-return]
        return None

    def await_change(
        self, cluster: str, before: Mapping[str, Any] | None, *, changed: bool, what: str
    ) -> Mapping[str, Any]:
        """The cluster as the proxy runs it once it differs from ``before`` (its config before an
        apply; ``changed`` False: the apply changed nothing, so the running one is current).

        An ACKed update may still be warming (Envoy keeps the old cluster active until the new one
        has its endpoints), so the predictions are read only from the changed active cluster.
        """

        def now() -> Mapping[str, Any] | None:
            running = self.active_cluster(cluster)
            return running if running is not None and (not changed or running != before) else None

        return wait.until(now, what=f"{self.proxy.ref} to run {cluster} {what}", timeout=30, interval=0.05)

    # ---- /stats --------------------------------------------------------------------------------
    def counter(self, cluster: str, name: str) -> float | None:
        """A cluster counter, or None when the proxy does not expose it.

        Istio's default ``proxyStatsMatcher`` keeps per-cluster counters of outbound clusters
        out of Envoy's stats; the mesh must include them (``inclusionRegexps``) for this.
        """
        stats = envoy.cluster_stats(self.http, self.url, cluster)
        for key, value in stats.items():
            if key.endswith(f".{name}") and cluster in key:
                return value
        return None


def address_owner(address: str, workloads: list[Workload]) -> Workload | None:
    """The workload whose mesh address is the host part of ``ip:port``."""
    host = address.rsplit(":", 1)[0]
    return next((w for w in workloads if w.address == host), None)
