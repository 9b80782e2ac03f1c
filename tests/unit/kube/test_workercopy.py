"""A pytest-xdist worker's copy of the sample on a shared cluster (workercopy.py), over the fakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import namespaces
from harness.backends.kube import workercopy
from harness.backends.kube.api import ObjectRef
from harness.load import LoadConfig

from .fakes import FakeCluster
from .test_kube_backend import make, manifests  # noqa: F401 - the fixture

__all__ = ["manifests"]


def test_a_worker_copy_runs_beside_the_mesh_and_down_deletes_it(
    tmp_path: Path,
    manifests: Path,
    monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    api = FakeCluster()
    first, _ = make(tmp_path, manifests, api)
    first.up(detach=True)
    first.__exit__(None, None, None)
    copy_dir = namespaces.render_manifests(manifests, tmp_path / "w1", "-w1")
    monkeypatch.setenv(namespaces.SUFFIX_ENV, "-w1")
    worker, _ = make(tmp_path, copy_dir, api)
    worker.attach()
    worker.start_copy()

    ns = api.get(ObjectRef("v1", "Namespace", "", "sample-w1"))
    assert ns is not None and ns["metadata"]["labels"][namespaces.WORKER_LABEL] == "w1"
    gateway = api.get(ObjectRef("apps/v1", "Deployment", "sample-w1", "istio-ingressgateway"))
    assert gateway is not None
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert labels["istio"] == "ingressgateway-w1" and labels["meshproof.dev/ingress"] == "w1"
    # the worker sees its own copy only, and its own gateway
    refs = {w.ref for w in worker.workloads()}
    assert refs and all(r.startswith(("sample-w1/", "other-w1/")) or "ingressgateway" in r for r in refs), (
        refs
    )
    assert [w for w in worker.workloads() if w.role == "gateway"][0].namespace == "sample-w1"
    # its in-cluster Locust runs in its copy and sends to its gateway
    run = worker.load_runner(LoadConfig(), workdir=tmp_path / "load")
    assert run.namespace == "other-namespace-w1"
    assert run.target.ingress_url == "http://istio-ingressgateway.sample-w1.svc.cluster.local:80"
    # the mesh `up` made is unchanged: its sample still there
    assert api.get(ObjectRef("apps/v1", "Deployment", "sample", "web")) is not None

    monkeypatch.delenv(namespaces.SUFFIX_ENV)
    worker.__exit__(None, None, None)
    first.down()
    deleted = {str(r) for r in api.deleted}
    assert "Namespace/sample-w1" in deleted and "Namespace/sample" in deleted


def test_the_copys_gateways_select_only_its_own_gateway() -> None:
    gw = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "g", "namespace": "sample-w2"},
        "spec": {"selector": {"istio": "ingressgateway"}},
    }
    (out,) = workercopy.localized([gw], "-w2")
    assert out["spec"]["selector"] == {"istio": "ingressgateway-w2", "meshproof.dev/ingress": "w2"}
    assert gw["spec"]["selector"] == {"istio": "ingressgateway"}  # the bundle's object is untouched


def test_the_copys_pods_request_little_cpu() -> None:
    """A second copy must fit a 2-CPU node: app containers request COPY_CPU_REQUEST; limits stay."""
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "d", "namespace": "sample-w2"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "a", "resources": {"requests": {"cpu": "50m"}, "limits": {"cpu": "1"}}},
                        {"name": "b"},
                    ]
                }
            }
        },
    }
    (out,) = workercopy.localized([dep], "-w2")
    a, b = out["spec"]["template"]["spec"]["containers"]
    assert a["resources"] == {"requests": {"cpu": workercopy.COPY_CPU_REQUEST}, "limits": {"cpu": "1"}}
    assert "resources" not in b
    assert dep["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "50m"
