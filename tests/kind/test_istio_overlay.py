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
