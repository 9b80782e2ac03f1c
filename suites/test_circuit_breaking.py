"""Circuit breaking: above the connection-pool limits Envoy sheds requests with 503
``x-envoy-overloaded``; at or below them it never does.

The test applies a DestinationRule variant with ``tcp.maxConnections: 1``,
``http.http1MaxPendingRequests: 1`` and ``http.http2MaxRequests: 1``, routes the ingress to one
subset (one Envoy cluster, so one set of limits), and makes every replica of that subset hold
each request for ``HOLD_MS`` (app fault with ``status: null``: delay only). The prediction comes
from the limits the mesh runs:

* at most ``min(maxConnections, http2MaxRequests)`` requests are active upstream and
  ``http1MaxPendingRequests`` wait; so a concurrency at or below their sum never overflows;
* every served request holds an upstream connection for ``HOLD_MS``, so over a batch lasting
  ``W`` seconds at most ``active * (W / hold + 1)`` requests can be served: the rest must be shed.

The calling proxy's view is checked too: the gateway's cluster runs exactly these thresholds
(``/clusters``), and, when the proxy exposes them, its overflow counters moved by exactly
the number of overloaded responses.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import pytest

from harness import wait
from harness.backends.base import Backend, Fault
from harness.istio import ConnectionPool
from harness.traffic.checks import CheckResult
from harness.traffic.client import Sampler, SampleResult
from suites._support.config import ConfigGuard
from suites._support.envoy import EnvoyAdmin, outbound_cluster
from suites._support.faults import FaultGuard
from suites._support.routing import attribution, converge_split, expected_split, route_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

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
class Limits:
    active: int  # requests that can be upstream at once
    pending: int  # requests that can wait for a connection

    @classmethod
    def of(cls, cp: ConnectionPool | None) -> Limits:
        unlimited = 2**32 - 1  # Istio's "unset": Envoy's max
        cp = cp or ConnectionPool()
        conns = cp.max_connections or unlimited
        reqs = cp.http2_max_requests or unlimited
        return cls(active=min(conns, reqs), pending=cp.http1_max_pending_requests or unlimited)

    @property
    def in_flight(self) -> int:
        return self.active + self.pending

    def max_served(self, wall_s: float, hold_s: float) -> int:
        return self.active * (math.floor(wall_s / hold_s) + 1)


@dataclass(frozen=True)
class Scenario:
    admin: EnvoyAdmin
    cluster: str
    limits: Limits
    apply_s: float


def hold_one_subset(
    config: ConfigGuard,
    mesh: Backend,
    sampler: Sampler,
    faults: FaultGuard,
    admin_http: Any,
    pool: dict[str, Any],
) -> Scenario:
    """Apply ``pool`` as the connection pool, route the ingress to its first subset only, delay it."""
    vs = config.applied.ingress_virtual_service()
    assert vs is not None
    d = next(d for d in route_for(vs).destinations if d.weight != 0)
    dr = config.applied.destination_rules_for(d.fqdn)[0]

    def set_pool(body: dict[str, Any]) -> None:
        body["spec"].setdefault("trafficPolicy", {})["connectionPool"] = pool

    def one_subset(body: dict[str, Any]) -> None:
        route = body["spec"]["http"][0]["route"]
        body["spec"]["http"][0]["route"] = [{"destination": route[0]["destination"]}]

    apply_s = config.apply(
        config.variant("DestinationRule", dr.name, dr.namespace, set_pool),
        config.variant("VirtualService", vs.name, vs.namespace, one_subset),
        label="circuit-breaker",
    )
    running = config.applied.destination_rules_for(d.fqdn)[0]
    pool_model = running.connection_pool
    assert pool_model is not None, running
    limits = Limits.of(pool_model)
    cluster = outbound_cluster(d.port or 3000, d.subset, d.fqdn)
    admin = EnvoyAdmin(admin_http, mesh.workload("ingress"))
    want = {
        "max_connections": pool_model.max_connections,
        "max_pending_requests": limits.pending,
        "max_requests": pool_model.http2_max_requests,
    }
    wait.until(
        lambda: all(admin.thresholds(cluster).get(k) == v for k, v in want.items()),
        what=f"{cluster} at the gateway to run thresholds {want}",
        timeout=30,
        interval=0.05,
    )
    live = route_for(config.applied.ingress_virtual_service())  # type: ignore[arg-type]
    who = attribution(config.applied, live, mesh.workloads())
    # at concurrency 1 (within the limits: nothing may be shed while converging)
    converge_split(sampler, mesh, who, expected_split(live), batch=50, consecutive=2, concurrency=1)
    faults.inject(who.pods(d.subset or d.host), Fault(status=None, rate=1.0, delay_ms=HOLD_MS))
    return Scenario(admin, cluster, limits, apply_s)


def overflow_check(result: SampleResult, limits: Limits, concurrency: int) -> CheckResult:
    """Shed exactly what the limits predict: none at or below them, at least the excess above them."""
    over = sum(1 for r in result.responses if r.overloaded and r.status == 503)
    served = sum(1 for r in result.responses if r.ok)
    other = result.total - over - served
    if concurrency <= limits.in_flight:
        predicted_min, predicted_max = 0, 0
    else:
        predicted_min = max(1, result.total - limits.max_served(result.wall_s, HOLD_MS / 1000))
        predicted_max = result.total - 1  # the first request is always admitted
    passed = predicted_min <= over <= predicted_max and other == 0
    return CheckResult(
        name=f"overflow(concurrency {concurrency}, {limits.active} active + {limits.pending} pending)",
        passed=passed,
        detail=(
            f"expected {predicted_min}..{predicted_max} of {result.total} responses shed with 503 "
            f"x-envoy-overloaded (hold {HOLD_MS}ms, batch {result.wall_s:.2f}s: at most "
            f"{limits.max_served(result.wall_s, HOLD_MS / 1000)} can be served); observed {over} overloaded, "
            f"{served} served, {other} other; status {result.status_counts()}"
        ),
        evidence={"overloaded": over, "served": served, "other": other},
    )


def sweep(
    sampler: Sampler, mesh: Backend, scenario: Scenario, evidence: Any, *, negative: bool = False
) -> None:
    for concurrency, n in ((1, 4), (HIGH_CONCURRENCY, ROUNDS * HIGH_CONCURRENCY)):
        if negative and concurrency == 1:
            continue
        t0 = time.perf_counter()
        result = sampler.sample(mesh, n=n, concurrency=concurrency)
        check = overflow_check(result, scenario.limits, concurrency)
        record = evidence.require_failure if negative else evidence.require
        record(
            check,
            requests=n,
            confidence="bound from the limits (deterministic)",
            wall_s=time.perf_counter() - t0,
            notes=f"DR+VS ACK {scenario.apply_s:.2f}s" if concurrency == 1 or negative else "",
        )


def test_circuit_breaker_sheds_above_the_limit(
    mesh_backend, sampler, config, faults, evidence, admin_http
) -> None:
    """Concurrency 1: nothing shed. Concurrency 16 against 1 active + 1 pending: the excess is shed."""
    scenario = hold_one_subset(config, mesh_backend, sampler, faults, admin_http, LIMITS)
    sweep(sampler, mesh_backend, scenario, evidence)


def test_overflow_counters_move_with_overloaded_responses(
    mesh_backend, sampler, config, faults, evidence, admin_http
) -> None:
    """The gateway's overflow counters count exactly the overloaded responses.

    Envoy splits them: ``upstream_rq_pending_overflow`` (no room to wait for a connection) and,
    since it counts max_requests separately, ``upstream_rq_active_overflow``.
    """
    vs = config.applied.ingress_virtual_service()
    assert vs is not None
    d = next(d for d in route_for(vs).destinations if d.weight != 0)
    admin = EnvoyAdmin(admin_http, mesh_backend.workload("ingress"))
    if admin.counter(outbound_cluster(d.port or 3000, d.subset, d.fqdn), OVERFLOW_COUNTERS[0]) is None:
        pytest.skip(
            f"the gateway's Envoy does not expose cluster.*.{OVERFLOW_COUNTERS[0]} (Istio's default "
            "proxyStatsMatcher). Fix: include the overflow counters in the mesh's proxy config "
            "(proxyStatsMatcher.inclusionRegexps)"
        )
    scenario = hold_one_subset(config, mesh_backend, sampler, faults, admin_http, LIMITS)

    def counters() -> dict[str, float]:
        return {c: admin.counter(scenario.cluster, c) or 0.0 for c in OVERFLOW_COUNTERS}

    t0 = time.perf_counter()
    before = counters()
    result = sampler.sample(mesh_backend, n=ROUNDS * HIGH_CONCURRENCY, concurrency=HIGH_CONCURRENCY)
    after = counters()
    moved = {c: int(after[c] - before[c]) for c in OVERFLOW_COUNTERS}
    over = result.overloaded_count()
    evidence.require(
        CheckResult(
            name=f"{' + '.join(OVERFLOW_COUNTERS)} == overloaded responses",
            passed=sum(moved.values()) == over and over > 0,
            detail=(
                f"{scenario.cluster} at {admin.proxy.ref}: counters moved {moved} "
                f"(sum {sum(moved.values())}); clients saw {over} overloaded responses"
            ),
        ),
        requests=result.total,
        confidence="exact count",
        wall_s=time.perf_counter() - t0,
    )


@pytest.mark.negative
def test_negative_raised_limits_fail_the_overflow_check(
    mesh_backend, sampler, config, faults, evidence, admin_http
) -> None:
    """Negative control: with the limits raised to 1000 but asserting 1 active + 1 pending, the
    overflow check FAILS (nothing is shed)."""
    asserted = Limits.of(
        ConnectionPool(max_connections=1, http1_max_pending_requests=1, http2_max_requests=1)
    )
    scenario = hold_one_subset(config, mesh_backend, sampler, faults, admin_http, RAISED)
    assert scenario.limits.in_flight > HIGH_CONCURRENCY, scenario.limits
    sweep(
        sampler,
        mesh_backend,
        Scenario(scenario.admin, scenario.cluster, asserted, scenario.apply_s),
        evidence,
        negative=True,
    )
