"""istioctl argv, the IstioOperator overlay, and checks of an installed Istio."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.backends.kube import istio_install
from harness.backends.kube.istio_install import (
    JAEGER_COLLECTOR,
    image_version,
    install,
    install_argv,
    mesh_providers,
    operator_overlay,
)
from harness.errors import ToolMissing
from harness.proxy_stats import INCLUSION_REGEXPS
from harness.versions import IstioRelease

from .fakes import FakeCluster, FakeRunner

RELEASE = IstioRelease(label="1.30", module_version="v0.0.0-test", envoy_version="1.38.3")


def test_install_argv() -> None:
    argv = install_argv(
        "/opt/istio/bin/istioctl",
        Path("/s/istio-operator.yaml"),
        kubeconfig="/s/kubeconfig",
        context="kind-meshproof",
        readiness_timeout=420,
    )
    assert argv == [
        "/opt/istio/bin/istioctl",
        "install",
        "--skip-confirmation",
        "--set",
        "profile=default",
        "--filename",
        "/s/istio-operator.yaml",
        "--kubeconfig",
        "/s/kubeconfig",
        "--context",
        "kind-meshproof",
        "--readiness-timeout",
        "420s",
    ]


def test_install_argv_without_kubeconfig_uses_the_defaults() -> None:
    argv = install_argv("istioctl", Path("o.yaml"), kubeconfig="", context="")
    assert "--kubeconfig" not in argv and "--context" not in argv
    assert argv[-2:] == ["--readiness-timeout", "300s"]


def test_overlay_defines_the_jaeger_provider_the_telemetry_manifest_selects() -> None:
    spec = operator_overlay()["spec"]
    mesh = spec["meshConfig"]
    assert mesh["enableTracing"] is True
    assert mesh["extensionProviders"] == [
        {"name": "jaeger", "opentelemetry": {"service": JAEGER_COLLECTOR, "port": 4317}}
    ]
    assert "tracing" not in mesh["defaultConfig"]  # legacy Zipkin settings stay off
    assert "components" not in spec  # existing LoadBalancer gateway untouched without a node port


def test_overlay_for_kind_makes_the_gateway_a_node_port_keeping_all_ports() -> None:
    gw = operator_overlay(ingress_node_port=30080)["spec"]["components"]["ingressGateways"][0]
    assert gw["name"] == "istio-ingressgateway" and gw["enabled"] is True
    svc = gw["k8s"]["service"]
    assert svc["type"] == "NodePort"
    ports = {p["name"]: p for p in svc["ports"]}
    assert set(ports) == {"status-port", "http2", "https"}
    assert ports["http2"] == {
        "name": "http2",
        "port": 80,
        "targetPort": 8080,
        "protocol": "TCP",
        "nodePort": 30080,
    }


def test_install_writes_the_overlay_and_runs_istioctl(tmp_path: Path) -> None:
    run = FakeRunner()
    argv = install(
        "/bin/istioctl", tmp_path, kubeconfig="/k", context="kind-x", ingress_node_port=30080, run=run
    )
    assert run.calls == [argv]
    overlay = yaml.safe_load((tmp_path / "istio-operator.yaml").read_text())
    assert overlay == operator_overlay(ingress_node_port=30080)
    assert argv[argv.index("--filename") + 1] == str(tmp_path / "istio-operator.yaml")


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("docker.io/istio/pilot:1.30.1-distroless", "1.30.1"),
        ("gcr.io/istio-release/pilot:1.30.0", "1.30.0"),
        ("localhost:5000/pilot:1.31-alpha.eed52ebb66ad", "1.31-alpha.eed52ebb66ad"),
        ("docker.io/istio/pilot@sha256:abc", ""),
    ],
)
def test_image_version(image: str, version: str) -> None:
    assert image_version(image) == version


def test_mesh_providers() -> None:
    assert mesh_providers("extensionProviders:\n- name: jaeger\n- name: otel\n") == ["jaeger", "otel"]
    assert mesh_providers("defaultConfig: {}\n") == []
    assert mesh_providers(": not yaml: [") == []


def test_find_istiod_and_tracing_provider() -> None:
    api = FakeCluster()
    istiod = istio_install.find_istiod(api)
    assert istiod is not None and istiod.ready and istiod.version == "1.30.1"
    assert istio_install.tracing_provider_configured(api)
    assert istio_install.require_installed(api, RELEASE) == istiod


def test_require_installed_without_istio_is_a_clear_tool_missing() -> None:
    with pytest.raises(ToolMissing) as info:
        istio_install.require_installed(FakeCluster(istio=False), RELEASE)
    assert info.value.tool == "Istio (its CRDs)"
    assert "istioctl install" in info.value.how_to_get and "--backend kind" in info.value.how_to_get


def test_require_installed_with_istiod_not_ready() -> None:
    api = FakeCluster()
    key = ("apps", "Deployment", "istio-system", "istiod")
    api.objects[key]["status"]["availableReplicas"] = 0
    with pytest.raises(ToolMissing) as info:
        istio_install.require_installed(api, RELEASE)
    assert "0/1 replicas available" in info.value.tool


def test_overlay_exposes_the_counters_the_suites_read() -> None:
    """Fault, outlier and overflow verdicts rest on Envoy's counters: kube proxies keep them too."""
    matcher = operator_overlay()["spec"]["meshConfig"]["defaultConfig"]["proxyStatsMatcher"]
    assert matcher == {"inclusionRegexps": list(INCLUSION_REGEXPS)}
    assert any("fault" in r for r in INCLUSION_REGEXPS)
    assert any("outlier_detection" in r for r in INCLUSION_REGEXPS)


def test_overlay_for_local_images_sets_hub_tag_pull_never_and_upstream_envoy_settings() -> None:
    from harness.backends.kube.istio_install import LocalImages

    spec = operator_overlay(local_images=LocalImages("meshproof.local", "1.31-dev"))["spec"]
    assert (spec["hub"], spec["tag"]) == ("meshproof.local", "1.31-dev")
    values = spec["values"]
    assert values["global"]["imagePullPolicy"] == "Never"
    # what the local backend gives istiod for upstream Envoy (harness.backends.local.supervisor.ISTIOD_ENV)
    from harness.backends.local.supervisor import ISTIOD_ENV

    for k, v in values["pilot"]["env"].items():
        assert ISTIOD_ENV[k] == v
    assert values["telemetry"] == {"enabled": False}  # no istio.stats filter upstream Envoy lacks
    # the mesh config the suites need is the same in both image modes
    assert spec["meshConfig"] == operator_overlay()["spec"]["meshConfig"]
    assert "hub" not in operator_overlay()["spec"] and "values" not in operator_overlay()["spec"]


def test_overlay_small_requests_lower_cpu_requests_only() -> None:
    """kind on a 2-core machine: the chart's CPU requests left pods Pending ("Insufficient cpu")."""
    spec = operator_overlay(ingress_node_port=30080, small_requests=True)["spec"]
    g = spec["values"]["global"]
    assert g["proxy"]["resources"] == {"requests": {"cpu": "10m"}}  # requests only: limits stay the chart's
    assert g["proxy_init"]["resources"] == {"requests": {"cpu": "10m"}}
    assert spec["values"]["pilot"]["resources"] == {"requests": {"cpu": "50m"}}
    gw = spec["components"]["ingressGateways"][0]["k8s"]
    assert gw["resources"] == {"requests": {"cpu": "10m"}} and gw["service"]["type"] == "NodePort"
    assert "values" not in operator_overlay(ingress_node_port=30080)["spec"]
