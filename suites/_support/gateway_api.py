"""The Gateway API suite's machinery: HTTPRoute variants on the sample's Gateway, Istio's conditions,
requests through the ingress gateway, and the pure checks over what came back.

Every property is proven on requests the ingress gateway routed by an HTTPRoute bound to the
Gateway ``istio-system/microservice-1`` (its listener ``http``, hostname :data:`HOST`). What a
request became is read where it can be observed: the headers and path the app received (the
sample's ``/api/echo`` echoes both), the status and ``Location`` the gateway answered with, and
the gateway's own router counters (``http.<prefix>.no_cluster``, ``rq_direct_response``; kept in
every proxy by :mod:`harness.proxy_stats`). Expectations come from the filter the route carries
(the Gateway API's meaning of its fields), never from what was observed.

The checks are pure and return :class:`~harness.traffic.checks.CheckResult`; each fails on an
empty batch (no traffic proves nothing).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.traffic.checks import CheckResult

if TYPE_CHECKING:
    import httpx

    from harness.backends.base import Backend

GROUP = "gateway.networking.k8s.io"
API_VERSION = f"{GROUP}/v1"
GATEWAY_NAMESPACE = "istio-system"
GATEWAY_NAME = "microservice-1"
LISTENER = "http"
#: the listener's hostname: requests with it as Host take the Gateway's routes
HOST = "microservice-1.gateway-api.meshproof.test"
ROUTE_NAMESPACE = "sample"
#: the suite's own HTTPRoute (applied by each test, deleted by the config guard after it)
ROUTE_NAME = "gateway-api-properties"
BACKEND = {"name": "microservice-1", "port": 3000}
#: the conditions Istio writes on a route, per parent
ROUTE_CONDITIONS = ("Accepted", "ResolvedRefs")
#: the gateway's router counters the checks read (``http.<prefix>.<name>``)
ROUTER_COUNTERS = ("no_cluster", "rq_direct_response", "downstream_rq_total")


def gateway() -> dict[str, Any]:
    """The sample's Gateway (``manifests/``): deployed onto the mesh's ingress gateway through
    ``spec.addresses`` (Istio's manual deployment), one HTTP listener for :data:`HOST`."""
    return {
        "apiVersion": API_VERSION,
        "kind": "Gateway",
        "metadata": {"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE},
        "spec": {
            "gatewayClassName": "istio",
            "addresses": [
                {"type": "Hostname", "value": "istio-ingressgateway.istio-system.svc.cluster.local"}
            ],
            "listeners": [
                {
                    "name": LISTENER,
                    "port": 80,
                    "protocol": "HTTP",
                    "hostname": HOST,
                    "allowedRoutes": {"namespaces": {"from": "All"}},
                }
            ],
        },
    }


def route(*rules: Mapping[str, Any], name: str = ROUTE_NAME) -> dict[str, Any]:
    """An HTTPRoute on the sample's Gateway with ``rules``."""
    return {
        "apiVersion": API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ROUTE_NAMESPACE},
        "spec": {
            "parentRefs": [{"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE, "sectionName": LISTENER}],
            "hostnames": [HOST],
            "rules": [dict(r) for r in rules],
        },
    }


def rule(
    prefix: str,
    *filters: Mapping[str, Any],
    backends: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A rule for paths under ``prefix`` with ``filters``, forwarding to the sample (or ``backends``;
    an empty sequence forwards nowhere, as a RequestRedirect rule must)."""
    body: dict[str, Any] = {"matches": [{"path": {"type": "PathPrefix", "value": prefix}}]}
    if filters:
        body["filters"] = [dict(f) for f in filters]
    refs = [BACKEND] if backends is None else list(backends)
    if refs:
        body["backendRefs"] = [dict(r) for r in refs]
    return body


def the_filter(route_body: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    """The one filter of type ``kind`` in ``route_body``'s rules (its type's own field)."""
    found = [
        f[_field(kind)]
        for r in route_body["spec"]["rules"]
        for f in r.get("filters") or []
        if f.get("type") == kind
    ]
    if len(found) != 1:
        raise LookupError(f"expected one {kind} filter in the route, found {len(found)}")
    return dict(found[0])


def _field(kind: str) -> str:
    """A filter type's own field: ``URLRewrite`` -> ``urlRewrite``, ``RequestRedirect`` -> ``requestRedirect``."""
    return "urlRewrite" if kind == "URLRewrite" else kind[0].lower() + kind[1:]


# --------------------------------------------------------------------------- Istio's conditions


@dataclass(frozen=True)
class RouteStatus:
    """What Istio wrote on a route for the suite's parent, read from the mesh."""

    generation: int
    conditions: tuple[Mapping[str, Any], ...]

    def condition(self, kind: str) -> Mapping[str, Any] | None:
        return next((c for c in self.conditions if c.get("type") == kind), None)

    @property
    def current(self) -> bool:
        """Istio reported every route condition on the route's current generation."""
        return all(
            (c := self.condition(t)) is not None and c.get("observedGeneration") == self.generation
            for t in ROUTE_CONDITIONS
        )

    def text(self) -> str:
        return "; ".join(
            f"{c.get('type')}={c.get('status')} ({c.get('reason')}: {c.get('message')})"
            for c in self.conditions
        )


def route_status(objects: Sequence[Mapping[str, Any]], name: str = ROUTE_NAME) -> RouteStatus | None:
    """The route's generation and Istio's conditions for the suite's Gateway (None: not held)."""
    for o in objects:
        meta = o.get("metadata") or {}
        if (
            o.get("kind") != "HTTPRoute"
            or meta.get("name") != name
            or meta.get("namespace") != ROUTE_NAMESPACE
        ):
            continue
        for parent in (o.get("status") or {}).get("parents") or []:
            ref = parent.get("parentRef") or {}
            if ref.get("name") == GATEWAY_NAME and ref.get("namespace", ROUTE_NAMESPACE) == GATEWAY_NAMESPACE:
                return RouteStatus(int(meta.get("generation") or 0), tuple(parent.get("conditions") or ()))
        return RouteStatus(int(meta.get("generation") or 0), ())
    return None


def gateway_ready(objects: Sequence[Mapping[str, Any]]) -> bool:
    """Istio reports the sample's Gateway Accepted and Programmed on its current generation."""
    for o in objects:
        meta = o.get("metadata") or {}
        if o.get("kind") == "Gateway" and meta.get("name") == GATEWAY_NAME:
            seen = {
                c.get("type"): c
                for c in (o.get("status") or {}).get("conditions") or []
                if c.get("observedGeneration") == meta.get("generation")
            }
            return all((seen.get(t) or {}).get("status") == "True" for t in ("Accepted", "Programmed"))
    return False


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Answer:
    """One response from the ingress gateway: status, ``Location``, ``server`` and the JSON body
    (the sample's ``/api/echo``: ``path`` and ``headers`` as the app received them; None: not JSON)."""

    status: int
    location: str | None = None
    server: str = ""
    body: Mapping[str, Any] | None = None
    error: str = ""

    @property
    def echoed_headers(self) -> Mapping[str, Any]:
        headers = (self.body or {}).get("headers")
        return headers if isinstance(headers, Mapping) else {}

    @property
    def echoed_path(self) -> str | None:
        path = (self.body or {}).get("path")
        return path if isinstance(path, str) else None

    @property
    def from_app(self) -> bool:
        """The sample answered (its body names its version)."""
        return bool((self.body or {}).get("version"))


def send(
    http: httpx.Client,
    mesh: Backend,
    n: int,
    path: str,
    headers: Mapping[str, str] | None = None,
) -> list[Answer]:
    """``n`` requests for ``path`` through the ingress gateway with Host :data:`HOST` (redirects
    are answers, never followed)."""
    import httpx

    url = mesh.ingress_url().rstrip("/") + path
    out = []
    for _ in range(n):
        try:
            r = http.get(url, headers={"host": HOST, **(headers or {})}, follow_redirects=False)
        except httpx.HTTPError as e:
            out.append(Answer(0, error=f"{type(e).__name__}: {e}"))
            continue
        try:
            body = r.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        out.append(
            Answer(
                r.status_code,
                r.headers.get("location"),
                r.headers.get("server", ""),
                body if isinstance(body, Mapping) else None,
            )
        )
    return out


def router_counters(stats_text: str) -> dict[str, int]:
    """The gateway's router counters summed over its HTTP connection managers (Envoy ``/stats``)."""
    totals = dict.fromkeys(ROUTER_COUNTERS, 0)
    for line in stats_text.splitlines():
        name, _, raw = line.partition(": ")
        if not name.startswith("http.") or name.startswith(("http.admin.", "http.agent.", "http.stats.")):
            continue
        tail = name.rsplit(".", 1)[-1]
        if tail in totals:
            try:
                totals[tail] += int(float(raw))
            except ValueError:
                continue
    return totals


ROUTER_STATS_FILTER = r"^http\..*\.(" + "|".join(ROUTER_COUNTERS) + ")$"


def delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in ROUTER_COUNTERS}


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class HeaderProbe:
    """What the client sends to prove a RequestHeaderModifier: a value of its own for every header
    the filter sets, adds or removes, so each operation changes something observable."""

    client_value: str = "from-client"
    sent: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def for_filter(cls, modifier: Mapping[str, Any], client_value: str = "from-client") -> HeaderProbe:
        names = [h["name"] for h in [*modifier.get("set", []), *modifier.get("add", [])]]
        names += list(modifier.get("remove", []))
        return cls(client_value, {n.lower(): client_value for n in names})


def _values(raw: Any) -> list[str]:
    """A header as Node reports it: repeated values of most headers joined by ", "."""
    if raw is None:
        return []
    if isinstance(raw, list):
        return [str(v) for v in raw]
    return [v.strip() for v in str(raw).split(",")]


def headers_modified(
    answers: Sequence[Answer], modifier: Mapping[str, Any], probe: HeaderProbe
) -> CheckResult:
    """Every request reached the app with the RequestHeaderModifier ``modifier`` applied to what
    ``probe`` sent: each ``set`` header carries exactly the filter's value (the client's replaced),
    each ``add`` header the client's value and then the filter's, each ``remove`` header is gone."""
    expect: dict[str, list[str] | None] = {}
    for h in modifier.get("set", []):
        expect[h["name"].lower()] = [h["value"]]
    for h in modifier.get("add", []):
        expect[h["name"].lower()] = [probe.client_value, h["value"]]
    for name in modifier.get("remove", []):
        expect[name.lower()] = None
    failures: dict[str, int] = dict.fromkeys(expect, 0)
    not_app = 0
    example: dict[str, Any] = {}
    for a in answers:
        if not a.from_app:
            not_app += 1
            continue
        seen = {k.lower(): v for k, v in a.echoed_headers.items()}
        for name, wanted in expect.items():
            got = _values(seen.get(name)) if name in seen else None
            if got != wanted:
                failures[name] += 1
                example.setdefault(name, seen.get(name))
    passed = bool(answers) and not_app == 0 and not any(failures.values())
    n = len(answers)
    rows = [
        f"{name}: expected {'absent' if wanted is None else wanted!r}; "
        f"{n - not_app - failures[name]}/{n - not_app} as expected"
        + (f" (e.g. seen {example[name]!r})" if name in example else "")
        for name, wanted in expect.items()
    ]
    detail = "\n".join(
        [f"{n} requests; the app answered {n - not_app}", *rows]
        if answers
        else ["no requests: proves nothing"]
    )
    return CheckResult(
        name="request_header_modifier",
        passed=passed,
        detail=detail,
        evidence={
            "requests": n,
            "not_app": not_app,
            "failures": failures,
            "expected": expect,
            "sent": dict(probe.sent),
        },
        key="gateway_api.request_header_modifier",
    )


def path_rewritten(answers: Sequence[Answer], sent_path: str, prefix: str, replacement: str) -> CheckResult:
    """Every request for ``sent_path`` reached the app as the URLRewrite ReplacePrefixMatch says:
    ``prefix`` replaced by ``replacement``, the rest (and the query) kept."""
    if not sent_path.startswith(prefix):
        raise ValueError(f"{sent_path!r} does not start with the rewritten prefix {prefix!r}")
    expected = (
        replacement.rstrip("/") + sent_path[len(prefix) :] if replacement != "/" else sent_path[len(prefix) :]
    )
    expected = expected if expected.startswith("/") else "/" + expected
    seen: dict[str, int] = {}
    for a in answers:
        key = a.echoed_path if a.from_app else f"(status {a.status}, not the app)"
        seen[str(key)] = seen.get(str(key), 0) + 1
    good = seen.get(expected, 0)
    passed = bool(answers) and good == len(answers)
    detail = (
        f"sent {len(answers)} requests for {sent_path}; expected the app to see {expected} "
        f"(URLRewrite ReplacePrefixMatch {prefix} -> {replacement}); seen: "
        + ", ".join(f"{p} x{k}" for p, k in seen.items())
    )
    return CheckResult(
        name="url_rewrite_prefix",
        passed=passed,
        detail=detail if answers else "no requests: proves nothing",
        evidence={"requests": len(answers), "expected": expected, "seen": seen, "sent": sent_path},
        key="gateway_api.url_rewrite_prefix",
    )


def redirect_location(redirect: Mapping[str, Any]) -> str:
    """The ``Location`` a RequestRedirect whose scheme, hostname, port and full path are all given
    names: ``scheme://hostname:port/path``. A filter that leaves any of them to the request or
    the listener is not predicted here (that would be imitating the implementation)."""
    path = redirect.get("path") or {}
    missing = [k for k in ("scheme", "hostname", "port") if redirect.get(k) in (None, "")]
    if path.get("type") != "ReplaceFullPath":
        missing.append("path.replaceFullPath")
    if missing:
        raise ValueError(f"the redirect leaves {', '.join(missing)} unset: give them to predict its Location")
    return f"{redirect['scheme']}://{redirect['hostname']}:{redirect['port']}{path['replaceFullPath']}"


def redirected(answers: Sequence[Answer], redirect: Mapping[str, Any], direct_responses: int) -> CheckResult:
    """Every request was answered by the gateway with the filter's status code and ``Location``,
    and the gateway's router counted each as its own answer (``rq_direct_response``)."""
    code = int(redirect["statusCode"])
    location = redirect_location(redirect)
    seen: dict[tuple[int, str | None], int] = {}
    for a in answers:
        seen[(a.status, a.location)] = seen.get((a.status, a.location), 0) + 1
    good = seen.get((code, location), 0)
    n = len(answers)
    passed = bool(answers) and good == n and direct_responses == n
    detail = (
        f"{n} requests; expected every one answered {code} with Location {location}; seen: "
        + ", ".join(f"{s} {loc!r} x{k}" for (s, loc), k in seen.items())
        + f"; the gateway's router answered {direct_responses} itself (rq_direct_response)"
    )
    return CheckResult(
        name="request_redirect",
        passed=passed,
        detail=detail if answers else "no requests: proves nothing",
        evidence={
            "requests": n,
            "expected": {"status": code, "location": location},
            "seen": {f"{s} {loc}": k for (s, loc), k in seen.items()},
            "statuses": sorted({s for s, _ in seen}),
            "locations": sorted({str(loc) for _, loc in seen}),
            "rq_direct_response": direct_responses,
        },
        key="gateway_api.request_redirect",
    )


def missing_backend(
    status: RouteStatus, answers: Sequence[Answer], no_cluster: int, reason: str = "BackendNotFound"
) -> CheckResult:
    """Istio reports the route Accepted with ResolvedRefs=False for ``reason`` on its current
    generation, and every request was answered 500 by the gateway (not the app), each counted by
    the gateway's router as a request whose cluster does not exist (``no_cluster``)."""
    accepted = status.condition("Accepted") or {}
    resolved = status.condition("ResolvedRefs") or {}
    n = len(answers)
    five_hundred = sum(1 for a in answers if a.status == 500 and not a.from_app)
    condition_ok = (
        status.current
        and accepted.get("status") == "True"
        and resolved.get("status") == "False"
        and resolved.get("reason") == reason
    )
    passed = bool(answers) and condition_ok and five_hundred == n and no_cluster == n
    statuses: dict[int, int] = {}
    for a in answers:
        statuses[a.status] = statuses.get(a.status, 0) + 1
    detail = (
        f"Istio's conditions (generation {status.generation}): {status.text() or 'none'}; expected "
        f"Accepted=True and ResolvedRefs=False ({reason})\n"
        f"{n} requests: {five_hundred} answered 500 by the gateway (statuses {statuses}); "
        f"the gateway's router found no cluster for {no_cluster} (no_cluster)"
    )
    return CheckResult(
        name="backend_not_found",
        passed=passed,
        detail=detail if answers else "no requests: proves nothing",
        evidence={
            "requests": n,
            "conditions": [dict(c) for c in status.conditions],
            "resolved_refs": dict(resolved),
            "gateway_500": five_hundred,
            "statuses": statuses,
            "no_cluster": no_cluster,
        },
        key="gateway_api.backend_not_found",
    )


def failed_on(key: str, predicate: Callable[[Any], bool]) -> Callable[[CheckResult], bool]:
    """A ``because`` predicate over one evidence field of a failed check."""
    return lambda check: predicate(check.evidence.get(key))
