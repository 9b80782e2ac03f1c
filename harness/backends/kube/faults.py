"""Faults on a running kube mesh, for chaos: an app fault on one replica, a replica killed and its
replacement awaited, istiod scaled away and back.

- App faults: ``via`` sidecar, the pod gets the label :data:`~harness.mesh.REPLICA_LABEL` and the
  EnvoyFilter selecting it (:mod:`harness.sidecar_fault`); ``via`` app, the sample's ``/admin/fault``.
- Kills: the pod is deleted at once (grace 0, sidecar included); its Deployment starts a replacement
  under a new name, which ``restart`` waits for (ready, and every proxy in sync).
- The control plane: the istiod Deployment scaled to 0 (its replica count kept in the state record)
  and back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx

from harness import wait
from harness.backends.kube import istio_install
from harness.backends.kube.api import KubeApi, ObjectRef
from harness.backends.kube.cluster import MeshRecord
from harness.backends.kube.convergence import IstiodSync
from harness.backends.kube.discovery import Discovery
from harness.backends.kube.pods import deployment_of, name_of, namespace_of, pod_ready
from harness.backends.kube.portforward import Forwards
from harness.backends.kube.readiness import deployment_status
from harness.errors import BackendError, UserError
from harness.mesh import REPLICA_LABEL, AppFault, Workload

if TYPE_CHECKING:
    from harness.backends.base import Backend


class Faults:
    """The kube backend's app faults, kills and control-plane outages; see the module docstring."""

    def __init__(
        self,
        mesh: Backend,  # the backend itself: its replicas, and where a sidecar fault is applied
        api: Callable[[], KubeApi],
        http: httpx.Client,
        *,
        discovery: Discovery,
        forwards: Forwards,
        sync: IstiodSync,
        record: MeshRecord,
        lock: threading.RLock,
        ready_timeout: float,
        clock: wait.Clock = wait.REAL_CLOCK,
    ) -> None:
        self._mesh, self._api, self._http = mesh, api, http
        self._discovery, self._forwards, self._sync, self._record = discovery, forwards, sync, record
        self._lock, self._ready_timeout, self._clock = lock, ready_timeout, clock
        self._killed: dict[str, Workload] = {}  # by pod name and by ref, until replaced

    # ---- app faults -------------------------------------------------------------------------
    def inject(self, pod: str, fault: AppFault) -> dict[str, Any]:
        """``via`` sidecar: the pod gets the label :data:`~harness.mesh.REPLICA_LABEL` (Kubernetes
        gives a pod none of its own; istiod re-reads a pod's labels when they change), then the
        EnvoyFilter selecting it (:mod:`harness.sidecar_fault`); ``via`` app: the sample's admin API."""
        from harness import sidecar_fault

        w = self._mesh.workload(pod)
        if fault.via == "sidecar":
            sidecar_fault.check_victim(self._http, w)  # bad input before the pod is touched
            self._label_replica(w, add=True)
            try:
                return sidecar_fault.inject(
                    self._mesh, self._http, self._mesh.workload(w.ref), fault, settle_s=60.0
                )
            except BaseException:
                self._label_replica(w, add=False)
                raise
        if not w.admin_url:
            raise UserError(f"{w.ref} has no admin port: use the sidecar fault (via sidecar)")
        body = {"status": fault.status, "rate": fault.rate, "delay_ms": fault.delay_ms}
        try:
            r = self._http.post(f"{w.admin_url}/admin/fault", json=body)
        except httpx.HTTPError as e:
            raise BackendError(f"cannot reach the admin port of {w.ref}: {e}") from e
        if r.status_code != 200:
            raise BackendError(f"fault on {w.ref} refused: {r.status_code} {r.text}")
        return {"pod": w.ref, "via": "app", "admin": "/admin/fault"}

    def _label_replica(self, w: Workload, *, add: bool) -> None:
        """Add (server-side apply owns only this label) or drop the pod's replica label."""
        meta: dict[str, Any] = {"name": w.name, "namespace": w.namespace}
        if add:
            meta["labels"] = {REPLICA_LABEL: w.name}
        self._api().apply({"apiVersion": "v1", "kind": "Pod", "metadata": meta})

    def clear(self, pod: str) -> None:
        """Remove the sidecar fault's EnvoyFilter and the pod label, and any admin fault."""
        from harness import sidecar_fault

        w = self._mesh.workload(pod)
        sidecar_fault.clear(self._mesh, w, self._http)
        if w.labels.get(REPLICA_LABEL):
            self._label_replica(w, add=False)
        if not w.admin_url:
            return
        try:
            r = self._http.delete(f"{w.admin_url}/admin/fault")
            if r.status_code != 404:  # 404: the app has no fault hook (ADMIN_FAULT=false), nothing to clear
                r.raise_for_status()
        except httpx.HTTPError as e:
            raise BackendError(f"clearing the fault on {w.ref} failed: {e}") from e

    # ---- kills ------------------------------------------------------------------------------
    def kill(self, pod: str) -> Workload:
        """Delete the pod at once (grace 0); its Deployment starts a replacement under a new name."""
        w = self._mesh.workload(pod)
        if w.role == "gateway":
            raise UserError("killing the ingress gateway is not supported; kill an app or client replica")
        self._api().delete(ObjectRef("v1", "Pod", w.namespace, w.name), grace_seconds=0)
        with self._lock:
            self._killed[w.name] = w
            self._killed[w.ref] = w
        self._forwards.close(keep=lambda k: (k[0], k[1]) != (w.namespace, w.name))

        def gone() -> bool:
            p = self._api().get(ObjectRef("v1", "Pod", w.namespace, w.name))
            return p is None or bool((p.get("metadata") or {}).get("deletionTimestamp"))

        wait.until(gone, what=f"pod {w.ref} to be deleted", timeout=60, interval=0.25, clock=self._clock)
        return w

    def restart(self, pod: str) -> None:
        """Wait until the killed replica's Deployment is back at full strength and every proxy is in sync."""
        with self._lock:
            w = self._killed.get(pod)
        if w is None:
            w = self.kill(pod)
        dep = self._api().get(ObjectRef("apps/v1", "Deployment", w.namespace, w.deployment))
        if dep is None:
            raise BackendError(f"Deployment {w.namespace}/{w.deployment} of {w.ref} is gone")

        def back() -> bool:
            d = self._api().get(ObjectRef("apps/v1", "Deployment", w.namespace, w.deployment))
            if d is None or not deployment_status(d)[0]:
                return False
            pods = [
                p
                for p in self._discovery.mesh_pods()
                if namespace_of(p) == w.namespace and deployment_of(p) == w.deployment
            ]
            # count the pods: right after the delete the Deployment's status still says all are
            # ready, before its ReplicaSet has even created the replacement
            wanted = int((d.get("spec") or {}).get("replicas") or 0)
            return (
                len(pods) >= wanted
                and all(pod_ready(p) for p in pods)
                and w.name not in {name_of(p) for p in pods}
            )

        wait.until(
            back,
            what=f"a ready replacement for {w.ref}",
            timeout=self._ready_timeout,
            interval=0.5,
            clock=self._clock,
        )
        self._sync.wait_converged((), None)
        with self._lock:
            self._killed.pop(w.name, None)
            self._killed.pop(w.ref, None)

    # ---- the control plane ------------------------------------------------------------------
    def stop_control_plane(self) -> None:
        """Scale the istiod Deployment to 0 (its replica count is kept in the state dir)."""
        istiod = istio_install.find_istiod(self._api())
        if istiod is None:
            raise BackendError("no istiod Deployment in istio-system")
        dep = self._api().get(ObjectRef("apps/v1", "Deployment", istiod.namespace, istiod.deployment)) or {}
        replicas = int((dep.get("spec") or {}).get("replicas") or 1)
        if replicas:
            self._record.save(istiod_replicas=replicas)
        self._api().apply(_scaled(istiod.namespace, istiod.deployment, 0))
        wait.until(
            lambda: not self._discovery.istiod_pods(),
            what="istiod pods gone",
            timeout=self._ready_timeout,
            interval=0.5,
            clock=self._clock,
        )

    def control_plane_serving(self) -> list[str]:
        """Every ready istiod pod, and every ready endpoint of the ``istiod`` Service (what the
        sidecars' pilot-agents dial): empty once the control plane is gone."""
        ns = istio_install.ISTIO_NAMESPACE
        serving = [
            f"istiod pod {ns}/{name_of(p)} is ready"
            for p in self._api().list("v1", "Pod", ns, "app=istiod")
            if pod_ready(p) and not (p.get("metadata") or {}).get("deletionTimestamp")
        ]
        for eps in self._api().list(
            "discovery.k8s.io/v1", "EndpointSlice", ns, "kubernetes.io/service-name=istiod"
        ):
            for ep in eps.get("endpoints") or []:
                if (ep.get("conditions") or {}).get("ready") is not False:  # unset means ready
                    addresses = ",".join(ep.get("addresses") or [])
                    serving.append(f"Service {ns}/istiod has a ready endpoint {addresses}")
        return serving

    def start_control_plane(self) -> None:
        istiod = istio_install.find_istiod(self._api())
        if istiod is None:
            raise BackendError("no istiod Deployment in istio-system")
        replicas = int(self._record.info.get("istiod_replicas") or 1)
        self._api().apply(_scaled(istiod.namespace, istiod.deployment, replicas))
        istio_install.wait_istiod_ready(self._api(), timeout=self._ready_timeout, clock=self._clock)
        self._sync.wait_converged((), None)


def _scaled(namespace: str, name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas},
    }
