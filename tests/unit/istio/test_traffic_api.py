"""The manifests' traffic API contract (harness.istio.traffic_api): which routes `up` applies for
--traffic-api istio / gateway-api, and that the Gateway API routes say what the VirtualServices say."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import paths
from harness.errors import ConfigError, UserError
from harness.istio import Bundle, load_paths, load_text
from harness.istio.traffic_api import ANNOTATION, TRAFFIC_APIS, select, select_bundle
from harness.settings import Settings, from_env


@pytest.fixture(scope="module")
def manifests() -> Bundle:
    return Bundle(load_paths([paths.MANIFESTS]))


def _refs(bundle: Bundle, *kinds: str) -> set[str]:
    return {d.ref for d in bundle if d.kind in kinds}


def test_istio_mode_applies_the_virtual_services_and_no_httproute(manifests: Bundle) -> None:
    chosen = select_bundle(manifests, "istio")
    assert _refs(chosen, "VirtualService", "HTTPRoute") == {
        "VirtualService/sample/microservice-1-ingress",
        "VirtualService/sample/microservice-1",
    }


def test_gateway_api_mode_applies_the_httproutes_and_no_virtual_service(manifests: Bundle) -> None:
    chosen = select_bundle(manifests, "gateway-api")
    assert _refs(chosen, "VirtualService", "HTTPRoute") == {
        "HTTPRoute/sample/microservice-1-ingress",
        "HTTPRoute/sample/microservice-1",
    }


@pytest.mark.parametrize("api", TRAFFIC_APIS)
def test_every_other_document_is_applied_in_both_modes(manifests: Bundle, api: str) -> None:
    chosen = select_bundle(manifests, api)
    routes = ("VirtualService", "HTTPRoute")
    assert [d for d in manifests if d.kind not in routes] == [d for d in chosen if d.kind not in routes]
    # the Gateway API Gateway is always there: it costs nothing and `send --gateway` can use it
    assert "Gateway/istio-system/microservice-1" in _refs(chosen, "Gateway")
    assert chosen.warnings == manifests.warnings


def _split(bundle: Bundle, kind: str, name: str) -> list[tuple[dict[str, str], int]]:
    """(pod labels the destination selects, weight) of the first rule of route ``name``."""
    doc = bundle.find(kind, "sample", name)
    assert doc is not None, f"{kind} sample/{name}"
    if kind == "VirtualService":
        (dr,) = bundle.of_kind("DestinationRule")
        subsets = {s["name"]: s["labels"] for s in dr.spec["subsets"]}
        service = bundle.find("Service", "sample", "microservice-1")
        assert service is not None
        route = doc.spec["http"][0]["route"]
        return [
            ({**service.spec["selector"], **subsets[r["destination"]["subset"]]}, r["weight"]) for r in route
        ]
    out = []
    for ref in doc.spec["rules"][0]["backendRefs"]:
        svc = bundle.find("Service", "sample", ref["name"])
        assert svc is not None, ref["name"]
        assert ref["port"] in [p["port"] for p in svc.spec["ports"]]
        out.append((dict(svc.spec["selector"]), ref["weight"]))
    return out


@pytest.mark.parametrize("name", ["microservice-1-ingress", "microservice-1"])
def test_each_httproute_splits_the_pods_as_its_virtual_service_does(manifests: Bundle, name: str) -> None:
    assert _split(manifests, "HTTPRoute", name) == _split(manifests, "VirtualService", name)


def test_the_ingress_route_binds_the_gateway_and_the_gamma_route_the_service(manifests: Bundle) -> None:
    gw = manifests.find("Gateway", "istio-system", "microservice-1")
    assert gw is not None and gw.group == "gateway.networking.k8s.io"
    assert gw.spec["addresses"] == [
        {"type": "Hostname", "value": "istio-ingressgateway.istio-system.svc.cluster.local"}
    ]
    ingress = manifests.find("HTTPRoute", "sample", "microservice-1-ingress")
    gamma = manifests.find("HTTPRoute", "sample", "microservice-1")
    assert ingress is not None and gamma is not None
    assert ingress.spec["parentRefs"] == [{"name": "microservice-1", "namespace": "istio-system"}]
    assert gamma.spec["parentRefs"] == [
        {"group": "", "kind": "Service", "name": "microservice-1", "port": 3000}
    ]


def test_documents_without_the_annotation_are_always_applied() -> None:
    (doc,) = load_text("apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: x}\n")
    assert select([doc], "istio") == select([doc], "gateway-api") == (doc,)


def test_an_unknown_annotation_value_names_file_field_and_the_known_values() -> None:
    text = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
        f"metadata: {{name: r, namespace: sample, annotations: {{{ANNOTATION}: gatewayapi}}}}\n"
        "spec: {}\n"
    )
    docs = load_text(text, "routes.yaml")
    with pytest.raises(ConfigError) as info:
        select(docs, "istio")
    message = str(info.value)
    assert "routes.yaml" in message
    assert f"metadata.annotations[{ANNOTATION}]" in message
    assert "'gatewayapi'" in message and "istio, gateway-api" in message


def test_the_settings_refuse_an_unknown_traffic_api_naming_the_known_ones() -> None:
    assert from_env({}).traffic_api == "istio"
    assert from_env({"MESHPROOF_TRAFFIC_API": "gateway-api"}).traffic_api == "gateway-api"
    with pytest.raises(UserError, match="unknown traffic API 'smi'.*istio, gateway-api"):
        from_env({"MESHPROOF_TRAFFIC_API": "smi"})
    with pytest.raises(UserError, match="unknown traffic API"):
        Settings(traffic_api="GATEWAY-API")


def test_validate_refuses_an_unknown_annotation_value(tmp_path: Path) -> None:
    from harness.istio import validate_paths

    text = (paths.MANIFESTS / "35-gateway-api.yaml").read_text()
    bad = tmp_path / "routes.yaml"
    bad.write_text(text.replace(f"{ANNOTATION}: gateway-api", f"{ANNOTATION}: gateway"))
    with pytest.raises(ConfigError, match=r"traffic-api\]: unknown traffic API 'gateway'"):
        validate_paths([paths.MANIFESTS, bad])
