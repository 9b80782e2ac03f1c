"""The kube upgrade flow's pure parts: istioctl argv, revision labels, restarts, skew from pods."""

from __future__ import annotations

import pytest

from harness.errors import SkewError, UserError
from harness.upgrade import kube
from harness.wait import WaitTimeout
from tests.unit.kube.fakes import FakeClock


def pod(ns: str, name: str, image: str) -> dict[str, object]:
    return {
        "metadata": {"namespace": ns, "name": name},
        "spec": {"containers": [{"name": "app", "image": "x:1"}, {"name": "istio-proxy", "image": image}]},
    }


def test_canary_plan_installs_revision_moves_namespaces_one_at_a_time_then_removes_old() -> None:
    p = kube.plan(
        "1.30-dev",
        "1.31-dev",
        "canary",
        ["sample", "other-namespace"],
        {"sample": ["microservice-1-v1", "microservice-1-v2"], "other-namespace": ["client"]},
        istioctl_to="/bin/istioctl",
        when="2026-01-01T00:00:00Z",
    )
    names = [s.name for s in p.steps]
    assert names == [
        "control-plane canary 1-31-dev",
        "namespace sample",
        "namespace other-namespace",
        "remove 1-30-dev",
    ]
    assert "revision=1-31-dev" in p.steps[0].argv
    sample = p.steps[1].apply
    assert sample[0] == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "sample", "labels": {"istio.io/rev": "1-31-dev"}},
    }
    assert [b["metadata"]["name"] for b in sample[1:]] == ["microservice-1-v1", "microservice-1-v2"]
    annotations = sample[1]["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}
    assert p.steps[-1].argv[:4] == ("/bin/istioctl", "uninstall", "--revision", "1-30-dev")


def test_tagged_canary_moves_the_tag_not_the_labels() -> None:
    p = kube.plan(
        "1.30-dev",
        "1.31-dev",
        "canary",
        ["sample"],
        {"sample": ["d"]},
        istioctl_to="istioctl",
        when="t",
        tag="prod-stable",
    )
    assert p.steps[1].argv == (
        "istioctl",
        "tag",
        "set",
        "prod-stable",
        "--revision",
        "1-31-dev",
        "--overwrite",
    )
    assert all(b["kind"] == "Deployment" for b in p.steps[2].apply)


def test_in_place_plan_has_no_revision_and_no_cleanup() -> None:
    p = kube.plan(
        "1.30-dev", "1.31-dev", "in-place", ["sample"], {"sample": ["d"]}, istioctl_to="i", when="t"
    )
    assert [s.kind for s in p.steps] == ["control-plane", "data-plane"]
    assert not any("revision=" in a for a in p.steps[0].argv)


def test_downgrade_plan_is_refused() -> None:
    with pytest.raises(SkewError):
        kube.plan("1.31-dev", "1.30-dev", "canary", [], {}, istioctl_to="i", when="t")


def test_injection_label_blocks_the_revision_label() -> None:
    ns = {"metadata": {"name": "sample", "labels": {"istio-injection": "enabled"}}}
    assert "kubectl label namespace sample istio-injection-" in kube.namespace_problem(ns)
    assert kube.namespace_problem({"metadata": {"name": "x", "labels": {"istio.io/rev": "a"}}}) == ""


def test_skew_from_pod_sidecar_images() -> None:
    assert kube.proxy_version(pod("s", "p", "docker.io/istio/proxyv2:1.30.2-distroless")) == "1.30.2"
    assert kube.skew_problems([pod("s", "p", "istio/proxyv2:1.30.2")], "1.31.0") == []
    problems = kube.skew_problems([pod("s", "p", "istio/proxyv2:1.31.1")], "1.30.4")
    assert len(problems) == 1 and "pod s/p" in problems[0] and "behind" in problems[0]


class FakeApi:
    """Records applies; Deployments roll out at once; pods carry the given sidecar image."""

    def __init__(self, proxy_image: str, ns_labels: dict[str, str] | None = None) -> None:
        self.applied: list[dict[str, object]] = []
        self.managers: list[str] = []
        self.proxy_image = proxy_image
        self.ns_labels = ns_labels or {}

    def get(self, ref: object) -> dict[str, object]:
        if getattr(ref, "kind", "") == "Namespace":
            return {"metadata": {"name": ref.name, "labels": self.ns_labels}}  # type: ignore[attr-defined]
        return {
            "metadata": {"generation": 2},
            "spec": {"replicas": 1},
            "status": {"observedGeneration": 2, "updatedReplicas": 1, "replicas": 1, "availableReplicas": 1},
        }

    def list(
        self, api_version: str, kind: str, namespace: str = "", label_selector: str = ""
    ) -> list[dict[str, object]]:
        return [pod(namespace, "p-0", self.proxy_image)]

    def apply(self, obj: dict[str, object], field_manager: str = "meshproof") -> dict[str, object]:
        self.managers.append(field_manager)
        self.applied.append(obj)
        return obj


def test_run_plan_runs_istioctl_relabels_restarts_and_checks_skew_first() -> None:
    p = kube.plan(
        "1.30-dev", "1.31-dev", "canary", ["sample"], {"sample": ["d"]}, istioctl_to="istioctl", when="t"
    )
    api, ran = FakeApi("istio/proxyv2:1.30.2"), []
    results = kube.run_plan(
        p, api, lambda argv, **kw: ran.append(argv), control_plane_version=lambda rev: "1.31.0"
    )
    assert [r.name for r in results] == [s.name for s in p.steps]
    assert ran[0][:2] == ["istioctl", "install"] and ran[-1][:2] == ["istioctl", "uninstall"]
    assert [b["kind"] for b in api.applied] == ["Namespace", "Deployment"]
    # the restart by a manager of its own: meshproof's would drop the Deployment's spec
    assert api.managers == ["meshproof", "meshproof-rollout"]
    assert results[1].detail == {"restarted": ["d"], "settled_s": 0.0}
    assert "settled_s" in results[0].detail  # the control plane's step waits for its old pods too


class DrainingApi(FakeApi):
    """The restarted Deployment has rolled out, but an old pod of it terminates for ``polls`` looks."""

    def __init__(self, polls: int) -> None:
        super().__init__("istio/proxyv2:1.30.2")
        self.polls = polls

    def list(
        self, api_version: str, kind: str, namespace: str = "", label_selector: str = ""
    ) -> list[dict[str, object]]:
        pods = super().list(api_version, kind, namespace, label_selector)
        self.polls -= 1
        if self.polls >= 0:
            old = pod(namespace, "d-old", self.proxy_image)
            old["metadata"]["deletionTimestamp"] = "2026-12-07T00:54:37Z"  # type: ignore[index]
            pods.append(old)
        return pods


def test_a_step_ends_once_the_pods_it_replaced_are_gone() -> None:
    """In-place on kind the old gateway drained for 5 s after istioctl returned and the requests it
    lost were counted in the next phase (docs/UPGRADES.md): a step waits until no pod of its
    namespace is terminating."""
    p = kube.plan(
        "1.30-dev", "1.31-dev", "in-place", ["sample"], {"sample": ["d"]}, istioctl_to="i", when="t"
    )
    step = next(s for s in p.steps if s.kind == "data-plane")
    api = DrainingApi(polls=4)  # the skew check's list, then 3 looks that still see it
    detail = kube.run_step(
        step,
        "in-place",
        api,
        lambda argv, **kw: None,
        control_plane_version=lambda rev: "1.31.0",
        clock=FakeClock(),
    )
    assert detail["restarted"] == ["d"] and api.polls < 0
    assert detail["settled_s"] > 0  # on the step's clock: the looks that still saw the old pod


def test_a_pod_that_never_goes_fails_the_step_naming_it() -> None:
    p = kube.plan(
        "1.30-dev", "1.31-dev", "in-place", ["sample"], {"sample": ["d"]}, istioctl_to="i", when="t"
    )
    step = next(s for s in p.steps if s.kind == "data-plane")
    with pytest.raises(WaitTimeout, match="still terminating: d-old"):
        kube.run_step(
            step,
            "in-place",
            DrainingApi(polls=10**6),
            lambda argv, **kw: None,
            control_plane_version=lambda rev: "1.31.0",
            rollout_timeout=30,
            clock=FakeClock(),
        )


def test_run_plan_stops_before_restarting_pods_a_control_plane_cannot_serve() -> None:
    p = kube.plan(
        "1.30-dev", "1.31-dev", "in-place", ["sample"], {"sample": ["d"]}, istioctl_to="i", when="t"
    )
    api = FakeApi("istio/proxyv2:1.31.0")
    with pytest.raises(SkewError, match="behind"):
        kube.run_plan(p, api, lambda argv, **kw: None, control_plane_version=lambda rev: "1.30.1")
    assert api.applied == []


def test_run_plan_refuses_a_namespace_with_the_injection_label() -> None:
    p = kube.plan("1.30-dev", "1.31-dev", "canary", ["sample"], {"sample": ["d"]}, istioctl_to="i", when="t")
    api = FakeApi("istio/proxyv2:1.30.2", {"istio-injection": "enabled"})
    with pytest.raises(UserError, match="istio-injection-"):
        kube.run_plan(p, api, lambda argv, **kw: None, control_plane_version=lambda rev: "1.31.0")
