"""meshproof's own ingress gateway on an existing cluster: its objects, and which Gateways select it."""

from __future__ import annotations

from harness.backends.kube import own_gateway


def gateway(selector: dict[str, str], api: str = "networking.istio.io/v1") -> dict[str, object]:
    return {
        "apiVersion": api,
        "kind": "Gateway",
        "metadata": {"name": "g", "namespace": "sample"},
        "spec": {"selector": selector},
    }


def test_only_gateways_selecting_exactly_the_default_gateway_are_moved_to_meshproofs() -> None:
    moved, other, api_gw = own_gateway.select_own(
        [
            gateway({"istio": "ingressgateway"}),
            gateway({"app": "mine"}),
            gateway({"istio": "ingressgateway"}, "gateway.networking.k8s.io/v1"),
        ]
    )
    assert moved["spec"]["selector"] == {"istio": "ingressgateway", "meshproof.dev/ingress": "true"}  # type: ignore[index]
    assert other["spec"]["selector"] == {"app": "mine"}  # type: ignore[index]
    assert api_gw["spec"]["selector"] == {"istio": "ingressgateway"}  # type: ignore[index]


def test_the_gateway_is_injected_by_the_revisions_gateway_template_and_its_service_maps_80() -> None:
    ns, sa, dep, svc = own_gateway.objects()
    assert ns["metadata"]["labels"] == {
        "istio-injection": "enabled"
    }  # relabelled for the revision by the backend
    template = dep["spec"]["template"]
    assert template["metadata"]["annotations"] == {"inject.istio.io/templates": "gateway"}
    assert template["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
    assert template["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    (proxy,) = template["spec"]["containers"]
    assert proxy["image"] == "auto" and proxy["imagePullPolicy"] == "IfNotPresent"
    selector = dep["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["selector"] == selector and selector.items() <= template["metadata"]["labels"].items()
    assert {"port": 80, "targetPort": 8080} in [
        {k: p[k] for k in ("port", "targetPort")} for p in svc["spec"]["ports"]
    ]
    assert own_gateway.SELECTOR == "istio=ingressgateway,meshproof.dev/ingress=true"
