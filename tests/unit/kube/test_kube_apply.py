"""Apply/delete ordering, change detection, Deployment readiness and pod problems."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness import paths
from harness.backends.kube.api import ObjectRef
from harness.backends.kube.apply import (
    SAMPLE_IMAGE,
    apply_objects,
    apply_order,
    build_argv,
    build_image,
    delete_objects,
    read_objects,
    with_namespace,
)
from harness.backends.kube.readiness import deployment_status, pod_problems, wait_deployments_ready
from harness.errors import BackendError, UserError, WaitTimeout

from .fakes import FakeCluster, FakeRunner

NS = {
    "apiVersion": "v1",
    "kind": "Namespace",
    "metadata": {"name": "sample", "labels": {"istio-injection": "enabled"}},
}
SVC = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "sample"},
    "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 3000, "targetPort": 3000}]},
}
DEP = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "sample"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web", "version": "v1"}},
            "spec": {
                "containers": [
                    {"name": "web", "image": SAMPLE_IMAGE, "ports": [{"name": "http", "containerPort": 3000}]}
                ]
            },
        },
    },
}
VS = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "web", "namespace": "sample"},
    "spec": {"hosts": ["web"], "http": [{"route": [{"destination": {"host": "web"}}]}]},
}


def test_apply_order_namespaces_first_istio_last_and_delete_reversed() -> None:
    kinds = [o["kind"] for o in apply_order([VS, DEP, SVC, NS])]
    assert kinds == ["Namespace", "Service", "Deployment", "VirtualService"]
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    assert [o["kind"] for o in apply_order([unknown, VS, NS])] == ["Namespace", "Widget", "VirtualService"]


def test_with_namespace_defaults_namespaced_kinds_only() -> None:
    assert (
        with_namespace({"kind": "ConfigMap", "metadata": {"name": "c"}})["metadata"]["namespace"] == "default"
    )
    assert "namespace" not in with_namespace({"kind": "Namespace", "metadata": {"name": "n"}})["metadata"]
    original: dict[str, Any] = {"kind": "Service", "metadata": {"name": "s"}}
    with_namespace(original)
    assert "namespace" not in original["metadata"]  # a copy


def test_read_objects_reads_the_repository_manifests() -> None:
    objs = read_objects([paths.MANIFESTS])
    kinds = {o["kind"] for o in objs}
    assert {"Namespace", "Deployment", "Service", "VirtualService", "DestinationRule"} <= kinds
    assert all(o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace")


def test_apply_objects_reports_what_changed() -> None:
    api = FakeCluster()
    first = apply_objects(api, [VS, DEP, SVC, NS])
    assert [str(a.ref) for a in first] == [
        "Namespace/sample",
        "Service/sample/web",
        "Deployment/sample/web",
        "VirtualService/sample/web",
    ]
    assert all(a.before is None and a.changed for a in first)
    again = apply_objects(api, [NS, SVC, DEP, VS])
    assert not any(a.changed for a in again)
    edited = dict(VS, spec={"hosts": ["web"], "http": []})
    (vs,) = apply_objects(api, [edited])
    assert vs.changed and vs.before == first[-1].after


def test_delete_objects_reverse_order_and_reports_existing_only() -> None:
    api = FakeCluster()
    apply_objects(api, [NS, SVC, VS])
    gone = delete_objects(api, [NS, SVC, VS, DEP])
    assert [r.kind for r in gone] == ["VirtualService", "Service", "Namespace"]


@pytest.mark.parametrize(
    ("status", "ready", "why"),
    [
        ({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}, True, "3/3"),
        ({"observedGeneration": 0}, False, "has not seen generation 1"),
        (
            {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 3},
            False,
            "1/3 replicas updated",
        ),
        (
            {"observedGeneration": 1, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3},
            False,
            "1 old replicas",
        ),
        (
            {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2},
            False,
            "2/3 replicas available",
        ),
    ],
)
def test_deployment_status(status: dict[str, int], ready: bool, why: str) -> None:
    dep = {"metadata": {"generation": 1}, "spec": {"replicas": 3}, "status": status}
    ok, text = deployment_status(dep)
    assert ok is ready and why in text


def _pod(reason: str, image: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "web-1"},
        "status": {
            "containerStatuses": [
                {
                    "name": "web",
                    "image": image,
                    "state": {"waiting": {"reason": reason, "message": "pull failed"}},
                }
            ]
        },
    }


def test_pod_problems() -> None:
    (local,) = pod_problems(_pod("ImagePullBackOff", SAMPLE_IMAGE))
    assert local.fatal and str(local) == "web-1/web: ImagePullBackOff pull failed"
    (remote,) = pod_problems(_pod("ImagePullBackOff", "jaegertracing/all-in-one:1.76.0"))
    assert not remote.fatal  # a registry hiccup can heal
    assert pod_problems(_pod("InvalidImageName", "BAD::"))[0].fatal
    assert pod_problems(_pod("ContainerCreating", SAMPLE_IMAGE)) == []


def test_wait_deployments_ready_fails_fast_on_an_unloaded_local_image() -> None:
    api = FakeCluster()
    apply_objects(api, [NS, DEP])
    ref = ObjectRef("apps/v1", "Deployment", "sample", "web")
    key = ("apps", "Deployment", "sample", "web")
    api.objects[key]["status"]["availableReplicas"] = 0
    pod_key = next(k for k in api.objects if k[1] == "Pod" and k[2] == "sample")
    api.objects[pod_key]["status"]["containerStatuses"] = _pod("ErrImagePull", SAMPLE_IMAGE)["status"][
        "containerStatuses"
    ]
    with pytest.raises(BackendError, match="kind load docker-image"):
        wait_deployments_ready(api, [ref], timeout=5)


def test_wait_deployments_ready_times_out_with_what_is_pending() -> None:
    api = FakeCluster()
    apply_objects(api, [NS, DEP])
    api.objects[("apps", "Deployment", "sample", "web")]["status"]["availableReplicas"] = 1
    with pytest.raises(WaitTimeout) as info:
        wait_deployments_ready(api, [ObjectRef("apps/v1", "Deployment", "sample", "web")], timeout=0)
    assert "Deployment/sample/web: 1/2 replicas available" in "\n".join(info.value.__notes__)


def test_build_image(tmp_path: Path) -> None:
    assert build_argv("/bin/docker", Path("/src/sample-service")) == [
        "/bin/docker",
        "build",
        "-t",
        "meshproof/microservice-1:dev",
        "/src/sample-service",
    ]
    with pytest.raises(UserError, match="no Dockerfile"):
        build_image("/bin/docker", context_dir=tmp_path, run=FakeRunner())
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    run = FakeRunner()
    build_image("/bin/docker", context_dir=tmp_path, run=run)
    assert run.calls == [build_argv("/bin/docker", tmp_path)]
