"""`meshproof status`: Gateway API objects with Istio's conditions, verbatim."""

from __future__ import annotations

from harness.cli.lifecycle import gateway_api_status

ACCEPTED = {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "Resource accepted"}
NOT_PROGRAMMED = {
    "type": "Programmed",
    "status": "False",
    "reason": "AddressNotUsable",
    "message": "no address",
}


def test_gateways_show_their_conditions_and_routes_theirs_per_parent() -> None:
    gateway = {
        "kind": "Gateway",
        "metadata": {"name": "web", "namespace": "istio-system", "generation": 2},
        "status": {"conditions": [ACCEPTED, NOT_PROGRAMMED]},
    }
    route = {
        "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "sample", "generation": 1},
        "status": {
            "parents": [{"parentRef": {"name": "web"}, "controllerName": "x", "conditions": [ACCEPTED]}]
        },
    }
    fresh = {"kind": "HTTPRoute", "metadata": {"name": "new", "namespace": "sample"}}
    orphan = {
        "kind": "HTTPRoute",
        "metadata": {"name": "orphan", "namespace": "sample"},
        "status": {"parents": []},
    }
    g, r, f, o = gateway_api_status([gateway, route, fresh, orphan])
    assert g == {
        "kind": "Gateway",
        "namespace": "istio-system",
        "name": "web",
        "generation": 2,
        "conditions": [ACCEPTED, NOT_PROGRAMMED],
    }
    assert "parents" not in g
    assert r["parents"] == [{"parentRef": {"name": "web"}, "conditions": [ACCEPTED]}]
    assert "parents" not in f and f["conditions"] == []  # no status written yet
    assert o["parents"] == []  # Istio's status: no parent accepted or rejected it
