"""Gateway API: what an HTTPRoute's filters and backendRefs do on the ingress gateway.

Properties a VirtualService lacks or names differently, each proven by applying an HTTPRoute
variant on the sample's Gateway ``istio-system/microservice-1`` live (through the config guard,
removed after the test), waiting for Istio's conditions on the route's current generation, and
sending requests through the ingress gateway with the listener's hostname:

* RequestHeaderModifier: the app (``/api/echo``) received each ``set`` header with the filter's
  value instead of the client's, each ``add`` header with the filter's value after the client's,
  and no ``remove`` header;
* URLRewrite (ReplacePrefixMatch): the app received the path with the prefix replaced;
* RequestRedirect: the gateway answered with the filter's status code and exactly the Location
  its scheme, hostname, port and path name, and its router counted each as its own answer;
* a backendRef to a Service that does not exist: Istio reports the route Accepted with
  ResolvedRefs=False (BackendNotFound, its message verbatim in the evidence), and the gateway
  answers 500, its router counting each request as one whose cluster does not exist.

The filters are deterministic, so every check is exact: each of N requests must show the
property, with N from the design's zero rule (a leak on at least ``min_deviation`` of requests is
missed with probability at most ``1 - power``; a correct mesh never fails). Verdicts rest on
counts (what the app saw, the statuses, the gateway's router counters), never on timing.
Each property has a negative control whose misconfiguration must fail that check for its reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
import pytest

from harness import envoy, httpclient, wait
from harness.backends.base import Backend
from harness.guards import ConfigGuard
from harness.traffic.checks import CheckResult
from harness.traffic.design import Design
from suites._support import gateway_api as gw

pytestmark = pytest.mark.e2e

#: what each test's route carries (the negative controls vary one of them)
HEADERS = {
    "set": [{"name": "x-meshproof-set", "value": "set-by-route"}],
    "add": [{"name": "x-meshproof-add", "value": "added-by-route"}],
    "remove": ["x-meshproof-remove"],
}
REWRITE = {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/api"}}
REDIRECT = {
    "scheme": "https",
    "hostname": "moved.meshproof.test",
    "port": 8443,
    "path": {"type": "ReplaceFullPath", "replaceFullPath": "/api/greet"},
    "statusCode": 302,
}
MISSING = {"name": "microservice-1-gone", "port": 3000}


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def http(mesh_backend: Backend) -> Iterator[httpx.Client]:
    with httpclient.client(timeout=10.0) as client:
        yield client


@pytest.fixture
def route_on_gateway(mesh_backend: Backend, config: ConfigGuard) -> Any:
    """Apply an HTTPRoute (and the sample's Gateway when the manifests lack it) and wait until Istio
    reported the route's conditions on its current generation; returns them and the seconds. Skipped,
    with the reason, where the mesh's cluster serves no Gateway API (an existing cluster without the
    CRDs: meshproof never installs them there)."""
    if why := getattr(mesh_backend, "unavailable", dict)().get("gateway-api"):
        pytest.skip(f"Gateway API suite skipped: {why}")

    def apply(body: dict[str, Any], label: str) -> tuple[gw.RouteStatus, float]:
        bodies = [body]
        held = config.applied.find("Gateway", gw.GATEWAY_NAMESPACE, gw.GATEWAY_NAME)
        if held is None or not held.api_version.startswith(gw.GROUP + "/"):
            bodies.append(gw.gateway())
        started = time.perf_counter()
        config.apply(*bodies, label=label)

        def reported() -> gw.RouteStatus | None:
            objects = mesh_backend.gateway_api_objects()
            status = gw.route_status(objects)
            return status if status is not None and status.current and gw.gateway_ready(objects) else None

        status = wait.until(
            reported,
            what=f"Istio's {'/'.join(gw.ROUTE_CONDITIONS)} on HTTPRoute {gw.ROUTE_NAMESPACE}/{gw.ROUTE_NAME} "
            f"for Gateway {gw.GATEWAY_NAMESPACE}/{gw.GATEWAY_NAME} (current generation), the Gateway "
            "Accepted and Programmed",
            timeout=60,
            hint="`meshproof status` shows Istio's conditions on the Gateway and the route",
        )
        return status, time.perf_counter() - started

    return apply


def router_counters(mesh: Backend, http: httpx.Client) -> dict[str, int]:
    """The ingress gateway's router counters (:func:`gw.router_counters`)."""
    proxy = next(w for w in mesh.workloads() if w.role == "gateway" and w.proxy_admin_url)
    text = envoy.admin_get(http, f"{proxy.proxy_admin_url}/stats", filter=gw.ROUTER_STATS_FILTER)
    return gw.router_counters(text)


Because = tuple[str, Callable[[CheckResult], bool]]


def record(evidence: Any, check: CheckResult, because: Because | None, **common: Any) -> None:
    """The positive's ``require``, or the negative control's ``require_failure`` with its reason."""
    if because is None:
        evidence.require(check, **common)
    else:
        evidence.require_failure(check, because=because, **common)


def _common(design: Design, n: int, started: float, notes: str) -> dict[str, Any]:
    return {
        "requests": n,
        "confidence": design.exact_confidence(),
        "wall_s": time.perf_counter() - started,
        "notes": notes,
    }


# --------------------------------------------------------------------------- RequestHeaderModifier


def header_route(modifier: Mapping[str, Any]) -> dict[str, Any]:
    return gw.route(
        gw.rule("/api/echo", {"type": "RequestHeaderModifier", "requestHeaderModifier": modifier})
    )


def prove_headers(
    mesh: Backend,
    http: httpx.Client,
    route_on_gateway: Any,
    design: Design,
    evidence: Any,
    running: Mapping[str, Any],
    label: str,
    because: Because | None = None,
) -> None:
    started = time.perf_counter()
    status, apply_s = route_on_gateway(header_route(running), label)
    probe = gw.HeaderProbe.for_filter(HEADERS)
    n = design.n_exact()
    answers = gw.send(http, mesh, n, "/api/echo", probe.sent)
    check = gw.headers_modified(answers, HEADERS, probe)
    notes = f"route {status.text()}; applied and reported in {apply_s:.2f}s; sent {dict(probe.sent)}"
    if because is not None:
        notes = f"running {dict(running)}; asserted {HEADERS}; " + notes
    record(evidence, check, because, **_common(design, n, started, notes))


def test_request_header_modifier_sets_adds_and_removes(
    mesh_backend, http, route_on_gateway, design, evidence
) -> None:
    prove_headers(mesh_backend, http, route_on_gateway, design, evidence, HEADERS, "headers")


@pytest.mark.negative
def test_negative_misspelt_header_names_fail_the_header_check(
    mesh_backend, http, route_on_gateway, design, evidence
) -> None:
    """The filter names headers the client does not send (one letter off): the app sees what the
    client sent, so the check asserting the intended filter fails on every header."""
    misspelt = {
        "set": [{"name": "x-meshproof-sett", "value": "set-by-route"}],
        "add": [{"name": "x-meshproof-ad", "value": "added-by-route"}],
        "remove": ["x-meshproof-remov"],
    }

    def unmodified(check: Any) -> bool:
        failures = check.evidence.get("failures", {})
        n = check.evidence.get("requests", 0)
        return n > 0 and check.evidence.get("not_app") == 0 and all(v == n for v in failures.values())

    prove_headers(
        mesh_backend,
        http,
        route_on_gateway,
        design,
        evidence,
        misspelt,
        "headers-misspelt",
        because=(
            "every request reached the app with the set, add and remove headers as the client sent them",
            unmodified,
        ),
    )


# --------------------------------------------------------------------------- URLRewrite


def rewrite_route(prefix: str) -> dict[str, Any]:
    """``prefix`` rewritten by :data:`REWRITE`; ``/legacy`` itself forwarded unchanged otherwise."""
    rules = [gw.rule(prefix, {"type": "URLRewrite", "urlRewrite": REWRITE})]
    if prefix != "/legacy":
        rules.append(gw.rule("/legacy"))
    return gw.route(*rules)


def prove_rewrite(
    mesh: Backend,
    http: httpx.Client,
    route_on_gateway: Any,
    design: Design,
    evidence: Any,
    filtered_prefix: str,
    label: str,
    because: Because | None = None,
) -> None:
    started = time.perf_counter()
    status, apply_s = route_on_gateway(rewrite_route(filtered_prefix), label)
    n = design.n_exact()
    sent = "/legacy/echo?probe=rewrite"
    answers = gw.send(http, mesh, n, sent)
    check = gw.path_rewritten(answers, sent, "/legacy", REWRITE["path"]["replacePrefixMatch"])
    notes = f"route {status.text()}; applied and reported in {apply_s:.2f}s; the filter on prefix {filtered_prefix}"
    record(evidence, check, because, **_common(design, n, started, notes))


def test_url_rewrite_replaces_the_path_prefix(mesh_backend, http, route_on_gateway, design, evidence) -> None:
    prove_rewrite(mesh_backend, http, route_on_gateway, design, evidence, "/legacy", "rewrite")


@pytest.mark.negative
def test_negative_rewrite_on_another_path_match_fails_the_rewrite_check(
    mesh_backend, http, route_on_gateway, design, evidence
) -> None:
    """The URLRewrite sits on a rule for ``/legacy/greet``; ``/legacy/echo`` takes a rule without it."""
    sent = "/legacy/echo"  # the app answers an unknown path 404 with the path it saw (no query)

    def unrewritten(check: Any) -> bool:
        seen = check.evidence.get("seen", {})
        return seen == {sent: check.evidence.get("requests")}

    prove_rewrite(
        mesh_backend,
        http,
        route_on_gateway,
        design,
        evidence,
        "/legacy/greet",
        "rewrite-elsewhere",
        because=(f"the app saw every request's path as the client sent it ({sent})", unrewritten),
    )


# --------------------------------------------------------------------------- RequestRedirect


def prove_redirect(
    mesh: Backend,
    http: httpx.Client,
    route_on_gateway: Any,
    design: Design,
    evidence: Any,
    running: Mapping[str, Any],
    label: str,
    because: Because | None = None,
) -> None:
    started = time.perf_counter()
    body = gw.route(
        gw.rule("/moved", {"type": "RequestRedirect", "requestRedirect": dict(running)}, backends=())
    )
    status, apply_s = route_on_gateway(body, label)
    n = design.n_exact()
    before = router_counters(mesh, http)
    answers = gw.send(http, mesh, n, "/moved/here")
    counted = gw.delta(router_counters(mesh, http), before)
    check = gw.redirected(answers, REDIRECT, counted["rq_direct_response"])
    notes = f"route {status.text()}; applied and reported in {apply_s:.2f}s; gateway counters moved {counted}"
    if because is not None:
        notes = f"running statusCode {running['statusCode']}; " + notes
    record(evidence, check, because, **_common(design, n, started, notes))


def test_request_redirect_answers_with_the_filters_status_and_location(
    mesh_backend, http, route_on_gateway, design, evidence
) -> None:
    prove_redirect(mesh_backend, http, route_on_gateway, design, evidence, REDIRECT, "redirect")


@pytest.mark.negative
def test_negative_redirect_with_another_code_fails_the_redirect_check(
    mesh_backend, http, route_on_gateway, design, evidence
) -> None:
    """The filter redirects with 301; the check asserts the intended 302 (same Location)."""
    location = gw.redirect_location(REDIRECT)

    def other_code(check: Any) -> bool:
        ev = check.evidence
        return (
            ev.get("statuses") == [301]
            and ev.get("locations") == [location]
            and (ev.get("rq_direct_response") == ev.get("requests"))
        )

    prove_redirect(
        mesh_backend,
        http,
        route_on_gateway,
        design,
        evidence,
        {**REDIRECT, "statusCode": 301},
        "redirect-301",
        because=(f"every request was redirected to {location} with 301, not the asserted 302", other_code),
    )


# --------------------------------------------------------------------------- a backendRef that does not resolve


def prove_missing_backend(
    mesh: Backend,
    http: httpx.Client,
    route_on_gateway: Any,
    design: Design,
    evidence: Any,
    backend: Mapping[str, Any],
    label: str,
    because: Because | None = None,
) -> None:
    started = time.perf_counter()
    status, apply_s = route_on_gateway(gw.route(gw.rule("/missing", backends=[backend])), label)
    n = design.n_exact()
    before = router_counters(mesh, http)
    answers = gw.send(http, mesh, n, "/missing/api/greet")
    counted = gw.delta(router_counters(mesh, http), before)
    check = gw.missing_backend(status, answers, counted["no_cluster"])
    resolved = status.condition("ResolvedRefs") or {}
    notes = (
        f"backendRef {dict(backend)}; Istio: ResolvedRefs={resolved.get('status')} "
        f"reason {resolved.get('reason')!r} message {resolved.get('message')!r}; "
        f"applied and reported in {apply_s:.2f}s; gateway counters moved {counted}"
    )
    record(evidence, check, because, **_common(design, n, started, notes))


def test_backend_ref_to_a_missing_service_is_not_resolved_and_answered_500(
    mesh_backend, http, route_on_gateway, design, evidence
) -> None:
    prove_missing_backend(mesh_backend, http, route_on_gateway, design, evidence, MISSING, "missing-backend")


@pytest.mark.negative
def test_negative_backend_in_another_namespace_fails_the_not_found_check(
    mesh_backend, http, route_on_gateway, design, evidence
) -> None:
    """The backendRef names a Service that exists, in another namespace without a ReferenceGrant:
    Istio refuses it for another reason (RefNotPermitted) and the gateway answers the same 500s,
    so the check, which asserts BackendNotFound, fails on Istio's reason alone."""
    elsewhere = {"name": "tracing", "namespace": "istio-system", "port": 16686}

    def other_reason(check: Any) -> bool:
        ev = check.evidence
        n = ev.get("requests")
        return (
            (ev.get("resolved_refs") or {}).get("reason") == "RefNotPermitted"
            and ev.get("gateway_500") == n
            and ev.get("no_cluster") == n
        )

    prove_missing_backend(
        mesh_backend,
        http,
        route_on_gateway,
        design,
        evidence,
        elsewhere,
        "backend-elsewhere",
        because=(
            "Istio reports ResolvedRefs=False for RefNotPermitted, not BackendNotFound (the 500s are the same)",
            other_reason,
        ),
    )
