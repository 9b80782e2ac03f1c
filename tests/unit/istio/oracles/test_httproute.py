"""HTTPRoute oracle: Gateway API's match precedence, its match semantics, backendRef proportions;
and the attribution of pods to backendRefs by their Service's selector."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from harness.backends.base import Workload
from harness.errors import UnsupportedFeature
from harness.istio import Bundle, load_text
from harness.istio.model import HTTPRouteObject
from harness.istio.oracles.httproute import describe, path_matches, proportions, rule_for, weights
from harness.traffic.split import backend_attribution, expected_rule_split


def route(rules: list[dict[str, Any]], parent: dict[str, Any] | None = None) -> HTTPRouteObject:
    body = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "sample"},
        "spec": {"parentRefs": [parent or {"name": "gw", "namespace": "istio-system"}], "rules": rules},
    }
    (doc,) = load_text(yaml.safe_dump(body), "t.yaml")
    return HTTPRouteObject.from_document(doc)


def ref(name: str, weight: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "port": 3000}
    if weight is not None:
        out["weight"] = weight
    return out


def prefix(value: str, **extra: Any) -> dict[str, Any]:
    return {"path": {"type": "PathPrefix", "value": value}, **extra}


RULES = route(
    [
        {"backendRefs": [ref("v1", 90), ref("v2", 20)]},  # 0: no matches = PathPrefix /
        {"matches": [{"headers": [{"name": "X-Canary", "value": "yes"}]}], "backendRefs": [ref("v2")]},  # 1
        {"matches": [prefix("/api/echo")], "backendRefs": [ref("v2")]},  # 2
        {"matches": [prefix("/api/echo", method="POST")], "backendRefs": [ref("v1")]},  # 3
        {"matches": [{"path": {"type": "Exact", "value": "/api/echo"}}], "backendRefs": [ref("v1")]},  # 4
        {
            "matches": [{"path": {"type": "RegularExpression", "value": "/item/[0-9]+"}}],
            "backendRefs": [ref("v1")],
        },
        {
            "matches": [prefix("/q", queryParams=[{"name": "a", "value": "1"}])],
            "backendRefs": [ref("v2")],
        },  # 6
        {"matches": [prefix("/q")], "backendRefs": [ref("v1")]},  # 7
    ]
)


@pytest.mark.parametrize(
    ("path", "method", "headers", "index"),
    [
        ("/api/greet", "GET", {}, 0),  # only the no-match rule (PathPrefix /) matches
        (
            "/api/greet",
            "GET",
            {"x-canary": "yes"},
            1,
        ),  # more header matches beat none; names case-insensitive
        ("/api/greet", "GET", {"x-canary": "no"}, 0),
        ("/api/echo/x", "GET", {"x-canary": "yes"}, 2),  # a longer prefix beats header matches
        ("/api/echo/x", "POST", {}, 3),  # same prefix: a method match beats none
        ("/api/echo", "GET", {}, 4),  # Exact beats every prefix
        ("/api/echoo", "GET", {}, 0),  # PathPrefix matches whole path elements only
        ("/item/42", "GET", {}, 0),  # Istio ranks a regex below every PathPrefix, even /
        ("/q?a=1", "GET", {}, 6),  # more query-parameter matches win; the query is not part of the path
        ("/q?a=2", "GET", {}, 7),
    ],
)
def test_rule_for_ranks_matches_as_gateway_api_does(
    path: str, method: str, headers: dict[str, str], index: int
) -> None:
    assert rule_for(RULES, path=path, method=method, headers=headers) is RULES.rules[index]


def test_a_regular_expression_is_a_full_match() -> None:
    r = route(
        [
            {
                "matches": [{"path": {"type": "RegularExpression", "value": "/item/[0-9]+"}}],
                "backendRefs": [ref("v1")],
            }
        ]
    )
    assert rule_for(r, path="/item/42") is r.rules[0]
    with pytest.raises(LookupError, match="no rule"):
        rule_for(r, path="/item/42x")


def test_ties_go_to_the_first_rule_in_order() -> None:
    r = route(
        [
            {"matches": [prefix("/a")], "backendRefs": [ref("v1")]},
            {"matches": [prefix("/a/")], "backendRefs": [ref("v2")]},
        ]
    )
    assert rule_for(r, path="/a/b") is r.rules[0]  # a trailing / of a prefix is ignored: equal rank


def test_path_prefix_is_element_wise() -> None:
    assert path_matches({"type": "PathPrefix", "value": "/api/echo"}, "/api/echo")
    assert path_matches({"type": "PathPrefix", "value": "/api/echo/"}, "/api/echo")
    assert path_matches({"type": "PathPrefix", "value": "/api/echo"}, "/api/echo/1")
    assert not path_matches({"type": "PathPrefix", "value": "/api/echo"}, "/api/echoo")
    assert path_matches({}, "/anything")


def test_no_rule_matches() -> None:
    with pytest.raises(LookupError, match="no rule"):
        rule_for(route([{"matches": [prefix("/a")], "backendRefs": [ref("v1")]}]), path="/b")


def test_unmodelled_match_fields_and_backends_refuse() -> None:
    with pytest.raises(UnsupportedFeature, match="oracles/httproute.py"):
        rule_for(route([{"matches": [{"bogus": 1}], "backendRefs": [ref("v1")]}]))
    other = route([{"backendRefs": [{"group": "example.io", "kind": "Bucket", "name": "b"}]}])
    with pytest.raises(UnsupportedFeature, match="Service backends only"):
        weights(other.rules[0])


def test_proportions_by_weight_share_default_weight_one_and_same_service_adds_up() -> None:
    default = RULES.rules[0]
    got = proportions(default)
    assert got["v1"] == pytest.approx(90 / 110) and got["v2"] == pytest.approx(20 / 110)
    assert describe(default) == "v1 81.8%, v2 18.2%"
    assert expected_rule_split(default) == {"v1": pytest.approx(81.8182), "v2": pytest.approx(18.1818)}
    assert proportions(route([{"backendRefs": [ref("v1"), ref("v2")]}]).rules[0]) == {"v1": 0.5, "v2": 0.5}
    r = route([{"backendRefs": [ref("v1", 50), ref("v2", 0), ref("v1", 50)]}]).rules[0]
    assert proportions(r) == {"v1": 1.0, "v2": 0.0}


def test_all_zero_weights_or_no_backends_have_no_proportions() -> None:
    with pytest.raises(LookupError, match="add up to 0"):
        proportions(route([{"backendRefs": [ref("v1", 0), ref("v2", 0)]}]).rules[0])
    with pytest.raises(LookupError, match="add up to 0"):
        proportions(route([{"matches": [prefix("/")]}]).rules[0])


def test_views_of_parents_gamma_and_gateway() -> None:
    gamma = route([], parent={"group": "", "kind": "Service", "name": "microservice-1", "port": 3000})
    assert gamma.binds_to_mesh and gamma.gateway_refs() == ()
    ingress = route([])
    assert not ingress.binds_to_mesh and ingress.gateway_refs() == (("istio-system", "gw"),)


SERVICES = """
apiVersion: v1
kind: Service
metadata: {name: v1, namespace: sample}
spec: {selector: {app: m, version: v1}, ports: [{port: 3000}]}
---
apiVersion: v1
kind: Service
metadata: {name: v2, namespace: sample}
spec: {selector: {app: m, version: v2}, ports: [{port: 3000}]}
---
apiVersion: v1
kind: Service
metadata: {name: all, namespace: sample}
spec: {selector: {app: m}, ports: [{port: 3000}]}
"""


def pod(name: str, version: str, namespace: str = "sample", role: str = "app") -> Workload:
    labels = {"app": "m", "version": version}
    return Workload(name, namespace, f"m-{version}", labels, "127.0.0.1", "", "", "", "", role=role)


PODS = [
    pod("m-v1-0", "v1"),
    pod("m-v1-1", "v1"),
    pod("m-v2-0", "v2"),
    pod("c-0", "v1", "other"),
    pod("gw", "v1", role="gateway"),
]


def test_pods_are_attributed_by_the_backend_services_selector() -> None:
    bundle = Bundle(load_text(SERVICES, "s.yaml"))
    who = backend_attribution(bundle, RULES.rules[0], PODS)
    assert who.categories == ("v1", "v2")
    assert who.pod_category == {"m-v1-0": "v1", "m-v1-1": "v1", "m-v2-0": "v2"}  # app pods of the namespace


def test_overlapping_or_empty_backends_cannot_be_attributed() -> None:
    bundle = Bundle(load_text(SERVICES, "s.yaml"))
    overlapping = route([{"backendRefs": [ref("v1", 50), ref("all", 50)]}]).rules[0]
    with pytest.raises(UnsupportedFeature, match="both select pod m-v1-0"):
        backend_attribution(bundle, overlapping, PODS)
    with pytest.raises(LookupError, match="select no running pod"):
        backend_attribution(bundle, RULES.rules[0], PODS[:2])
    with pytest.raises(LookupError, match="no Service sample/missing"):
        backend_attribution(bundle, route([{"backendRefs": [ref("missing")]}]).rules[0], PODS)
