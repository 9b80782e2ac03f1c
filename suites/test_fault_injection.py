"""Fault injection: a VirtualService's abort and delay faults hit the configured share of requests.

The ingress route gets ``fault.abort`` (``httpStatus`` ABORT_STATUS for ABORT_PERCENT% of
requests) and ``fault.delay`` (``fixedDelay`` for DELAY_PERCENT%); the gateway's fault filter
draws both independently per request (delay first, then abort). Expectations are read back from
the applied VirtualService. Each share is tested with the exact binomial test
(:func:`harness.traffic.stats.check_proportion`) on one sample whose size the design sets for
the harder of the two rates.

The counts come from the Envoy that applies the fault: the gateway's fault filter counters
(``fault.delays_injected`` / ``fault.aborts_injected``, :func:`harness.envoy.fault_counts`),
read before and after the sample. No verdict rests on timing. Client-side latency is only a
one-sided cross-check: a request answered faster than ``DELAY_SEEN`` of the fixed delay cannot
have been delayed, so such fast requests can number at most ``n - delays_injected``. Contention
only makes requests slower, so it can never push a request under the bound; a slow request
proves nothing. (``DELAY_SEEN`` < 1 leaves room for Envoy's timer, which arms from the event
loop's cached time and may fire a few ms early.)
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from harness import envoy, wait
from harness.envoy import FaultCounts
from harness.istio import HttpRoute, VirtualService, parse_duration
from harness.traffic.checks import CheckResult, proportion_match
from harness.traffic.client import SampleResult
from suites._support.config import ConfigGuard
from suites._support.envoy import EnvoyAdmin
from suites._support.routing import route_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ABORT_STATUS = 555
ABORT_PERCENT = 30.0
DELAY = "200ms"
DELAY_PERCENT = 50.0
DELAY_SEEN = 0.9  # a request faster than this share of the fixed delay was not delayed
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


class FaultCounters:
    """The gateway's fault filter counters around a sample: what Envoy itself injected."""

    def __init__(self, admin: EnvoyAdmin) -> None:
        self.admin = admin

    def read(self) -> FaultCounts:
        counts = envoy.fault_counts(self.admin.http, self.admin.url)
        if counts is None:
            pytest.fail(
                f"{self.admin.proxy.ref} exposes no fault filter counters (http.*.fault.delays_injected): "
                "the verdict needs Envoy's own count. Fix: include '.*\\.fault\\..*' in the mesh's "
                "proxyStatsMatcher.inclusionRegexps (harness/proxy_stats.py; both backends set it)",
                pytrace=False,
            )
        return counts


def abort_check(
    result: SampleResult, injected: FaultCounts, status: int, share: float, alpha: float
) -> CheckResult:
    """The gateway's ``aborts_injected`` over the sample is the configured share (exact binomial),
    and the clients saw exactly those aborts (status ``status`` with no app version) and app 200s."""
    aborted = sum(1 for r in result.responses if r.status == status and not r.version)
    served = sum(1 for r in result.responses if r.ok)
    other = result.total - aborted - served
    share_check = proportion_match(
        injected.aborts, result.total, share, alpha, what=f"abort {status} share (Envoy aborts_injected)"
    )
    clean = CheckResult(
        name="clients_saw_the_counted_aborts",
        passed=other == 0 and aborted == injected.aborts,
        detail=(
            f"Envoy counted {injected.aborts} aborts; clients saw {aborted} aborted, {served} served by "
            f"the app, {other} other: {result.status_counts()}"
        ),
    )
    return CheckResult(
        name=f"abort_share({status}, {share:g})",
        passed=share_check.passed and clean.passed,
        detail=f"{share_check.detail}\n{clean.detail}",
        evidence={"checks": (share_check, clean), "aborts_injected": injected.aborts},
    )


def delay_check(
    result: SampleResult, injected: FaultCounts, delay_s: float, share: float, alpha: float
) -> CheckResult:
    """The gateway's ``delays_injected`` over the sample is the configured share (exact binomial);
    cross-check: no more requests were faster than the delay than were left undelayed."""
    share_check = proportion_match(
        injected.delays, result.total, share, alpha, what="delay share (Envoy delays_injected)"
    )
    bound_ms = DELAY_SEEN * delay_s * 1000
    answered = [r for r in result.responses if not r.error]
    fast = sum(1 for r in answered if r.latency_ms < bound_ms)
    undelayed = result.total - injected.delays
    cross = CheckResult(
        name=f"fast_requests_were_not_delayed(<{bound_ms:.0f}ms)",
        passed=0 <= injected.delays <= result.total and fast <= undelayed,
        detail=(
            f"{fast} requests answered in under {bound_ms:.0f}ms (cannot have been delayed); Envoy left "
            f"{undelayed} of {result.total} undelayed, so at most {undelayed} may be that fast "
            "(one-sided: slowness only lowers the fast count)"
        ),
    )
    q = result.latency_quantiles()
    return CheckResult(
        f"delay_share({delay_s * 1000:g}ms, {share:g})",
        share_check.passed and cross.passed,
        f"{share_check.detail}\n{cross.detail}\n"
        f"latency p50 {q['p50']:.0f}ms p90 {q['p90']:.0f}ms p99 {q['p99']:.0f}ms (information only)",
        {"checks": (share_check, cross), "delays_injected": injected.delays, "fast": fast},
    )


def sample_counted(
    mesh: Any, sampler: Any, counters: FaultCounters, n: int
) -> tuple[SampleResult, FaultCounts, float]:
    """One sample of ``n`` requests and the fault filter counts it moved; seconds spent sampling."""
    before = counters.read()
    t0 = time.perf_counter()
    result = sampler.sample(mesh, n=n, concurrency=CONCURRENCY)
    sampled_s = time.perf_counter() - t0
    return result, counters.read() - before, sampled_s


def test_abort_and_delay_hit_the_configured_shares(
    mesh_backend, sampler, config, design, evidence, admin_http
) -> None:
    """abort 555 for 30% and a 200ms delay for 50%, each share (as the gateway's Envoy counted it)
    inside its exact binomial test."""
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
    counters = FaultCounters(EnvoyAdmin(admin_http, mesh_backend.workload("ingress")))
    result, injected, sampled_s = sample_counted(mesh_backend, sampler, counters, n)
    evidence.require(
        abort_check(result, injected, status, abort_share, design.alpha),
        requests=gated + n,
        confidence=design.proportion_confidence(),
        wall_s=time.perf_counter() - started,
        notes=f"ACK {apply_s:.2f}s; {n / sampled_s:.0f} req/s",
    )
    evidence.require(
        delay_check(result, injected, delay_s, delay_share, design.alpha),
        requests=0,
        confidence=design.proportion_confidence(),
        wall_s=0.0,
        notes="same sample as the abort check",
    )


@pytest.mark.negative
def test_negative_abort_check_fails_when_the_applied_share_differs(
    mesh_backend, sampler, config, design, evidence, admin_http
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
    counters = FaultCounters(EnvoyAdmin(admin_http, mesh_backend.workload("ingress")))
    result, injected, _ = sample_counted(mesh_backend, sampler, counters, n)
    evidence.require_failure(
        abort_check(result, injected, status, ABORT_PERCENT / 100, design.alpha),
        requests=gated + n,
        confidence=design.proportion_confidence(),
        wall_s=time.perf_counter() - started,
        notes=f"applied {applied_share:.0%}, asserted {ABORT_PERCENT:g}%; ACK {apply_s:.2f}s",
    )


@pytest.mark.negative
def test_negative_delay_check_fails_when_the_applied_share_differs(
    mesh_backend, sampler, config, design, evidence, admin_http
) -> None:
    """Negative control: the delay applied to 20% while asserting 50%: the delay check FAILS (on
    Envoy's count; the latency cross-check still holds)."""
    started = time.perf_counter()
    fault = {
        "abort": {"httpStatus": ABORT_STATUS, "percentage": {"value": ABORT_PERCENT}},
        "delay": {"fixedDelay": DELAY, "percentage": {"value": 20.0}},
    }
    apply_s = config.apply(fault_variant(config, fault), label="delay-mutant")
    status, _, delay_s, applied_share = configured(route_for(ingress_vs(config)))
    assert status is not None and delay_s is not None and applied_share != DELAY_PERCENT / 100
    gated = gate(config, mesh_backend, sampler, status)
    n = design.n_proportion(DELAY_PERCENT / 100)
    counters = FaultCounters(EnvoyAdmin(admin_http, mesh_backend.workload("ingress")))
    result, injected, _ = sample_counted(mesh_backend, sampler, counters, n)
    check = delay_check(result, injected, delay_s, DELAY_PERCENT / 100, design.alpha)
    cross = check.evidence["checks"][1]  # type: ignore[index]
    assert cross.passed, f"the latency cross-check must hold on a correct mesh: {cross.detail}"
    evidence.require_failure(
        check,
        requests=gated + n,
        confidence=design.proportion_confidence(),
        wall_s=time.perf_counter() - started,
        notes=f"applied {applied_share:.0%}, asserted {DELAY_PERCENT:g}%; ACK {apply_s:.2f}s",
    )
