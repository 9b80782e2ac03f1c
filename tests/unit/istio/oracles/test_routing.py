"""Route oracle: first match wins, match semantics, proportions by weight share."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from harness.errors import UnsupportedFeature
from harness.istio.loader import load_text
from harness.istio.model import VirtualService
from harness.istio.oracles.routing import describe, proportions, route_for, string_match, weights


def vs(http: list[dict[str, Any]]) -> VirtualService:
    body = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "r", "namespace": "sample"},
        "spec": {"hosts": ["microservice-1"], "http": http},
    }
    (doc,) = load_text(yaml.safe_dump(body), "t.yaml")
    return VirtualService.from_document(doc)


def dest(subset: str | None, weight: int | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"destination": {"host": "microservice-1", **({"subset": subset} if subset else {})}}
    if weight is not None:
        d["weight"] = weight
    return d


ROUTES = vs(
    [
        {"name": "hdr", "match": [{"headers": {"X-Canary": {"exact": "yes"}}}], "route": [dest("v2")]},
        {"name": "pfx", "match": [{"uri": {"prefix": "/api/v2"}}], "route": [dest("v2")]},
        {
            "name": "re",
            "match": [{"uri": {"regex": "/item/[0-9]+"}, "method": {"exact": "PUT"}}],
            "route": [dest("v1")],
        },
        {
            "name": "case",
            "match": [{"uri": {"exact": "/shout"}, "ignoreUriCase": True}],
            "route": [dest("v1")],
        },
        {"name": "default", "route": [dest("v1", 90), dest("v2", 20)]},
    ]
)


@pytest.mark.parametrize(
    ("path", "method", "headers", "name"),
    [
        ("/api/greet", "GET", {"x-canary": "yes"}, "hdr"),  # header names are case-insensitive
        ("/api/v2/greet", "GET", {"x-canary": "yes"}, "hdr"),  # the first matching route wins
        ("/api/v2/greet", "GET", {}, "pfx"),
        ("/api/v2/greet?x=1", "GET", {"x-canary": "no"}, "pfx"),  # query string is not part of uri
        ("/item/42", "PUT", {}, "re"),
        ("/item/42", "GET", {}, "default"),  # every condition of one match entry must hold
        ("/item/42x", "PUT", {}, "default"),  # regex is a full match
        ("/SHOUT", "GET", {}, "case"),
        ("/api/greet", "GET", {}, "default"),
    ],
)
def test_route_for(path: str, method: str, headers: dict[str, str], name: str) -> None:
    assert route_for(ROUTES, path=path, method=method, headers=headers).name == name


def test_no_route_matches() -> None:
    only = vs([{"match": [{"uri": {"exact": "/a"}}], "route": [dest("v1")]}])
    with pytest.raises(LookupError, match="no route"):
        route_for(only, path="/b")


def test_unmodelled_match_fields_refuse() -> None:
    with pytest.raises(UnsupportedFeature, match="oracles/routing.py"):
        route_for(vs([{"match": [{"queryParams": {"a": {"exact": "b"}}}], "route": [dest("v1")]}]))


def test_string_match_presence_and_absence() -> None:
    assert string_match({}, "anything")
    assert not string_match({"exact": "x"}, None)


def test_proportions_by_weight_share() -> None:
    default = ROUTES.http[-1]
    assert weights(default) == {"v1": 90, "v2": 20}
    got = proportions(default)
    assert got["v1"] == pytest.approx(90 / 110) and got["v2"] == pytest.approx(20 / 110)
    assert describe(default) == "v1 81.8%, v2 18.2%"


def test_single_destination_without_weight_gets_everything() -> None:
    assert proportions(vs([{"route": [dest("v1")]}]).http[0]) == {"v1": 1.0}
    assert proportions(vs([{"route": [dest(None)]}]).http[0]) == {"microservice-1": 1.0}  # subset-less


def test_omitted_weight_among_several_is_zero_and_same_subset_adds_up() -> None:
    r = vs([{"route": [dest("v1", 50), dest("v2"), dest("v1", 50)]}]).http[0]
    assert proportions(r) == {"v1": 1.0, "v2": 0.0}


def test_all_zero_weights_have_no_proportions() -> None:
    with pytest.raises(LookupError, match="add up to 0"):
        proportions(vs([{"route": [dest("v1", 0), dest("v2", 0)]}]).http[0])
