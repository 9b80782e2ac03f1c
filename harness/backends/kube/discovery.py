"""What the kube backend's mesh runs, read from the cluster: its Deployments and Services, their live
pods, the ingress gateway and istiod pods, and each pod as a :class:`~harness.mesh.Workload` whose
addresses are port-forwards on 127.0.0.1 (made on first use, closed when the pod goes).

Roles: a gateway pod (``istio=ingressgateway``) is ``gateway``; a pod some mesh Service selects is an
``app`` (with a ``sidecar_url`` through the sidecar relay); any other is a ``client``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from harness.backends.kube import istio_install, own_gateway
from harness.backends.kube.api import KubeApi, ObjectRef
from harness.backends.kube.apply import ref_of
from harness.backends.kube.pods import (
    container_ports,
    container_ports_all,
    deployment_of,
    has_sidecar,
    is_gateway,
    live,
    name_of,
    namespace_of,
    pod_ready,
    service_target_port,
)
from harness.backends.kube.portforward import Forwards
from harness.backends.kube.relay import RELAY_NAMESPACE, preamble
from harness.errors import StateError
from harness.mesh import Workload

ENVOY_ADMIN_PORT = 15000
ISTIOD_MONITORING_PORT = 15014
JAEGER_QUERY_PORT = 16686
GATEWAY_SELECTOR = "istio=ingressgateway"
# not workloads under test (the gateways are listed by their selector, apart)
INFRA_NAMESPACES = frozenset({istio_install.ISTIO_NAMESPACE, RELAY_NAMESPACE, own_gateway.NAMESPACE})


class Discovery:
    """The mesh's objects (remembered from what was applied) and its pods as Workloads.

    ``api`` is asked for the cluster on every read; ``lock`` is the backend's."""

    def __init__(
        self,
        api: Callable[[], KubeApi],
        forwards: Forwards,
        *,
        lock: threading.RLock,
        gateway_selector: str = GATEWAY_SELECTOR,
    ) -> None:
        self._api, self._forwards, self._lock = api, forwards, lock
        self.gateway_selector = gateway_selector  # the ingress gateway pods this mesh uses
        self._objects: dict[ObjectRef, dict[str, Any]] = {}  # Deployments and Services the mesh runs

    # ---- what the mesh runs -----------------------------------------------------------------
    def remember(self, objs: Iterable[Mapping[str, Any]]) -> None:
        with self._lock:
            for o in objs:
                # Infrastructure (Jaeger in istio-system, the relay) is not a workload under test.
                if o.get("kind") in ("Deployment", "Service") and namespace_of(o) not in INFRA_NAMESPACES:
                    self._objects[ref_of(o)] = dict(o)

    def forget(self, refs: Iterable[ObjectRef]) -> None:
        with self._lock:
            for r in refs:
                self._objects.pop(r, None)

    def _kinds(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [o for r, o in self._objects.items() if r.kind == kind]

    def mesh_pods(self) -> list[dict[str, Any]]:
        """Live pods of the mesh's Deployments, plus the ingress gateway pods (last)."""
        deployments = {(namespace_of(d), name_of(d)) for d in self._kinds("Deployment")}
        pods: list[dict[str, Any]] = []
        for ns in sorted({ns for ns, _ in deployments}):
            pods += [
                p
                for p in self._api().list("v1", "Pod", ns)
                if live(p) and (ns, deployment_of(p)) in deployments
            ]
        pods.sort(key=lambda p: (namespace_of(p), deployment_of(p), name_of(p)))
        return pods + self.gateway_pods()

    def gateway_pods(self) -> list[dict[str, Any]]:
        pods = [p for p in self._api().list("v1", "Pod", "", self.gateway_selector) if live(p)]
        return sorted(pods, key=lambda p: (namespace_of(p), name_of(p)))

    def istiod_pods(self) -> list[str]:
        pods = self._api().list("v1", "Pod", istio_install.ISTIO_NAMESPACE, "app=istiod")
        names = sorted(name_of(p) for p in pods if live(p))
        self._forwards.close(
            keep=lambda k: (
                not (k[0] == istio_install.ISTIO_NAMESPACE and k[2] == ISTIOD_MONITORING_PORT)
                or k[1] in names
            )
        )
        return names

    def istiod_by_revision(self) -> dict[str, str]:
        """Revision (the pod's ``istio.io/rev`` label; ``default`` without one) -> its newest ready,
        live istiod pod (during a rollout the old pod may still be live)."""
        pods = self._api().list("v1", "Pod", istio_install.ISTIO_NAMESPACE, "app=istiod")
        out: dict[str, tuple[str, str]] = {}
        for p in pods:
            if not (live(p) and pod_ready(p)):
                continue
            meta = p.get("metadata") or {}
            rev = str((meta.get("labels") or {}).get("istio.io/rev") or "default")
            born = str(meta.get("creationTimestamp") or "")
            if rev not in out or (born, name_of(p)) > out[rev]:
                out[rev] = (born, name_of(p))
        self.istiod_pods()  # closes the forwards of istiod pods gone
        return {rev: name for rev, (_, name) in sorted(out.items())}

    def istiod_monitoring_url(self, pod: str) -> str:
        return self._forwards.get(
            istio_install.ISTIO_NAMESPACE, pod, ISTIOD_MONITORING_PORT, ready_path="/version"
        ).url

    def expected_proxies(self) -> set[str]:
        return {
            f"{name_of(p)}.{namespace_of(p)}" for p in self.mesh_pods() if has_sidecar(p) or is_gateway(p)
        }

    # ---- workloads --------------------------------------------------------------------------
    def workload(self, pod: Mapping[str, Any], services: Sequence[Mapping[str, Any]]) -> Workload:
        """``pod`` as a Workload; ``services`` (the mesh's) tell an app, served by one, from a client."""
        meta, spec, st = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
        ns, name, ip = namespace_of(pod), name_of(pod), str(st.get("podIP", ""))
        labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
        extra = {"node": str(spec.get("nodeName", "")), "pod_ip": ip}
        proxied = has_sidecar(pod) or is_gateway(pod)
        admin = self._forwards.get(ns, name, ENVOY_ADMIN_PORT, ready_path="/ready").url if proxied else ""
        app_url = admin_url = sidecar_url = ""
        role = "gateway"
        if not is_gateway(pod):
            ports = container_ports(pod)
            app_port = ports.get("http") or next(iter(ports.values()), 0)
            admin_port = ports.get("admin", 0)
            target = service_target_port(services, pod)
            if target and has_sidecar(pod):
                sidecar_url = self._forwards.get(ns, name, target, via=preamble(ip, target)).url
            if app_port:
                app_url = self._forwards.get(ns, name, app_port).url
            if admin_port:
                admin_url = self._forwards.get(ns, name, admin_port, ready_path="/healthz").url
            role = "app" if target else "client"
        return Workload(
            name=name,
            namespace=ns,
            deployment=deployment_of(pod),
            labels=labels,
            address=ip,
            app_url=app_url,
            admin_url=admin_url,
            sidecar_url=sidecar_url,
            proxy_admin_url=admin,
            service_account=str(spec.get("serviceAccountName", "")),
            ready=pod_ready(pod),
            role=role,
            extra=extra,
        )

    def workloads(self) -> list[Workload]:
        """Every mesh pod as a Workload; the forwards of pods gone (but istiod's) are closed."""
        pods = self.mesh_pods()
        services = self._kinds("Service")
        out = [self.workload(p, services) for p in pods]
        present = {(w.namespace, w.name) for w in out}
        self._forwards.close(keep=lambda k: (k[0], k[1]) in present or k[0] == istio_install.ISTIO_NAMESPACE)
        return out

    def gateway_target_port(self, gw: Mapping[str, Any]) -> int:
        svc = self._api().get(ObjectRef("v1", "Service", namespace_of(gw), istio_install.GATEWAY_SERVICE))
        for p in ((svc or {}).get("spec") or {}).get("ports") or []:
            if p.get("port") == 80:
                t = p.get("targetPort", 80)
                if isinstance(t, int):
                    return t
                return container_ports_all(gw).get(str(t), 8080)
        return 8080

    # ---- addresses --------------------------------------------------------------------------
    def gateway_url(self) -> str:
        """A port-forward to the first ingress gateway pod's HTTP port (checked to answer)."""
        gws = self.gateway_pods()
        if not gws:
            raise StateError(f"no ingress gateway pod ({self.gateway_selector}) is running")
        gw = gws[0]
        return self._forwards.get(
            namespace_of(gw), name_of(gw), self.gateway_target_port(gw), ready_within=60
        ).url

    def jaeger_url(self) -> str | None:
        """A port-forward to Jaeger's query port in istio-system (checked to answer), if Jaeger runs."""
        pods = [
            p for p in self._api().list("v1", "Pod", istio_install.ISTIO_NAMESPACE, "app=jaeger") if live(p)
        ]
        if not pods:
            return None
        return self._forwards.get(
            namespace_of(pods[0]), name_of(pods[0]), JAEGER_QUERY_PORT, ready_within=60
        ).url
