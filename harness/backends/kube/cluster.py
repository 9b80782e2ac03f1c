"""Where the kube backend's cluster comes from: the :class:`Cluster` interface and :class:`ExistingCluster`.

A Cluster is everything that differs between the backends ``kind`` and ``existing``; the
:class:`~harness.backends.kube.backend.KubeBackend` runs the same steps over either::

    prepare -> preflight -> provide (kubeconfig, context) -> [the backend connects]
      -> load_mesh_images -> install_istio -> load_sample -> localized / record_new (every apply)
      ... ingress_url, locust_image while running ... teardown (``down``)

:class:`ExistingCluster` is a cluster someone else made, reached through a kubeconfig context:
Istio must already run there; nothing is created that the mesh does not need, and ``down`` deletes
only the objects this backend created (recorded *before* creating them). The kind cluster
meshproof makes is :class:`~harness.backends.kube.kindcluster.KindCluster`.

Both write what a later process needs into :class:`MeshRecord` (``backend.json`` in the state dir).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from harness import proc, wait
from harness.backends.kube import gateway_api, installed, istio_install, netloss, own_gateway
from harness.backends.kube.api import KubeApi, ObjectRef
from harness.backends.kube.apply import SAMPLE_IMAGE, build_image, delete_objects, ref_of, wait_gone
from harness.backends.kube.discovery import GATEWAY_SELECTOR
from harness.backends.kube.engine import Engine
from harness.backends.kube.kind.base import PREFIX
from harness.backends.kube.tools import ToolPaths, minor, preflight, same_minor
from harness.errors import MeshproofError
from harness.mesh import Workload
from harness.proxy_stats import proxy_stats_matcher
from harness.settings import Settings
from harness.versions import ISTIO_RELEASES

Progress = Callable[[str], None]


class MeshRecord:
    """``backend.json`` in the state dir: what this mesh is, for ``attach`` and a later ``down``.

    ``save`` writes it (atomically, the whole record); ``note`` changes only the copy in memory,
    which the next ``save`` writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.info: dict[str, Any] = {}

    def note(self, **changes: Any) -> None:
        self.info.update(changes)

    def save(self, **changes: Any) -> None:
        self.info.update(changes)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.info, indent=2, sort_keys=True))
        tmp.replace(self.path)


@runtime_checkable
class Cluster(Protocol):
    """What the kube backend asks of the cluster it runs on, in the order ``up`` asks it."""

    name: str  # the backend's name, recorded in backend.json
    gateway_selector: str  # the label selector of the ingress gateway pods the mesh uses
    gateway_namespace: str  # the namespace of that gateway's Service (in-cluster load goes there)

    def failure_note(self) -> str:
        """A note for the error of a failed ``up`` ("" for none)."""
        ...

    def prepare(self) -> None:
        """Before the tools are checked (kind: a Docker engine to run on)."""
        ...

    def preflight(self) -> ToolPaths:
        """The tools this cluster needs; raises ToolMissing for the first one missing."""
        ...

    def provide(self, tools: ToolPaths) -> tuple[str, str]:
        """The cluster, recorded as ``starting``: its (kubeconfig, context); "" for the current one."""
        ...

    def load_mesh_images(self, tools: ToolPaths) -> None:
        """Images the cluster must not pull, in before Istio is installed."""
        ...

    def gateway_api(self, api: KubeApi) -> str:
        """The Gateway API's CRDs, before Istio and the manifests (kind: applied; existing: never
        installed, only looked for). Returns why the cluster serves no Gateway API ("" when it does)."""
        ...

    def install_istio(self, api: KubeApi, tools: ToolPaths, kubeconfig: str, context: str) -> None:
        """Istio of the pinned release, running (installed here, or checked)."""
        ...

    def load_sample(self, tools: ToolPaths, context: str) -> None:
        """The sample service's image, where the cluster can run it."""
        ...

    def extra_objects(self) -> list[dict[str, Any]]:
        """Objects ``up`` applies besides the manifests (existing: meshproof's own ingress gateway)."""
        ...

    def localized(self, objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The objects to apply, with images this cluster holds."""
        ...

    def record_new(self, api: KubeApi, objs: Iterable[Mapping[str, Any]]) -> None:
        """Called before ``objs`` are applied: note what ``down`` must delete."""
        ...

    def ingress_url(self, info: Mapping[str, Any]) -> str:
        """The ingress gateway as this host reaches it without a port-forward ("" for none)."""
        ...

    @property
    def locust_image(self) -> str:
        """The in-cluster Locust image this cluster holds ("": the load run's default)."""
        ...

    def teardown(self, info: Mapping[str, Any], connect: Callable[[], KubeApi]) -> None:
        """Undo what ``provide`` and the applies made, by the record ``info`` (``connect``: the API)."""
        ...

    def pod_network(self, w: Workload, pod: Callable[[], Mapping[str, Any] | None]) -> netloss.Runner:
        """A runner inside replica ``w``'s network namespace (``pod`` reads its Pod object), entered
        from its node; refused, before any change, where meshproof has no shell on the nodes."""
        ...


def build_sample(tools: ToolPaths, sample_dir: Path, run: proc.Runner, say: Progress) -> None:
    say(f"building {SAMPLE_IMAGE}")
    build_image(tools.docker, context_dir=sample_dir, run=run)


def not_building(context: str) -> str:
    return (
        f"not building {SAMPLE_IMAGE}: context {context or '(current)'} is not a kind cluster; "
        "the cluster must be able to pull it"
    )


class ClusterBase:
    """What every Cluster gets from the backend: settings, the state record, progress, ``which``,
    the runner, the sample's build context, the clock, and (kind only) the Docker engine."""

    name: str
    gateway_selector = GATEWAY_SELECTOR  # the gateway Istio's install made (kind: in istio-system)
    gateway_namespace = istio_install.ISTIO_NAMESPACE

    def __init__(
        self,
        settings: Settings,
        record: MeshRecord,
        *,
        say: Progress,
        which: proc.Which,
        run: proc.Runner,
        sample_dir: Path,
        clock: wait.Clock = wait.REAL_CLOCK,
        engine: Engine | None = None,
        gateway_api_crds: gateway_api.IndexReader = gateway_api.read_index,
    ) -> None:
        self.settings = settings
        self.release = ISTIO_RELEASES[settings.istio_version]
        self._record, self._say = record, say
        self._which, self._run = which, run
        self._sample_dir, self._clock = sample_dir, clock
        self._engine = engine
        self._gateway_api_crds = gateway_api_crds

    node_shell = False  # whether meshproof may run commands on the cluster's nodes

    def extra_objects(self) -> list[dict[str, Any]]:
        return []

    def pod_network(self, w: Workload, pod: Callable[[], Mapping[str, Any] | None]) -> netloss.Runner:
        return netloss.pod_network(
            w, pod, kind=self.node_shell, backend=self.name, docker=self._which("docker"), run=self._run
        )


class ExistingCluster(ClusterBase):
    """A cluster someone else made, by kubeconfig context; see the module docstring. It never touches
    a Docker engine."""

    name = "existing"
    _revision = ""  # the Istio revision meshproof's namespaces are labelled for, once discovered
    # meshproof's own gateway (own_gateway.py), not the user's
    gateway_selector = own_gateway.SELECTOR
    gateway_namespace = own_gateway.NAMESPACE

    def failure_note(self) -> str:
        return ""

    def prepare(self) -> None:
        return None

    def preflight(self) -> ToolPaths:
        return preflight(self.name, self.release, which=self._which, run=self._run, istioctl="")

    def provide(self, tools: ToolPaths) -> tuple[str, str]:
        context = self.settings.kube_context
        self._record.save(
            backend=self.name,
            phase="starting",
            istio=self.release.label,
            kubeconfig="",
            context=context,
            created=[],
        )
        return "", context

    def load_mesh_images(self, tools: ToolPaths) -> None:
        return None  # the cluster pulls its images

    def gateway_api(self, api: KubeApi) -> str:
        """Never installs CRDs here: the reason the cluster serves no Gateway API, or "". A mesh
        asked to route with it (``--traffic-api gateway-api``) is refused (exit 2, with the fix)."""
        lacking = gateway_api.missing(api)
        if not lacking:
            return ""
        reason = f"the cluster serves no {', '.join(lacking)} (the Gateway API CRDs are not installed)"
        if self.settings.traffic_api == "gateway-api":
            try:
                module = self._gateway_api_crds(self.release).module
            except MeshproofError:  # the message names the module without its version then
                module = ""
            raise gateway_api.refuse_gateway_api_mode(reason, module)
        return reason

    def install_istio(self, api: KubeApi, tools: ToolPaths, kubeconfig: str, context: str) -> None:
        """Istio must already run: never installed or changed here; another minor line is a warning.
        Discovers the revision(s), injection webhooks and tags, the cluster's ingress gateways (named,
        not used: meshproof runs its own, :mod:`.own_gateway`) and tracing
        (:mod:`~harness.backends.kube.installed`); a missing piece stops ``up`` before anything is
        created, a missing optional one (tracing) is recorded as what the suites skip and why."""
        istiod = istio_install.require_installed(api, self.release)
        if istiod.version and not same_minor(istiod.version, minor(self.release)):
            self._say(f"warning: istiod runs Istio {istiod.version}, meshproof pins {self.release.label}")
        found = installed.discover(api)
        revision = installed.choose_revision(found, self.settings.istio_revision, context)
        labels = installed.injection_labels(revision)
        self._say(
            f"Istio revision {revision} (installed: {', '.join(found.revisions)}); meshproof's namespaces get "
            + ", ".join(f"{k}={v}" for k, v in labels.items())
            + f"; meshproof runs its own ingress gateway in {own_gateway.NAMESPACE} (the cluster's: "
            + (", ".join(found.gateways) or "none")
            + (f"; not Ready: {', '.join(found.unready_gateways)}" if found.unready_gateways else "")
            + ", left alone)"
        )
        unavailable: dict[str, str] = {}
        providers = found.tracing.get(found.tags.get(revision, revision), ())
        if not providers:
            unavailable["tracing"] = (
                f"no tracing provider in the mesh config of Istio revision {revision} "
                "(meshConfig.extensionProviders): meshproof does not change a control plane it did not install"
            )
        elif not api.list("v1", "Pod", istio_install.ISTIO_NAMESPACE, "app=jaeger"):
            unavailable["tracing"] = (
                f"tracing provider(s) {', '.join(providers)} but no Jaeger query (pods app=jaeger in "
                f"{istio_install.ISTIO_NAMESPACE}) to read the spans from"
            )
        for what, why in unavailable.items():
            self._say(f"skipping the {what} suite: {why}")
        self._revision = revision
        self._record.save(revision=revision, discovered=found.as_json(), unavailable=unavailable)

    def extra_objects(self) -> list[dict[str, Any]]:
        """meshproof's own ingress gateway, injected by the revision in use (own_gateway.py)."""
        return own_gateway.objects()

    def load_sample(self, tools: ToolPaths, context: str) -> None:
        """meshproof's own images (the sample, Locust), in this order: from the registry the user
        names (MESHPROOF_IMAGE_REGISTRY: nothing is loaded); the images built here (`meshproof images
        build`), ``kind load``-ed when the context is a kind cluster; else the sample built and loaded
        there; otherwise the cluster must be able to pull them."""
        registry = self.settings.image_registry.rstrip("/")
        if registry:
            images = {k: v.replace(PREFIX, registry, 1) for k, v in self._local_refs().items()}
            self._say(f"images from registry {registry}: {', '.join(sorted(images.values()))}")
            self._record.save(images=images)
            return
        cluster_name = ""
        if context.startswith("kind-") and tools.docker and tools.kind:
            cluster_name = context[len("kind-") :]
        if not cluster_name:
            self._say(not_building(context))
            return
        local = self._local_refs()
        if all(self._present(tools.docker, ref) for ref in local.values()):
            for ref in sorted(local.values()):
                self._say(f"loading {ref} into kind cluster {cluster_name}")
                self._run([tools.kind, "load", "docker-image", ref, "--name", cluster_name], timeout=900)
            self._record.save(images=local)
            return
        build_sample(tools, self._sample_dir, self._run, self._say)
        self._say(f"loading {SAMPLE_IMAGE} into kind cluster {cluster_name}")
        self._run([tools.kind, "load", "docker-image", SAMPLE_IMAGE, "--name", cluster_name], timeout=600)

    def _local_refs(self) -> dict[str, str]:
        """The manifests' sample image and Locust -> meshproof's own builds of them."""
        from harness.backends.kube.kind import meshimages

        return {
            SAMPLE_IMAGE: meshimages.ref_of("sample", self.settings.istio_version),
            "locust": meshimages.ref_of("locust", self.settings.istio_version),
        }

    def _present(self, docker: str, ref: str) -> bool:
        out = self._run([docker, "image", "inspect", "--format", "{{.Id}}", ref], timeout=60, check=False)
        return out.returncode == 0

    def localized(self, objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Nothing in the Istio namespace (the control plane is the user's: Jaeger and the mesh-wide
        Telemetry of the manifests are left out); injected namespaces labelled for the revision in
        use; Gateways selecting meshproof's own ingress gateway; pod templates annotated with the
        Envoy statistics the suites read (the mesh config that would include them is the user's);
        the images the record names (built here or from the user's registry)."""
        from harness.backends.kube.kind import meshimages

        ns = istio_install.ISTIO_NAMESPACE
        if skipped := installed.namespaced_in(objs, ns):
            self._say(f"not applying into {ns} (the cluster's control plane): {', '.join(skipped)}")
        keep = [o for o in objs if (o.get("metadata") or {}).get("namespace") != ns]
        keep = own_gateway.select_own(installed.relabelled(keep, self.revision))
        # the cluster's mesh config trims Envoy's stats: meshproof's proxies keep the suites' evidence
        keep = installed.with_proxy_config(keep, {"proxyStatsMatcher": proxy_stats_matcher()})
        images = {k: v for k, v in (self._record.info.get("images") or {}).items() if k != "locust"}
        if not images:
            return keep
        keep = meshimages.localize(keep, images)
        if self.settings.image_registry:  # pulled from the registry, not loaded into the nodes
            for o in keep:
                spec = ((o.get("spec") or {}).get("template") or {}).get("spec") or {}
                for c in spec.get("containers") or []:
                    if c.get("image") in images.values():
                        c["imagePullPolicy"] = "IfNotPresent"
        return keep

    @property
    def revision(self) -> str:
        return self._revision or str(self._record.info.get("revision") or installed.DEFAULT_REVISION)

    def record_new(self, api: KubeApi, objs: Iterable[Mapping[str, Any]]) -> None:
        """Note the objects about to be created, *before* creating them, so that ``down`` removes
        exactly those even when applying fails half-way."""
        known = {tuple(k) for k in self._record.info.get("created") or []}
        new = [_ref_key(ref_of(o)) for o in objs if api.get(ref_of(o)) is None]
        self._record.save(created=[list(k) for k in sorted(known | set(new))])

    def ingress_url(self, info: Mapping[str, Any]) -> str:
        return ""  # a port-forward to an ingress gateway pod

    @property
    def locust_image(self) -> str:
        """meshproof's Locust image when ``up`` loaded it or names it in a registry ("": the default)."""
        return str((self._record.info.get("images") or {}).get("locust") or "")

    def teardown(self, info: Mapping[str, Any], connect: Callable[[], KubeApi]) -> None:
        """Delete the objects this backend created (the record's ``created``), nothing else, and wait
        until they are gone: a Namespace stays (Terminating) until its contents are deleted, and a
        cluster listed right after ``down`` must look as it did before ``up``. First the pytest-xdist
        workers' copies of the sample: their Namespaces (workercopy.py)."""
        from harness.backends.kube import workercopy

        created = [ObjectRef(*k) for k in info.get("created") or []]
        if not created:
            return
        api = connect()
        if copies := workercopy.delete_copies(api, timeout=self.settings.ready_timeout, clock=self._clock):
            self._say(f"deleted the workers' copies of the sample: {', '.join(copies)}")
        objs = [
            {
                "apiVersion": r.api_version,
                "kind": r.kind,
                "metadata": {"name": r.name, "namespace": r.namespace},
            }
            for r in created
        ]
        self._say(f"deleting {len(objs)} objects this backend created")
        gone = delete_objects(api, objs)
        wait_gone(api, gone, timeout=self.settings.ready_timeout, clock=self._clock)


def _ref_key(ref: ObjectRef) -> tuple[str, str, str, str]:
    return (ref.api_version, ref.kind, ref.namespace, ref.name)
