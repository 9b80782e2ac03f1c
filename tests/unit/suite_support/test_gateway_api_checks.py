"""The Gateway API suite's pure checks (suites/_support/gateway_api.py): each passes on what a
correct gateway answers and fails, saying why, on what each negative control's mesh answers."""

from __future__ import annotations

from typing import Any

import pytest

from suites._support import gateway_api as gw

MODIFIER = {
    "set": [{"name": "X-Set", "value": "route"}],
    "add": [{"name": "x-add", "value": "route"}],
    "remove": ["x-remove"],
}
PROBE = gw.HeaderProbe.for_filter(MODIFIER, "client")


def echo(headers: dict[str, Any], path: str = "/api/echo", status: int = 200) -> gw.Answer:
    return gw.Answer(status, body={"path": path, "headers": headers, "version": "v1", "pod": "p"})


def test_the_probe_sends_a_value_of_its_own_for_every_header_the_filter_names() -> None:
    assert PROBE.sent == {"x-set": "client", "x-add": "client", "x-remove": "client"}


def test_headers_modified_passes_on_what_the_filter_does() -> None:
    answers = [echo({"x-set": "route", "x-add": "client, route", "host": "h"})] * 3
    check = gw.headers_modified(answers, MODIFIER, PROBE)
    assert check.passed, check
    assert check.key == "gateway_api.request_header_modifier"


@pytest.mark.parametrize(
    ("seen", "failing"),
    [
        ({"x-set": "client", "x-add": "client, route"}, "x-set"),  # set kept the client's value
        ({"x-set": "client, route", "x-add": "client, route"}, "x-set"),  # set appended
        ({"x-set": "route", "x-add": "route"}, "x-add"),  # add replaced instead of appending
        ({"x-set": "route", "x-add": "client"}, "x-add"),  # nothing added
        ({"x-set": "route", "x-add": "client, route", "x-remove": "client"}, "x-remove"),
    ],
)
def test_headers_modified_fails_naming_the_header(seen: dict[str, str], failing: str) -> None:
    check = gw.headers_modified(
        [echo(seen), echo({"x-set": "route", "x-add": "client, route"})], MODIFIER, PROBE
    )
    assert not check.passed
    assert check.evidence["failures"][failing] == 1
    assert f"{failing}: expected" in check.detail and "1/2 as expected" in check.detail


def test_headers_modified_fails_when_the_app_did_not_answer_or_nothing_was_sent() -> None:
    check = gw.headers_modified([gw.Answer(503, server="istio-envoy")], MODIFIER, PROBE)
    assert not check.passed and check.evidence["not_app"] == 1
    assert not gw.headers_modified([], MODIFIER, PROBE).passed


def test_path_rewritten() -> None:
    good = [echo({}, "/api/echo?q=1")] * 4
    assert gw.path_rewritten(good, "/legacy/echo?q=1", "/legacy", "/api").passed
    bad = gw.path_rewritten([echo({}, "/legacy/echo", 404), *good], "/legacy/echo?q=1", "/legacy", "/api")
    assert not bad.passed and bad.evidence["seen"] == {"/legacy/echo": 1, "/api/echo?q=1": 4}
    envoy_500 = gw.path_rewritten([gw.Answer(500)], "/legacy/echo", "/legacy", "/api")
    assert envoy_500.evidence["seen"] == {"(status 500, not the app)": 1}
    assert gw.path_rewritten([echo({}, "/echo")], "/legacy/echo", "/legacy", "/").passed
    with pytest.raises(ValueError, match="does not start with"):
        gw.path_rewritten(good, "/other", "/legacy", "/api")


REDIRECT = {
    "scheme": "https",
    "hostname": "moved.test",
    "port": 8443,
    "path": {"type": "ReplaceFullPath", "replaceFullPath": "/p"},
    "statusCode": 302,
}


def test_the_location_is_predicted_only_from_a_fully_given_redirect() -> None:
    assert gw.redirect_location(REDIRECT) == "https://moved.test:8443/p"
    with pytest.raises(ValueError, match="port, path.replaceFullPath"):
        gw.redirect_location({"scheme": "https", "hostname": "h"})


def test_redirected() -> None:
    answers = [gw.Answer(302, "https://moved.test:8443/p")] * 5
    assert gw.redirected(answers, REDIRECT, 5).passed
    # the gateway's router did not count them as its own answers
    assert not gw.redirected(answers, REDIRECT, 4).passed
    other = gw.redirected([gw.Answer(301, "https://moved.test:8443/p")] * 5, REDIRECT, 5)
    assert not other.passed and other.evidence["statuses"] == [301]
    assert other.evidence["locations"] == ["https://moved.test:8443/p"]
    wrong_place = gw.redirected([gw.Answer(302, "http://moved.test/p")] * 5, REDIRECT, 5)
    assert not wrong_place.passed
    assert not gw.redirected([], REDIRECT, 0).passed


def status(resolved: dict[str, Any], generation: int = 2) -> gw.RouteStatus:
    accepted = {"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 2}
    return gw.RouteStatus(
        generation, (accepted, {"type": "ResolvedRefs", "observedGeneration": 2, **resolved})
    )


NOT_FOUND = {"status": "False", "reason": "BackendNotFound", "message": "backend(x) not found"}


def test_missing_backend() -> None:
    answers = [gw.Answer(500, server="istio-envoy")] * 3
    assert gw.missing_backend(status(NOT_FOUND), answers, 3).passed
    # Istio has not reported on this generation yet: no verdict on its old conditions
    assert not gw.missing_backend(status(NOT_FOUND, generation=3), answers, 3).passed
    other = gw.missing_backend(status({**NOT_FOUND, "reason": "RefNotPermitted"}), answers, 3)
    assert not other.passed and other.evidence["resolved_refs"]["reason"] == "RefNotPermitted"
    assert other.evidence["gateway_500"] == 3 and other.evidence["no_cluster"] == 3
    # the app answered 500 itself: not the gateway's answer for a missing backend
    app_500 = gw.Answer(500, body={"version": "v1", "error": "injected fault"})
    assert not gw.missing_backend(status(NOT_FOUND), [app_500] * 3, 3).passed
    assert not gw.missing_backend(status(NOT_FOUND), answers, 2).passed  # Envoy counted otherwise
    assert not gw.missing_backend(status(NOT_FOUND), [], 0).passed


def test_route_status_reads_istios_conditions_for_the_suites_gateway() -> None:
    conditions = [{"type": t, "status": "True", "observedGeneration": 4} for t in gw.ROUTE_CONDITIONS]
    objects = [
        {"kind": "HTTPRoute", "metadata": {"name": "other", "namespace": "sample", "generation": 1}},
        {
            "kind": "HTTPRoute",
            "metadata": {"name": gw.ROUTE_NAME, "namespace": "sample", "generation": 4},
            "status": {
                "parents": [
                    {"parentRef": {"name": "elsewhere", "namespace": "istio-system"}, "conditions": []},
                    {
                        "parentRef": {"name": gw.GATEWAY_NAME, "namespace": gw.GATEWAY_NAMESPACE},
                        "conditions": conditions,
                    },
                ]
            },
        },
    ]
    got = gw.route_status(objects)
    assert got is not None and got.generation == 4 and got.current
    assert got.text().startswith("Accepted=True")
    stale = gw.RouteStatus(5, got.conditions)
    assert not stale.current
    assert gw.route_status(objects[:1]) is None
    assert gw.route_status([{**objects[1], "status": {}}]) == gw.RouteStatus(4, ())


def test_gateway_ready_needs_both_conditions_on_the_current_generation() -> None:
    def gateway(generation: int, programmed: str) -> dict[str, Any]:
        return {
            "kind": "Gateway",
            "metadata": {"name": gw.GATEWAY_NAME, "generation": generation},
            "status": {
                "conditions": [
                    {"type": "Accepted", "status": "True", "observedGeneration": 1},
                    {"type": "Programmed", "status": programmed, "observedGeneration": 1},
                ]
            },
        }

    assert gw.gateway_ready([gateway(1, "True")])
    assert not gw.gateway_ready([gateway(1, "False")])
    assert not gw.gateway_ready([gateway(2, "True")])
    assert not gw.gateway_ready([])


def test_router_counters_sum_the_connection_managers_but_not_the_admins() -> None:
    text = "\n".join(
        [
            "http.outbound_0.0.0.0_8080;.no_cluster: 3",
            "http.outbound_0.0.0.0_8443;.no_cluster: 2",
            "http.outbound_0.0.0.0_8080;.rq_direct_response: 7",
            "http.admin.downstream_rq_total: 99",
            "http.outbound_0.0.0.0_8080;.downstream_rq_total: 12",
            "cluster.x.no_cluster: 50",
        ]
    )
    counts = gw.router_counters(text)
    assert counts == {"no_cluster": 5, "rq_direct_response": 7, "downstream_rq_total": 12}
    assert gw.delta(counts, {"no_cluster": 1}) == {
        "no_cluster": 4,
        "rq_direct_response": 7,
        "downstream_rq_total": 12,
    }


def test_the_counters_the_checks_read_are_kept_by_every_proxy() -> None:
    import re

    from harness.proxy_stats import INCLUSION_REGEXPS

    for name in ("http.outbound_0.0.0.0_80;.no_cluster", "http.outbound_0.0.0.0_80;.rq_direct_response"):
        assert any(re.fullmatch(r, name) for r in INCLUSION_REGEXPS), name


def test_the_route_builders() -> None:
    body = gw.route(
        gw.rule("/x", {"type": "URLRewrite", "urlRewrite": {"hostname": "h"}}), gw.rule("/y", backends=())
    )
    assert body["spec"]["parentRefs"] == [
        {"name": gw.GATEWAY_NAME, "namespace": gw.GATEWAY_NAMESPACE, "sectionName": gw.LISTENER}
    ]
    assert body["spec"]["hostnames"] == [gw.HOST]
    first, second = body["spec"]["rules"]
    assert first["backendRefs"] == [gw.BACKEND] and "backendRefs" not in second
    assert gw.the_filter(body, "URLRewrite") == {"hostname": "h"}
    with pytest.raises(LookupError):
        gw.the_filter(body, "RequestRedirect")
