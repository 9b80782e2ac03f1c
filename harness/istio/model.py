# Over 500 lines: one frozen view per Kubernetes/Istio kind the harness reads, kept together.
"""Typed, frozen views of the Kubernetes and Istio objects the rest of meshproof needs.

Views are built from :class:`~harness.istio.loader.Document` objects and never fail: a field
of the wrong type reads as absent (schema validation reports it). Maps in views are plain dicts
typed as ``Mapping``: treat them as read-only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.errors import ConfigProblem
from harness.istio.loader import Document

CLUSTER_DOMAIN = "cluster.local"
DEFAULT_NAMESPACE = "default"

# Kinds whose objects run pods, with the path to their pod template's metadata.labels.
WORKLOAD_KINDS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template", "metadata", "labels"),
    "StatefulSet": ("spec", "template", "metadata", "labels"),
    "DaemonSet": ("spec", "template", "metadata", "labels"),
    "ReplicaSet": ("spec", "template", "metadata", "labels"),
    "Job": ("spec", "template", "metadata", "labels"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "metadata", "labels"),
    "Pod": ("metadata", "labels"),
}

# ---------------------------------------------------------------------------------------------
# Durations


_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # µs (micro sign)
    "\u03bcs": 1e-6,  # μs (Greek mu)
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in an Istio duration such as ``5s``, ``1.5s``, ``100ms`` or ``1h2m``.

    Istio reads durations with Go's ``time.ParseDuration`` (golang/protobuf ``jsonpb``; the
    CRDs' CEL rules use the same syntax): an optional sign, then one or more decimal numbers
    each followed by a unit (``ns``, ``us``/``µs``, ``ms``, ``s``, ``m``, ``h``). A bare ``0``
    is allowed. Raises ``ValueError`` naming the text otherwise.
    """
    if not isinstance(text, str):
        raise ValueError(f"invalid duration {text!r}: not a string")
    sign = 1.0
    body = text  # Go does not trim spaces; neither do we
    if body[:1] in ("-", "+"):
        sign = -1.0 if body[0] == "-" else 1.0
        body = body[1:]
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(body):
        m = _DURATION_PART.match(body, pos)
        if m is None:
            if body[pos:].replace(".", "").isdigit():
                raise ValueError(f"invalid duration {text!r}: missing unit")
            raise ValueError(f"invalid duration {text!r}")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def fqdn(host: str, namespace: str, domain: str = CLUSTER_DOMAIN) -> str:
    """Istio's short-name resolution: ``reviews`` in ``ns`` is ``reviews.ns.svc.<domain>``.

    Names containing a dot, ``*`` and IP addresses are taken as they are (Istio's
    ``ResolveShortnameToFQDN``).
    """
    if host == "*" or "." in host or ":" in host:
        return host
    return f"{host}.{namespace or DEFAULT_NAMESPACE}.svc.{domain}"


def host_matches(pattern: str, host: str) -> bool:
    """Whether ``host`` is ``pattern`` or is covered by a wildcard ``pattern`` (``*.ns.svc...``)."""
    if pattern == host or pattern == "*":
        return True
    if pattern.startswith("*"):
        return host.endswith(pattern[1:])
    return False


def labels_match(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether every ``selector`` label is in ``labels`` (an empty selector matches all)."""
    return all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------------------------------------
# Defensive accessors for raw YAML


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _map(obj: Any) -> dict[str, Any]:
    return obj if isinstance(obj, dict) else {}


def _list(obj: Any) -> list[Any]:
    return obj if isinstance(obj, list) else []


def _str(obj: Any, default: str = "") -> str:
    return obj if isinstance(obj, str) else default


def _int(obj: Any) -> int | None:
    return obj if isinstance(obj, int) and not isinstance(obj, bool) else None


def _labels(obj: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in _map(obj).items() if v is not None}


def _seconds(obj: Any) -> float | None:
    if not isinstance(obj, str):
        return None
    try:
        return parse_duration(obj)
    except ValueError:
        return None


def _ns(doc: Document) -> str:
    return doc.namespace or DEFAULT_NAMESPACE


# ---------------------------------------------------------------------------------------------
# Kubernetes views


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def injection_enabled(self) -> bool:
        return self.labels.get("istio-injection") == "enabled" or "istio.io/rev" in self.labels


@dataclass(frozen=True)
class ServiceAccount:
    name: str
    namespace: str


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    ports: Mapping[str, int]  # port name (or the number as text, if unnamed) -> containerPort
    env: Mapping[str, str]  # literal values only (valueFrom entries are left out)


@dataclass(frozen=True)
class Deployment:
    """A Deployment; ``labels`` are the pod template's, ``ports``/``env`` merge all containers."""

    name: str
    namespace: str
    replicas: int
    labels: Mapping[str, str]
    service_account: str
    ports: Mapping[str, int]
    env: Mapping[str, str]
    image: str
    selector: Mapping[str, str] = field(default_factory=dict)
    containers: tuple[Container, ...] = ()

    @classmethod
    def from_document(cls, doc: Document) -> Deployment:
        spec = doc.spec
        pod = _map(_get(spec, "template", "spec"))
        containers = tuple(_container(c) for c in _list(pod.get("containers")) if isinstance(c, dict))
        ports: dict[str, int] = {}
        env: dict[str, str] = {}
        for c in containers:
            for k, v in c.ports.items():
                ports.setdefault(k, v)
            for k, e in c.env.items():
                env.setdefault(k, e)
        replicas = _int(spec.get("replicas"))
        return cls(
            name=doc.name,
            namespace=_ns(doc),
            replicas=1 if replicas is None else replicas,
            labels=_labels(_get(spec, "template", "metadata", "labels")),
            service_account=_str(pod.get("serviceAccountName"), "default"),
            ports=ports,
            env=env,
            image=containers[0].image if containers else "",
            selector=_labels(_get(spec, "selector", "matchLabels")),
            containers=containers,
        )


def _container(raw: dict[str, Any]) -> Container:
    ports: dict[str, int] = {}
    for p in _list(raw.get("ports")):
        number = _int(_get(p, "containerPort"))
        if number is not None:
            ports[_str(_get(p, "name")) or str(number)] = number
    env: dict[str, str] = {}
    for e in _list(raw.get("env")):
        name = _get(e, "name")
        value = _get(e, "value")
        if isinstance(name, str) and value is not None and _get(e, "valueFrom") is None:
            env[name] = str(value)
    return Container(name=_str(raw.get("name")), image=_str(raw.get("image")), ports=ports, env=env)


@dataclass(frozen=True)
class ServicePort:
    name: str
    port: int
    target_port: int | str  # a number, or the name of a container port
    protocol: str = "TCP"
    app_protocol: str | None = None


@dataclass(frozen=True)
class Service:
    name: str
    namespace: str
    selector: Mapping[str, str]
    ports: tuple[ServicePort, ...]

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.{CLUSTER_DOMAIN}"

    def port(self, name_or_number: str | int) -> ServicePort | None:
        for p in self.ports:
            if name_or_number in (p.name, p.port):
                return p
        return None

    @classmethod
    def from_document(cls, doc: Document) -> Service:
        ports = []
        for p in _list(doc.spec.get("ports")):
            number = _int(_get(p, "port"))
            if number is None:
                continue
            target = _get(p, "targetPort")
            ports.append(
                ServicePort(
                    name=_str(_get(p, "name")),
                    port=number,
                    target_port=target if isinstance(target, (int, str)) and target != "" else number,
                    protocol=_str(_get(p, "protocol"), "TCP"),
                    app_protocol=_get(p, "appProtocol") if isinstance(_get(p, "appProtocol"), str) else None,
                )
            )
        return cls(doc.name, _ns(doc), _labels(doc.spec.get("selector")), tuple(ports))


# ---------------------------------------------------------------------------------------------
# Istio views


@dataclass(frozen=True)
class RouteDestination:
    host: str  # as written
    subset: str | None
    port: int | None
    weight: int | None  # as written (None = omitted)
    fqdn: str = ""  # host resolved against the VirtualService's namespace


@dataclass(frozen=True)
class HttpRoute:
    name: str | None
    match: tuple[Mapping[str, Any], ...]
    destinations: tuple[RouteDestination, ...]
    fault: Mapping[str, Any] | None
    timeout: str | None  # as written, e.g. "2s"
    retries: Mapping[str, Any] | None = None

    @property
    def timeout_s(self) -> float | None:
        return _seconds(self.timeout)

    def weights_by_subset(self) -> dict[str, int]:
        """Weight per subset (destinations without a subset are keyed by their host).

        A single destination without a weight gets 100; otherwise an omitted weight is 0.
        """
        if len(self.destinations) == 1 and self.destinations[0].weight is None:
            d = self.destinations[0]
            return {d.subset or d.host: 100}
        out: dict[str, int] = {}
        for d in self.destinations:
            key = d.subset or d.host
            out[key] = out.get(key, 0) + (d.weight or 0)
        return out


def _destinations(route: Any, namespace: str) -> tuple[RouteDestination, ...]:
    out = []
    for r in _list(route):
        dest = _map(_get(r, "destination"))
        host = _str(dest.get("host"))
        subset = dest.get("subset")
        out.append(
            RouteDestination(
                host=host,
                subset=subset if isinstance(subset, str) and subset else None,
                port=_int(_get(dest, "port", "number")),
                weight=_int(_get(r, "weight")),
                fqdn=fqdn(host, namespace) if host else "",
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class VirtualService:
    name: str
    namespace: str
    hosts: tuple[str, ...]
    gateways: tuple[str, ...]
    http: tuple[HttpRoute, ...]

    @property
    def binds_to_mesh(self) -> bool:
        """True if sidecars use it: no gateways listed, or the reserved ``mesh`` among them."""
        return not self.gateways or "mesh" in self.gateways

    def gateway_refs(self) -> tuple[tuple[str, str], ...]:
        """``(namespace, name)`` of every gateway listed (``mesh`` left out)."""
        return tuple(gateway_ref(g, self.namespace) for g in self.gateways if g != "mesh")

    @classmethod
    def from_document(cls, doc: Document) -> VirtualService:
        ns = _ns(doc)
        spec = doc.spec
        routes = []
        for r in _list(spec.get("http")):
            r = _map(r)
            fault = r.get("fault")
            retries = r.get("retries")
            timeout = r.get("timeout")
            routes.append(
                HttpRoute(
                    name=r.get("name") if isinstance(r.get("name"), str) else None,
                    match=tuple(_map(m) for m in _list(r.get("match"))),
                    destinations=_destinations(r.get("route"), ns),
                    fault=fault if isinstance(fault, dict) else None,
                    timeout=timeout if isinstance(timeout, str) else None,
                    retries=retries if isinstance(retries, dict) else None,
                )
            )
        return cls(
            name=doc.name,
            namespace=ns,
            hosts=tuple(h for h in _list(spec.get("hosts")) if isinstance(h, str)),
            gateways=tuple(g for g in _list(spec.get("gateways")) if isinstance(g, str)),
            http=tuple(routes),
        )


def gateway_ref(name: str, namespace: str) -> tuple[str, str]:
    """``(namespace, name)`` of a gateway reference as written in a VirtualService.

    ``ns/name`` names a Gateway in ``ns``; a plain ``name`` one in the VirtualService's
    namespace; the legacy ``name.ns.svc.cluster.local`` form is understood too.
    """
    if "/" in name:
        ns, _, gw = name.partition("/")
        return ns, gw
    if "." in name:
        parts = name.split(".")
        return parts[1], parts[0]
    return namespace, name


@dataclass(frozen=True)
class Subset:
    name: str
    labels: Mapping[str, str]


@dataclass(frozen=True)
class OutlierDetection:
    """Effective outlier detection, Envoy's defaults filled in where the YAML leaves a field out."""

    consecutive_5xx_errors: int | None = 5  # None/0: disabled
    consecutive_gateway_errors: int | None = None
    interval_s: float = 10.0
    base_ejection_time_s: float = 30.0
    max_ejection_percent: int = 10
    split_external_local_origin_errors: bool = False
    consecutive_local_origin_failures: int | None = None
    min_health_percent: int | None = None

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> OutlierDetection:
        c5 = _int(raw.get("consecutive5xxErrors"))
        interval = _seconds(raw.get("interval"))
        base = _seconds(raw.get("baseEjectionTime"))
        max_pct = _int(raw.get("maxEjectionPercent"))
        return cls(
            consecutive_5xx_errors=5 if "consecutive5xxErrors" not in raw else c5,
            consecutive_gateway_errors=_int(raw.get("consecutiveGatewayErrors")),
            interval_s=10.0 if interval is None else interval,
            base_ejection_time_s=30.0 if base is None else base,
            max_ejection_percent=max_pct if max_pct else 10,
            split_external_local_origin_errors=raw.get("splitExternalLocalOriginErrors") is True,
            consecutive_local_origin_failures=_int(raw.get("consecutiveLocalOriginFailures")),
            min_health_percent=_int(raw.get("minHealthPercent")),
        )


@dataclass(frozen=True)
class ConnectionPool:
    """Connection pool limits as written; None means unset (Istio then sets no limit)."""

    max_connections: int | None = None
    http1_max_pending_requests: int | None = None
    http2_max_requests: int | None = None
    max_requests_per_connection: int | None = None
    max_retries: int | None = None
    connect_timeout_s: float | None = None

    @classmethod
    def from_raw(cls, raw: Mapping[str, Any]) -> ConnectionPool:
        tcp = _map(raw.get("tcp"))
        http = _map(raw.get("http"))
        return cls(
            max_connections=_int(tcp.get("maxConnections")),
            http1_max_pending_requests=_int(http.get("http1MaxPendingRequests")),
            http2_max_requests=_int(http.get("http2MaxRequests")),
            max_requests_per_connection=_int(http.get("maxRequestsPerConnection")),
            max_retries=_int(http.get("maxRetries")),
            connect_timeout_s=_seconds(tcp.get("connectTimeout")),
        )


@dataclass(frozen=True)
class DestinationRule:
    name: str
    namespace: str
    host: str  # as written
    subsets: tuple[Subset, ...]
    outlier_detection: OutlierDetection | None
    connection_pool: ConnectionPool | None
    fqdn: str = ""
    workload_selector: Mapping[str, str] = field(default_factory=dict)

    def subset(self, name: str) -> Subset | None:
        return next((s for s in self.subsets if s.name == name), None)

    def subset_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.subsets)

    @classmethod
    def from_document(cls, doc: Document) -> DestinationRule:
        spec = doc.spec
        ns = _ns(doc)
        host = _str(spec.get("host"))
        policy = _map(spec.get("trafficPolicy"))
        od = policy.get("outlierDetection")
        cp = policy.get("connectionPool")
        return cls(
            name=doc.name,
            namespace=ns,
            host=host,
            subsets=tuple(
                Subset(_str(s.get("name")), _labels(s.get("labels")))
                for s in _list(spec.get("subsets"))
                if isinstance(s, dict)
            ),
            outlier_detection=OutlierDetection.from_raw(od) if isinstance(od, dict) else None,
            connection_pool=ConnectionPool.from_raw(cp) if isinstance(cp, dict) else None,
            fqdn=fqdn(host, ns) if host else "",
            workload_selector=_labels(_get(spec, "workloadSelector", "matchLabels")),
        )


@dataclass(frozen=True)
class AuthorizationPolicy:
    name: str
    namespace: str
    selector: Mapping[str, str]
    action: str  # ALLOW (the default), DENY, AUDIT or CUSTOM
    rules: tuple[Mapping[str, Any], ...]

    @classmethod
    def from_document(cls, doc: Document) -> AuthorizationPolicy:
        spec = doc.spec
        return cls(
            name=doc.name,
            namespace=_ns(doc),
            selector=_labels(_get(spec, "selector", "matchLabels")),
            action=_str(spec.get("action"), "ALLOW"),
            rules=tuple(_map(r) for r in _list(spec.get("rules"))),
        )


@dataclass(frozen=True)
class GatewayServer:
    port: int | None
    port_name: str
    protocol: str
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class Gateway:
    name: str
    namespace: str
    selector: Mapping[str, str]
    servers: tuple[GatewayServer, ...]

    @classmethod
    def from_document(cls, doc: Document) -> Gateway:
        servers = []
        for s in _list(doc.spec.get("servers")):
            port = _map(_get(s, "port"))
            servers.append(
                GatewayServer(
                    port=_int(port.get("number")),
                    port_name=_str(port.get("name")),
                    protocol=_str(port.get("protocol")),
                    hosts=tuple(h for h in _list(_get(s, "hosts")) if isinstance(h, str)),
                )
            )
        return cls(doc.name, _ns(doc), _labels(doc.spec.get("selector")), tuple(servers))


@dataclass(frozen=True)
class PeerAuthentication:
    name: str
    namespace: str
    selector: Mapping[str, str]
    mode: str  # UNSET (inherit), DISABLE, PERMISSIVE or STRICT
    port_level: Mapping[int, str]  # port number -> mode

    @classmethod
    def from_document(cls, doc: Document) -> PeerAuthentication:
        spec = doc.spec
        port_level: dict[int, str] = {}
        for port, value in _map(spec.get("portLevelMtls")).items():
            mode = _get(value, "mode")
            try:
                port_level[int(port)] = mode if isinstance(mode, str) else "UNSET"
            except (TypeError, ValueError):
                continue
        return cls(
            name=doc.name,
            namespace=_ns(doc),
            selector=_labels(_get(spec, "selector", "matchLabels")),
            mode=_str(_get(spec, "mtls", "mode"), "UNSET"),
            port_level=port_level,
        )


@dataclass(frozen=True)
class WorkloadResource:
    """A workload resource of the configuration, anything that runs pods (Deployment, StatefulSet,
    ..., Pod): its kind, name, namespace and pod labels. A running replica is a
    :class:`harness.mesh.Workload`."""

    kind: str
    name: str
    namespace: str
    labels: Mapping[str, str]


# ---------------------------------------------------------------------------------------------
# Gateway API views (gateway.networking.k8s.io)

GATEWAY_API_GROUP = "gateway.networking.k8s.io"


@dataclass(frozen=True)
class ParentRef:
    """An HTTPRoute's parentRef: a Gateway (ingress) or, GAMMA, a Service (the mesh's callers)."""

    group: str  # as written; Gateway API's default is gateway.networking.k8s.io
    kind: str  # as written; default Gateway
    name: str
    namespace: str  # resolved against the route's namespace
    port: int | None
    section_name: str | None

    @property
    def is_service(self) -> bool:
        """A GAMMA parent: the core group's Service."""
        return self.kind == "Service" and self.group in ("", "core")


@dataclass(frozen=True)
class BackendRef:
    """One backendRef of an HTTPRoute rule."""

    name: str
    namespace: str  # resolved against the route's namespace
    port: int | None
    weight: int  # Gateway API's default is 1
    group: str = ""
    kind: str = "Service"

    @property
    def fqdn(self) -> str:
        return fqdn(self.name, self.namespace)

    @property
    def is_service(self) -> bool:
        return self.kind == "Service" and self.group in ("", "core")


@dataclass(frozen=True)
class RouteRule:
    """One rule of an HTTPRoute: its matches (as written), filters (as written) and backendRefs."""

    name: str | None
    matches: tuple[Mapping[str, Any], ...]
    filters: tuple[Mapping[str, Any], ...]
    backend_refs: tuple[BackendRef, ...]


@dataclass(frozen=True)
class HTTPRouteObject:
    """A Gateway API HTTPRoute (the object; :class:`HttpRoute` is one ``http`` entry of a
    VirtualService)."""

    name: str
    namespace: str
    parent_refs: tuple[ParentRef, ...]
    hostnames: tuple[str, ...]
    rules: tuple[RouteRule, ...]

    @property
    def binds_to_mesh(self) -> bool:
        """GAMMA: a parentRef is a Service, so the callers' sidecars apply the route."""
        return any(p.is_service for p in self.parent_refs)

    def gateway_refs(self) -> tuple[tuple[str, str], ...]:
        """``(namespace, name)`` of every Gateway parent."""
        return tuple((p.namespace, p.name) for p in self.parent_refs if p.kind == "Gateway")

    @classmethod
    def from_document(cls, doc: Document) -> HTTPRouteObject:
        ns = _ns(doc)
        spec = doc.spec
        parents = []
        for p in _list(spec.get("parentRefs")):
            p = _map(p)
            parents.append(
                ParentRef(
                    group=_str(p.get("group"), GATEWAY_API_GROUP),
                    kind=_str(p.get("kind"), "Gateway"),
                    name=_str(p.get("name")),
                    namespace=_str(p.get("namespace"), ns),
                    port=_int(p.get("port")),
                    section_name=p.get("sectionName") if isinstance(p.get("sectionName"), str) else None,
                )
            )
        rules = []
        for r in _list(spec.get("rules")):
            r = _map(r)
            refs = []
            for b in _list(r.get("backendRefs")):
                b = _map(b)
                weight = _int(b.get("weight"))
                refs.append(
                    BackendRef(
                        name=_str(b.get("name")),
                        namespace=_str(b.get("namespace"), ns),
                        port=_int(b.get("port")),
                        weight=1 if weight is None else weight,
                        group=_str(b.get("group")),
                        kind=_str(b.get("kind"), "Service"),
                    )
                )
            rules.append(
                RouteRule(
                    name=r.get("name") if isinstance(r.get("name"), str) else None,
                    matches=tuple(_map(m) for m in _list(r.get("matches"))),
                    filters=tuple(_map(f) for f in _list(r.get("filters"))),
                    backend_refs=tuple(refs),
                )
            )
        return cls(
            name=doc.name,
            namespace=ns,
            parent_refs=tuple(parents),
            hostnames=tuple(h for h in _list(spec.get("hostnames")) if isinstance(h, str)),
            rules=tuple(rules),
        )


# ---------------------------------------------------------------------------------------------
# Bundle


@dataclass(frozen=True)
class Bundle:
    """Every document of a validated configuration, with typed accessors.

    ``warnings`` holds findings that do not make the configuration invalid (for example an
    apiVersion older than the CRD's storage version).
    """

    documents: tuple[Document, ...]
    warnings: tuple[ConfigProblem, ...] = ()
    infos: tuple[ConfigProblem, ...] = ()  # Istio's Info-level messages (shown with --json)

    def __iter__(self) -> Iterator[Document]:
        return iter(self.documents)

    def __len__(self) -> int:
        return len(self.documents)

    def of_kind(self, kind: str) -> tuple[Document, ...]:
        return tuple(d for d in self.documents if d.kind == kind)

    def find(self, kind: str, namespace: str | None, name: str) -> Document | None:
        """The document ``kind/namespace/name`` (a missing namespace means ``default``)."""
        for d in self.documents:
            if d.kind == kind and d.name == name and _same_ns(d.namespace, namespace, kind):
                return d
        return None

    def fqdn(self, host: str, namespace: str) -> str:
        return fqdn(host, namespace)

    def merged(self, docs: Iterable[Document]) -> Bundle:
        """This bundle with ``docs`` added; a doc replaces one with the same kind/namespace/name."""
        new = list(docs)
        keys = {_key(d) for d in new}
        kept = [d for d in self.documents if _key(d) not in keys]
        return Bundle(tuple(kept + new), self.warnings)

    def without(self, docs: Iterable[Document]) -> Bundle:
        """This bundle with the objects named by ``docs`` removed (what ``delete -f`` leaves)."""
        keys = {_key(d) for d in docs}
        return Bundle(tuple(d for d in self.documents if _key(d) not in keys), self.warnings)

    # typed views -----------------------------------------------------------------------------

    def namespaces(self) -> tuple[Namespace, ...]:
        return tuple(
            Namespace(d.name, _labels(_get(d.body, "metadata", "labels"))) for d in self.of_kind("Namespace")
        )

    def service_accounts(self) -> tuple[ServiceAccount, ...]:
        return tuple(ServiceAccount(d.name, _ns(d)) for d in self.of_kind("ServiceAccount"))

    def deployments(self) -> tuple[Deployment, ...]:
        return tuple(Deployment.from_document(d) for d in self.of_kind("Deployment"))

    def services(self) -> tuple[Service, ...]:
        return tuple(Service.from_document(d) for d in self.of_kind("Service"))

    def virtual_services(self) -> tuple[VirtualService, ...]:
        return tuple(VirtualService.from_document(d) for d in self.of_kind("VirtualService"))

    def destination_rules(self) -> tuple[DestinationRule, ...]:
        return tuple(DestinationRule.from_document(d) for d in self.of_kind("DestinationRule"))

    def authorization_policies(self) -> tuple[AuthorizationPolicy, ...]:
        return tuple(AuthorizationPolicy.from_document(d) for d in self.of_kind("AuthorizationPolicy"))

    def gateways(self) -> tuple[Gateway, ...]:
        """Istio's Gateways (networking.istio.io), not Gateway API ones of the same kind name."""
        return tuple(
            Gateway.from_document(d) for d in self.of_kind("Gateway") if d.group == "networking.istio.io"
        )

    def http_routes(self) -> tuple[HTTPRouteObject, ...]:
        """Gateway API HTTPRoutes (gateway.networking.k8s.io)."""
        return tuple(
            HTTPRouteObject.from_document(d)
            for d in self.of_kind("HTTPRoute")
            if d.group == GATEWAY_API_GROUP
        )

    def peer_authentications(self) -> tuple[PeerAuthentication, ...]:
        return tuple(PeerAuthentication.from_document(d) for d in self.of_kind("PeerAuthentication"))

    def workload_resources(self) -> tuple[WorkloadResource, ...]:
        """Every object that runs pods (Deployment, StatefulSet, ..., Pod) with its pod labels."""
        out = []
        for d in self.documents:
            path = WORKLOAD_KINDS.get(d.kind)
            if path is not None and d.group in ("", "apps", "batch"):
                out.append(WorkloadResource(d.kind, d.name, _ns(d), _labels(_get(d.body, *path))))
        return tuple(out)

    # lookups ---------------------------------------------------------------------------------

    def destination_rules_for(self, host_fqdn: str) -> tuple[DestinationRule, ...]:
        """DestinationRules whose host is ``host_fqdn`` or a wildcard covering it."""
        return tuple(dr for dr in self.destination_rules() if dr.fqdn and host_matches(dr.fqdn, host_fqdn))

    def service_for(self, host_fqdn: str) -> Service | None:
        return next((s for s in self.services() if s.fqdn == host_fqdn), None)

    def ingress_virtual_service(self) -> VirtualService | None:
        """The first VirtualService (in document order) bound to a Gateway."""
        return next((vs for vs in self.virtual_services() if vs.gateways and vs.gateways != ("mesh",)), None)


def _same_ns(doc_ns: str | None, wanted: str | None, kind: str) -> bool:
    if kind == "Namespace":
        return True
    return (doc_ns or DEFAULT_NAMESPACE) == (wanted or DEFAULT_NAMESPACE)


def _key(doc: Document) -> tuple[str, str, str, str]:
    ns = "" if doc.kind == "Namespace" else (doc.namespace or DEFAULT_NAMESPACE)
    return (doc.group, doc.kind, ns, doc.name)


def document_key(doc: Document) -> tuple[str, str, str, str]:
    """``(group, kind, namespace, name)``: what makes two documents the same object."""
    return _key(doc)
