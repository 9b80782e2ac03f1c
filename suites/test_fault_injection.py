"""Fault injection: a VirtualService's abort and delay faults hit the configured share of requests.

The ingress route gets ``fault.abort`` (``httpStatus`` ABORT_STATUS for ABORT_PERCENT% of
requests) and ``fault.delay`` (``fixedDelay`` for DELAY_PERCENT%); the gateway's fault filter
draws both independently per request (delay first, then abort). Expectations are read back from
the applied VirtualService. Each share is a sequential probability ratio test
(:func:`harness.traffic.stats.sequential_proportion_plan`: the design's alpha, power and minimum
deviation, about half the fixed-n requests on a correct mesh, a wrong share rejected after a
batch or two). Traffic goes in complete batches of ``BATCH`` requests; after each batch the
counters have moved by exactly that batch's injections, so each look sees whole Bernoulli
trials (the fault filter draws per request, independently of timing). Both checks look at the
same batches; a check that has decided stops looking (its verdict is its state at that point).

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
from dataclasses import dataclass, replace
from typing import Any

import pytest

from harness import envoy, wait
from harness.envoy import EnvoyAdmin, FaultCounts
from harness.guards import ConfigGuard
from harness.istio import HttpRoute, VirtualService, parse_duration
from harness.traffic import stats
from harness.traffic.checks import CheckResult
from harness.traffic.client import SampleResult
from harness.traffic.split import route_for
from suites._support.routes import FAULTS_ARE_VIRTUAL_SERVICES

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.istio_routes(reason=FAULTS_ARE_VIRTUAL_SERVICES)]

ABORT_STATUS = 555
ABORT_PERCENT = 30.0
DELAY = "200ms"
DELAY_PERCENT = 50.0
DELAY_SEEN = 0.9  # a request faster than this share of the fixed delay was not delayed
CONCURRENCY = 64  # half the requests sleep 200 ms at the gateway: keep the pipe full
BATCH = 320  # requests per look: complete batches, so the counters' deltas are whole trials


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


def share_check(verdict: stats.SequentialVerdict, what: str) -> CheckResult:
    """A sequential share verdict as a check (its table says N used and the fixed-n replaced)."""
    return CheckResult(f"{what}: {verdict.summary()}", verdict.passed, verdict.table())


def abort_check(
    result: SampleResult, injected: FaultCounts, status: int, verdict: stats.SequentialVerdict
) -> CheckResult:
    """The gateway's ``aborts_injected`` is the configured share (sequential test on Envoy's count),
    and the clients saw exactly those aborts (status ``status`` with no app version) and app 200s."""
    aborted = sum(1 for r in result.responses if r.status == status and not r.version)
    served = sum(1 for r in result.responses if r.ok)
    other = result.total - aborted - served
    share = verdict.categories[0].expected
    shares = share_check(verdict, f"abort {status} share (Envoy aborts_injected)")
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
        passed=shares.passed and clean.passed,
        detail=f"{shares.detail}\n{clean.detail}",
        evidence={"checks": (shares, clean), "aborts_injected": injected.aborts},
    )


def delay_check(
    result: SampleResult, injected: FaultCounts, delay_s: float, verdict: stats.SequentialVerdict
) -> CheckResult:
    """The gateway's ``delays_injected`` is the configured share (sequential test on Envoy's count);
    cross-check: no more requests were faster than the delay than were left undelayed."""
    share = verdict.categories[0].expected
    shares = share_check(verdict, "delay share (Envoy delays_injected)")
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
        shares.passed and cross.passed,
        f"{shares.detail}\n{cross.detail}\n"
        f"latency p50 {q['p50']:.0f}ms p90 {q['p90']:.0f}ms p99 {q['p99']:.0f}ms (information only)",
        {"checks": (shares, cross), "delays_injected": injected.delays, "fast": fast},
    )


@dataclass(frozen=True)
class CountedRun:
    """The batches a sequential fault check sent, what Envoy injected over them, and each verdict."""

    result: SampleResult
    injected: FaultCounts
    verdicts: dict[str, stats.SequentialVerdict]
    sampled_s: float

    @property
    def used_n(self) -> int:
        return max(v.n for v in self.verdicts.values())

    @property
    def fixed_n(self) -> int:
        return max(v.fixed_n for v in self.verdicts.values())


def sample_sequential(
    mesh: Any, sampler: Any, counters: FaultCounters, design: Any, shares: dict[str, float]
) -> CountedRun:
    """Complete batches until the sequential test of every ``shares`` entry (``"aborts"``,
    ``"delays"``: the configured share of that counter) has decided, or its max N is reached."""
    plans = {
        what: stats.sequential_proportion_plan(
            share, alpha=design.alpha, power=design.power, min_deviation=design.min_deviation
        )
        for what, share in shares.items()
    }
    states = {what: plan.start() for what, plan in plans.items()}
    max_n = max(plan.max_n for plan in plans.values())
    first = last = counters.read()
    parts: list[SampleResult] = []
    sampled_s = 0.0
    while not all(st.decided for st in states.values()) and sum(p.total for p in parts) < max_n:
        t0 = time.perf_counter()
        batch = sampler.sample(mesh, n=BATCH, concurrency=CONCURRENCY)
        sampled_s += time.perf_counter() - t0
        now = counters.read()
        moved = now - last
        last = now
        parts.append(batch)
        for what, st in states.items():
            if not st.decided:
                hits = getattr(moved, what)
                states[what] = st.observe({"hit": hits, "miss": batch.total - hits})
    result = replace(
        parts[0],
        responses=tuple(r for p in parts for r in p.responses),
        wall_s=sum(p.wall_s for p in parts),
        discarded=sum(p.discarded for p in parts),
    )
    return CountedRun(result, last - first, {w: st.verdict() for w, st in states.items()}, sampled_s)


def test_abort_and_delay_hit_the_configured_shares(
    mesh_backend, sampler, config, design, evidence, admin_http
) -> None:
    """abort 555 for 30% and a 200ms delay for 50%, each share (as the gateway's Envoy counted it)
    inside its sequential test."""
    started = time.perf_counter()
    fault = {
        "abort": {"httpStatus": ABORT_STATUS, "percentage": {"value": ABORT_PERCENT}},
        "delay": {"fixedDelay": DELAY, "percentage": {"value": DELAY_PERCENT}},
    }
    apply_s = config.apply(fault_variant(config, fault), label="fault-injection")
    status, abort_share, delay_s, delay_share = configured(route_for(ingress_vs(config)))
    assert status is not None and delay_s is not None
    gated = gate(config, mesh_backend, sampler, status)
    counters = FaultCounters(EnvoyAdmin(admin_http, mesh_backend.workload("ingress")))
    run = sample_sequential(
        mesh_backend, sampler, counters, design, {"aborts": abort_share, "delays": delay_share}
    )
    evidence.require(
        abort_check(run.result, run.injected, status, run.verdicts["aborts"]),
        requests=gated + run.result.total,
        confidence=design.sequential_confidence(),
        wall_s=time.perf_counter() - started,
        notes=f"ACK {apply_s:.2f}s; {run.result.total / run.sampled_s:.0f} req/s",
        used_n=run.verdicts["aborts"].n,
        fixed_n=run.verdicts["aborts"].fixed_n,
    )
    evidence.require(
        delay_check(run.result, run.injected, delay_s, run.verdicts["delays"]),
        requests=0,
        confidence=design.sequential_confidence(),
        wall_s=0.0,
        notes="same batches as the abort check",
        used_n=run.verdicts["delays"].n,
        fixed_n=run.verdicts["delays"].fixed_n,
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
    counters = FaultCounters(EnvoyAdmin(admin_http, mesh_backend.workload("ingress")))
    run = sample_sequential(mesh_backend, sampler, counters, design, {"aborts": ABORT_PERCENT / 100})
    evidence.require_failure(
        abort_check(run.result, run.injected, status, run.verdicts["aborts"]),
        requests=gated + run.result.total,
        confidence=design.sequential_confidence(),
        wall_s=time.perf_counter() - started,
        notes=f"applied {applied_share:.0%}, asserted {ABORT_PERCENT:g}%; ACK {apply_s:.2f}s",
        used_n=run.used_n,
        fixed_n=run.fixed_n,
        because=(
            "Envoy's aborts_injected share is off (the share test rejects, the clients saw the counted aborts)",
            lambda c: not c.evidence["checks"][0].passed and c.evidence["checks"][1].passed,  # type: ignore[index]
        ),
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
    counters = FaultCounters(EnvoyAdmin(admin_http, mesh_backend.workload("ingress")))
    run = sample_sequential(mesh_backend, sampler, counters, design, {"delays": DELAY_PERCENT / 100})
    evidence.require_failure(
        delay_check(run.result, run.injected, delay_s, run.verdicts["delays"]),
        requests=gated + run.result.total,
        confidence=design.sequential_confidence(),
        wall_s=time.perf_counter() - started,
        notes=f"applied {applied_share:.0%}, asserted {DELAY_PERCENT:g}%; ACK {apply_s:.2f}s",
        used_n=run.used_n,
        fixed_n=run.fixed_n,
        because=(
            "Envoy's delays_injected share is off while the latency cross-check holds",
            lambda c: not c.evidence["checks"][0].passed and c.evidence["checks"][1].passed,  # type: ignore[index]
        ),
    )
