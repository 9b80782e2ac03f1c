"""The reports' mesh header names the traffic API the mesh was brought up with (its --traffic-api),
not a guess from the kinds it holds (a gateway-api mesh still has Istio DestinationRules)."""

from __future__ import annotations

from typing import Any

from harness.report.versions import describe


class Mesh:
    name = "local"

    def __init__(self, traffic_api: str, objects: list[dict[str, Any]]) -> None:
        self.traffic_api, self.objects = traffic_api, objects

    def istio_objects(self) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["apiVersion"].startswith("networking.istio.io")]

    def gateway_api_objects(self) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["apiVersion"].startswith("gateway.networking.k8s.io")]

    def workloads(self) -> list[Any]:
        return []

    def control_planes(self) -> dict[str, Any]:
        return {}


OBJECTS = [
    {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule"},
    {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute"},
    {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute"},
    {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway"},
]


def test_the_header_names_the_meshs_traffic_api_and_counts_both_apis_routing_kinds() -> None:
    got = describe(Mesh("gateway-api", OBJECTS), "1.31-dev")["traffic_api"]
    assert got == {
        "api": "gateway-api",
        "kinds": {"DestinationRule (networking.istio.io)": 1, "HTTPRoute (gateway.networking.k8s.io)": 2},
        "seen": "istio, gateway-api",
    }
