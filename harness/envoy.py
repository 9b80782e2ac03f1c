"""Reading a proxy's Envoy admin API, whichever backend runs it: ejections, cluster and fault counters,
one proxy's view of its upstream hosts (:class:`EnvoyAdmin`).

Pure parsers take the admin endpoint's text; the readers fetch it with an injected httpx client.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness import wait
from harness.errors import BackendError
from harness.mesh import Workload

if TYPE_CHECKING:  # httpx is loaded by whoever passes a client (keeps `meshproof send` light)
    import httpx


def parse_ejected(clusters_text: str) -> dict[str, list[str]]:
    """From Envoy's ``/clusters`` text: per upstream cluster, hosts flagged by outlier detection."""
    out: dict[str, list[str]] = {}
    for line in clusters_text.splitlines():
        parts = line.split("::")
        if len(parts) >= 4 and parts[2] == "health_flags" and "failed_outlier_check" in parts[3]:
            out.setdefault(parts[0], []).append(parts[1])
    return out


def admin_get(http: httpx.Client, url: str, **params: str) -> str:
    """GET an Envoy admin endpoint's text; an HTTP failure is a BackendError naming the URL."""
    import httpx  # already loaded: the caller made the client

    try:
        r = http.get(url, params=params or None)
        r.raise_for_status()
    except httpx.HTTPError as e:
        raise BackendError(f"cannot read Envoy admin {url}: {e}") from e
    return r.text


def ejected_hosts(http: httpx.Client, admin_url: str) -> dict[str, list[str]]:
    return parse_ejected(admin_get(http, f"{admin_url}/clusters"))


def ejections(http: httpx.Client, workloads: Iterable[Workload]) -> dict[str, dict[str, list[str]]]:
    """Per calling proxy (``ns/pod``), per upstream cluster, the hosts outlier detection ejected."""
    return {w.ref: ejected_hosts(http, w.proxy_admin_url) for w in workloads if w.proxy_admin_url}


def cluster_stats(http: httpx.Client, admin_url: str, cluster_substring: str) -> Mapping[str, float]:
    """Numeric ``/stats`` entries whose name contains ``cluster_substring``."""
    text = admin_get(http, f"{admin_url}/stats", filter=re.escape(cluster_substring))
    out: dict[str, float] = {}
    for line in text.splitlines():
        k, _, v = line.partition(": ")
        try:
            out[k] = float(v)
        except ValueError:
            continue
    return out


@dataclass(frozen=True)
class FaultCounts:
    """A proxy's fault filter counters, summed over its HTTP connection managers that have one.

    ``delays`` is ``http.<prefix>.fault.delays_injected``, ``aborts`` ``...aborts_injected``: Envoy
    counts a request when its fault filter decides to delay or abort it, before the response
    leaves, so a difference taken around a finished sample counts exactly that sample's faults.
    ``requests`` is ``http.<prefix>.downstream_rq_total`` of the same connection managers: every
    request their fault filters drew for (Envoy counts it when the stream starts, before the
    filters run), so under concurrent load ``delays``/``requests`` between two reads is the
    share over exactly the requests Envoy saw in between (all three come from one ``/stats`` read).
    """

    delays: int
    aborts: int
    requests: int = 0

    def __sub__(self, other: FaultCounts) -> FaultCounts:
        return FaultCounts(
            self.delays - other.delays, self.aborts - other.aborts, self.requests - other.requests
        )


FAULT_STATS_FILTER = r"(\.fault\.(delays|aborts)_injected|\.downstream_rq_total)$"


def parse_fault_counts(stats_text: str) -> FaultCounts | None:
    """From Envoy's ``/stats`` text; None when the proxy exposes no fault counter at all.

    Only the per-connection-manager totals count (``http.<prefix>.fault.delays_injected``), not
    the per-downstream-cluster copies (``http.<prefix>.fault.<cluster>.delays_injected``);
    ``downstream_rq_total`` counts only for connection managers that have fault counters (not
    the admin's, nor the health and Prometheus listeners').
    """
    totals = {"delays_injected": 0, "aborts_injected": 0}
    requests: dict[str, int] = {}
    with_fault: set[str] = set()
    for line in stats_text.splitlines():
        name, _, raw = line.partition(": ")
        try:
            value = int(float(raw))
        except ValueError:
            continue
        if not name.startswith("http."):
            continue
        if name.endswith(".downstream_rq_total"):
            requests[name[len("http.") : -len(".downstream_rq_total")]] = value
            continue
        head, sep, tail = name.partition(".fault.")
        if not sep or tail not in totals:
            continue
        totals[tail] += value
        with_fault.add(head[len("http.") :])
    if not with_fault:
        return None
    return FaultCounts(
        totals["delays_injected"],
        totals["aborts_injected"],
        sum(n for prefix, n in requests.items() if prefix in with_fault),
    )


def fault_counts(http: httpx.Client, admin_url: str) -> FaultCounts | None:
    """The proxy's fault filter counters (None: not exposed, see :mod:`harness.proxy_stats`)."""
    return parse_fault_counts(admin_get(http, f"{admin_url}/stats", filter=FAULT_STATS_FILTER))


#: Envoy's gauge of its ADS gRPC stream: 1 while the stream to the management server is up, 0
#: once it closed (Envoy sets it on establishing and on the remote close of the stream). A sidecar's
#: management server is its pilot-agent's xDS proxy, which closes Envoy's stream when its own stream
#: to istiod ends and cannot be re-established, so 0 means "this proxy receives no config".
XDS_CONNECTED = "control_plane.connected_state"


def parse_gauge(stats_text: str, name: str) -> float | None:
    """The value of stat ``name`` in Envoy's ``/stats`` text (None when the proxy does not expose it)."""
    for line in stats_text.splitlines():
        k, sep, v = line.partition(": ")
        if sep and k == name:
            try:
                return float(v)
            except ValueError:
                return None
    return None


def xds_connected(http: httpx.Client, admin_url: str) -> int | None:
    """The proxy's :data:`XDS_CONNECTED` gauge (None: not exposed, see :mod:`harness.proxy_stats`)."""
    value = parse_gauge(
        admin_get(http, f"{admin_url}/stats", filter=f"^{re.escape(XDS_CONNECTED)}$"), XDS_CONNECTED
    )
    return None if value is None else int(value)


def active_cluster(http: httpx.Client, admin_url: str, name: str) -> Mapping[str, object] | None:
    """Cluster ``name`` as the proxy runs it (``/config_dump`` dynamic_active_clusters), or None."""
    text = admin_get(
        http, f"{admin_url}/config_dump", resource="dynamic_active_clusters", name_regex=re.escape(name)
    )
    for entry in json.loads(text).get("configs", []):
        cluster = entry.get("cluster", {})
        if cluster.get("name") == name:
            return cluster  # type: ignore[no-any-return]
    return None


def active_clusters(http: httpx.Client, admin_url: str, name_regex: str) -> list[Mapping[str, object]]:
    """Every cluster the proxy runs whose name matches ``name_regex`` (``/config_dump``)."""
    text = admin_get(
        http, f"{admin_url}/config_dump", resource="dynamic_active_clusters", name_regex=name_regex
    )
    return [entry["cluster"] for entry in json.loads(text).get("configs", []) if "cluster" in entry]


def outbound_clusters_regex(host_fqdn: str) -> str:
    """Istio's outbound clusters of ``host_fqdn``: every port, with or without a subset."""
    return rf"^outbound\|[0-9]+\|[^|]*\|{re.escape(host_fqdn)}$"


# --------------------------------------------------------------------------- one proxy's view
# What the client saw is half the proof; the other half is what the calling proxy believes:
# which hosts outlier detection ejected, which limits a cluster runs with, how often its
# circuit breaker overflowed. Every backend exposes the admin URL of each proxy.


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
    """Envoy admin of one proxy (``Workload.proxy_admin_url``); ``http`` is a plain client (no
    proxies from the environment)."""

    def __init__(self, http: httpx.Client, proxy: Workload) -> None:
        self.http = http
        self.proxy = proxy
        self.url = proxy.proxy_admin_url

    # ---- /clusters --------------------------------------------------------------------------
    def hosts(self, cluster: str) -> dict[str, HostState]:
        """The cluster's endpoints with their outlier flag and request/error counts."""
        flags: dict[str, str] = {}
        totals: dict[str, int] = {}
        errors: dict[str, int] = {}
        for line in admin_get(self.http, f"{self.url}/clusters").splitlines():
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
        return sorted(ejected_hosts(self.http, self.url).get(cluster, []))

    def thresholds(self, cluster: str) -> dict[str, int]:
        """The cluster's default-priority circuit-breaker limits as Envoy runs them."""
        out = {}
        prefix = f"{cluster}::default_priority::"
        for line in admin_get(self.http, f"{self.url}/clusters").splitlines():
            if line.startswith(prefix):
                name, _, value = line[len(prefix) :].partition("::")
                out[name] = int(value)
        return out

    # ---- /config_dump -------------------------------------------------------------------------
    def active_cluster(self, cluster: str) -> Mapping[str, Any] | None:
        """The cluster's config as the proxy runs it (``dynamic_active_clusters``), or None."""
        return active_cluster(self.http, self.url, cluster)

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
        stats = cluster_stats(self.http, self.url, cluster)
        for key, value in stats.items():
            if key.endswith(f".{name}") and cluster in key:
                return value
        return None


def address_owner(address: str, workloads: list[Workload]) -> Workload | None:
    """The workload whose mesh address is the host part of ``ip:port``."""
    host = address.rsplit(":", 1)[0]
    return next((w for w in workloads if w.address == host), None)


# --------------------------------------------------------------------------- identity (mTLS)


@dataclass(frozen=True)
class ProxyCertificate:
    """The workload certificate a proxy presents in mTLS (its SDS secret ``default``, which Envoy
    uses as server certificate on inbound and client certificate on outbound connections)."""

    uri_sans: tuple[str, ...]  # the SPIFFE ID(s)
    sha256: str  # hex digest of the DER: what Envoy puts in x-forwarded-client-cert as Hash=
    serial: str
    issuer: str
    not_after: str

    @property
    def spiffe_id(self) -> str:
        """The one ``spiffe://`` URI SAN ("" when there is none, or several)."""
        ids = [u for u in self.uri_sans if u.startswith("spiffe://")]
        return ids[0] if len(ids) == 1 else ""


WORKLOAD_SECRET = "default"  # the name pilot-agent's SDS serves the workload certificate under


def parse_workload_certificate(secrets_dump: str, name: str = WORKLOAD_SECRET) -> ProxyCertificate | None:
    """From ``/config_dump?resource=dynamic_active_secrets``: the leaf of secret ``name`` (None: absent)."""
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding

    for entry in json.loads(secrets_dump).get("configs", []):
        if entry.get("name") != name:
            continue
        chain = ((entry.get("secret") or {}).get("tls_certificate") or {}).get("certificate_chain") or {}
        raw = chain.get("inline_bytes")
        if raw is None:
            return None
        leaf = x509.load_pem_x509_certificates(base64.b64decode(raw))[0]
        try:
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
        except x509.ExtensionNotFound:
            uris = ()
        digest = hashes.Hash(hashes.SHA256())
        digest.update(leaf.public_bytes(Encoding.DER))
        return ProxyCertificate(
            uri_sans=uris,
            sha256=digest.finalize().hex(),
            serial=format(leaf.serial_number, "x"),
            issuer=leaf.issuer.rfc4514_string(),
            not_after=leaf.not_valid_after_utc.isoformat(),
        )
    return None


def workload_certificate(http: httpx.Client, admin_url: str) -> ProxyCertificate:
    """The certificate the proxy at ``admin_url`` presents now, as its Envoy holds it."""
    text = admin_get(http, f"{admin_url}/config_dump", resource="dynamic_active_secrets")
    cert = parse_workload_certificate(text)
    if cert is None:
        raise BackendError(
            f"the proxy at {admin_url} holds no workload certificate (SDS secret {WORKLOAD_SECRET!r} "
            "missing or not yet warm in /config_dump?resource=dynamic_active_secrets)"
        )
    return cert


def parse_xfcc(value: str) -> list[dict[str, list[str]]]:
    """Envoy's ``x-forwarded-client-cert``: one element per proxy that added one (comma-separated),
    each a map of case-insensitive keys (``by``, ``hash``, ``uri``, ``subject``, ...) to values.

    Values may be double-quoted (with ``\\"`` escapes) when they hold ``,``, ``;`` or ``=``.
    """
    elements: list[dict[str, list[str]]] = []
    pairs: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in value + ",":
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch in ",;" and not quoted:
            pairs.append("".join(current))
            current = []
            if ch == ",":
                element: dict[str, list[str]] = {}
                for pair in pairs:
                    key, sep, val = pair.partition("=")
                    if sep:
                        element.setdefault(key.strip().lower(), []).append(val)
                if element:
                    elements.append(element)
                pairs = []
        else:
            current.append(ch)
    return elements
