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
"""


def test_sums_connection_manager_totals_not_per_downstream_copies() -> None:
    assert parse_fault_counts(STATS) == FaultCounts(delays=53, aborts=31)


def test_not_exposed_is_none_not_zero() -> None:
    assert parse_fault_counts("cluster.x.upstream_rq_total: 4\n") is None
    assert parse_fault_counts("http.x.fault.delays_injected: 0\n") == FaultCounts(0, 0)


def test_difference_counts_one_sample() -> None:
    assert FaultCounts(60, 40) - FaultCounts(10, 5) == FaultCounts(50, 35)


def test_reader_asks_envoy_for_the_fault_counters_only() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text=STATS)

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        assert fault_counts(http, "http://127.0.0.1:15000") == FaultCounts(53, 31)
    assert seen[0].url.path == "/stats"
    assert "fault" in seen[0].url.params["filter"]
