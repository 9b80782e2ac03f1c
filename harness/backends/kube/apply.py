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

from harness import paths, proc, wait
from harness.backends.kube.api import KubeApi, ObjectRef
from harness.backends.kube.propagation import ConfigExpectation
from harness.errors import UserError

SAMPLE_IMAGE = "meshproof/microservice-1:dev"
SAMPLE_SERVICE_DIR = paths.SAMPLE_SERVICE

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


def read_manifests(path: Path, traffic_api: str) -> list[dict[str, Any]]:
    """The manifests' objects ``up`` applies when the mesh routes with ``traffic_api``
    (:func:`harness.istio.traffic_api.select`; ConfigError naming an unknown annotation value)."""
    from harness.istio import traffic_api as api
    from harness.istio.loader import load_paths

    return [with_namespace(d.body) for d in api.select(load_paths([path]), traffic_api)]


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
    api: KubeApi, refs: Sequence[ObjectRef], *, timeout: float, clock: wait.Clock = wait.REAL_CLOCK
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


# ---- image ----------------------------------------------------------------------------------


def build_argv(docker: str, context_dir: Path, tag: str = SAMPLE_IMAGE) -> list[str]:
    return [docker, "build", "-t", tag, str(context_dir)]


def build_image(
    docker: str,
    *,
    context_dir: Path = SAMPLE_SERVICE_DIR,
    tag: str = SAMPLE_IMAGE,
    run: proc.Runner = proc.run,
) -> None:
    if not (context_dir / "Dockerfile").is_file():
        raise UserError(
            f"no Dockerfile in {context_dir}: cannot build {tag}. Fix: run meshproof from its source tree "
            "(sample-service/ next to harness/)"
        )
    run(build_argv(docker, context_dir, tag), timeout=900)


ISTIO_KINDS = (
    ("networking.istio.io/v1", "Gateway"),
    ("networking.istio.io/v1", "VirtualService"),
    ("networking.istio.io/v1", "DestinationRule"),
    ("networking.istio.io/v1", "ServiceEntry"),
    ("networking.istio.io/v1", "Sidecar"),
    ("networking.istio.io/v1", "WorkloadEntry"),
    ("networking.istio.io/v1alpha3", "EnvoyFilter"),
    ("security.istio.io/v1", "AuthorizationPolicy"),
    ("security.istio.io/v1", "PeerAuthentication"),
    ("security.istio.io/v1", "RequestAuthentication"),
    ("telemetry.istio.io/v1", "Telemetry"),
)
GATEWAY_API_KINDS = (
    ("gateway.networking.k8s.io/v1", "GatewayClass"),
    ("gateway.networking.k8s.io/v1", "Gateway"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("gateway.networking.k8s.io/v1", "GRPCRoute"),
)


def config_expectations(applied: Iterable[Applied]) -> list[ConfigExpectation]:
    """istiod must hold these Istio objects at their applied resourceVersions."""
    return [
        ConfigExpectation(a.ref.group, a.ref.kind, a.ref.namespace, a.ref.name, a.after)
        for a in applied
        if a.ref.group in ISTIO_GROUPS
    ]
