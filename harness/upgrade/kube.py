"""The upgrade steps on kind/existing clusters, per istioctl's documented behaviour (planned here,
pure; run one at a time by :mod:`.kubecheck`, ``meshproof upgrade-check --backend kind|existing``).

The flow, per Istio's canary-upgrade guide:

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
from typing import TYPE_CHECKING, Any

from harness.backends.kube.istio_install import ISTIO_NAMESPACE, image_version
from harness.errors import SkewError, UserError
from harness.upgrade import skew

if TYPE_CHECKING:
    from harness.wait import Clock

REV_LABEL = "istio.io/rev"
INJECTION_LABEL = "istio-injection"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
# A restart is applied by a field manager of its own, owning the annotation only: applied by
# meshproof's (which applied the whole Deployment at `up`) it would drop the rest of the spec
# (seen on kind: "spec.selector: Required value").
RESTART_MANAGER = "meshproof-rollout"
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
    istioctl: str,
    *,
    revision: str = "",
    kubeconfig: str = "",
    context: str = "",
    timeout_s: int = 300,
    overlay: str = "",
) -> tuple[str, ...]:
    argv = [istioctl, "install", "--skip-confirmation", "--set", "profile=default"]
    if overlay:  # the same IstioOperator overlay the mesh was installed with (hub/tag, node port ...)
        argv += ["--filename", overlay]
    if revision:
        argv += ["--set", f"revision={revision}"]
    argv += cluster_args(kubeconfig, context)
    return (*argv, "--readiness-timeout", f"{timeout_s}s")


def cluster_args(kubeconfig: str = "", context: str = "") -> list[str]:
    out = []
    if kubeconfig:
        out += ["--kubeconfig", kubeconfig]
    if context:
        out += ["--context", context]
    return out


def uninstall_argv(
    istioctl: str, revision: str, *, kubeconfig: str = "", context: str = ""
) -> tuple[str, ...]:
    argv = [istioctl, "uninstall", "--revision", revision, "--skip-confirmation"]
    return (*argv, *cluster_args(kubeconfig, context))


def tag_argv(
    istioctl: str, tag: str, revision: str, *, kubeconfig: str = "", context: str = ""
) -> tuple[str, ...]:
    return (
        istioctl,
        "tag",
        "set",
        tag,
        "--revision",
        revision,
        "--overwrite",
        *cluster_args(kubeconfig, context),
    )


def namespace_label(namespace: str, revision: str) -> dict[str, Any]:
    """Server-side-apply body moving a namespace to ``revision`` (or to a revision tag's name).

    Applied with meshproof's field manager, which applied the namespace's labels at ``up``: a label
    it owned and no longer names (``istio-injection``) is removed by the API server, which is the
    documented ``kubectl label namespace NS istio-injection- istio.io/rev=REV``. A label another
    manager owns stays, and :func:`namespace_problem` reports it after the apply."""
    return namespace_labels(namespace, {REV_LABEL: revision})


def namespace_labels(namespace: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """Server-side-apply body setting exactly ``labels`` of meshproof's on a namespace (a rollback
    puts the labels it had before the move back)."""
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": dict(labels)}}


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
    rev_from: str | None = None,
    overlay: str = "",
    kubeconfig: str = "",
    context: str = "",
    timeout_s: int = 300,
) -> KubePlan:
    """The steps of an upgrade: install, per-namespace move + restarts, cleanup (pure).

    ``rev_from``: the revision FROM runs as (``default`` for an install without one; by default
    the release's revision name); ``overlay``: the IstioOperator file the mesh was installed with,
    passed to TO's ``istioctl install`` as well (its hub/tag name TO's images)."""
    skew.check_upgrade(from_label, to_label)
    rev_from = skew.revision_of(from_label) if rev_from is None else rev_from
    rev_to = skew.revision_of(to_label)
    where = {"kubeconfig": kubeconfig, "context": context}
    steps: list[KubeStep] = []
    if mode == "canary":
        argv = install_argv(istioctl_to, revision=rev_to, overlay=overlay, timeout_s=timeout_s, **where)
        steps.append(KubeStep(f"control-plane canary {rev_to}", "control-plane", argv, revision=rev_to))
        if tag:
            steps.append(
                KubeStep(
                    f"tag {tag} -> {rev_to}",
                    "control-plane",
                    tag_argv(istioctl_to, tag, rev_to, **where),
                    revision=rev_to,
                )
            )
    elif mode == "in-place":
        argv = install_argv(istioctl_to, overlay=overlay, timeout_s=timeout_s, **where)
        steps.append(KubeStep(f"control-plane {from_label}->{to_label}", "control-plane", argv))
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
                f"remove {rev_from}",
                "cleanup",
                uninstall_argv(istioctl_to, rev_from, **where),
                revision=rev_from,
            )
        )
    return KubePlan(from_label, to_label, mode, tuple(steps))


# ---- Ctrl-C in the middle: back to one working revision (pure) -----------------------------------


@dataclass(frozen=True)
class Recovery:
    """What an interrupted upgrade does before it exits, and where that leaves the cluster."""

    revision: str  # the one revision every namespace is left on
    release: str  # its Istio release label
    steps: tuple[KubeStep, ...]  # run in order (nothing: the cluster is already there)
    why: str

    def message(self) -> str:
        done = "undone by " + ", ".join(s.name for s in self.steps) if self.steps else "nothing to undo"
        return f"interrupted: the cluster is left on revision {self.revision} (Istio {self.release}): {self.why}; {done}"


def recovery(
    p: KubePlan,
    started: int,
    *,
    rev_from: str,
    labels_before: Mapping[str, Mapping[str, str]],
    deployments: Mapping[str, Sequence[str]],
    when: str,
    tag_before: str = "",
    reinstall_from: Sequence[str] = (),
) -> Recovery:
    """The decision on Ctrl-C, given the index of the step that had started (-1: none).

    - in-place: there is only one revision, whatever istioctl had done; nothing is undone (a FROM
      sidecar on a TO istiod is within the skew rule), the reading after says which istiod runs;
    - canary, before the removal of FROM started: back to FROM, Istio's documented rollback: every
      namespace that was moved gets its labels back (or the tag goes back to FROM), its Deployments
      restart on FROM; FROM's install runs again (``reinstall_from``: the gateway TO's install took
      over goes back to FROM), then TO's revision is uninstalled;
    - canary, once the removal of FROM started: forward to TO (the removal is run again: it is
      idempotent, and FROM may be half gone)."""
    rev_to = skew.revision_of(p.to_label)
    if p.mode != "canary":
        return Recovery(
            "default",
            p.to_label if started >= 0 else p.from_label,
            (),
            "an in-place upgrade has one revision; sidecars of either release work with its istiod"
            if started >= 0
            else "the upgrade had not started",
        )
    if started < 0:
        return Recovery(rev_from, p.from_label, (), "the upgrade had not started")
    current = p.steps[min(started, len(p.steps) - 1)]
    if current.kind == "cleanup":
        return Recovery(rev_to, p.to_label, (current,), f"the removal of {rev_from} had started")
    install, *rest = p.steps
    istioctl = install.argv[0]
    where = _where(install.argv)
    back: list[KubeStep] = []
    tagged = [s for s in rest if s.kind == "control-plane" and s.argv[1:3] == ("tag", "set")]
    if tagged and p.steps.index(tagged[0]) <= started:
        tag = tagged[0].argv[3]
        back.append(
            KubeStep(
                f"tag {tag} -> {tag_before or rev_from}",
                "control-plane",
                tag_argv(istioctl, tag, tag_before or rev_from, **where),
            )
        )
    moved = [s for i, s in enumerate(p.steps) if s.kind == "data-plane" and i <= started]
    for s in moved:
        bodies: list[Mapping[str, Any]] = []
        if not tagged:
            bodies.append(namespace_labels(s.namespace, labels_before.get(s.namespace, {})))
        bodies += [restart_body(s.namespace, d, when) for d in deployments.get(s.namespace, ())]
        back.append(
            KubeStep(
                f"namespace {s.namespace} back to {rev_from}",
                "data-plane",
                apply=tuple(bodies),
                namespace=s.namespace,
                revision=rev_from,
            )
        )
    if reinstall_from:
        # the canary's install upgraded the ingress gateway in place: it is TO's now, and
        # `istioctl uninstall --revision TO` would remove it (istioctl warns so, seen on kind);
        # FROM's own install, as `up` ran it, takes it back to FROM first
        back.append(
            KubeStep(
                f"control-plane {p.from_label} again",
                "control-plane",
                tuple(reinstall_from),
                revision=rev_from,
            )
        )
    back.append(
        KubeStep(f"remove {rev_to}", "cleanup", uninstall_argv(istioctl, rev_to, **where), revision=rev_to)
    )
    why = (
        f"{len(moved)} namespace(s) had moved to {rev_to}" if moved else f"no namespace had moved to {rev_to}"
    )
    return Recovery(rev_from, p.from_label, tuple(back), why)


def _where(argv: Sequence[str]) -> dict[str, str]:
    out = {}
    for flag, key in (("--kubeconfig", "kubeconfig"), ("--context", "context")):
        if flag in argv:
            out[key] = argv[list(argv).index(flag) + 1]
    return out


# ---- running a plan (written against the KubeApi protocol) ----------------------------------------


@dataclass(frozen=True)
class StepResult:
    name: str
    kind: str
    wall_s: float
    detail: Mapping[str, Any] = field(default_factory=dict)


def run_step(
    step: KubeStep,
    mode: str,
    api: Any,  # harness.backends.kube.api.KubeApi
    run: Any,  # harness.backends.kube.tools.Runner
    *,
    control_plane_version: Callable[[str], str],  # revision ("" = default) -> istiod version
    rollout_timeout: float = 300.0,
    clock: Any = None,
    check_skew: bool = True,
) -> dict[str, Any]:
    """One step: its istioctl command (whose failure is raised as istioctl reported it), or its
    applies. A data-plane step checks the skew rule against the pods about to restart first, and
    after the relabel that the namespace will really move (``istio-injection`` wins over the
    revision label); then it waits until every restarted Deployment has rolled out."""
    from harness import wait
    from harness.backends.kube.api import ObjectRef
    from harness.backends.kube.readiness import deployment_status

    detail: dict[str, Any] = {}
    clock = wait.REAL_CLOCK if clock is None else clock
    if step.argv:
        run(list(step.argv), timeout=rollout_timeout + 300)
        detail["istioctl"] = " ".join(step.argv[1:3])
    if step.kind != "data-plane":
        # istioctl returns once the new pods are Ready; the pods they replace (istiod, the gateway,
        # in the namespace istioctl installs them into) still drain and exit after that, and what
        # that costs belongs to this step's phase
        detail["settled_s"] = _replaced_pods_gone(api, ISTIO_NAMESPACE, rollout_timeout, clock)
        return detail
    if check_skew:
        cp = control_plane_version(step.revision if mode == "canary" else "")
        problems = skew_problems(api.list("v1", "Pod", step.namespace), cp)
        if problems:
            raise SkewError("; ".join(problems))
    for body in step.apply:
        if body.get("kind") == "Deployment":
            api.apply(body, field_manager=RESTART_MANAGER)
        else:
            api.apply(body)
        if body.get("kind") == "Namespace" and REV_LABEL in body["metadata"]["labels"]:
            problem = namespace_problem(api.get(ObjectRef("v1", "Namespace", "", step.namespace)) or {})
            if problem:
                raise UserError(problem)
    restarted = [b["metadata"]["name"] for b in step.apply if b.get("kind") == "Deployment"]
    for name in restarted:
        ref = ObjectRef("apps/v1", "Deployment", step.namespace, name)

        def rolled(ref: Any = ref) -> bool:
            return bool(deployment_status(api.get(ref) or {})[0])

        wait.until(
            rolled,
            what=f"rollout of {ref}",
            timeout=rollout_timeout,
            interval=1.0,
            hint=f"kubectl -n {step.namespace} rollout status deployment/{name}",
            clock=clock,
        )
    detail["restarted"] = restarted
    detail["settled_s"] = _replaced_pods_gone(api, step.namespace, rollout_timeout, clock)
    return detail


def _replaced_pods_gone(api: Any, namespace: str, timeout: float, clock: Clock) -> float:
    """Wait until no pod of ``namespace`` is terminating; return the seconds waited. A Deployment
    counts as rolled out while its old pods still drain (the sample's preStop sleep, Envoy's drain
    on exit), and requests they lose then are the step's cost, not the next phase's."""
    from harness import wait
    from harness.backends.kube.pods import name_of

    t0 = clock.now()

    def gone() -> bool:
        last = [
            name_of(p)
            for p in api.list("v1", "Pod", namespace)
            if (p.get("metadata") or {}).get("deletionTimestamp")
        ]
        if last:
            raise _Terminating(f"still terminating: {', '.join(sorted(last))}")
        return True

    wait.until(
        gone,
        what=f"the pods the step replaced in {namespace} to be gone",
        timeout=timeout,
        interval=1.0,
        hint=f"kubectl -n {namespace} get pods",
        retry_on=(_Terminating,),
        clock=clock,
    )
    return round(clock.now() - t0, 3)


class _Terminating(Exception):
    """Pods of the namespace still terminating (what the wait saw last)."""


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
    """Run the steps in order (:func:`run_step`), each timed."""
    import time

    out = []
    for step in p.steps:
        on_step(step)
        t0 = time.monotonic()
        detail = run_step(
            step,
            p.mode,
            api,
            run,
            control_plane_version=control_plane_version,
            rollout_timeout=rollout_timeout,
            clock=clock,
        )
        detail.pop("istioctl", None)
        out.append(StepResult(step.name, step.kind, round(time.monotonic() - t0, 3), detail))
    return out
