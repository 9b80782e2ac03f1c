"""The upgrade flow on kind/existing clusters, written against istioctl's documented behaviour.

Not run against a real cluster yet (no Docker/kind/istioctl on the machines this was built on);
its pure parts (below the line) are unit-tested. The flow, per Istio's canary-upgrade guide:

- canary: ``istioctl install --set revision=B`` (TO's istioctl) beside revision A; per namespace
  (one at a time): label ``istio.io/rev=B`` (``istio-injection`` must be absent: it wins over the
  revision label), or move a revision tag (``istioctl tag set TAG --revision B --overwrite``);
  restart the namespace's Deployments (the ``kubectl.kubernetes.io/restartedAt`` annotation, what
  ``kubectl rollout restart`` sets) and wait for their rollout; finally
  ``istioctl uninstall --revision A``;
- in-place: TO's ``istioctl install`` over the existing control plane, then the same restarts.

Before each restart the skew rule is checked against the pods' sidecar versions (their
``istio-proxy`` image tags) and the revision's istiod version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.backends.kube.istio_install import image_version
from harness.errors import SkewError, UserError
from harness.upgrade import skew

REV_LABEL = "istio.io/rev"
INJECTION_LABEL = "istio-injection"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
PROXY_CONTAINER = "istio-proxy"


@dataclass(frozen=True)
class KubeStep:
    name: str  # phase name in the report
    kind: str  # control-plane | data-plane | cleanup
    argv: tuple[str, ...] = ()  # an istioctl command, or
    apply: tuple[Mapping[str, Any], ...] = ()  # server-side-apply bodies
    namespace: str = ""  # for data-plane steps: the namespace moved
    revision: str = ""  # the revision the step targets


@dataclass(frozen=True)
class KubePlan:
    from_label: str
    to_label: str
    mode: str
    steps: tuple[KubeStep, ...] = field(default_factory=tuple)


def install_argv(
    istioctl: str, *, revision: str = "", kubeconfig: str = "", context: str = "", timeout_s: int = 300
) -> tuple[str, ...]:
    argv = [istioctl, "install", "--skip-confirmation", "--set", "profile=default"]
    if revision:
        argv += ["--set", f"revision={revision}"]
    if kubeconfig:
        argv += ["--kubeconfig", kubeconfig]
    if context:
        argv += ["--context", context]
    return (*argv, "--readiness-timeout", f"{timeout_s}s")


def uninstall_argv(
    istioctl: str, revision: str, *, kubeconfig: str = "", context: str = ""
) -> tuple[str, ...]:
    argv = [istioctl, "uninstall", "--revision", revision, "--skip-confirmation"]
    if kubeconfig:
        argv += ["--kubeconfig", kubeconfig]
    if context:
        argv += ["--context", context]
    return tuple(argv)


def tag_argv(istioctl: str, tag: str, revision: str) -> tuple[str, ...]:
    return (istioctl, "tag", "set", tag, "--revision", revision, "--overwrite")


def namespace_label(namespace: str, revision: str) -> dict[str, Any]:
    """Server-side-apply body moving a namespace to ``revision`` (or to a revision tag's name)."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {REV_LABEL: revision}},
    }


def namespace_problem(ns: Mapping[str, Any]) -> str:
    """Why relabelling would not move this namespace ("" if it would)."""
    labels = (ns.get("metadata") or {}).get("labels") or {}
    if INJECTION_LABEL in labels:
        name = (ns.get("metadata") or {}).get("name", "?")
        return (
            f"namespace {name} has {INJECTION_LABEL}={labels[INJECTION_LABEL]}, which takes precedence over "
            f"{REV_LABEL}. Fix: kubectl label namespace {name} {INJECTION_LABEL}-"
        )
    return ""


def restart_body(namespace: str, deployment: str, when: str) -> dict[str, Any]:
    """What ``kubectl rollout restart`` changes, as a server-side-apply body."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment, "namespace": namespace},
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: when}}}},
    }


def proxy_version(pod: Mapping[str, Any]) -> str:
    """The sidecar's version from its ``istio-proxy`` image tag ("" when there is no sidecar)."""
    spec = pod.get("spec") or {}
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        if c.get("name") == PROXY_CONTAINER:
            return image_version(str(c.get("image", "")))
    return ""


def minor_label(version: str) -> str:
    """``1.30.2`` -> the pinned release of that minor (``1.30-dev``) when there is one, else ``version``."""
    from harness.versions import ISTIO_RELEASES

    parts = version.split(".")
    for label, rel in ISTIO_RELEASES.items():
        if len(parts) >= 2 and parts[:2] == [str(rel.minor[0]), str(rel.minor[1])]:
            return label
    return version


def skew_problems(pods: Iterable[Mapping[str, Any]], control_plane_version: str) -> list[str]:
    """Pods whose sidecar the control plane of ``control_plane_version`` may not serve."""
    out = []
    cp = minor_label(control_plane_version)
    for pod in pods:
        v = proxy_version(pod)
        if not v:
            continue
        meta = pod.get("metadata") or {}
        try:
            skew.check_step(cp, minor_label(v), f"pod {meta.get('namespace')}/{meta.get('name')}")
        except (SkewError, UserError) as e:
            out.append(str(e))
    return out


def plan(
    from_label: str,
    to_label: str,
    mode: str,
    namespaces: Sequence[str],
    deployments: Mapping[str, Sequence[str]],
    *,
    istioctl_to: str,
    when: str,
    tag: str = "",
) -> KubePlan:
    """The steps of an upgrade: install, per-namespace move + restarts, cleanup (pure)."""
    skew.check_upgrade(from_label, to_label)
    rev_from, rev_to = skew.revision_of(from_label), skew.revision_of(to_label)
    steps: list[KubeStep] = []
    if mode == "canary":
        steps.append(
            KubeStep(
                f"control-plane canary {rev_to}",
                "control-plane",
                install_argv(istioctl_to, revision=rev_to),
                revision=rev_to,
            )
        )
        if tag:
            steps.append(
                KubeStep(
                    f"tag {tag} -> {rev_to}",
                    "control-plane",
                    tag_argv(istioctl_to, tag, rev_to),
                    revision=rev_to,
                )
            )
    elif mode == "in-place":
        steps.append(
            KubeStep(f"control-plane {from_label}->{to_label}", "control-plane", install_argv(istioctl_to))
        )
    else:
        raise UserError(f"unknown mode {mode!r}. Fix: in-place or canary")
    for ns in namespaces:
        bodies: list[Mapping[str, Any]] = []
        if mode == "canary" and not tag:
            bodies.append(namespace_label(ns, rev_to))
        bodies += [restart_body(ns, d, when) for d in deployments.get(ns, ())]
        steps.append(
            KubeStep(f"namespace {ns}", "data-plane", apply=tuple(bodies), namespace=ns, revision=rev_to)
        )
    if mode == "canary":
        steps.append(
            KubeStep(
                f"remove {rev_from}", "cleanup", uninstall_argv(istioctl_to, rev_from), revision=rev_from
            )
        )
    return KubePlan(from_label, to_label, mode, tuple(steps))


# ---- running a plan (written against the KubeApi protocol; never run on a real cluster yet) ----


@dataclass(frozen=True)
class StepResult:
    name: str
    kind: str
    wall_s: float
    detail: Mapping[str, Any] = field(default_factory=dict)


def run_plan(
    p: KubePlan,
    api: Any,  # harness.backends.kube.api.KubeApi
    run: Any,  # harness.backends.kube.tools.Runner
    *,
    control_plane_version: Callable[[str], str],  # revision ("" = default) -> istiod version
    rollout_timeout: float = 300.0,
    clock: Any = None,
    on_step: Callable[[KubeStep], None] = lambda _s: None,
) -> list[StepResult]:
    """Run the steps in order; before each data-plane step, the skew rule against the pods that
    are about to restart; after it, wait until every restarted Deployment has rolled out."""
    import time

    from harness import wait
    from harness.backends.kube.api import ObjectRef
    from harness.backends.kube.readiness import deployment_status

    out = []
    for step in p.steps:
        on_step(step)
        t0 = time.monotonic()
        detail: dict[str, Any] = {}
        if step.argv:
            run(list(step.argv), timeout=rollout_timeout + 300)
        if step.kind == "data-plane":
            ns_obj = api.get(ObjectRef("v1", "Namespace", "", step.namespace)) or {}
            problem = namespace_problem(ns_obj) if p.mode == "canary" else ""
            if problem:
                raise UserError(problem)
            cp = control_plane_version(step.revision if p.mode == "canary" else "")
            problems = skew_problems(api.list("v1", "Pod", step.namespace), cp)
            if problems:
                raise SkewError("; ".join(problems))
            for body in step.apply:
                api.apply(body)
            restarted = [b["metadata"]["name"] for b in step.apply if b.get("kind") == "Deployment"]
            for name in restarted:
                ref = ObjectRef("apps/v1", "Deployment", step.namespace, name)

                def rolled(ref: Any = ref) -> bool:
                    return bool(deployment_status(api.get(ref) or {})[0])

                kw = {"clock": clock} if clock is not None else {}
                wait.until(rolled, what=f"rollout of {ref}", timeout=rollout_timeout, interval=1.0, **kw)
            detail["restarted"] = restarted
        out.append(StepResult(step.name, step.kind, round(time.monotonic() - t0, 3), detail))
    return out
