"""Fault filter counters read from Envoy's /stats text (the fault suite's evidence)."""

from __future__ import annotations

import httpx

from harness.envoy import FaultCounts, fault_counts, parse_fault_counts

STATS = """\
http.outbound_0.0.0.0_8080.fault.aborts_injected: 31
http.outbound_0.0.0.0_8080.fault.delays_injected: 52
http.outbound_0.0.0.0_8080.fault.istio-ingressgateway.aborts_injected: 31
http.outbound_0.0.0.0_8080.fault.istio-ingressgateway.delays_injected: 52
http.admin.fault.delays_injected: 1
cluster.outbound|3000|v1|svc.fault.delays_injected: 7
http.outbound_0.0.0.0_8080.downstream_rq_total: 100
http.admin.downstream_rq_total: 3
http.inbound_0.0.0.0_15090.downstream_rq_total: 40
"""


def test_sums_connection_manager_totals_not_per_downstream_copies() -> None:
    assert parse_fault_counts(STATS) == FaultCounts(delays=53, aborts=31, requests=103)


def test_requests_count_only_connection_managers_with_a_fault_filter() -> None:
    """The Prometheus listener's requests are no fault filter's trials; the admin's here has one."""
    text = "http.gw.fault.delays_injected: 5\nhttp.gw.downstream_rq_total: 9\nhttp.prom.downstream_rq_total: 70\n"
    assert parse_fault_counts(text) == FaultCounts(delays=5, aborts=0, requests=9)


def test_not_exposed_is_none_not_zero() -> None:
    assert parse_fault_counts("cluster.x.upstream_rq_total: 4\n") is None
    assert parse_fault_counts("http.x.fault.delays_injected: 0\n") == FaultCounts(0, 0)


def test_difference_counts_one_sample() -> None:
    assert FaultCounts(60, 40, 300) - FaultCounts(10, 5, 100) == FaultCounts(50, 35, 200)


def test_reader_asks_envoy_for_the_fault_counters_only() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text=STATS)

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        assert fault_counts(http, "http://127.0.0.1:15000") == FaultCounts(53, 31, 103)
    assert seen[0].url.path == "/stats"
    assert "fault" in seen[0].url.params["filter"]
    assert "downstream_rq_total" in seen[0].url.params["filter"]
