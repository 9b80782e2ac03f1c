"""Which HTTP route a request takes, and how that route splits traffic.

* :func:`route_for`: Istio evaluates a VirtualService's HTTP routes in order and takes the
  first whose ``match`` list matches (entries are alternatives; the conditions inside one entry
  are all required); a route without ``match`` matches everything. Header names match
  case-insensitively; ``uri`` takes ``exact``, ``prefix`` or ``regex`` (a full match), with
  ``ignoreUriCase``.
* :func:`proportions`: Istio hands the weights to Envoy's weighted clusters unchanged, and
  Envoy routes by each weight's share of the total: a 90/20 route sends 81.8% / 18.2%. A single
  destination without a weight gets everything; with several, an omitted weight is 0; weight-0
  destinations get nothing. Destinations to the same subset add up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from harness.errors import UnsupportedFeature
from harness.istio.model import HttpRoute, VirtualService


def string_match(rule: Mapping[str, Any], value: str | None) -> bool:
    """Istio's StringMatch: exact, prefix or regex (full match); an empty rule asks for presence."""
    if value is None:
        return False
    if "exact" in rule:
        return bool(value == rule["exact"])
    if "prefix" in rule:
        return value.startswith(str(rule["prefix"]))
    if "regex" in rule:
        return re.fullmatch(str(rule["regex"]), value) is not None
    return True


_SUPPORTED = {"name", "uri", "method", "headers", "ignoreUriCase"}


def request_matches(m: Mapping[str, Any], path: str, method: str, headers: Mapping[str, str]) -> bool:
    """One HTTPMatchRequest: every condition it names holds."""
    unsupported = set(m) - _SUPPORTED
    if unsupported:
        raise UnsupportedFeature(
            f"HTTPMatchRequest fields {sorted(unsupported)} are not predicted by meshproof's route oracle. "
            "Fix: extend harness/istio/oracles/routing.py, or test that route without them"
        )
    uri = path.split("?", 1)[0]
    if "uri" in m:
        rule = dict(m["uri"])
        if m.get("ignoreUriCase"):
            uri = uri.lower()
            rule = {k: v.lower() if k != "regex" else v for k, v in rule.items()}
        if not string_match(rule, uri):
            return False
    if "method" in m and not string_match(m["method"], method.upper()):
        return False
    lowered = {k.lower(): v for k, v in headers.items()}
    return all(
        string_match(rule, lowered.get(name.lower())) for name, rule in (m.get("headers") or {}).items()
    )


def route_for(
    vs: VirtualService,
    *,
    path: str = "/api/greet",
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
) -> HttpRoute:
    """The HTTP route Istio picks for this request: the first whose match list matches."""
    for route in vs.http:
        if not route.match or any(request_matches(m, path, method, headers or {}) for m in route.match):
            return route
    raise LookupError(
        f"no route of VirtualService {vs.namespace}/{vs.name} matches {method} {path} {headers}"
    )


def weights(route: HttpRoute) -> dict[str, int]:
    """Configured weight per destination (subset, or host without one), as Envoy receives them."""
    return route.weights_by_subset()


def proportions(route: HttpRoute) -> dict[str, float]:
    """Each destination's share of the route's traffic (0..1): its weight over the total."""
    w = weights(route)
    total = sum(w.values())
    if total <= 0:
        raise LookupError("the route's weights add up to 0: Istio rejects such a route")
    return {k: v / total for k, v in w.items()}


def describe(route: HttpRoute) -> str:
    """``v1 81.8%, v2 18.2%``."""
    return ", ".join(f"{k} {v * 100:.1f}%" for k, v in proportions(route).items())
