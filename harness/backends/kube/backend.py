"""KubeBackend: the Backend protocol on a Kubernetes cluster (kind or existing).

Its own job: ``up`` / ``attach`` / ``down`` (recorded in ``backend.json``), ``apply`` / ``delete``
with the wait until istiod and every proxy hold the change, and the protocol's addresses. The rest
is in sibling modules it calls:

- the cluster, what differs between the backends: :class:`~harness.backends.kube.cluster.Cluster`,
  :class:`~harness.backends.kube.kindcluster.KindCluster` (``kind``: created for the run) or
  :class:`~harness.backends.kube.cluster.ExistingCluster`;
- :mod:`.discovery` (the mesh's pods as Workloads), :mod:`.portforward` (their addresses),
  :mod:`.convergence` (istiod's sync state), :mod:`.faults` (app faults, kills, istiod outages),
  :mod:`.diagnostics` (a failed test's evidence).

``up()``: the cluster's preflight (tools) -> the cluster (kind create/adopt, or the kubeconfig
context) -> reachable API -> Istio (``istioctl install`` on kind; must already run on existing) ->
sample image (build, and ``kind load`` when the cluster is a kind cluster) -> server-side apply of
``manifests/`` plus the sidecar relay -> Deployments ready -> every proxy connected and SYNCED ->
ingress answers.

Addresses: every pod port the harness uses (app 3000, admin 3001, Envoy admin 15000, istiod 15014,
Jaeger 16686) is a :class:`~.portforward.PortForward` on 127.0.0.1, created when a workload listing
first needs it; a stream to the pod is only opened per connection. The ingress is the kind NodePort
mapping (127.0.0.1:<host port>) or, on existing clusters, a port-forward to an ingress gateway pod.
``sidecar_url`` goes through the sidecar-less relay (see :mod:`.relay`).

Differences from the local backend, by nature of Kubernetes:
- ``kill`` deletes the pod (sidecar included) and its Deployment starts a replacement with a new
  name; ``restart`` waits for that replacement to be ready and in sync.
- ``down`` on kind deletes the cluster (unless ``keep_cluster``); on existing it deletes only the
  objects this backend created (unless ``keep_cluster``). Port-forwards are always closed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import httpx

from harness import envoy, httpclient, namespaces, proc, wait
from harness.backends.kube import gateway_api, istio_install, netloss, portforward, propagation, workercopy
from harness.backends.kube.api import ClusterApi, KubeApi, ObjectRef
from harness.backends.kube.apply import (
    GATEWAY_API_KINDS,
    ISTIO_GROUPS,
    ISTIO_KINDS,
    SAMPLE_SERVICE_DIR,
    apply_objects,
    config_expectations,
    delete_objects,
    read_manifests,
    read_objects,
    ref_of,
    wait_gone,
)
from harness.backends.kube.cluster import Cluster, ExistingCluster, MeshRecord
from harness.backends.kube.convergence import IstiodSync
from harness.backends.kube.diagnostics import write_diagnostics
from harness.backends.kube.discovery import Discovery
from harness.backends.kube.engine import Engine
from harness.backends.kube.faults import Faults
from harness.backends.kube.kindcluster import KindCluster
from harness.backends.kube.portforward import Forwards
from harness.backends.kube.readiness import wait_deployments_ready
from harness.backends.kube.relay import relay_objects
from harness.backends.kube.tools import default_which
from harness.errors import BackendError, StateError, ToolMissing, UnsupportedFeature, UserError
from harness.mesh import AppFault, State, Workload, find_workload
from harness.settings import Settings
from harness.toolchain.kind import kind_which
from harness.versions import ISTIO_RELEASES

if TYPE_CHECKING:  # harness.load imports numpy: only where a load runs
    from harness.backends.kube.load_runner import KubeLocustRun
    from harness.load.config import LoadConfig

Progress = Callable[[str], None]
ApiFactory = Callable[[str | None, str | None], KubeApi]  # (kubeconfig, context) -> api

# the Cluster each backend name runs on
CLUSTERS: dict[str, type[KindCluster] | type[ExistingCluster]] = {
    "kind": KindCluster,
    "existing": ExistingCluster,
}


# ---- the backend ------------------------------------------------------------------------------


class KubeBackend:
    """The kind / existing backend. ``name`` is the settings' backend name."""

    def __init__(
        self,
        settings: Settings,
        *,
        progress: Progress | None = None,
        which: proc.Which = default_which,
        run: proc.Runner = proc.run,
        api_factory: ApiFactory | None = None,
        http: httpx.Client | None = None,
        sample_dir: Path = SAMPLE_SERVICE_DIR,
        clock: wait.Clock = wait.REAL_CLOCK,
        engine: Engine | None = None,
        gateway_api_crds: gateway_api.IndexReader = gateway_api.read_index,
    ) -> None:
        provider = CLUSTERS.get(settings.backend)
        if provider is None:
            raise UserError(f"KubeBackend runs backends kind and existing, not {settings.backend!r}")
        self.settings = settings
        self.name = settings.backend
        self.release = ISTIO_RELEASES[settings.istio_version]
        self.progress = progress or (lambda _m: None)
        self._api_factory = api_factory or self._default_api
        self._http = http or httpclient.client(timeout=10.0)
        self._clock = clock
        self.state = State.NEW
        self.detached = False
        self._api: KubeApi | None = None
        self._record = MeshRecord(settings.state_dir / "backend.json")
        self.cluster: Cluster = provider(
            settings,
            self._record,
            say=lambda m: self.progress(m),  # the backend's progress, also when set later
            # kind from the cache (`meshproof docker install`) when there is one, else from PATH
            which=kind_which(settings.cache_dir, which),
            run=run,
            sample_dir=sample_dir,
            clock=clock,
            engine=engine,
            gateway_api_crds=gateway_api_crds,
        )
        self._context = ""  # the kubeconfig context in use, once connected
        self._lock = threading.RLock()
        self._forwards = Forwards(lambda: self.api, self._http, lock=self._lock, clock=clock)
        # a pytest-xdist worker's copy of the sample (workercopy.py): "" for the mesh `up` made
        self._copy = namespaces.suffix()
        selector = (
            workercopy.gateway_label_selector(self._copy) if self._copy else self.cluster.gateway_selector
        )
        self._discovery = Discovery(
            lambda: self.api, self._forwards, lock=self._lock, gateway_selector=selector
        )
        self._sync = IstiodSync(
            self._discovery, self._forwards, self._http, ready_timeout=settings.ready_timeout, clock=clock
        )
        self._faults = Faults(
            self,
            lambda: self.api,
            self._http,
            discovery=self._discovery,
            forwards=self._forwards,
            sync=self._sync,
            record=self._record,
            lock=self._lock,
            ready_timeout=settings.ready_timeout,
            clock=clock,
        )

    @property
    def traffic_api(self) -> str:
        """Which of the manifests' routes ``up`` applied: as the mesh's record says (attached), else
        the settings'."""
        return str(self._info.get("traffic_api") or self.settings.traffic_api)

    # ---- state file -------------------------------------------------------------------------
    @property
    def marker(self) -> Path:
        return self._record.path

    @property
    def _info(self) -> dict[str, Any]:
        return self._record.info

    @property
    def recorded(self) -> dict[str, Any]:
        """What ``backend.json`` records of this mesh (kubeconfig, context, ...), read-only."""
        return dict(self._info)

    def _save(self, **changes: Any) -> None:
        self._record.save(**changes)

    def _default_api(self, kubeconfig: str | None, context: str | None) -> KubeApi:
        return ClusterApi(
            kubeconfig, context, discovery_cache=self.settings.state_dir / "discovery-cache.json"
        )

    @property
    def api(self) -> KubeApi:
        if self._api is None:
            raise StateError("the mesh is not running. Fix: meshproof up --detach (or use the mesh fixture)")
        return self._api

    def _require_running(self) -> None:
        if self.state is not State.RUNNING:
            raise StateError("the mesh is not running. Fix: meshproof up --detach (or use the mesh fixture)")

    # ---- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.detached:
            self.down()
            return
        # A detached mesh outlives this process; this process's port-forwards do not.
        self._forwards.close()

    def up(self, *, detach: bool = False) -> Self:
        if self.state is not State.NEW:
            raise BackendError(f"this backend is {self.state.value}; create a new one")
        if self.marker.is_file():
            raise StateError(
                f"a mesh is already recorded in state dir {self.settings.state_dir} ({self.marker}). "
                "Fix: `meshproof down` first, or use another --state"
            )
        self.state = State.STARTING
        self.detached = detach
        try:
            self._up()
        except BaseException as e:
            if note := self.cluster.failure_note():
                e.add_note(note)
            try:
                self.down()
            except Exception as cleanup:  # noqa: BLE001 - the original error matters more
                e.add_note(f"cleanup after the failure also failed: {cleanup}")
            raise
        self.state = State.RUNNING
        return self

    def _up(self) -> None:
        s = self.settings
        read_manifests(s.manifests, s.traffic_api)  # bad input exits 2 before any cluster is touched
        self.cluster.prepare()
        self.progress("checking tools")
        tools = self.cluster.preflight()
        kubeconfig, context = self.cluster.provide(tools)
        self._connect(kubeconfig or None, context or None)
        # kind: the Gateway API CRDs, before Istio and the manifests; existing: only looked for
        unserved = self.cluster.gateway_api(self.api)
        self._save(gateway_api_unserved=unserved)

        # before istioctl install: the cluster must not pull (policy Never)
        self.cluster.load_mesh_images(tools)
        self.cluster.install_istio(self.api, tools, kubeconfig, context)
        self._save(tracing=istio_install.tracing_provider_configured(self.api))
        self.cluster.load_sample(tools, self._context)

        self.progress("applying manifests")
        objs = self.cluster.localized(self._manifests() + relay_objects() + self.cluster.extra_objects())
        self._save(traffic_api=s.traffic_api)
        self.cluster.record_new(self.api, objs)
        applied = apply_objects(self.api, objs)
        self._discovery.remember(objs)
        self.progress("waiting for Deployments")
        wait_deployments_ready(self.api, [a.ref for a in applied], timeout=s.ready_timeout, clock=self._clock)
        if not self._discovery.gateway_pods():
            raise ToolMissing(
                f"an ingress gateway (pods labelled {self.cluster.gateway_selector})",
                f"backend {self.name}",
                "install Istio with its default profile, which includes istio-ingressgateway",
            )
        self.progress("waiting for every proxy to be in sync")
        self._sync.wait_converged(config_expectations(a for a in applied), None)
        self._wait_ingress()
        self._save(phase="running")

    def _manifests(self, *, quiet: bool = False) -> list[dict[str, Any]]:
        """The manifests' objects ``up`` applies: those of the mesh's traffic API, and no Gateway API
        object where the cluster serves no Gateway API (saying so, once, unless ``quiet``)."""
        objs = read_manifests(self.settings.manifests, self.traffic_api)
        unserved = str(self._info.get("gateway_api_unserved") or "")
        if unserved and (skipped := gateway_api.names(objs)):
            if not quiet:
                self.progress(
                    f"skipping the manifests' Gateway API objects ({', '.join(skipped)}): {unserved}"
                )
            objs = gateway_api.without_gateway_api(objs)
        return objs

    def _connect(self, kubeconfig: str | None, context: str | None) -> None:
        self._api = self._api_factory(kubeconfig, context)
        where = f"context {context!r}" if context else "the current kubeconfig context"
        try:
            version = self._api.server_version()
        except BackendError as e:
            raise ToolMissing(
                f"a reachable Kubernetes cluster ({where})",
                f"backend {self.name}",
                "start the cluster or fix the kubeconfig; `kubectl cluster-info"
                + (f" --context {context}" if context else "")
                + "` must succeed",
            ) from e
        self._context = str(getattr(self._api, "context", "") or context or "")
        self.progress(f"cluster {where}: Kubernetes {version}")

    @property
    def locust_image(self) -> str:
        """The in-cluster Locust image when the images are built here (loaded by ``up``), else "":
        the load run's default (the official image) or MESHPROOF_LOCUST_IMAGE applies."""
        return self.cluster.locust_image

    def _wait_ingress(self) -> None:
        url = self.ingress_url()
        answers = functools.partial(portforward.answers(self._http, "/"), url)
        wait.until(
            answers,
            what=f"the ingress gateway at {url} to answer",
            timeout=self.settings.ready_timeout,
            interval=0.5,
            retry_on=(httpx.HTTPError,),
            hint="check the istio-ingressgateway pods and Service",
            clock=self._clock,
        )

    def attach(self) -> Self:
        if not self.marker.is_file():
            raise StateError(
                f"no mesh is recorded in state dir {self.settings.state_dir}. Fix: meshproof up --detach"
            )
        info = json.loads(self.marker.read_text())
        if info.get("backend") != self.name:
            raise StateError(
                f"the mesh in {self.settings.state_dir} is a {info.get('backend')!r} mesh, not {self.name!r}"
            )
        if info.get("phase") != "running":
            raise StateError(
                f"the mesh in {self.settings.state_dir} did not finish starting. Fix: meshproof down, then up again"
            )
        recorded = str(info.get("context") or "")
        if self.settings.kube_context and recorded and self.settings.kube_context != recorded:
            raise StateError(
                f"the mesh in {self.settings.state_dir} runs on kubeconfig context {recorded!r}, not "
                f"{self.settings.kube_context!r}. Fix: drop --kube-context, or pass the --state of the mesh "
                f"on {self.settings.kube_context!r}"
            )
        self._record.info = info
        self._connect(info.get("kubeconfig") or None, info.get("context") or None)
        self._discovery.remember(self._manifests(quiet=True) + relay_objects())
        self.state = State.RUNNING
        self.detached = True
        return self

    def down(self) -> None:
        """Close every port-forward; delete the kind cluster / the objects created on existing
        (unless keep_cluster); forget the state file. Idempotent."""
        self._forwards.close()
        info = self._info or (json.loads(self.marker.read_text()) if self.marker.is_file() else {})
        errors: list[str] = []
        if info and not self.settings.keep_cluster:
            try:
                self.cluster.teardown(info, functools.partial(self._connected, info))
            except Exception as e:  # noqa: BLE001 - keep going; report at the end
                errors.append(str(e))
        if self._api is not None:
            self._api.close()
            self._api = None
        if not errors:
            self.marker.unlink(missing_ok=True)
        self.state = State.STOPPED
        if errors:
            raise BackendError(
                "tearing down the mesh failed: " + "; ".join(errors) + f" (state kept in {self.marker})"
            )

    def _connected(self, info: Mapping[str, Any]) -> KubeApi:
        """The API, connected by the record ``info`` if this process is not connected yet."""
        if self._api is None:
            self._connect(info.get("kubeconfig") or None, info.get("context") or None)
        return self.api

    # ---- workloads --------------------------------------------------------------------------
    def workloads(self) -> Sequence[Workload]:
        self._require_running()
        return self._discovery.workloads()

    def workload(self, ref: str) -> Workload:
        return find_workload(self.workloads(), ref)

    def apply(self, paths: Sequence[Path]) -> float:
        return self.apply_all(read_objects(paths))

    def apply_all(self, objs: list[dict[str, Any]]) -> float:
        """:meth:`apply` of objects already read."""
        self._require_running()
        # as this cluster runs them; in a worker's copy, its Gateways select its own gateway
        objs = self.cluster.localized(workercopy.localized(objs, self._copy) if self._copy else objs)
        t0 = self._clock.now()
        baseline = self._sync.push_counters()
        if not self._copy:  # a worker's copy goes with its namespaces (workercopy.delete_copies)
            self.cluster.record_new(self.api, objs)
        applied = apply_objects(self.api, objs)
        changed = [a for a in applied if a.changed]
        self._discovery.remember(objs)
        wait_deployments_ready(
            self.api, [a.ref for a in changed], timeout=self.settings.ready_timeout, clock=self._clock
        )
        if changed:
            self._sync.wait_converged(config_expectations(changed), baseline)
        return self._clock.now() - t0

    def start_copy(self) -> None:
        """pytest-xdist worker gwN (N >= 1): apply its copy of the sample (the settings' manifests,
        renamed by the plugin) and its own ingress gateway, waiting as :meth:`apply` does (a copy
        an earlier run left: only where it changed), then for its ingress to answer."""
        if self._copy:  # its gateway is found by its labels, not as a Deployment of the sample
            gateway = workercopy.gateway_objects(self._copy)
            self.apply_all(self._manifests(quiet=True) + gateway)
            self._discovery.forget([ref_of(o) for o in gateway])
            self._wait_ingress()

    def delete(self, paths: Sequence[Path]) -> float:
        self._require_running()
        objs = read_objects(paths)
        missing = [str(ref_of(o)) for o in objs if self.api.get(ref_of(o)) is None]
        if missing:
            raise StateError(f"not applied, cannot delete: {', '.join(missing)}")
        t0 = self._clock.now()
        baseline = self._sync.push_counters()
        gone = delete_objects(self.api, objs)
        wait_gone(self.api, gone, timeout=self.settings.ready_timeout, clock=self._clock)
        self._discovery.forget(gone)
        expectations = [
            propagation.ConfigExpectation(r.group, r.kind, r.namespace, r.name, None)
            for r in gone
            if r.group in ISTIO_GROUPS
        ]
        self._sync.wait_converged(expectations, baseline)
        return self._clock.now() - t0

    @contextlib.contextmanager
    def with_workloads(self, paths: Sequence[Path], workdir: Path) -> Iterator[Self]:
        """This mesh with ``paths`` applied (a cluster adds workloads while it runs); deleted on exit."""
        self.apply(paths)
        try:
            yield self
        finally:
            self.delete(paths)

    def config_dir(self) -> Path | None:
        return None

    # ---- addresses --------------------------------------------------------------------------
    def ingress_url(self) -> str:
        if self._copy:  # the worker's own gateway, through a port-forward
            return self._discovery.gateway_url()
        if url := self.cluster.ingress_url(self._info):
            return url
        return self._discovery.gateway_url()

    def service_url(self, service: str, namespace: str, port: int) -> str:
        return f"http://{service}.{namespace}.svc.cluster.local:{port}"

    def trace_query_url(self) -> str | None:
        self._require_running()
        if not self._info.get("tracing") or "tracing" in self.unavailable():
            return None
        return self._discovery.jaeger_url()

    def trace_hint(self) -> str:
        return ""

    def load_runner(self, config: LoadConfig, *, workdir: Path) -> KubeLocustRun:
        """Locust's master and workers as Deployments inside the cluster (:mod:`.load_runner`), in
        ``MESHPROOF_LOCUST_IMAGE``, else the image built here (:attr:`locust_image`), else the pinned
        official one."""
        from harness.backends.kube.load_runner import in_cluster

        gateway_ns = namespaces.ns("sample") if self._copy else self.cluster.gateway_namespace
        image = self.settings.locust_image or self.locust_image
        # its pods start like any (MESHPROOF_READY_TIMEOUT), never sooner than the run's own 300 s
        wait_s = max(300.0, self.settings.ready_timeout)
        return in_cluster(config, self.api, workdir, gateway_ns, image=image, ready_timeout=wait_s)

    def unavailable(self) -> dict[str, str]:
        """What this cluster lacks that a suite needs -> why (backend existing: e.g. no tracing provider);
        the suite skips with that reason instead of failing."""
        out = dict(self._info.get("unavailable") or {})
        if unserved := str(self._info.get("gateway_api_unserved") or ""):
            out.setdefault("gateway-api", unserved)  # existing: the cluster has no Gateway API CRDs
        return out

    # ---- faults and chaos: see faults.py ----------------------------------------------------
    def inject_fault(self, pod: str, fault: AppFault) -> dict[str, Any]:
        """``via`` sidecar: the pod's replica label and the EnvoyFilter selecting it; ``via`` app: the
        sample's admin API (see :meth:`Faults.inject`)."""
        return self._faults.inject(pod, fault)

    def clear_fault(self, pod: str) -> None:
        """Remove the sidecar fault's EnvoyFilter and the pod label, and any admin fault."""
        self._faults.clear(pod)

    def set_cert_ttl(self, pod: str, ttl: str) -> dict[str, Any]:
        """Not on Kubernetes yet: a sidecar's ``SECRET_TTL`` is fixed when the pod is injected, so a
        shorter lifetime means the Deployment's pod template annotation ``proxy.istio.io/config``
        (``proxyMetadata: {SECRET_TTL: ...}``) and a rollout that replaces every replica under new
        names, which the experiments' ``victim=POD`` cannot follow. Fails before anything changes."""
        w = self.workload(pod)
        raise UserError(
            f"a per-replica certificate lifetime is not supported on the {self.name} backend ({w.ref}): "
            "pilot-agent reads SECRET_TTL at pod start. Fix: run the experiment on the local backend, or "
            "set the annotation proxy.istio.io/config: '{proxyMetadata: {SECRET_TTL: "
            + (ttl or "30s")
            + "}}' on the Deployment's pod template yourself"
        )

    def _pod_network(self, pod: str) -> tuple[Workload, netloss.Runner]:
        w = self.workload(pod)
        return w, self.cluster.pod_network(
            w, lambda: self.api.get(ObjectRef("v1", "Pod", w.namespace, w.name))
        )

    def set_network_loss(self, pod: str, probability: float) -> dict[str, Any]:
        """An iptables rule inside the pod's network namespace (kind only; :mod:`.netloss`)."""
        w, run = self._pod_network(pod)
        return netloss.set_loss(run, w, probability)

    def network_dropped(self, pod: str) -> int | None:
        w, run = self._pod_network(pod)
        return netloss.dropped(run, w)

    def kill(self, pod: str) -> None:
        """Delete the pod at once (grace 0); its Deployment starts a replacement under a new name."""
        self._faults.kill(pod)

    def restart(self, pod: str) -> None:
        """Wait until the killed replica's Deployment is back at full strength and every proxy is in sync."""
        self._faults.restart(pod)

    # ---- control plane and config, for chaos experiments ------------------------------------
    def istio_objects(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for api_version, kind in ISTIO_KINDS:
            if self.api.has_kind(api_version, kind):
                out.extend(self.api.list(api_version, kind))
        return out

    def gateway_api_objects(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for api_version, kind in GATEWAY_API_KINDS:
            if self.api.has_kind(api_version, kind):
                out.extend(self.api.list(api_version, kind))
        return out

    def wait_synced(self, timeout: float) -> float:
        return self._sync.wait_converged((), None, timeout=timeout)

    def lost(self) -> str | None:
        return None  # the cluster outlives this process; `meshproof status` asks it

    def stop_control_plane(self) -> None:
        """Scale the istiod Deployment to 0 (its replica count is kept in the state dir). Never on
        backend existing: that control plane is the user's."""
        if self.name == "existing":
            raise UnsupportedFeature(
                "stopping istiod on backend existing: the control plane is the cluster's own, which meshproof "
                "never changes. Fix: run the experiment on --backend kind or local"
            )
        self._faults.stop_control_plane()

    def control_planes(self) -> dict[str, dict[str, Any]]:
        """Revision -> {pod, monitoring_url} of every running istiod (its ``istio.io/rev`` label;
        ``default`` for an install without a revision): where its version is read."""
        self._require_running()
        return {
            rev: {"pod": pod, "monitoring_url": self._discovery.istiod_monitoring_url(pod)}
            for rev, pod in self._discovery.istiod_by_revision().items()
        }

    def control_plane_serving(self) -> list[str]:
        """Every ready istiod pod, and every ready endpoint of the ``istiod`` Service (what the
        sidecars' pilot-agents dial): empty once the control plane is gone."""
        return self._faults.control_plane_serving()

    def start_control_plane(self) -> None:
        self._faults.start_control_plane()

    # ---- evidence ---------------------------------------------------------------------------
    def ejections(self) -> dict[str, dict[str, list[str]]]:
        """Per calling proxy, per upstream cluster, the hosts outlier detection has ejected."""
        return envoy.ejections(self._http, self.workloads())

    def diagnostics(self, dest: Path) -> list[Path]:
        """Envoy config_dump/clusters/stats per proxy, container logs, events, istiod syncz. Never raises
        for one missing piece: its file says why it is missing."""
        return write_diagnostics(
            dest,
            self._api,
            workloads=lambda: self.workloads() if self.state is State.RUNNING else [],
            mesh_pods=self._discovery.mesh_pods,
            http=self._http,
            sync=self._sync,
        )
