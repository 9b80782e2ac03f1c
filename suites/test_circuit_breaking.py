"""Circuit breaking: above the connection-pool limits Envoy sheds requests with 503
``x-envoy-overloaded``; at or below them it never does; its overflow counters count every shed one.

The test applies a DestinationRule variant with ``tcp.maxConnections: 1``,
``http.http1MaxPendingRequests: 1`` and ``http.http2MaxRequests: 1``, routes the ingress to one
subset (one Envoy cluster, so one set of limits), and makes every replica of that subset hold
each request for ``HOLD_MS`` (app fault with ``status: null``: delay only). The prediction comes
from the limits the gateway's cluster runs: the overflow oracle
(``harness.istio.oracles.overflow.Limits``) over its ``/config_dump`` circuit breakers, Envoy's
defaults where unset, never the DestinationRule's field names:

* at most ``min(max_connections, max_requests)`` requests are active upstream and
  ``max_pending_requests`` wait; so a concurrency at or below their sum never overflows;
* every served request holds an upstream connection for ``HOLD_MS``, so over a batch lasting
  ``W`` seconds at most ``active * (W / hold + 1)`` requests can be served: the rest must be shed.

The calling proxy's own count is checked on the same batch: its overflow counters
(``upstream_rq_pending_overflow`` + ``upstream_rq_active_overflow``) moved by exactly the number
of overloaded responses, and by at least what the limits say must be shed. Negative control:
limits raised to 1000 while the checks assert 1 active + 1 pending: both checks fail, because
fewer than the asserted limits' minimum were shed (none) and counted (none).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from harness import wait
from harness.backends.base import AppFault, Backend
from harness.envoy import EnvoyAdmin, outbound_cluster
from harness.guards import ConfigGuard, FaultGuard
from harness.istio.oracles.overflow import Limits
from harness.traffic.checks import CheckResult
from harness.traffic.client import Sampler, SampleResult
from harness.traffic.split import attribution, converge_split, expected_split, route_for
from suites._support.routes import POLICY_IS_THE_DESTINATION_RULE

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.istio_routes(reason=POLICY_IS_THE_DESTINATION_RULE),
]

HOLD_MS = 300
HIGH_CONCURRENCY = 16
ROUNDS = 3  # requests per sampler thread at high concurrency
LIMITS = {"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1, "http2MaxRequests": 1}}
RAISED = {
    "tcp": {"maxConnections": 1000},
    "http": {"http1MaxPendingRequests": 1000, "http2MaxRequests": 1000},
}
OVERFLOW_COUNTERS = ("upstream_rq_pending_overflow", "upstream_rq_active_overflow")


@dataclass(frozen=True)
class Scenario:
    admin: EnvoyAdmin
    cluster: str
    limits: Limits  # the overflow oracle over the gateway's cluster
    apply_s: float


def hold_one_subset(
    config: ConfigGuard,
    mesh: Backend,
    sampler: Sampler,
    faults: FaultGuard,
    admin_http: Any,
    pool: dict[str, Any],
) -> Scenario:
    """Apply ``pool`` as the connection pool, route the ingress to its first subset only, delay it;
    read the limits the gateway's cluster runs."""
    vs = config.applied.ingress_virtual_service()
    assert vs is not None
    d = next(d for d in route_for(vs).destinations if d.weight != 0)
    dr = config.applied.destination_rules_for(d.fqdn)[0]

    def set_pool(body: dict[str, Any]) -> None:
        body["spec"].setdefault("trafficPolicy", {})["connectionPool"] = pool

    def one_subset(body: dict[str, Any]) -> None:
        route = body["spec"]["http"][0]["route"]
        body["spec"]["http"][0]["route"] = [{"destination": route[0]["destination"]}]

    cluster = outbound_cluster(d.port or 3000, d.subset, d.fqdn)
    admin = EnvoyAdmin(admin_http, mesh.workload("ingress"))
    before = admin.active_cluster(cluster)
    apply_s = config.apply(
        config.variant("DestinationRule", dr.name, dr.namespace, set_pool),
        config.variant("VirtualService", vs.name, vs.namespace, one_subset),
        label="circuit-breaker",
    )
    running = admin.await_change(cluster, before, changed=apply_s > 0, what="with the variant's pool")
    limits = Limits.from_cluster(running)
    want = {
        "max_connections": limits.max_connections,
        "max_pending_requests": limits.max_pending_requests,
        "max_requests": limits.max_requests,
    }
    wait.until(  # the limits in force (/clusters) are the configured ones
        lambda: all(admin.thresholds(cluster).get(k) == v for k, v in want.items()),
        what=f"{cluster} at the gateway to enforce thresholds {want}",
        timeout=30,
        interval=0.05,
    )
    live = route_for(config.applied.ingress_virtual_service())  # type: ignore[arg-type]
    who = attribution(config.applied, live, mesh.workloads())
    # at concurrency 1 (within the limits: nothing may be shed while converging)
    converge_split(sampler, mesh, who, expected_split(live), batch=50, consecutive=2, concurrency=1)
    faults.inject(who.pods(d.subset or d.host), AppFault(status=None, rate=1.0, delay_ms=HOLD_MS))
    return Scenario(admin, cluster, limits, apply_s)


def limits_name(limits: Limits) -> str:
    return f"{limits.active} active + {limits.pending} pending"


def overflow_check(result: SampleResult, limits: Limits, concurrency: int) -> CheckResult:
    """Shed exactly what the limits predict: none at or below them, at least the excess above them."""
    over = sum(1 for r in result.responses if r.overloaded and r.status == 503)
    served = sum(1 for r in result.responses if r.ok)
    other = result.total - over - served
    hold_s = HOLD_MS / 1000
    least, most = limits.shed_bounds(result.total, concurrency, result.wall_s, hold_s)
    return CheckResult(
        name=f"overflow(concurrency {concurrency}, {limits_name(limits)})",
        passed=least <= over <= most and other == 0,
        detail=(
            f"expected {least}..{most} of {result.total} responses shed with 503 x-envoy-overloaded "
            f"(limits: {limits.describe()}; hold {HOLD_MS}ms, batch {result.wall_s:.2f}s: at most "
            f"{limits.max_served(result.wall_s, hold_s)} can be served); observed {over} overloaded, "
            f"{served} served, {other} other; status {result.status_counts()}"
        ),
        evidence={"overloaded": over, "served": served, "other": other, "least": least, "most": most},
    )


def counters(scenario: Scenario) -> dict[str, float]:
    """The gateway's overflow counters for the cluster; fails the test when they are not exposed."""
    out = {}
    for name in OVERFLOW_COUNTERS:
        value = scenario.admin.counter(scenario.cluster, name)
        if value is None:
            pytest.fail(
                f"{scenario.admin.proxy.ref} exposes no cluster.{scenario.cluster}.{name}: the verdict "
                "needs Envoy's own count. Fix: include the overflow counters in the mesh's "
                "proxyStatsMatcher.inclusionRegexps (harness/proxy_stats.py; both backends set it)",
                pytrace=False,
            )
        out[name] = value
    return out


def counter_check(
    scenario: Scenario, limits: Limits, result: SampleResult, concurrency: int, moved: dict[str, int]
) -> CheckResult:
    """Envoy's overflow counters moved by exactly the overloaded responses, and by at least what
    ``limits`` say must be shed."""
    over = result.overloaded_count()
    counted = sum(moved.values())
    least, most = limits.shed_bounds(result.total, concurrency, result.wall_s, HOLD_MS / 1000)
    return CheckResult(
        name=f"{' + '.join(OVERFLOW_COUNTERS)} == overloaded ({limits_name(limits)})",
        passed=counted == over and least <= counted <= most,
        detail=(
            f"{scenario.cluster} at {scenario.admin.proxy.ref}: counters moved {moved} (sum {counted}); "
            f"clients saw {over} overloaded responses; the limits ({limits.describe()}) say "
            f"{least}..{most} of {result.total} must be shed at concurrency {concurrency}"
        ),
        evidence={"counted": counted, "overloaded": over, "least": least, "most": most},
    )


def sweep(
    sampler: Sampler,
    mesh: Backend,
    scenario: Scenario,
    evidence: Any,
    *,
    asserted: Limits | None = None,
) -> None:
    """Concurrency 1 then ``HIGH_CONCURRENCY``; the overflow check on each batch, the counter check
    on the high one. ``asserted`` (negative control): judge by these limits, not the running ones,
    and expect both checks to fail because fewer than their minimum were shed and counted."""
    negative = asserted is not None
    limits = asserted or scenario.limits
    for concurrency, n in ((1, 4), (HIGH_CONCURRENCY, ROUNDS * HIGH_CONCURRENCY)):
        if negative and concurrency == 1:
            continue
        t0 = time.perf_counter()
        before = counters(scenario) if concurrency > 1 else {}
        result = sampler.sample(mesh, n=n, concurrency=concurrency)
        after = counters(scenario) if concurrency > 1 else {}
        wall = time.perf_counter() - t0
        note = f"DR+VS ACK {scenario.apply_s:.2f}s; the gateway runs {scenario.limits.describe()}"
        common: dict[str, Any] = {
            "requests": n,
            "confidence": "bound from the limits (deterministic)",
            "wall_s": wall,
            "notes": note if concurrency == 1 or negative else "",
        }
        check = overflow_check(result, limits, concurrency)
        if negative:
            evidence.require_failure(
                check,
                because=(
                    "fewer responses were shed than the asserted limits' minimum",
                    lambda c: c.evidence["overloaded"] < c.evidence["least"],
                ),
                **common,
            )
        else:
            evidence.require(check, **common)
        if concurrency == 1:
            continue
        moved = {c: int(after[c] - before[c]) for c in OVERFLOW_COUNTERS}
        check = counter_check(scenario, limits, result, concurrency, moved)
        common.update(confidence="exact count (Envoy)", notes="")
        if negative:
            evidence.require_failure(
                check,
                because=(
                    "Envoy counted fewer overflows than the asserted limits' minimum",
                    lambda c: c.evidence["counted"] < c.evidence["least"],
                ),
                **common,
            )
        else:
            evidence.require(check, **common)


def test_circuit_breaker_sheds_above_the_limit(
    mesh_backend, sampler, config, faults, evidence, admin_http
) -> None:
    """Concurrency 1: nothing shed. Concurrency 16 against 1 active + 1 pending: the excess is shed,
    and the gateway's overflow counters count exactly the overloaded responses.

    Envoy splits them: ``upstream_rq_pending_overflow`` (no room to wait for a connection) and,
    since it counts max_requests separately, ``upstream_rq_active_overflow``.
    """
    scenario = hold_one_subset(config, mesh_backend, sampler, faults, admin_http, LIMITS)
    sweep(sampler, mesh_backend, scenario, evidence)


@pytest.mark.negative
def test_negative_raised_limits_fail_the_overflow_and_counter_checks(
    mesh_backend, sampler, config, faults, evidence, admin_http
) -> None:
    """Negative control: with the limits raised to 1000 but asserting 1 active + 1 pending, the
    overflow check and the counter check FAIL (nothing is shed, nothing counted)."""
    asserted = Limits(max_connections=1, max_pending_requests=1, max_requests=1)
    scenario = hold_one_subset(config, mesh_backend, sampler, faults, admin_http, RAISED)
    assert scenario.limits.in_flight > HIGH_CONCURRENCY, scenario.limits.describe()
    sweep(sampler, mesh_backend, scenario, evidence, asserted=asserted)
