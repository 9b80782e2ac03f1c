"""Outlier detection: a failing replica is ejected after exactly the configured errors, stays out,
and comes back after the base ejection time; maxEjectionPercent caps ejections; only gateway
errors count under consecutiveGatewayErrors.

The manifests' DestinationRule sweeps every 5 s and ejects for 30 s; the tests apply a variant
with ``interval: 1s`` and ``baseEjectionTime: 3s`` (thresholds and maxEjectionPercent as in the
manifests) so that a full eject-and-return cycle fits in seconds. Every expectation (threshold,
times, cap) is read from the DestinationRule the mesh runs. The calling proxy's own view comes
from its Envoy admin: ``/clusters`` health flags say which hosts outlier detection ejected.

Traffic enters through the ingress gateway at concurrency 1 (so "consecutive" is exact), and
the gateway's outbound cluster is where ejection happens.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from harness import wait
from harness.backends.base import Backend, Fault, Workload
from harness.istio import DestinationRule, OutlierDetection
from harness.traffic.checks import CheckResult
from harness.traffic.client import Sampler
from suites._support.config import ConfigGuard
from suites._support.envoy import EnvoyAdmin, address_owner, outbound_cluster
from suites._support.routing import attribution, converge_split, expected_split, route_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FAST = {"interval": "1s", "baseEjectionTime": "3s"}
#: Envoy admin is polled this often while waiting for a host to come back
POLL_S = 0.05
#: scheduling slack on a loaded 2-core machine, on top of what the config allows
SLACK_S = 1.0


# --------------------------------------------------------------------------- configuration


def ingress_route(config: ConfigGuard):  # type: ignore[no-untyped-def]
    vs = config.applied.ingress_virtual_service()
    assert vs is not None
    return vs, route_for(vs)


def destination_rule(config: ConfigGuard) -> DestinationRule:
    _, route = ingress_route(config)
    return config.applied.destination_rules_for(route.destinations[0].fqdn)[0]


def outlier_variant(config: ConfigGuard, edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    dr = destination_rule(config)

    def change(body: dict[str, Any]) -> None:
        policy = body["spec"].setdefault("trafficPolicy", {})
        edit(policy)

    return config.variant("DestinationRule", dr.name, dr.namespace, change)


def fast(policy: dict[str, Any], **overrides: Any) -> None:
    """The manifests' outlier detection, with the short timings (and ``overrides``)."""
    od = dict(policy.get("outlierDetection") or {})
    od.update(FAST)
    od.update(overrides)
    policy["outlierDetection"] = {k: v for k, v in od.items() if v is not None}


def running_outlier(config: ConfigGuard) -> OutlierDetection | None:
    return destination_rule(config).outlier_detection


def wait_cluster(
    admin: EnvoyAdmin, cluster: str, want: Callable[[Mapping[str, Any] | None], bool], what: str
) -> float:
    """Block until the calling proxy runs ``cluster`` with the config ``want`` accepts; seconds waited."""
    t0 = time.perf_counter()
    wait.until(
        lambda: want(admin.active_cluster(cluster)),
        what=f"{admin.proxy.ref} to run {cluster} with {what}",
        timeout=30,
        interval=0.05,
    )
    return time.perf_counter() - t0


def outlier_is(od: OutlierDetection | None) -> Callable[[Mapping[str, Any] | None], bool]:
    """Predicate: the Envoy cluster's outlier_detection matches the Istio model's (or is absent)."""

    def ok(cluster: Mapping[str, Any] | None) -> bool:
        if cluster is None:
            return False
        got = cluster.get("outlier_detection")
        if od is None:
            return got is None
        if got is None:
            return False
        return (
            got.get("interval") == f"{od.interval_s:g}s"
            and got.get("base_ejection_time") == f"{od.base_ejection_time_s:g}s"
            and int(got.get("consecutive_5xx", 5)) == (od.consecutive_5xx_errors or 0)
            and int(got.get("max_ejection_percent", 10)) == od.max_ejection_percent
        )

    return ok


# --------------------------------------------------------------------------- driving traffic


@dataclass(frozen=True)
class EjectionRun:
    """Traffic sent at a faulted replica until its ejection was seen (or the error budget ran out)."""

    pod: str
    address: str
    ejected: bool
    errors_before: int  # 5xx answered by the faulted pod before the ejection was seen
    requests: int
    started: float  # perf_counter at the first request
    ejected_at: float | None  # perf_counter when /clusters first showed the ejection
    other_errors: int  # 5xx not answered by the faulted pod (gateway-made)

    @property
    def seconds(self) -> float | None:
        return None if self.ejected_at is None else self.ejected_at - self.started


def drive_until_ejected(
    mesh: Backend,
    sampler: Sampler,
    admin: EnvoyAdmin,
    cluster: str,
    pod: Workload,
    *,
    error_budget: int,
    batch: int = 4,
    concurrency: int = 1,
    timeout: float = 20.0,
) -> EjectionRun:
    hosts = admin.hosts(cluster)
    address = next((a for a in hosts if address_owner(a, [pod])), "")
    assert address, (
        f"{pod.name} ({pod.address}) is not an endpoint of {cluster} at {admin.proxy.ref}: {list(hosts)}"
    )
    errors = other = sent = 0
    started = time.perf_counter()
    ejected_at: float | None = None

    def poll() -> bool:
        nonlocal errors, other, sent, ejected_at
        result = sampler.sample(mesh, n=batch, concurrency=concurrency)
        sent += result.total
        errors += sum(1 for r in result.responses if r.status >= 500 and r.pod == pod.name)
        other += sum(1 for r in result.responses if r.status >= 500 and r.pod != pod.name)
        if address in admin.ejected(cluster):
            ejected_at = time.perf_counter()
            return True
        return errors >= error_budget

    wait.until(
        poll,
        what=f"{pod.name} ejected at {admin.proxy.ref} or {error_budget} errors from it",
        timeout=timeout,
        interval=0.0,
        hint="is traffic reaching the faulted pod at all?",
    )
    return EjectionRun(pod.name, address, ejected_at is not None, errors, sent, started, ejected_at, other)


def ejection_check(
    run: EjectionRun, threshold: int, concurrency: int = 1, *, what: str = "5xx"
) -> CheckResult:
    """Ejected after ``threshold`` consecutive errors (plus at most ``concurrency`` in flight)."""
    high = threshold + concurrency  # requests in flight, and one the worker may route before the update
    passed = run.ejected and threshold <= run.errors_before <= high
    seen = (
        f"ejected after {run.errors_before} {what} from {run.pod} ({run.seconds:.2f}s after the first request)"
        if run.ejected
        else f"NOT ejected although {run.pod} answered {run.errors_before} {what} in a row"
    )
    return CheckResult(
        name=f"ejected_after({threshold} consecutive {what}, {run.pod})",
        passed=passed,
        detail=(
            f"expected: ejection after {threshold}..{high} errors (consecutive threshold {threshold}, "
            f"concurrency {concurrency}); observed: {seen}; {run.requests} requests, "
            f"{run.other_errors} other 5xx"
        ),
        evidence={"errors_before": run.errors_before, "ejected": run.ejected, "seconds": run.seconds},
    )


def setup_fast(config: ConfigGuard, mesh: Backend, admin_http, **overrides: Any):  # type: ignore[no-untyped-def]
    """Apply the fast variant; return (admin, cluster, outlier model, v1 pods, ACK seconds)."""
    apply_s = config.apply(outlier_variant(config, lambda p: fast(p, **overrides)), label="outlier-fast")
    _, route = ingress_route(config)
    d = next(d for d in route.destinations if d.weight != 0)
    cluster = outbound_cluster(d.port or 3000, d.subset, d.fqdn)
    admin = EnvoyAdmin(admin_http, mesh.workload("ingress"))
    od = running_outlier(config)
    wait_cluster(admin, cluster, outlier_is(od), "the fast outlier detection")
    who = attribution(config.applied, route, mesh.workloads())
    pods = [mesh.workload(p) for p in who.pods(d.subset or d.host)]
    return admin, cluster, od, pods, apply_s


# --------------------------------------------------------------------------- tests


def test_faulted_replica_is_ejected_then_returns(
    mesh_backend, sampler, config, faults, design, evidence, admin_http
) -> None:
    """503s from one replica: ejected after consecutive5xxErrors, no client 5xx while it is out, back
    after baseEjectionTime once healthy."""
    admin, cluster, od, pods, apply_s = setup_fast(config, mesh_backend, admin_http)
    threshold, base, interval = od.consecutive_5xx_errors, od.base_ejection_time_s, od.interval_s
    victim = pods[0]
    faults.inject(victim.name, Fault(status=503, rate=1.0))

    run = drive_until_ejected(mesh_backend, sampler, admin, cluster, victim, error_budget=4 * threshold)
    evidence.require(
        ejection_check(run, threshold),
        requests=run.requests,
        confidence="deterministic (concurrency 1)",
        wall_s=time.perf_counter() - run.started,
        notes=f"time to ejection {run.seconds:.2f}s; DR ACK {apply_s:.2f}s"
        if run.seconds is not None
        else "",
    )

    # While ejected, clients see no 5xx and the replica gets no traffic.
    t0 = time.perf_counter()
    n = design.n_exact()
    after = sampler.sample(mesh_backend, n=n, concurrency=4)
    still_out = run.address in admin.ejected(cluster)
    bad = [r for r in after.responses if r.status >= 500 or r.pod == victim.name]
    evidence.require(
        CheckResult(
            name=f"no_5xx_while_ejected({victim.name})",
            passed=not bad and still_out,
            detail=(
                f"{n} requests during the ejection: status {after.status_counts()}, pods {after.pod_counts(None)}; "
                f"{len(bad)} were 5xx or reached {victim.name}; still ejected afterwards: {still_out}"
                + ("" if still_out else " (the sample outlived the ejection: inconclusive)")
            ),
        ),
        requests=n,
        confidence=design.exact_confidence(),
        wall_s=time.perf_counter() - t0,
    )

    # Healthy again: back in the pool once baseEjectionTime has passed (at the next sweep).
    faults.clear(victim.name)
    t0 = time.perf_counter()
    wait.until(
        lambda: run.address not in admin.ejected(cluster),
        what=f"{victim.name} back in {cluster}",
        timeout=base + interval + 10 * SLACK_S,
        interval=POLL_S,
    )
    assert run.ejected_at is not None
    out_for = time.perf_counter() - run.ejected_at
    back = sampler.sample(mesh_backend, n=n, concurrency=4)
    low, high = base - 0.25, base + interval + SLACK_S
    served = back.pod_counts().get(victim.name, 0)
    evidence.require(
        CheckResult(
            name=f"returns_after_base_ejection({base:g}s, {victim.name})",
            passed=low <= out_for <= high and served > 0 and back.status_counts() == {200: n},
            detail=(
                f"expected back after {base:g}s (+ up to one {interval:g}s sweep): between {low:.2f}s and "
                f"{high:.2f}s; observed out for {out_for:.2f}s; then {served} of {n} requests served by "
                f"{victim.name}, status {back.status_counts()}"
            ),
        ),
        requests=n,
        confidence="deterministic timing window",
        wall_s=time.perf_counter() - t0,
        notes=f"ejected for {out_for:.2f}s",
    )


def test_max_ejection_percent_caps_ejections(
    mesh_backend, sampler, config, faults, design, evidence, admin_http
) -> None:
    """Three of four replicas fail: at most maxEjectionPercent of the hosts are ejected, the rest
    keep failing in rotation."""
    started = time.perf_counter()
    vs, route = ingress_route(config)
    template = route.destinations[0]

    def one_cluster(body: dict[str, Any]) -> None:  # route to the host, not a subset: all 4 replicas
        body["spec"]["http"][0]["route"] = [
            {"destination": {"host": template.host, "port": {"number": template.port or 3000}}}
        ]

    apply_s = config.apply(  # 10s ejections: no host returns (and is re-ejected) while this test looks
        outlier_variant(config, lambda p: fast(p, baseEjectionTime="10s")),
        config.variant("VirtualService", vs.name, vs.namespace, one_cluster),
        label="outlier-cap",
    )
    _, route = ingress_route(config)
    who = attribution(config.applied, route, mesh_backend.workloads())
    gate = converge_split(sampler, mesh_backend, who, expected_split(route), batch=50, consecutive=2)
    od = running_outlier(config)
    assert od is not None
    cluster = outbound_cluster(template.port or 3000, None, template.fqdn)
    admin = EnvoyAdmin(admin_http, mesh_backend.workload("ingress"))
    wait_cluster(admin, cluster, outlier_is(od), "the fast outlier detection")
    hosts = admin.hosts(cluster)
    cap = math.floor(len(hosts) * od.max_ejection_percent / 100)  # Envoy: ejected/hosts <= max%
    pods = sorted(who.pods(template.host))
    failing = pods[: len(pods) - 1]
    assert cap < len(failing), (
        f"the cap {cap} of {len(hosts)} hosts does not bind with {len(failing)} failing"
    )
    faults.inject(failing, Fault(status=503, rate=1.0))
    workloads = list(mesh_backend.workloads())
    owner = {a: address_owner(a, workloads) for a in hosts}

    max_seen = 0
    sent = 0
    capped_at: float | None = None
    quiet = 0  # consecutive batches in which no ejected host answered

    def poll() -> bool:
        nonlocal max_seen, sent, capped_at, quiet
        result = sampler.sample(mesh_backend, n=20, concurrency=1)
        sent += result.total
        ejected = admin.ejected(cluster)
        max_seen = max(max_seen, len(ejected))
        names = {w.name for a in ejected if (w := owner.get(a))}
        if len(ejected) == cap and capped_at is None:
            capped_at = time.perf_counter()
        quiet = quiet + 1 if capped_at and not any(r.pod in names for r in result.responses) else 0
        return quiet >= 2

    wait.until(
        poll, what=f"{cap} hosts ejected at {admin.proxy.ref} and out of rotation", timeout=20, interval=0.0
    )
    lag = time.perf_counter() - capped_at if capped_at else 0.0
    n = design.n_exact()
    final = sampler.sample(mesh_backend, n=n, concurrency=1)
    ejected = admin.ejected(cluster)
    out = {w.name for a in ejected if (w := owner.get(a))}
    in_rotation_failing = [p for p in failing if p not in out]
    to_ejected = sum(1 for r in final.responses if r.pod in out)
    errors_in = sum(1 for r in final.responses if r.status >= 500 and r.pod in in_rotation_failing)
    passed = max_seen <= cap and len(ejected) == cap and to_ejected == 0 and errors_in > 0
    evidence.require(
        CheckResult(
            name=f"max_ejection_percent({od.max_ejection_percent}% of {len(hosts)} hosts = {cap})",
            passed=passed,
            detail=(
                f"{len(failing)} of {len(hosts)} replicas answer 503; expected at most {cap} ejected "
                f"(maxEjectionPercent {od.max_ejection_percent}), the others still in rotation.\n"
                f"observed: most ejected at once {max_seen}; now ejected {sorted(out)}; in the final {n} "
                f"requests {to_ejected} reached an ejected host and {errors_in} were 503 from the failing "
                f"host(s) left in rotation {in_rotation_failing}; status {final.status_counts()}"
            ),
        ),
        requests=gate.requests + sent + n,
        confidence="deterministic (concurrency 1)",
        wall_s=time.perf_counter() - started,
        notes=f"DR+VS ACK {apply_s:.2f}s; last ejection out of rotation {lag:.2f}s after its flag",
    )


def test_gateway_errors_only_count_502_503_504(
    mesh_backend, sampler, config, faults, design, evidence, admin_http
) -> None:
    """Under consecutiveGatewayErrors (consecutive5xxErrors 0), 500s never eject; 503s do."""
    admin, cluster, od, pods, apply_s = setup_fast(
        config, mesh_backend, admin_http, consecutive5xxErrors=0, consecutiveGatewayErrors=5
    )
    dr = destination_rule(config)
    assert od is not None and od.consecutive_gateway_errors, dr
    gateway_threshold = od.consecutive_gateway_errors
    running = admin.active_cluster(cluster) or {}
    envoy_od = running.get("outlier_detection", {})
    victim = pods[0]

    faults.inject(victim.name, Fault(status=500, rate=1.0))
    run = drive_until_ejected(
        mesh_backend, sampler, admin, cluster, victim, error_budget=4 * gateway_threshold
    )
    evidence.require(
        CheckResult(
            name=f"not_ejected_on_500({victim.name})",
            passed=not run.ejected and run.errors_before >= 4 * gateway_threshold,
            detail=(
                f"{run.errors_before} consecutive 500s from {victim.name} (4x the gateway-error threshold "
                f"{gateway_threshold}); ejected: {run.ejected}. Envoy runs outlier_detection {envoy_od}"
            ),
        ),
        requests=run.requests,
        confidence="deterministic (concurrency 1)",
        wall_s=time.perf_counter() - run.started,
        notes=f"DR ACK {apply_s:.2f}s",
    )

    faults.inject(victim.name, Fault(status=503, rate=1.0))  # positive control in the same config
    run = drive_until_ejected(
        mesh_backend, sampler, admin, cluster, victim, error_budget=4 * gateway_threshold
    )
    evidence.require(
        ejection_check(run, gateway_threshold, what="503 (gateway errors)"),
        requests=run.requests,
        confidence="deterministic (concurrency 1)",
        wall_s=time.perf_counter() - run.started,
    )


@pytest.mark.negative
def test_negative_without_outlier_detection_the_ejection_check_fails(
    mesh_backend, sampler, config, faults, design, evidence, admin_http
) -> None:
    """Negative control: with outlierDetection removed, the same ejection check FAILS."""
    threshold = (running_outlier(config) or OutlierDetection()).consecutive_5xx_errors or 5
    apply_s = config.apply(
        outlier_variant(config, lambda p: p.pop("outlierDetection", None)), label="no-outlier"
    )
    _, route = ingress_route(config)
    d = next(d for d in route.destinations if d.weight != 0)
    cluster = outbound_cluster(d.port or 3000, d.subset, d.fqdn)
    admin = EnvoyAdmin(admin_http, mesh_backend.workload("ingress"))
    wait_cluster(admin, cluster, outlier_is(None), "no outlier detection")
    who = attribution(config.applied, route, mesh_backend.workloads())
    victim = mesh_backend.workload(who.pods(d.subset or d.host)[0])
    faults.inject(victim.name, Fault(status=503, rate=1.0))
    run = drive_until_ejected(mesh_backend, sampler, admin, cluster, victim, error_budget=4 * threshold)
    evidence.require_failure(
        ejection_check(run, threshold),
        requests=run.requests,
        confidence="deterministic (concurrency 1)",
        wall_s=time.perf_counter() - run.started,
        notes=f"DR ACK {apply_s:.2f}s",
    )
