"""Manifests onto a cluster: read, order, server-side apply, delete, wait for Deployments; image build.

Objects are applied in dependency order (Namespaces first, Istio config last) with server-side
apply, and deleted in the reverse order. :func:`apply_objects` reports each object's
resourceVersion before and after, so callers know what actually changed (an unchanged object
needs no propagation wait).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import proc, wait
from harness.backends.kube.api import KubeApi, ObjectRef
from harness.backends.kube.tools import Runner
from harness.errors import BackendError, UserError

Clock = wait.Clock

SAMPLE_IMAGE = "meshproof/microservice-1:dev"
SAMPLE_SERVICE_DIR = Path(__file__).resolve().parents[3] / "sample-service"

# Kinds that have no namespace; anything else without metadata.namespace lands in "default".
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "Node",
        "PersistentVolume",
        "StorageClass",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "PriorityClass",
        "IngressClass",
        "GatewayClass",
        "APIService",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "RuntimeClass",
    }
)

# Lower applies first. Kinds not listed come after workloads; Istio config comes last, after the
# Services and workloads it refers to (istiod accepts it either way, but the order keeps
# "not found" warnings out of its logs).
_ORDER = [
    "Namespace",
    "CustomResourceDefinition",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "Job",
    "Pod",
]
_RANK = {k: i for i, k in enumerate(_ORDER)}
ISTIO_GROUPS = frozenset(
    {"networking.istio.io", "security.istio.io", "telemetry.istio.io", "extensions.istio.io"}
)


def is_istio(obj: Mapping[str, Any]) -> bool:
    return str(obj.get("apiVersion", "")).rpartition("/")[0] in ISTIO_GROUPS


def _rank(obj: Mapping[str, Any]) -> int:
    if is_istio(obj):
        return len(_ORDER) + 1
    return _RANK.get(str(obj.get("kind", "")), len(_ORDER))


def apply_order(objs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Objects in apply order (stable within a kind)."""
    return [dict(o) for o in sorted(objs, key=_rank)]


def delete_order(objs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return list(reversed(apply_order(objs)))


def with_namespace(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy with ``metadata.namespace`` set to ``default`` for namespaced kinds that lack one."""
    out = copy.deepcopy(dict(obj))
    meta = dict(out.get("metadata") or {})
    if str(out.get("kind", "")) not in CLUSTER_SCOPED and not meta.get("namespace"):
        meta["namespace"] = "default"
    out["metadata"] = meta
    return out


def read_objects(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Every object of the YAML files/directories (ConfigError listing every problem)."""
    from harness.istio.loader import load_paths

    return [with_namespace(d.body) for d in load_paths(list(paths))]


def ref_of(obj: Mapping[str, Any]) -> ObjectRef:
    return ObjectRef.of(with_namespace(obj))


@dataclass(frozen=True)
class Applied:
    ref: ObjectRef
    before: str | None  # resourceVersion before the apply; None when the object was new
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


def apply_objects(api: KubeApi, objs: Iterable[Mapping[str, Any]]) -> list[Applied]:
    out = []
    for obj in apply_order(with_namespace(o) for o in objs):
        ref = ObjectRef.of(obj)
        old = api.get(ref)
        live = api.apply(obj)
        out.append(
            Applied(
                ref,
                str(old["metadata"]["resourceVersion"]) if old else None,
                str((live.get("metadata") or {}).get("resourceVersion", "")),
            )
        )
    return out


def delete_objects(api: KubeApi, objs: Iterable[Mapping[str, Any]]) -> list[ObjectRef]:
    """Delete in reverse apply order; returns the objects that existed."""
    gone = []
    for obj in delete_order(with_namespace(o) for o in objs):
        ref = ObjectRef.of(obj)
        if api.delete(ref):
            gone.append(ref)
    return gone


def wait_gone(
    api: KubeApi, refs: Sequence[ObjectRef], *, timeout: float, clock: Clock = wait.REAL_CLOCK
) -> None:
    left: list[ObjectRef] = []

    def check() -> bool:
        left[:] = [r for r in refs if api.get(r) is not None]
        return not left

    try:
        wait.until(
            check,
            what=f"{len(refs)} deleted objects to disappear",
            timeout=timeout,
            interval=1.0,
            hint="objects with finalizers (e.g. Namespaces) can take a while",
            clock=clock,
        )
    except BaseException as e:
        e.add_note("still present: " + ", ".join(str(r) for r in left[:5]))
        raise


# ---- readiness ------------------------------------------------------------------------------


def deployment_status(dep: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether a Deployment's rollout is complete (like ``kubectl rollout status``), and why not."""
    meta = dep.get("metadata") or {}
    spec = dep.get("spec") or {}
    st = dep.get("status") or {}
    want = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    generation = int(meta.get("generation") or 0)
    observed = int(st.get("observedGeneration") or 0)
    if observed < generation:
        return False, f"controller has not seen generation {generation} yet (observed {observed})"
    updated = int(st.get("updatedReplicas") or 0)
    total = int(st.get("replicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    if updated < want:
        return False, f"{updated}/{want} replicas updated"
    if total > updated:
        return False, f"{total - updated} old replicas still terminating"
    if available < want:
        return False, f"{available}/{want} replicas available"
    return True, f"{available}/{want} replicas available"


FATAL_WAITING = frozenset({"ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError"})
PULL_WAITING = frozenset({"ErrImagePull", "ImagePullBackOff"})


@dataclass(frozen=True)
class PodProblem:
    pod: str
    container: str
    reason: str
    message: str
    image: str
    fatal: bool

    def __str__(self) -> str:
        return f"{self.pod}/{self.container}: {self.reason} {self.message}".strip()


def pod_problems(pod: Mapping[str, Any], *, local_image_prefix: str = "meshproof/") -> list[PodProblem]:
    """Containers stuck waiting. Fatal: will not heal by waiting (bad image name or config, or a
    pull of an image that only exists locally and was not loaded into the cluster)."""
    name = str((pod.get("metadata") or {}).get("name", ""))
    st = pod.get("status") or {}
    out = []
    for cs in list(st.get("initContainerStatuses") or []) + list(st.get("containerStatuses") or []):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        if not reason or reason in ("ContainerCreating", "PodInitializing"):
            continue
        image = str(cs.get("image", ""))
        fatal = reason in FATAL_WAITING or (reason in PULL_WAITING and image.startswith(local_image_prefix))
        out.append(
            PodProblem(
                name, str(cs.get("name", "")), reason, str(waiting.get("message") or "")[:200], image, fatal
            )
        )
    return out


def selector_string(match_labels: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(match_labels.items()))


def wait_deployments_ready(
    api: KubeApi, refs: Sequence[ObjectRef], *, timeout: float, clock: Clock = wait.REAL_CLOCK
) -> None:
    """Block until every Deployment in ``refs`` has rolled out; fail fast on pods that cannot start."""
    deps = [r for r in refs if r.kind == "Deployment"]
    if not deps:
        return
    last: list[str] = []

    def check() -> bool:
        pending = []
        for ref in deps:
            dep = api.get(ref)
            if dep is None:
                pending.append(f"{ref}: not found")
                continue
            ok, why = deployment_status(dep)
            if ok:
                continue
            pending.append(f"{ref}: {why}")
            sel = selector_string(((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {})
            for pod in api.list("v1", "Pod", ref.namespace, sel) if sel else []:
                for p in pod_problems(pod):
                    if p.fatal:
                        raise BackendError(f"pod {ref.namespace}/{p} will not start. Fix: {_fix(p)}")
                    pending.append(f"  {ref.namespace}/{p}")
        last[:] = pending
        return not pending

    try:
        wait.until(
            check,
            what=f"{len(deps)} Deployments to be ready",
            timeout=timeout,
            interval=1.0,
            hint="`kubectl describe pod` on the pods named above",
            clock=clock,
        )
    except BaseException as e:
        if last:
            e.add_note("not ready:\n  " + "\n  ".join(last[:20]))
        raise


def _fix(p: PodProblem) -> str:
    if p.reason in PULL_WAITING or p.reason == "ErrImageNeverPull":
        return (
            f"image {p.image} exists only on this machine: load it into the cluster (`kind load docker-image "
            f"{p.image} --name <cluster>`) or push it to a registry the cluster pulls from"
        )
    if p.reason == "InvalidImageName":
        return f"correct the image name {p.image!r} in the manifest"
    return "check the ConfigMaps/Secrets the pod refers to (`kubectl describe pod`)"


# ---- image ----------------------------------------------------------------------------------


def build_argv(docker: str, context_dir: Path, tag: str = SAMPLE_IMAGE) -> list[str]:
    return [docker, "build", "-t", tag, str(context_dir)]


def build_image(
    docker: str, *, context_dir: Path = SAMPLE_SERVICE_DIR, tag: str = SAMPLE_IMAGE, run: Runner = proc.run
) -> None:
    if not (context_dir / "Dockerfile").is_file():
        raise UserError(
            f"no Dockerfile in {context_dir}: cannot build {tag}. Fix: run meshproof from its source tree "
            "(sample-service/ next to harness/)"
        )
    run(build_argv(docker, context_dir, tag), timeout=900)
