"""Fault injection: a VirtualService's abort and delay faults hit the configured share of requests.

The ingress route gets ``fault.abort`` (``httpStatus`` ABORT_STATUS for ABORT_PERCENT% of
requests) and ``fault.delay`` (``fixedDelay`` for DELAY_PERCENT%); the gateway's fault filter
draws both independently per request (delay first, then abort). Expectations are read back from
the applied VirtualService. Each share is tested with the exact binomial test
(:func:`harness.traffic.stats.check_proportion`) on one sample whose size the design sets for
the harder of the two rates.

A delayed request is recognised by its client-side latency: at least ``DELAY_SEEN`` of the
fixed delay. (Envoy's timer fires up to a few ms early: it arms the delay from the event
loop's cached time; undelayed requests answer in tens of ms, so the two groups are far apart.)
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from harness import wait
from harness.istio import HttpRoute, VirtualService, parse_duration
from harness.traffic.checks import CheckResult, proportion_match
from harness.traffic.client import SampleResult
from suites._support.config import ConfigGuard
from suites._support.routing import route_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ABORT_STATUS = 555
ABORT_PERCENT = 30.0
DELAY = "200ms"
DELAY_PERCENT = 50.0
DELAY_SEEN = 0.9  # share of the fixed delay a delayed request's latency must reach
CONCURRENCY = 48


def ingress_vs(config: ConfigGuard) -> VirtualService:
    vs = config.applied.ingress_virtual_service()
    assert vs is not None, "the manifests define no VirtualService bound to a Gateway"
    return vs


def fault_variant(config: ConfigGuard, fault: dict[str, Any]) -> dict[str, Any]:
    vs = ingress_vs(config)

    def edit(body: dict[str, Any]) -> None:
        for route in body["spec"]["http"]:
            route["fault"] = fault

    return config.variant("VirtualService", vs.name, vs.namespace, edit)


def configured(route: HttpRoute) -> tuple[int | None, float, float | None, float]:
    """(abort status, abort share, delay seconds, delay share) of the route's fault."""
    fault = route.fault or {}
    abort, delay = fault.get("abort") or {}, fault.get("delay") or {}
    abort_share = float((abort.get("percentage") or {}).get("value", 100.0 if abort else 0.0)) / 100
    delay_share = float((delay.get("percentage") or {}).get("value", 100.0 if delay else 0.0)) / 100
    delay_s = parse_duration(delay["fixedDelay"]) if "fixedDelay" in delay else None
    return abort.get("httpStatus"), abort_share, delay_s, delay_share


def gate(config: ConfigGuard, mesh: Any, sampler: Any, status: int) -> int:
    """Wait until the gateway answers with the abort status at all (the fault filter is live)."""
    sent = 0

    def seen() -> bool:
        nonlocal sent
        r = sampler.sample(mesh, n=50, concurrency=CONCURRENCY)
        sent += r.total
        return status in r.status_counts()

    wait.until(seen, what=f"the ingress to abort requests with {status}", timeout=30, interval=0.0)
    return sent


def abort_check(result: SampleResult, status: int, share: float, alpha: float) -> CheckResult:
    aborted = sum(1 for r in result.responses if r.status == status and not r.version)
    served = sum(1 for r in result.responses if r.ok)
    other = result.total - aborted - served
    share_check = proportion_match(aborted, result.total, share, alpha, what=f"abort {status} share")
    clean = CheckResult(
        name="only_aborts_or_app_200s",
        passed=other == 0,
        detail=f"{aborted} aborted, {served} served by the app, {other} other: {result.status_counts()}",
    )
    return CheckResult(
        name=f"abort_share({status}, {share:g})",
        passed=share_check.passed and clean.passed,
        detail=f"{share_check.detail}\n{clean.detail}",
        evidence={"checks": (share_check, clean)},
    )


def delay_check(result: SampleResult, delay_s: float, share: float, alpha: float) -> CheckResult:
    threshold_ms = DELAY_SEEN * delay_s * 1000
    delayed = sum(1 for r in result.responses if not r.error and r.latency_ms >= threshold_ms)
    check = proportion_match(delayed, result.total, share, alpha, what=f"delay >={threshold_ms:.0f}ms share")
    q = result.latency_quantiles()
    ambiguous = sum(
        1
        for r in result.responses
        if not r.error and 0.5 * threshold_ms / DELAY_SEEN <= r.latency_ms < threshold_ms
    )
    return CheckResult(
        f"delay_share({delay_s * 1000:g}ms, {share:g})",
        check.passed,
        f"{check.detail}\nlatency p50 {q['p50']:.0f}ms p90 {q['p90']:.0f}ms p99 {q['p99']:.0f}ms; "
        f"{ambiguous} between half the delay and the threshold (neither clearly delayed nor not)",
        check.evidence,
    )


def test_abort_and_delay_hit_the_configured_shares(mesh_backend, sampler, config, design, evidence) -> None:
    """abort 555 for 30% and a 200ms delay for 50%, each share inside its exact binomial test."""
    started = time.perf_counter()
    fault = {
        "abort": {"httpStatus": ABORT_STATUS, "percentage": {"value": ABORT_PERCENT}},
        "delay": {"fixedDelay": DELAY, "percentage": {"value": DELAY_PERCENT}},
    }
    apply_s = config.apply(fault_variant(config, fault), label="fault-injection")
    status, abort_share, delay_s, delay_share = configured(route_for(ingress_vs(config)))
    assert status is not None and delay_s is not None
    gated = gate(config, mesh_backend, sampler, status)
    n = max(design.n_proportion(abort_share), design.n_proportion(delay_share))
    t0 = time.perf_counter()
    result = sampler.sample(mesh_backend, n=n, concurrency=CONCURRENCY)
    sampled_s = time.perf_counter() - t0
    evidence.require(
        abort_check(result, status, abort_share, design.alpha),
        requests=gated + n,
        confidence=design.proportion_confidence(),
        wall_s=time.perf_counter() - started,
        notes=f"ACK {apply_s:.2f}s; {n / sampled_s:.0f} req/s",
    )
    evidence.require(
        delay_check(result, delay_s, delay_share, design.alpha),
        requests=0,
        confidence=design.proportion_confidence(),
        wall_s=0.0,
        notes="same sample as the abort check",
    )


@pytest.mark.negative
def test_negative_abort_check_fails_when_the_applied_share_differs(
    mesh_backend, sampler, config, design, evidence
) -> None:
    """Negative control: 50% aborts applied while asserting 30%: the abort check FAILS."""
    started = time.perf_counter()
    apply_s = config.apply(
        fault_variant(config, {"abort": {"httpStatus": ABORT_STATUS, "percentage": {"value": 50.0}}}),
        label="fault-mutant",
    )
    status, applied_share, _, _ = configured(route_for(ingress_vs(config)))
    assert status is not None and applied_share != ABORT_PERCENT / 100
    gated = gate(config, mesh_backend, sampler, status)
    n = design.n_proportion(ABORT_PERCENT / 100)
    result = sampler.sample(mesh_backend, n=n, concurrency=CONCURRENCY)
    evidence.require_failure(
        abort_check(result, status, ABORT_PERCENT / 100, design.alpha),
        requests=gated + n,
        confidence=design.proportion_confidence(),
        wall_s=time.perf_counter() - started,
        notes=f"applied {applied_share:.0%}, asserted {ABORT_PERCENT:g}%; ACK {apply_s:.2f}s",
    )
