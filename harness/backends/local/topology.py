"""From the manifests' Kubernetes objects, derive the embedded mesh: replicas, addresses, ports,
and the Sidecars that bind their listeners (pure, no I/O).

istiod learns the mesh from an in-memory Kubernetes cluster (:mod:`cluster` says what it holds:
Namespaces, ServiceAccounts, Services, a Pod per replica, ...). What Kubernetes cannot give on
loopback is traffic capture: with no iptables (interception mode NONE), a Sidecar per replica
binds its listeners (the one Istio object the local backend adds):
- the inbound listener on the replica address (the pod IP, ``127.B.1.k``) at each target port,
  forwarding to the app on ``target+10000``;
- the outbound listeners on a second address of the replica (``127.B.2.k``) at every service
  port; the app reaches its sidecar there (``MESH_OUTBOUND_HOST``).
The ingress gateway is a router proxy on ``127.B.3.1`` whose Service maps each Gateway server port
to a free local port (Kubernetes' port -> targetPort). Every Istio and Gateway API object of the
user (VirtualService, DestinationRule, HTTPRoute, ...) is passed to istiod unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import ConfigProblem, UnsupportedFeature
from harness.mesh import REPLICA_LABEL

SAMPLE_IMAGE = "meshproof/microservice-1"
# images the local backend provides as native processes instead (tracing: the Jaeger binary)
NATIVE_IMAGES = ("jaegertracing/",)
APP_PORT_OFFSET = 10000
GATEWAY_NAMESPACE = "istio-system"
GATEWAY_LABELS = {"istio": "ingressgateway", "app": "istio-ingressgateway"}
GATEWAY_SA = "istio-ingressgateway-service-account"
GATEWAY_NAME = "istio-ingressgateway"
# Istio kinds; with Gateway API kinds, the configuration the user gives istiod (apply/delete)
ISTIO_GROUPS = ("networking.istio.io/", "security.istio.io/", "telemetry.istio.io/", "extensions.istio.io/")
GATEWAY_API_GROUPS = ("gateway.networking.k8s.io/", "gateway.networking.x-k8s.io/")
GATEWAY_HOST = f"{GATEWAY_NAME}.{GATEWAY_NAMESPACE}.svc.cluster.local"


@dataclass(frozen=True)
class ProxyPorts:
    admin: int
    agent_status: int
    envoy_status: int
    prometheus: int


@dataclass(frozen=True)
class Replica:
    pod: str
    namespace: str
    deployment: str
    labels: Mapping[str, str]
    service_account: str
    index: int  # 1-based, unique in the mesh
    address: str  # workload (inbound) address
    egress_address: str  # where the replica's sidecar listens for outbound calls
    env: Mapping[str, str]  # literal env of the container
    target_ports: tuple[int, ...]  # ports Services target on this replica
    container_ports: Mapping[str, int]
    role: str  # "app" (selected by a Service) or "client"
    ports: ProxyPorts

    @property
    def app_port(self) -> int:
        """Where the app itself listens (behind the inbound sidecar)."""
        base = self.container_ports.get("http") or (self.target_ports[0] if self.target_ports else 3000)
        return base + APP_PORT_OFFSET

    @property
    def admin_port(self) -> int:
        return self.container_ports.get("admin", 3001)


@dataclass(frozen=True)
class Gateway:
    address: str
    port_map: Mapping[int, int]  # Gateway server port -> local port the router listens on
    ports: ProxyPorts
    pod: str = f"{GATEWAY_NAME}-0"
    namespace: str = GATEWAY_NAMESPACE
    service_account: str = GATEWAY_SA
    labels: Mapping[str, str] = field(default_factory=lambda: dict(GATEWAY_LABELS))


@dataclass(frozen=True)
class Native:
    """A Deployment whose image the local backend runs as a native process (Jaeger)."""

    name: str
    namespace: str
    image: str
    labels: Mapping[str, str]
    # for each Service selecting it: port name -> the container port it targets
    service_ports: Mapping[str, int]


@dataclass(frozen=True)
class Topology:
    block: int  # second octet of the 127.B.0.0/16 block this mesh uses
    replicas: tuple[Replica, ...]
    gateway: Gateway | None
    service_ports: tuple[int, ...]  # every port any Service exposes (outbound listeners)
    sidecars: tuple[dict[str, Any], ...]  # a Sidecar per replica binding its listeners
    config: tuple[dict[str, Any], ...]  # the user's Istio and Gateway API objects, unchanged
    native: tuple[Native, ...] = ()  # run as processes (their Pods: see cluster.py)


def _meta(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    m = doc.get("metadata") or {}
    return m if isinstance(m, Mapping) else {}


def _native(doc: Mapping[str, Any]) -> bool:
    containers = ((doc.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    return any(str(c.get("image", "")).startswith(NATIVE_IMAGES) for c in containers)


def is_istio(doc: Mapping[str, Any]) -> bool:
    return str(doc.get("apiVersion", "")).startswith(ISTIO_GROUPS)


def is_gateway_api(doc: Mapping[str, Any]) -> bool:
    return str(doc.get("apiVersion", "")).startswith(GATEWAY_API_GROUPS)


def is_config(doc: Mapping[str, Any]) -> bool:
    """An Istio or Gateway API object: configuration istiod reads (the rest is workloads)."""
    return is_istio(doc) or is_gateway_api(doc)


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def derive(
    docs: Sequence[Mapping[str, Any]],
    *,
    block: int,
    allocate: Any,  # Callable[[], int]: a free local TCP port
    sources: Sequence[str] | None = None,
    doc_index: Sequence[int] | None = None,
) -> Topology:
    """Derive the embedded mesh from the manifests' documents (``sources[i]`` names doc i's file)."""
    services = [d for d in docs if d.get("kind") == "Service" and not is_config(d)]
    deployments = [(i, d) for i, d in enumerate(docs) if d.get("kind") == "Deployment" and not _native(d)]
    config = tuple(dict(d) for d in docs if is_config(d))
    problems: list[ConfigProblem] = []

    service_ports = sorted(
        {int(p["port"]) for s in services for p in (s.get("spec") or {}).get("ports") or []}
    )
    replicas: list[Replica] = []
    k = 0
    for i, dep in deployments:
        meta, spec = _meta(dep), dep.get("spec") or {}
        ns = str(meta.get("namespace") or "default")
        tmpl = spec.get("template") or {}
        labels = {str(a): str(b) for a, b in ((tmpl.get("metadata") or {}).get("labels") or {}).items()}
        pod_spec = tmpl.get("spec") or {}
        containers = pod_spec.get("containers") or []
        if len(containers) != 1 or not str(containers[0].get("image", "")).startswith(SAMPLE_IMAGE):
            src = sources[i] if sources else "manifests"
            image = containers[0].get("image", "?") if containers else "(none)"
            problems.append(
                ConfigProblem(
                    src,
                    doc_index[i] if doc_index else 0,
                    "spec.template.spec.containers[0].image",
                    f"the local backend runs only the sample service ({SAMPLE_IMAGE}), not image {image}",
                    "use --backend kind/existing for other images, or remove this Deployment",
                    "Deployment",
                    str(meta.get("name", "")),
                )
            )
            continue
        c = containers[0]
        env = {str(e["name"]): str(e["value"]) for e in c.get("env") or [] if "value" in e}
        cports = {
            str(p.get("name") or p["containerPort"]): int(p["containerPort"]) for p in c.get("ports") or []
        }
        targets: set[int] = set()
        for s in services:
            if str(_meta(s).get("namespace") or "default") != ns:
                continue
            sspec = s.get("spec") or {}
            if not _selects(sspec.get("selector") or {}, labels):
                continue
            for p in sspec.get("ports") or []:
                t = p.get("targetPort", p["port"])
                targets.add(cports[t] if isinstance(t, str) else int(t))
        for r in range(int(spec.get("replicas", 1))):
            k += 1
            if k > 250:
                raise UnsupportedFeature("the local backend runs at most 250 replicas in all")
            pod = f"{meta['name']}-{r}"
            replicas.append(
                Replica(
                    pod=pod,
                    namespace=ns,
                    deployment=str(meta["name"]),
                    labels={**labels, REPLICA_LABEL: pod},
                    service_account=str(pod_spec.get("serviceAccountName") or "default"),
                    index=k,
                    address=f"127.{block}.1.{k}",
                    egress_address=f"127.{block}.2.{k}",
                    env=env,
                    target_ports=tuple(sorted(targets)),
                    container_ports=cports,
                    role="app" if targets else "client",
                    ports=ProxyPorts(allocate(), allocate(), allocate(), allocate()),
                )
            )
    if problems:
        from harness.errors import ConfigError

        raise ConfigError(problems)

    gateway_ports = sorted(
        {
            int(srv["port"]["number"])
            for d in config
            if d.get("kind") == "Gateway" and is_istio(d)
            for srv in (d.get("spec") or {}).get("servers") or []
        }
        | {
            int(listener["port"])
            for d in config
            if d.get("kind") == "Gateway" and is_gateway_api(d) and _on_ingress(d)
            for listener in (d.get("spec") or {}).get("listeners") or []
        }
    )
    gateway = (
        Gateway(
            address=f"127.{block}.3.1",
            port_map={p: allocate() for p in gateway_ports},
            ports=ProxyPorts(allocate(), allocate(), allocate(), allocate()),
        )
        if gateway_ports
        else None
    )
    native = tuple(
        _native_workload(d, services) for d in docs if d.get("kind") == "Deployment" and _native(d)
    )
    return Topology(
        block,
        tuple(replicas),
        gateway,
        tuple(service_ports),
        tuple(sidecars(replicas, service_ports)),
        config,
        native,
    )


def _on_ingress(gateway: Mapping[str, Any]) -> bool:
    """A Gateway API Gateway deployed onto the ingress gateway (``spec.addresses`` names its Service)."""
    return any(
        str(a.get("value")) in (GATEWAY_HOST, f"{GATEWAY_NAME}.{GATEWAY_NAMESPACE}.svc")
        for a in (gateway.get("spec") or {}).get("addresses") or []
        if a.get("type", "IPAddress") == "Hostname"
    )


def _native_workload(dep: Mapping[str, Any], services: Sequence[Mapping[str, Any]]) -> Native:
    meta, spec = _meta(dep), dep.get("spec") or {}
    ns = str(meta.get("namespace") or "default")
    tmpl = spec.get("template") or {}
    labels = {str(a): str(b) for a, b in ((tmpl.get("metadata") or {}).get("labels") or {}).items()}
    container = ((tmpl.get("spec") or {}).get("containers") or [{}])[0]
    cports = {
        str(p.get("name") or p["containerPort"]): int(p["containerPort"])
        for p in container.get("ports") or []
    }
    ports: dict[str, int] = {}
    for s in services:
        sspec = s.get("spec") or {}
        if str(_meta(s).get("namespace") or "default") != ns or not _selects(
            sspec.get("selector") or {}, labels
        ):
            continue
        for p in sspec.get("ports") or []:
            t = p.get("targetPort", p["port"])
            ports[str(p.get("name") or f"port-{p['port']}")] = cports[t] if isinstance(t, str) else int(t)
    return Native(str(meta.get("name", "")), ns, str(container.get("image", "")), labels, ports)


def sidecars(replicas: Sequence[Replica], service_ports: Sequence[int]) -> list[dict[str, Any]]:
    """A Sidecar per replica binding its inbound and outbound listeners (no traffic capture)."""
    return [
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "Sidecar",
            "metadata": {"name": r.pod, "namespace": r.namespace},
            "spec": {
                "workloadSelector": {"labels": {REPLICA_LABEL: r.pod}},
                "ingress": [
                    {
                        "port": {"number": t, "protocol": "HTTP", "name": f"http-{t}"},
                        "bind": r.address,
                        "defaultEndpoint": f"0.0.0.0:{t + APP_PORT_OFFSET}",
                    }
                    for t in r.target_ports
                ],
                "egress": [
                    {
                        "port": {"number": p, "protocol": "HTTP", "name": f"http-{p}"},
                        "bind": r.egress_address,
                        "hosts": ["*/*"],
                    }
                    for p in service_ports
                ],
            },
        }
        for r in replicas
    ]
