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
from harness.backends.kube import istio_install, netloss
from harness.backends.kube.api import KubeApi, ObjectRef
from harness.backends.kube.apply import SAMPLE_IMAGE, build_image, delete_objects, ref_of
from harness.backends.kube.engine import Engine
from harness.backends.kube.tools import ToolPaths, minor, preflight, same_minor
from harness.mesh import Workload
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

    def install_istio(self, api: KubeApi, tools: ToolPaths, kubeconfig: str, context: str) -> None:
        """Istio of the pinned release, running (installed here, or checked)."""
        ...

    def load_sample(self, tools: ToolPaths, context: str) -> None:
        """The sample service's image, where the cluster can run it."""
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
    ) -> None:
        self.settings = settings
        self.release = ISTIO_RELEASES[settings.istio_version]
        self._record, self._say = record, say
        self._which, self._run = which, run
        self._sample_dir, self._clock = sample_dir, clock
        self._engine = engine

    node_shell = False  # whether meshproof may run commands on the cluster's nodes

    def pod_network(self, w: Workload, pod: Callable[[], Mapping[str, Any] | None]) -> netloss.Runner:
        return netloss.pod_network(
            w, pod, kind=self.node_shell, backend=self.name, docker=self._which("docker"), run=self._run
        )


class ExistingCluster(ClusterBase):
    """A cluster someone else made, by kubeconfig context; see the module docstring. It never touches
    a Docker engine."""

    name = "existing"

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

    def install_istio(self, api: KubeApi, tools: ToolPaths, kubeconfig: str, context: str) -> None:
        """Istio must already run: never installed or changed here; another minor line is a warning."""
        istiod = istio_install.require_installed(api, self.release)
        if istiod.version and not same_minor(istiod.version, minor(self.release)):
            self._say(f"warning: istiod runs Istio {istiod.version}, meshproof pins {self.release.label}")

    def load_sample(self, tools: ToolPaths, context: str) -> None:
        """Built and ``kind load``-ed when the context is a kind cluster and docker and kind are here;
        otherwise the cluster must be able to pull it."""
        cluster_name = ""
        if context.startswith("kind-") and tools.docker and tools.kind:
            cluster_name = context[len("kind-") :]
        if not cluster_name:
            self._say(not_building(context))
            return
        build_sample(tools, self._sample_dir, self._run, self._say)
        self._say(f"loading {SAMPLE_IMAGE} into kind cluster {cluster_name}")
        self._run([tools.kind, "load", "docker-image", SAMPLE_IMAGE, "--name", cluster_name], timeout=600)

    def localized(self, objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return objs

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
        return ""

    def teardown(self, info: Mapping[str, Any], connect: Callable[[], KubeApi]) -> None:
        """Delete the objects this backend created (the record's ``created``), nothing else."""
        created = [ObjectRef(*k) for k in info.get("created") or []]
        if not created:
            return
        api = connect()
        objs = [
            {
                "apiVersion": r.api_version,
                "kind": r.kind,
                "metadata": {"name": r.name, "namespace": r.namespace},
            }
            for r in created
        ]
        self._say(f"deleting {len(objs)} objects this backend created")
        delete_objects(api, objs)


def _ref_key(ref: ObjectRef) -> tuple[str, str, str, str]:
    return (ref.api_version, ref.kind, ref.namespace, ref.name)
