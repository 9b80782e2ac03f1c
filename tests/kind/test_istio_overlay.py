"""What istioctl of the pin renders from meshproof's install overlay with local images: Istio decides.

``istioctl manifest generate`` (the istioctl ``up --backend kind`` runs, built from the pinned module)
renders the same charts ``istioctl install`` applies. With local images, istiod and the gateway run
``meshproof.local/{pilot,proxyv2}:<label>`` with pull policy Never, istiod has the upstream-Envoy settings
the local mesh gives it, and the mesh config has no default Prometheus provider (whose ``istio.stats``
filter upstream Envoy lacks). Negative control: the official-images overlay renders that provider.

Runs only with ``--backend kind`` (it builds istioctl on a cold cache: minutes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import proc
from harness.backends.kube.istio_install import UPSTREAM_ENVOY_PILOT_ENV, LocalImages, operator_overlay
from harness.settings import from_env
from harness.toolchain import istio_cluster
from harness.versions import DEFAULT_ISTIO

pytestmark = [pytest.mark.backend("kind"), pytest.mark.slow]


@pytest.fixture(scope="module")
def istioctl() -> str:
    return istio_cluster.ensure(from_env().cache_dir, DEFAULT_ISTIO).istioctl


def rendered(istioctl: str, overlay: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    f = tmp_path / "overlay.yaml"
    f.write_text(yaml.safe_dump(overlay))
    out = proc.run([istioctl, "manifest", "generate", "--set", "profile=default", "-f", str(f)], timeout=300)
    return [d for d in yaml.safe_load_all(out.stdout) if isinstance(d, dict)]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d.get("kind") == kind and d["metadata"]["name"] == name)


def mesh_config(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(find(docs, "ConfigMap", "istio")["data"]["mesh"])


def test_local_images_render_our_images_pull_never_and_upstream_envoy_settings(
    istioctl: str, tmp_path: Path
) -> None:
    docs = rendered(
        istioctl, operator_overlay(local_images=LocalImages("meshproof.local", DEFAULT_ISTIO)), tmp_path
    )
    (discovery,) = find(docs, "Deployment", "istiod")["spec"]["template"]["spec"]["containers"]
    assert discovery["image"] == f"meshproof.local/pilot:{DEFAULT_ISTIO}"
    assert discovery["imagePullPolicy"] == "Never"
    env = {e["name"]: e.get("value") for e in discovery["env"]}
    assert {k: env.get(k) for k in UPSTREAM_ENVOY_PILOT_ENV} == UPSTREAM_ENVOY_PILOT_ENV
    mesh = mesh_config(docs)
    assert not (mesh.get("defaultProviders") or {}).get("metrics")
    assert "proxyStatsMatcher" in mesh["defaultConfig"]
    assert [p["name"] for p in mesh["extensionProviders"]] == ["jaeger"]


@pytest.mark.negative
def test_official_overlay_renders_the_prometheus_provider(istioctl: str, tmp_path: Path) -> None:
    """Negative control: without the local-images settings, Istio's chart turns the Prometheus
    provider on (its stats filter is in every proxy's config), so the check above can fail."""
    mesh = mesh_config(rendered(istioctl, operator_overlay(), tmp_path))
    assert mesh["defaultProviders"]["metrics"] == ["prometheus"]


# The IstioOperator a person writes for their own cluster (../shared/acceptance/X-their-cluster's):
# a revision, the ingress gateway in a namespace of its own, nothing of meshproof's overlay.
THEIR_OPERATOR: dict[str, Any] = {
    "apiVersion": "install.istio.io/v1alpha1",
    "kind": "IstioOperator",
    "spec": {
        "revision": "1-31",
        "hub": "meshproof.local",
        "tag": DEFAULT_ISTIO,
        "meshConfig": {"accessLogFile": "/dev/stdout"},
        "components": {
            "ingressGateways": [
                {"name": "istio-ingressgateway", "namespace": "istio-ingress", "enabled": True}
            ]
        },
    },
}


def their_gateway(
    istioctl: str, operator: dict[str, Any], tmp_path: Path
) -> tuple[dict[str, Any], list[Any]]:
    f = tmp_path / "theirs.yaml"
    f.write_text(yaml.safe_dump(operator))
    out = proc.run([istioctl, "manifest", "generate", "-f", str(f)], timeout=300)
    docs = [d for d in yaml.safe_load_all(out.stdout) if isinstance(d, dict)]
    gateway = next(
        d for d in docs if d.get("kind") == "Deployment" and d["metadata"]["name"] == "istio-ingressgateway"
    )
    config_maps = [
        (d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs if d.get("kind") == "ConfigMap"
    ]
    return gateway, config_maps


def test_a_revisioned_gateway_in_its_own_namespace_gets_no_mesh_config(istioctl: str, tmp_path: Path) -> None:
    """Istio decides (docs/KIND.md, 'a cluster meshproof did not make'): istioctl renders a revisioned
    gateway outside istio-system as a non-injected Deployment whose mesh config is an optional
    volume from ConfigMap ``istio-<revision>``, which it renders only in istio-system. In the
    gateway's namespace the volume is empty, so its pilot-agent starts from Istio's default mesh
    config (discovery at ``istiod.istio-system.svc``, which a revisioned install does not have) and
    never gets Ready: ``istioctl install`` of that IstioOperator fails on its readiness wait."""
    gateway, config_maps = their_gateway(istioctl, THEIR_OPERATOR, tmp_path)
    assert gateway["metadata"]["namespace"] == "istio-ingress"
    template = gateway["spec"]["template"]
    assert template["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == "config-volume"]
    assert volume["configMap"] == {"name": "istio-1-31", "optional": True}
    assert ("istio-system", "istio-1-31") in config_maps
    assert ("istio-ingress", "istio-1-31") not in config_maps
    env = {e["name"]: e.get("value") for e in template["spec"]["containers"][0].get("env", [])}
    assert env["CA_ADDR"] == "istiod-1-31.istio-system.svc:15012"
    assert "PROXY_CONFIG" not in env


@pytest.mark.negative
def test_their_gateway_with_the_gateway_injection_template_is_injected(istioctl: str, tmp_path: Path) -> None:
    """Negative control: Istio's documented way, ``injectionTemplate: gateway`` in the same
    IstioOperator, renders an injected gateway (the revision's injector writes its proxy config),
    so the check above can fail."""
    operator = yaml.safe_load(yaml.safe_dump(THEIR_OPERATOR))
    operator["spec"]["values"] = {"gateways": {"istio-ingressgateway": {"injectionTemplate": "gateway"}}}
    gateway, _ = their_gateway(istioctl, operator, tmp_path)
    template = gateway["spec"]["template"]
    assert template["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
    assert template["metadata"]["annotations"]["inject.istio.io/templates"] == "gateway"
    assert not [v for v in template["spec"]["volumes"] if v["name"] == "config-volume"]
