"""harness.namespaces: a pytest-xdist worker's copy of the sample on a shared cluster."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import namespaces
from harness.namespaces import host, ns, ref, renamed, render_manifests, suffix_for
from harness.paths import CHECKOUT


def test_suffix_per_worker() -> None:
    assert suffix_for(None) == ""
    assert suffix_for("gw0") == ""  # the first worker runs the sample `up` applied
    assert suffix_for("gw1") == "-w1"
    assert suffix_for("gw12") == "-w12"


def test_names_translate_only_in_a_worker_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(namespaces.SUFFIX_ENV, raising=False)
    assert ns("sample") == "sample"
    assert ref("other-namespace/client") == "other-namespace/client"
    monkeypatch.setenv(namespaces.SUFFIX_ENV, "-w2")
    assert ns("sample") == "sample-w2"
    assert ns("istio-system") == "istio-system"  # shared: never copied
    assert ref("other-namespace/client") == "other-namespace-w2/client"
    assert ref("ingress") == "ingress"
    assert host("microservice-1.sample.svc.cluster.local") == "microservice-1.sample-w2.svc.cluster.local"
    assert host("microservice-1.sample") == "microservice-1.sample-w2"
    assert host("istio-ingressgateway.istio-system.svc.cluster.local").endswith(
        "istio-system.svc.cluster.local"
    )


def test_renamed_manifests_name_only_the_copy() -> None:
    objs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sample", "labels": {"a": "b"}}},
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "vs", "namespace": "sample"},
            "spec": {
                "hosts": ["microservice-1.sample.svc.cluster.local"],
                "gateways": ["sample/gw", "mesh"],
                "http": [{"route": [{"destination": {"host": "microservice-1.sample"}}]}],
            },
        },
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "namespace": "sample"},
            "spec": {
                "rules": [
                    {"from": [{"source": {"notNamespaces": ["trusted-namespace"]}}]},
                    {"from": [{"source": {"principals": ["cluster.local/ns/other-namespace/sa/client"]}}]},
                ]
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "client", "namespace": "other-namespace"},
            "spec": {"template": {"spec": {"containers": [{"image": "meshproof.local/sample:dev"}]}}},
        },
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "jaeger", "namespace": "istio-system"}},
    ]
    out = renamed(objs, "-w1")
    assert [o["metadata"].get("namespace") or o["metadata"]["name"] for o in out] == [
        "sample-w1",
        "sample-w1",
        "sample-w1",
        "other-namespace-w1",
    ]  # istio-system's objects stay the first worker's
    assert out[0]["metadata"]["labels"] == {"a": "b", namespaces.WORKER_LABEL: "w1"}
    vs = out[1]["spec"]
    assert vs["hosts"] == ["microservice-1.sample-w1.svc.cluster.local"]
    assert vs["gateways"] == ["sample-w1/gw", "mesh"]
    assert vs["http"][0]["route"][0]["destination"]["host"] == "microservice-1.sample-w1"
    rules = out[2]["spec"]["rules"]
    assert rules[0]["from"][0]["source"]["notNamespaces"] == ["trusted-namespace-w1"]
    assert rules[1]["from"][0]["source"]["principals"] == ["cluster.local/ns/other-namespace-w1/sa/client"]
    image = out[3]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "meshproof.local/sample:dev"  # not a namespace
    assert objs[1]["metadata"]["namespace"] == "sample"  # the input is not changed


def test_render_the_project_manifests(tmp_path: Path) -> None:
    dest = render_manifests(CHECKOUT / "manifests", tmp_path / "m", "-w1")
    docs = [d for f in sorted(dest.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    namespaced = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    assert namespaced == {"sample-w1", "trusted-namespace-w1", "other-namespace-w1"}
    text = "\n".join(f.read_text() for f in dest.glob("*.yaml"))
    for name in namespaces.SAMPLE_NAMESPACES:  # no reference to the first worker's sample is left
        assert f".{name}.svc" not in text and f"- {name}\n" not in text and f"namespace: {name}\n" not in text
    assert (dest / "30-istio.yaml").is_file() and not (dest / "40-jaeger.yaml").exists()


def test_a_kube_worker_after_the_first_gets_its_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin's settings for pytest-xdist workers: local ones a mesh (state dir) each; on a
    cluster gw0 the mesh's own sample, gw1 a rendered copy, its suffix in the environment."""
    from types import SimpleNamespace

    from harness.plugin import _worker_settings
    from harness.settings import from_env

    monkeypatch.setenv(namespaces.SUFFIX_ENV, "")  # recorded, so the suffix set below is undone after
    monkeypatch.delenv(namespaces.SUFFIX_ENV)
    config: Any = SimpleNamespace(rootpath=CHECKOUT)
    base = from_env({}).with_overrides(state_dir=tmp_path / "st", manifests=Path("manifests"))
    local = _worker_settings(config, base, "gw1")
    assert local.state_dir == tmp_path / "st" / "workers" / "gw1" and local.manifests == Path("manifests")
    kind = base.with_overrides(backend="kind")
    assert _worker_settings(config, kind, "gw0") == kind
    assert namespaces.SUFFIX_ENV not in os.environ
    w1 = _worker_settings(config, kind, "gw1")
    assert w1.state_dir == tmp_path / "st"  # the cluster's one mesh
    assert w1.manifests == tmp_path / "st" / "workers" / "gw1" / "manifests"
    assert "namespace: sample-w1" in (w1.manifests / "10-sample.yaml").read_text()
    assert os.environ[namespaces.SUFFIX_ENV] == "-w1"
