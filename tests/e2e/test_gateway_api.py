"""Gateway API on the mesh: istiod's Gateway API controller reads a Gateway and an HTTPRoute from
the cluster (on the local backend its in-memory one), its status writer reports Istio's conditions,
and the ingress gateway routes by the HTTPRoute."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from harness import wait
from harness.backends.base import Backend
from harness.cli.lifecycle import status_doc
from harness.settings import Settings

pytestmark = pytest.mark.e2e

HOST = "gateway-api.meshproof.test"  # the listener's hostname: requests for it take the HTTPRoute
ROUTE_HEADER = "x-meshproof-route"  # the HTTPRoute's response header filter adds it
NAME = "meshproof-e2e"
N = 40


def objects() -> list[dict[str, Any]]:
    """A Gateway deployed onto the mesh's ingress gateway (manual deployment: ``spec.addresses``
    names its Service) and an HTTPRoute to the sample service through it."""
    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": NAME, "namespace": "istio-system"},
        "spec": {
            "gatewayClassName": "istio",
            "addresses": [
                {"type": "Hostname", "value": "istio-ingressgateway.istio-system.svc.cluster.local"}
            ],
            "listeners": [
                {
                    "name": "http",
                    "port": 80,
                    "protocol": "HTTP",
                    "hostname": HOST,
                    "allowedRoutes": {"namespaces": {"from": "All"}},
                }
            ],
        },
    }
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": NAME, "namespace": "sample"},
        "spec": {
            "parentRefs": [{"name": NAME, "namespace": "istio-system"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                    "filters": [
                        {
                            "type": "ResponseHeaderModifier",
                            "responseHeaderModifier": {"add": [{"name": ROUTE_HEADER, "value": NAME}]},
                        }
                    ],
                    "backendRefs": [{"name": "microservice-1", "port": 3000}],
                }
            ],
        },
    }
    return [gateway, route]


def _true(conditions: list[Mapping[str, Any]], *types: str) -> bool:
    status = {c.get("type"): c.get("status") for c in conditions}
    return all(status.get(t) == "True" for t in types)


def _conditions(mesh: Backend) -> dict[str, list[dict[str, Any]]]:
    """Istio's conditions on our Gateway, and on our HTTPRoute for that Gateway."""
    out: dict[str, list[dict[str, Any]]] = {}
    for o in mesh.gateway_api_objects():
        if (o.get("metadata") or {}).get("name") != NAME:
            continue
        status = o.get("status") or {}
        if o["kind"] == "Gateway":
            out["Gateway"] = list(status.get("conditions") or [])
        elif o["kind"] == "HTTPRoute":
            for parent in status.get("parents") or []:
                if (parent.get("parentRef") or {}).get("name") == NAME:
                    out["HTTPRoute"] = list(parent.get("conditions") or [])
    return out


def _sample(mesh: Backend, host: str) -> list[httpx.Response]:
    with httpx.Client(base_url=mesh.ingress_url(), timeout=10, trust_env=False) as http:
        return [http.get("/api/greet", headers={"host": host}) for _ in range(N)]


@pytest.fixture
def applied(mesh: Backend, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "gateway-api.yaml"
    path.write_text(yaml.safe_dump_all(objects(), sort_keys=False))
    mesh.apply([path])
    try:
        yield path
    finally:
        mesh.delete([path])


def test_an_httproute_on_the_ingress_gateway_routes_and_reports_istios_conditions(
    mesh: Backend, applied: Path, settings: Settings
) -> None:
    def accepted() -> dict[str, list[dict[str, Any]]] | None:
        seen = accepted.last = _conditions(mesh)  # type: ignore[attr-defined]
        ok = _true(seen.get("Gateway", []), "Accepted", "Programmed") and _true(
            seen.get("HTTPRoute", []), "Accepted", "ResolvedRefs"
        )
        return seen if ok else None

    try:
        seen = wait.until(
            accepted, what="Istio's conditions Accepted/Programmed on the Gateway and route", timeout=60
        )
    except Exception as e:
        e.add_note(f"last seen: {getattr(accepted, 'last', None)}")
        raise
    # `meshproof status --json` lists them with the same conditions
    doc = status_doc(mesh, settings)
    assert doc["traffic_api"] == mesh.traffic_api == settings.traffic_api  # the routes `up` applied
    listed = {(g["kind"], g["name"]): g for g in doc["gateway_api"]}
    assert listed[("Gateway", NAME)]["conditions"] == seen["Gateway"]
    assert [p["conditions"] for p in listed[("HTTPRoute", NAME)]["parents"]] == [seen["HTTPRoute"]]

    # every request for the listener's host is answered by the sample through the HTTPRoute (its
    # filter's header); requests for any other host keep taking the VirtualService (no header)
    routed, other = _sample(mesh, HOST), _sample(mesh, "elsewhere.meshproof.test")
    assert [r.status_code for r in routed] == [200] * N
    assert [r.headers.get(ROUTE_HEADER) for r in routed] == [NAME] * N
    assert all(r.json().get("version") for r in routed)
    assert [r.status_code for r in other] == [200] * N
    assert [r.headers.get(ROUTE_HEADER) for r in other] == [None] * N


def test_a_deleted_httproute_routes_no_more(mesh: Backend, tmp_path: Path) -> None:
    path = tmp_path / "gateway-api.yaml"
    path.write_text(yaml.safe_dump_all(objects(), sort_keys=False))
    mesh.apply([path])
    try:
        assert all(r.headers.get(ROUTE_HEADER) == NAME for r in _sample(mesh, HOST))
    finally:
        mesh.delete([path])
    after = _sample(mesh, HOST)
    assert [r.headers.get(ROUTE_HEADER) for r in after] == [None] * N
    assert not _conditions(mesh)


def test_a_route_that_changes_no_proxy_applies_once_istiod_holds_it(mesh: Backend, tmp_path: Path) -> None:
    """An HTTPRoute of a Gateway that does not exist changes no proxy's config, so istiod pushes
    nothing: apply returns once istiod holds it (it waited for a push that never came before)."""
    orphan = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": f"{NAME}-orphan", "namespace": "sample"},
        "spec": {
            "parentRefs": [{"name": f"{NAME}-missing", "namespace": "istio-system"}],
            "rules": [{"backendRefs": [{"name": "microservice-1", "port": 3000}]}],
        },
    }
    path = tmp_path / "orphan.yaml"
    path.write_text(yaml.safe_dump(orphan, sort_keys=False))
    mesh.apply([path])
    try:
        held = [o for o in mesh.gateway_api_objects() if o["metadata"]["name"] == f"{NAME}-orphan"]
        assert [o["kind"] for o in held] == ["HTTPRoute"]
    finally:
        mesh.delete([path])
    assert not [o for o in mesh.gateway_api_objects() if o["metadata"]["name"] == f"{NAME}-orphan"]


def test_a_match_without_a_path_is_stored_defaulted_and_routes(mesh: Backend, tmp_path: Path) -> None:
    """An HTTPRoute match with only a header: the Gateway API schema defaults its path to
    PathPrefix "/", which the API server applies before anyone sees the object. The mesh stores it
    defaulted (read back as `kubectl get` shows it), stays up, and routes by the header (istiod
    crashed on the undefaulted match when the local cluster stored objects as written)."""
    gateway = objects()[0]
    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": f"{NAME}-header", "namespace": "sample"},
        "spec": {
            "parentRefs": [{"name": NAME, "namespace": "istio-system"}],
            "rules": [
                {
                    "matches": [{"headers": [{"name": "x-meshproof-lane", "value": "header"}]}],
                    "filters": [
                        {
                            "type": "ResponseHeaderModifier",
                            "responseHeaderModifier": {"add": [{"name": ROUTE_HEADER, "value": "header"}]},
                        }
                    ],
                    "backendRefs": [{"name": "microservice-1", "port": 3000}],
                }
            ],
        },
    }
    path = tmp_path / "header-route.yaml"
    path.write_text(yaml.safe_dump_all([gateway, route], sort_keys=False))
    mesh.apply([path])
    try:
        held = [o for o in mesh.gateway_api_objects() if o["metadata"]["name"] == f"{NAME}-header"]
        assert [o["spec"]["rules"][0]["matches"] for o in held] == [
            [
                {
                    "headers": [{"name": "x-meshproof-lane", "type": "Exact", "value": "header"}],
                    "path": {"type": "PathPrefix", "value": "/"},
                }
            ]
        ]
        with httpx.Client(base_url=mesh.ingress_url(), timeout=10, trust_env=False) as http:
            lane = [
                http.get("/api/greet", headers={"host": HOST, "x-meshproof-lane": "header"}) for _ in range(N)
            ]
            off_lane = [http.get("/api/greet", headers={"host": HOST}) for _ in range(N)]
        assert [r.status_code for r in lane] == [200] * N
        assert [r.headers.get(ROUTE_HEADER) for r in lane] == ["header"] * N
        # no rule of the listener matches a request without the header: Envoy has no route for it
        assert [r.status_code for r in off_lane] == [404] * N
        # the rest of the mesh is still served (istiod is up and pushing): the VirtualService route
        assert [r.status_code for r in _sample(mesh, "elsewhere.meshproof.test")] == [200] * N
    finally:
        mesh.delete([path])
