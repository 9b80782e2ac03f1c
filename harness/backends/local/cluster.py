"""The Kubernetes objects of the local mesh's in-memory cluster (pure, no I/O).

istiod runs against an in-memory Kubernetes cluster (the launcher's, see ``go/istiod/cluster.go``)
and learns the mesh through its own Kubernetes controllers, as on a cluster. This module says what
that cluster holds besides the user's Istio and Gateway API objects: what a cluster would hold
once the manifests were applied, their pods scheduled and Istio installed.

- The manifests' Namespaces, ServiceAccounts and Services, with what the API server adds: the
  ``kubernetes.io/metadata.name`` label of a Namespace; a Service's defaults (type ClusterIP,
  protocol TCP, ``targetPort`` = ``port``, IPv4 single stack) and its ClusterIP, from
  ``127.B.5.0/24`` (allocated in sorted order; no traffic is sent to it: clients reach services
  through their sidecar's outbound listeners).
- What Kubernetes creates by itself: namespaces ``default``, ``kube-system`` and ``istio-system``
  (the Istio install's), a ``default`` ServiceAccount in every namespace, one Node.
- One Pod per replica the mesh runs (:mod:`topology`), as a ReplicaSet of its Deployment makes
  it (owner reference, ``pod-template-hash``; Istio derives the workload name from them), with
  the labels Istio's sidecar injector adds (``security.istio.io/tlsMode``, the canonical
  service name and revision), the pod template's containers (a port's protocol TCP when unset,
  as the API server defaults it) and service account, scheduled on
  the Node, Running and Ready, its IP the replica's loopback address.
- The ingress gateway as the Istio install makes it: ServiceAccount, a Service
  ``istio-ingressgateway`` whose ports are the Gateways' server ports, each targeting the local
  port the router listens on (Kubernetes' port -> targetPort), and its Pod.
- Jaeger's Pod (the process on ``127.B.4.1``, listening on its container ports).

What the cluster does not have: the Deployments and ReplicaSets (the supervisor runs the
processes), the injected ``istio-proxy`` container, readiness that follows the processes (the
pods stay Ready), and the EndpointSlices, which the launcher's EndpointSlice reconciler
(Kubernetes' own) derives from the Services and Pods.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.backends.local import topology as topo

NODE_NAME = "meshproof-local"
#: Namespaces a cluster with Istio installed has before any manifest is applied.
SYSTEM_NAMESPACES = ("default", "kube-system", topo.GATEWAY_NAMESPACE)
#: Kinds without a namespace (the API server stores them cluster-wide).
CLUSTER_SCOPED = frozenset(
    {"Namespace", "Node", "GatewayClass", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
)
#: The Gateway API resources istiod reads (``GROUP/VERSION/RESOURCE``: the launcher's view serves
#: them at the Kubernetes API's paths, with the status Istio wrote).
GATEWAY_API_RESOURCES = tuple(
    f"gateway.networking.k8s.io/v1/{r}" for r in ("gatewayclasses", "gateways", "httproutes", "grpcroutes")
)
TLS_MODE_LABEL = "security.istio.io/tlsMode"
CANONICAL_NAME = "service.istio.io/canonical-name"
CANONICAL_REVISION = "service.istio.io/canonical-revision"
_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the characters Kubernetes' generated names use


def cluster_ip(block: int, k: int) -> str:
    return f"127.{block}.5.{k}"


def template_hash(template: Any) -> str:
    """A stable ``pod-template-hash``-shaped value for a pod template (not Kubernetes' FNV hash:
    only its role, a name suffix tied to the template, matters here)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True, default=str).encode()).digest()
    return "".join(_HASH_ALPHABET[b % len(_HASH_ALPHABET)] for b in digest[:10])


def _meta(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    m = doc.get("metadata") or {}
    return m if isinstance(m, Mapping) else {}


def _ns(doc: Mapping[str, Any]) -> str:
    return str(_meta(doc).get("namespace") or "default")


def namespace(name: str, labels: Mapping[str, str] | None = None, annotations: Any = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {**(labels or {}), "kubernetes.io/metadata.name": name}}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def node() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": NODE_NAME,
            "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux"},
        },
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": NODE_NAME},
            ],
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    }


def service_account(ns: str, name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}}


def service(doc: Mapping[str, Any], ip: str) -> dict[str, Any]:
    """The Service as the API server stores it: its defaults and a ClusterIP."""
    spec = dict(doc.get("spec") or {})
    ports = []
    for p in spec.get("ports") or []:
        port = dict(p)
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port["port"])
        ports.append(port)
    spec["ports"] = ports
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    if spec.get("clusterIP") != "None":
        spec["clusterIP"] = ip
        spec["clusterIPs"] = [ip]
    meta = {**_meta(doc), "namespace": _ns(doc)}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def _running(address: str) -> dict[str, Any]:
    ready = [
        {"type": t, "status": "True"} for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
    ]
    return {
        "phase": "Running",
        "podIP": address,
        "podIPs": [{"ip": address}],
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "conditions": ready,
    }


def pod(
    name: str,
    ns: str,
    *,
    deployment: str,
    template: Mapping[str, Any],
    labels: Mapping[str, str],
    service_account: str,
    address: str,
    containers: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """A Pod of Deployment ``deployment`` as its ReplicaSet makes it, scheduled and Ready."""
    h = template_hash(template)
    replica_set = f"{deployment}-{h}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "generateName": f"{replica_set}-",
            "namespace": ns,
            "labels": {**labels, "pod-template-hash": h},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": replica_set,
                    "uid": f"meshproof-{replica_set}",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "nodeName": NODE_NAME,
            "serviceAccountName": service_account,
            "containers": [_container(c) for c in containers],
        },
        "status": _running(address),
    }


def _container(c: Mapping[str, Any]) -> dict[str, Any]:
    """A container as the API server stores it: each port's protocol defaults to TCP."""
    out = dict(c)
    if c.get("ports"):
        out["ports"] = [{**p, "protocol": p.get("protocol") or "TCP"} for p in c["ports"]]
    return out


def injected_labels(labels: Mapping[str, str], deployment: str) -> dict[str, str]:
    """A pod's labels after Istio's sidecar injector: mTLS mode, canonical service and revision."""
    name = (
        labels.get(CANONICAL_NAME) or labels.get("app.kubernetes.io/name") or labels.get("app") or deployment
    )
    revision = (
        labels.get(CANONICAL_REVISION) or labels.get("app.kubernetes.io/version") or labels.get("version")
    )
    return {**labels, TLS_MODE_LABEL: "istio", CANONICAL_NAME: name, CANONICAL_REVISION: revision or "latest"}


def _template(deployment: Mapping[str, Any]) -> Mapping[str, Any]:
    t = (deployment.get("spec") or {}).get("template") or {}
    return t if isinstance(t, Mapping) else {}


def _containers(template: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for c in (template.get("spec") or {}).get("containers") or []:
        kept = {k: c[k] for k in ("name", "image", "ports") if k in c}
        out.append(kept)
    return out


def gateway_service(gw: topo.Gateway, ip: str) -> dict[str, Any]:
    names = {80: "http2", 443: "https"}
    doc = {
        "metadata": {
            "name": topo.GATEWAY_NAME,
            "namespace": gw.namespace,
            "labels": dict(gw.labels),
        },
        "spec": {
            "selector": {"istio": gw.labels["istio"]},
            "ports": [
                {"name": names.get(p, f"http-{p}"), "port": p, "targetPort": local}
                for p, local in sorted(gw.port_map.items())
            ],
        },
    }
    return service(doc, ip)


def gateway_pod(gw: topo.Gateway) -> dict[str, Any]:
    labels = {
        **gw.labels,
        CANONICAL_NAME: topo.GATEWAY_NAME,
        CANONICAL_REVISION: "latest",
        "sidecar.istio.io/inject": "false",
    }
    container = {
        "name": "istio-proxy",
        "image": "istio/proxyv2",
        "ports": [{"containerPort": local, "protocol": "TCP"} for _, local in sorted(gw.port_map.items())],
    }
    return pod(
        gw.pod,
        gw.namespace,
        deployment=topo.GATEWAY_NAME,
        template={"labels": gw.labels, "ports": sorted(gw.port_map.items())},
        labels=labels,
        service_account=gw.service_account,
        address=gw.address,
        containers=[container],
    )


def objects(
    docs: Sequence[Mapping[str, Any]],
    topology: topo.Topology,
    *,
    jaeger_address: str | None = None,
) -> list[dict[str, Any]]:
    """The cluster's objects for the manifests ``docs`` run as ``topology`` (Jaeger's Pod when
    Jaeger runs, on ``jaeger_address``)."""
    out: list[dict[str, Any]] = []
    kube = [d for d in docs if not topo.is_config(d)]
    declared = {str(_meta(d).get("name")): d for d in kube if d.get("kind") == "Namespace"}
    used = set(SYSTEM_NAMESPACES) | {_ns(d) for d in kube if d.get("kind") not in CLUSTER_SCOPED}
    for name in sorted(used | set(declared)):
        meta = _meta(declared.get(name, {}))
        out.append(namespace(name, meta.get("labels"), meta.get("annotations")))
    out.append(node())

    accounts = {(ns, "default") for ns in used | set(declared)}
    accounts |= {(_ns(d), str(_meta(d).get("name"))) for d in kube if d.get("kind") == "ServiceAccount"}
    if topology.gateway is not None:
        accounts.add((topology.gateway.namespace, topology.gateway.service_account))
    out += [service_account(ns, name) for ns, name in sorted(accounts)]

    services = sorted(
        (d for d in kube if d.get("kind") == "Service"), key=lambda d: (_ns(d), str(_meta(d).get("name")))
    )
    k = 0
    for d in services:
        k += 1
        out.append(service(d, cluster_ip(topology.block, k)))
    if topology.gateway is not None:
        k += 1
        out.append(gateway_service(topology.gateway, cluster_ip(topology.block, k)))

    deployments = {(_ns(d), str(_meta(d).get("name"))): d for d in kube if d.get("kind") == "Deployment"}
    for r in topology.replicas:
        template = _template(deployments[(r.namespace, r.deployment)])
        out.append(
            pod(
                r.pod,
                r.namespace,
                deployment=r.deployment,
                template=template,
                labels=injected_labels(r.labels, r.deployment),
                service_account=r.service_account,
                address=r.address,
                containers=_containers(template),
            )
        )
    if topology.gateway is not None:
        out.append(gateway_pod(topology.gateway))
    for n in topology.native:
        if jaeger_address is None or not n.image.startswith("jaegertracing/"):
            continue
        template = _template(deployments[(n.namespace, n.name)])
        out.append(
            pod(
                f"{n.name}-0",
                n.namespace,
                deployment=n.name,
                template=template,
                labels=dict(n.labels),
                service_account=str((template.get("spec") or {}).get("serviceAccountName") or "default"),
                address=jaeger_address,
                containers=_containers(template),
            )
        )
    return out


EXCLUDE_INTERFACES = "traffic.sidecar.istio.io/excludeInterfaces"


def podinfo_annotations(annotations: Mapping[str, str] | None, interfaces: Iterable[str]) -> dict[str, str]:
    """The pod's annotations as its proxy's pilot-agent reads them (the podinfo volume), plus
    Istio's ``excludeInterfaces`` naming every interface of this host but loopback.

    In a pod, pilot-agent adds the addresses of the pod's own interfaces to the proxy's IPs
    (``INSTANCE_IPS``, after ``INSTANCE_IP``); on loopback those are the host's (Docker bridges,
    IPv6 addresses), so istiod would take every local proxy for a dual-stack one holding the
    host's addresses (``InboundPassthroughCluster`` then gets an extra IPv6 source ``::6``;
    bench/fidelity.py found it). Excluded, the proxy has only the replica's address, as in a pod.
    The annotation is written for pilot-agent only: the Pod istiod sees keeps its own annotations.
    """
    names = sorted({i for i in interfaces if i and i != "lo"})
    out = {str(k): str(v) for k, v in (annotations or {}).items()}
    if names:
        out[EXCLUDE_INTERFACES] = ",".join(names)
    return out


def downward_api(values: Mapping[str, str] | None) -> str:
    """A map as Kubernetes' downward API volume writes it (``key="value"`` lines, sorted)."""
    return "".join(f"{k}={json.dumps(str(v))}\n" for k, v in sorted((values or {}).items()))


def namespaced(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` with ``metadata.namespace`` set (``default`` when missing) unless its kind is
    cluster-scoped, as the API server stores it."""
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    if out.get("kind") in CLUSTER_SCOPED:
        meta.pop("namespace", None)
    else:
        meta.setdefault("namespace", "default")
    out["metadata"] = meta
    return out


def pods_of(objs: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Mapping[str, Any]]:
    return {(_ns(o), str(_meta(o).get("name"))): o for o in objs if o.get("kind") == "Pod"}
