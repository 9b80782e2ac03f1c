"""Which rule of a Gateway API HTTPRoute a request takes, and how that rule splits traffic.

The counterpart of :mod:`harness.istio.oracles.routing` (VirtualServices), for HTTPRoutes.

* :func:`rule_for`: Gateway API does not take the first matching rule, it ranks every match of
  every rule (HTTPRoute spec, "HTTPRouteRule"; Istio sorts the routes it generates the same way,
  ``sortHTTPRoutes`` in ``pilot/pkg/config/kube/gateway``): by path type (Exact before
  PathPrefix before RegularExpression, Istio's order for the implementation-specific last),
  then the longer path value, then a method match over none, then more header matches, then
  more query-parameter matches; ties keep rule order. A rule without ``matches`` and a match
  without ``path`` match ``PathPrefix /`` (the API server's defaults).
  ``PathPrefix`` matches element by element (``/api/echo`` matches ``/api/echo`` and
  ``/api/echo/x``, not ``/api/echoo``; a trailing ``/`` of the value is ignored). Header
  names match case-insensitively, query-parameter names exactly; both default to ``Exact``.
* :func:`proportions`: each backendRef gets its weight's share of the rule's total (weight
  defaults to 1; weight 0 gets nothing; refs to the same Service add up); Envoy's weighted
  clusters route by share, so a 90/20 rule sends 81.8% / 18.2%. Shares are keyed by the
  backend Service's name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qsl

from harness.errors import UnsupportedFeature
from harness.istio.model import HTTPRouteObject, RouteRule

_PATH_RANK = {"Exact": 3, "PathPrefix": 2, "RegularExpression": 1}
_SUPPORTED = {"path", "headers", "queryParams", "method"}
#: what a rule without ``matches`` matches (the API server defaults it so)
DEFAULT_MATCH: Mapping[str, object] = {"path": {"type": "PathPrefix", "value": "/"}}


def path_matches(rule: Mapping[str, object], path: str) -> bool:
    """One HTTPPathMatch (default ``PathPrefix /``) against the request path (no query string)."""
    kind = str(rule.get("type") or "PathPrefix")
    value = str(rule.get("value") or "/")
    if kind == "Exact":
        return path == value
    if kind == "RegularExpression":
        return re.fullmatch(value, path) is not None
    if kind != "PathPrefix":
        raise UnsupportedFeature(f"HTTPRoute path match type {kind!r} is not predicted by meshproof")
    prefix = value.rstrip("/")
    if not prefix:
        return True
    return path == prefix or path.startswith(prefix + "/")


def _value_matches(rule: Mapping[str, object], value: str | None) -> bool:
    if value is None:
        return False
    kind = str(rule.get("type") or "Exact")
    wanted = str(rule.get("value", ""))
    if kind == "Exact":
        return value == wanted
    if kind == "RegularExpression":
        return re.fullmatch(wanted, value) is not None
    raise UnsupportedFeature(f"HTTPRoute header/query match type {kind!r} is not predicted by meshproof")


def match_matches(m: Mapping[str, object], path: str, method: str, headers: Mapping[str, str]) -> bool:
    """One HTTPRouteMatch: every condition it names holds."""
    unsupported = set(m) - _SUPPORTED
    if unsupported:
        raise UnsupportedFeature(
            f"HTTPRouteMatch fields {sorted(unsupported)} are not predicted by meshproof's HTTPRoute oracle. "
            "Fix: extend harness/istio/oracles/httproute.py, or test that route without them"
        )
    bare, _, query = path.partition("?")
    path_rule = m.get("path")
    if not path_matches(path_rule if isinstance(path_rule, Mapping) else {}, bare):
        return False
    if "method" in m and str(m["method"]).upper() != method.upper():
        return False
    lowered = {k.lower(): v for k, v in headers.items()}
    seen: set[str] = set()
    for h in _entries(m.get("headers")):
        name = str(h.get("name", "")).lower()
        if name in seen:  # "the first entry with an equivalent name MUST be considered"
            continue
        seen.add(name)
        if not _value_matches(h, lowered.get(name)):
            return False
    params = dict(parse_qsl(query, keep_blank_values=True))
    return all(_value_matches(q, params.get(str(q.get("name", "")))) for q in _entries(m.get("queryParams")))


def _entries(raw: object) -> list[Mapping[str, object]]:
    return [e for e in raw if isinstance(e, Mapping)] if isinstance(raw, list) else []


def _rank(m: Mapping[str, object]) -> tuple[int, int, int, int, int]:
    """Precedence of one match (higher first)."""
    p = m.get("path")
    path = p if isinstance(p, Mapping) else {}
    kind = str(path.get("type") or "PathPrefix")
    value = str(path.get("value") or "/")
    if kind == "PathPrefix" and value != "/":
        value = value.rstrip("/")
    return (
        _PATH_RANK.get(kind, 0),
        len(value),
        1 if "method" in m else 0,
        len(_entries(m.get("headers"))),
        len(_entries(m.get("queryParams"))),
    )


def rule_for(
    route: HTTPRouteObject,
    *,
    path: str = "/api/greet",
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
) -> RouteRule:
    """The rule this request takes: the highest-ranked matching match, ties in rule order."""
    candidates = [
        (_rank(m), index, rule)
        for index, rule in enumerate(route.rules)
        for m in rule.matches or (DEFAULT_MATCH,)
        if match_matches(m, path, method, headers or {})
    ]
    if not candidates:
        raise LookupError(
            f"no rule of HTTPRoute {route.namespace}/{route.name} matches {method} {path} {headers}"
        )
    return max(candidates, key=lambda c: (c[0], -c[1]))[2]


def weights(rule: RouteRule) -> dict[str, int]:
    """Weight per backend Service (refs to the same Service add up), as Envoy receives them."""
    out: dict[str, int] = {}
    for ref in rule.backend_refs:
        if not ref.is_service:
            raise UnsupportedFeature(
                f"backendRef {ref.group}/{ref.kind} {ref.name}: meshproof predicts Service backends only"
            )
        out[ref.name] = out.get(ref.name, 0) + ref.weight
    return out


def proportions(rule: RouteRule) -> dict[str, float]:
    """Each backend Service's share of the rule's traffic (0..1): its weight over the total."""
    w = weights(rule)
    total = sum(w.values())
    if total <= 0:
        raise LookupError(
            "the rule's backendRef weights add up to 0 (or it has none): Gateway API answers 500, no split"
        )
    return {k: v / total for k, v in w.items()}


def describe(rule: RouteRule) -> str:
    """``microservice-1-v1 81.8%, microservice-1-v2 18.2%``."""
    return ", ".join(f"{k} {v * 100:.1f}%" for k, v in proportions(rule).items())
