"""The route under test (suites/_support/routes.py) over the real manifests, for both traffic APIs:
which object each API's ingress and in-mesh route is, how destinations are named, what each
variant looks like to the route oracle (the prediction the routing suites check), no mesh."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.backends.base import Workload
from harness.guards import ConfigGuard
from harness.istio import Bundle, load_paths, load_text
from harness.istio.traffic_api import select_bundle
from suites._support.routes import (
    REPLICA_LABEL,
    HTTPRouteRoute,
    Match,
    VirtualServiceRoute,
    ingress_route,
    mesh_route,
)

MANIFESTS = Path(__file__).resolve().parents[3] / "manifests"
HOST = "microservice-1.sample.svc.cluster.local"


def manifests(api: str) -> Bundle:
    return select_bundle(Bundle(tuple(load_paths([MANIFESTS]))), api)


def replica(name: str, version: str) -> Workload:
    labels = {"app": "microservice-1", "version": version, REPLICA_LABEL: name}
    return Workload(name, "sample", f"microservice-1-{version}", labels, "127.0.0.1", "", "", "", "")


PODS = [
    replica("microservice-1-v1-0", "v1"),
    replica("microservice-1-v1-1", "v1"),
    replica("microservice-1-v2-0", "v2"),
]


class NoMesh:
    def apply(self, paths: list[Path]) -> float:
        return 0.1

    def delete(self, paths: list[Path]) -> float:
        return 0.1

    def config_dir(self) -> None:
        return None


def guard(api: str, tmp_path: Path) -> ConfigGuard:
    return ConfigGuard(NoMesh(), manifests(api), tmp_path)  # type: ignore[arg-type]


def test_each_api_has_its_own_ingress_and_in_mesh_route() -> None:
    gw = manifests("gateway-api")
    ingress = ingress_route(gw, "gateway-api")
    assert isinstance(ingress, HTTPRouteRoute) and ingress.name == "microservice-1-ingress"
    # the Gateway API listener takes only its hostname: every request to it carries that Host
    assert ingress.request == {"host_header": "microservice-1.gateway-api.meshproof.test"}
    gamma = mesh_route(gw, "gateway-api", HOST)
    assert isinstance(gamma, HTTPRouteRoute) and gamma.name == "microservice-1" and gamma.request == {}
    istio = manifests("istio")
    vs = ingress_route(istio, "istio")
    assert isinstance(vs, VirtualServiceRoute) and vs.name == "microservice-1-ingress" and vs.request == {}
    assert mesh_route(istio, "istio", HOST).name == "microservice-1"
    with pytest.raises(LookupError, match="GAMMA"):
        mesh_route(istio, "gateway-api", HOST)  # the istio selection holds no HTTPRoute


@pytest.mark.parametrize(
    ("api", "v1", "v2"), [("istio", "v1", "v2"), ("gateway-api", "microservice-1-v1", "microservice-1-v2")]
)
def test_both_apis_predict_the_manifests_90_10_and_attribute_the_same_pods(
    api: str, v1: str, v2: str
) -> None:
    applied = manifests(api)
    for route in (ingress_route(applied, api), mesh_route(applied, api, HOST)):
        assert (route.category(applied, "v1"), route.category(applied, "v2")) == (v1, v2)
        got = route.predict(applied, PODS)
        assert got.split == {v1: 90.0, v2: 10.0}
        assert got.who.pod_category == {
            "microservice-1-v1-0": v1,
            "microservice-1-v1-1": v1,
            "microservice-1-v2-0": v2,
        }


@pytest.mark.parametrize("api", ["istio", "gateway-api"])
def test_variants_are_what_the_oracle_predicts(api: str, tmp_path: Path) -> None:
    config = guard(api, tmp_path)
    route = ingress_route(config.applied, api)
    v1, v2 = route.category(config.applied, "v1"), route.category(config.applied, "v2")

    config.apply(route.weighted(config, {v1: 90, v2: 20}), label="w", unvalidated_because="unit test")
    assert route.predict(config.applied, PODS).split == {
        v1: pytest.approx(81.8182),
        v2: pytest.approx(18.1818),
    }
    config.restore()

    config.apply(
        route.matched(config, Match(header=("x-canary", "true")), v2, None, name="canary"),
        label="h",
        unvalidated_because="unit test",
    )
    assert route.predict(config.applied, PODS, headers={"x-canary": "true"}).split == {v2: 100.0}
    assert route.predict(config.applied, PODS, headers={"x-canary": "false"}).split == {v1: 90.0, v2: 10.0}
    config.restore()

    typo = route.matched(config, Match(prefix="/api/echoo"), v2, v1, name="matched")
    config.apply(typo, label="p", unvalidated_because="unit test")
    assert route.predict(config.applied, PODS, path="/api/echo").split == {v1: 100.0}
    assert route.predict(config.applied, PODS, path="/api/echoo/x").split == {v2: 100.0}


def test_three_way_is_per_replica_subsets_or_per_replica_services(tmp_path: Path) -> None:
    a, b = PODS[0], PODS[1]
    vs = guard("istio", tmp_path / "i")
    three = ingress_route(vs.applied, "istio").three_way(vs, a, b)
    assert three.weights == {"v1-a": 80, "v1-b": 10, "v2": 10}
    assert [body["kind"] for body in three.bodies] == ["DestinationRule", "VirtualService"]
    gw = guard("gateway-api", tmp_path / "g")
    three = ingress_route(gw.applied, "gateway-api").three_way(gw, a, b)
    assert three.weights == {"microservice-1-v1-a": 80, "microservice-1-v1-b": 10, "microservice-1-v2": 10}
    services = [body for body in three.bodies if body["kind"] == "Service"]
    assert [s["spec"]["selector"][REPLICA_LABEL] for s in services] == [a.name, b.name]
    applied = gw.applied.merged(load_text("\n---\n".join(yaml.safe_dump(s) for s in three.bodies), "t"))
    got = ingress_route(applied, "gateway-api").predict(applied, PODS)
    assert got.split == {"microservice-1-v1-a": 80.0, "microservice-1-v1-b": 10.0, "microservice-1-v2": 10.0}
    assert got.who.pod_category == {
        a.name: "microservice-1-v1-a",
        b.name: "microservice-1-v1-b",
        "microservice-1-v2-0": "microservice-1-v2",
    }
