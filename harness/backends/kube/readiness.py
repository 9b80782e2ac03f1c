"""Readiness on a cluster: a Deployment's rollout status, pods stuck waiting, waiting for both.

Used by the manifests apply (the sample's Deployments) and the Istio install (istiod).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness import wait
from harness.backends.kube.api import KubeApi, ObjectRef
from harness.errors import BackendError


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
    api: KubeApi, refs: Sequence[ObjectRef], *, timeout: float, clock: wait.Clock = wait.REAL_CLOCK
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
