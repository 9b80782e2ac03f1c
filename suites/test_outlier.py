"""Outlier detection: a failing replica is ejected after exactly the configured errors, stays out,
and comes back after the base ejection time; maxEjectionPercent caps ejections; only gateway
errors count under consecutiveGatewayErrors. Negative controls: a lower threshold (ejection
check), outlier detection removed (no-5xx-while-ejected check, judged inside the ejection the
manifests' configuration asserts), a shorter baseEjectionTime (return check), a higher
maxEjectionPercent (cap check), plain 5xx mode instead of gateway errors (not-ejected-on-500
check).

The manifests' DestinationRule sweeps every 5 s and ejects for 30 s; the tests apply a variant
with ``interval: 1s`` and ``baseEjectionTime: 3s`` (thresholds and maxEjectionPercent as in the
manifests) so that a full eject-and-return cycle fits in seconds. Every expectation (threshold,
times, cap) comes from the effective outlier detection of the gateway's cluster: the oracle
``harness.istio.oracles.outlier`` over the cluster's ``/config_dump`` as istiod generated it,
with Envoy's defaults where Istio left a field unset (never the DestinationRule's field names);
the evidence shows it. The calling proxy's own view comes from its Envoy admin: ``/clusters`` health flags (which hosts outlier detection ejected) and per
host ``rq_error``/``rq_total`` counters, and the cluster's ``outlier_detection.*`` statistics.

Traffic enters through the ingress gateway, whose outbound cluster is where ejection happens.

No verdict depends on how fast this machine is:

* errors are counted by the gateway's Envoy (``rq_error`` of the host), one request at a time;
  traffic stops at the threshold and the ejection is awaited with no traffic, so the count at
  ejection is exact. Seeing the ejection flag while fewer errors were counted is a real early
  ejection (the flag can only lag, never lead);
* "no traffic while ejected" is judged only on samples that lie inside one continuous ejection:
  the host flagged before and after, ``ejections_enforced_total`` unchanged; the rest is
  discarded. Envoy hands health changes to its workers merged over ``update_merge_window``
  (read from the running cluster, 1 s by default), so a sample starts only once the ejection
  has held that long plus ``SETTLE_SLACK_S``: the one time bound left, stated in the evidence;
* "stays out for baseEjectionTime" is one-sided: the ejection cannot have happened before the
  request that caused it was sent, and a host seen back can have returned no later than that
  read's answer, so back-before-base can only be a real early return;
* the remaining time bounds are deadlines of liveness waits, derived from the configuration
  (``baseEjectionTime * ejections + interval``) plus ``SLACK_S``, stated in the evidence.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from harness.backends.base import AppFault
from harness.envoy import EnvoyAdmin, outbound_cluster
from harness.istio import parse_duration
from suites._support.outlier import (
    FAST,
    SLACK_S,
    await_return,
    cap_check,
    cap_run,
    cap_scenario,
    drive_to_threshold,
    effective_outlier,
    ejection_check,
    fast,
    ingress_route,
    inside_check,
    not_ejected_check,
    predicted,
    sample_inside_asserted_ejection,
    sample_inside_ejection,
    setup_fast,
)
from suites._support.routes import POLICY_IS_THE_DESTINATION_RULE

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.istio_routes(reason=POLICY_IS_THE_DESTINATION_RULE),
]


# --------------------------------------------------------------------------- tests


def test_faulted_replica_is_ejected_then_returns(
    mesh_backend, sampler, config, faults, design, evidence, admin_http
) -> None:
    """503s from one replica: ejected after the effective consecutive-5xx threshold, no client 5xx
    while it is out, back after the effective baseEjectionTime once healthy."""
    f = setup_fast(config, mesh_backend, admin_http)
    admin, cluster = f.admin, f.cluster
    od = predicted(f.od, "an ejection")
    threshold, interval = od.ejects_after_5xx, od.interval_s
    assert threshold is not None, f"the gateway's cluster does not eject on 5xx: {od.describe()}"
    victim = f.pods[0]
    faults.inject(victim.name, AppFault(status=503, rate=1.0))
    deadline = interval + SLACK_S

    run = drive_to_threshold(
        mesh_backend, sampler, admin, cluster, victim, threshold=threshold, deadline_s=deadline
    )
    evidence.require(
        ejection_check(run, interval_s=interval),
        requests=run.requests,
        confidence="exact count (Envoy rq_error), one request at a time",
        wall_s=time.perf_counter() - run.started,
        notes=f"time to ejection {run.seconds:.2f}s; DR ACK {f.apply_s:.2f}s; the gateway runs: {od.describe()}",
    )

    # While ejected, clients see no 5xx and the replica gets no traffic.
    t0 = time.perf_counter()
    n = design.n_exact()
    inside = sample_inside_ejection(
        mesh_backend, sampler, admin, cluster, n=n, not_before=run.not_before, concurrency=4
    )
    evidence.require(
        inside_check(
            f"no_5xx_while_ejected({victim.name})",
            inside,
            [victim.name],
            f"{victim.name} out",
            key="no_5xx_while_ejected",
        ),
        requests=inside.requests + inside.discarded,
        confidence=design.exact_confidence(),
        wall_s=time.perf_counter() - t0,
    )

    # Healthy again: back in the pool once baseEjectionTime has passed (at the next sweep).
    t0 = time.perf_counter()
    not_before, ejections = inside.not_before, 1 + inside.ejections
    if run.address not in admin.ejected(cluster):  # the ejection ended while sampling: eject again
        again = drive_to_threshold(
            mesh_backend, sampler, admin, cluster, victim, threshold=threshold, deadline_s=deadline
        )
        assert again.ejected and not again.early, ejection_check(again, interval_s=interval)
        not_before, ejections = again.not_before, ejections + 1
    faults.clear(victim.name)
    check = await_return(
        mesh_backend,
        sampler,
        admin,
        cluster,
        victim,
        run.address,
        od=od,
        not_before=not_before,
        ejections=ejections,
        n=n,
    )
    out_at_most = check.evidence["out_at_most"]
    evidence.require(
        check,
        requests=n,
        confidence="one-sided bound (>= baseEjectionTime); liveness deadline from the config",
        wall_s=time.perf_counter() - t0,
        notes=f"ejected at most {out_at_most:.2f}s" if out_at_most is not None else "",
    )


def test_max_ejection_percent_caps_ejections(
    mesh_backend, sampler, config, faults, design, evidence, admin_http
) -> None:
    """Three of four replicas fail: at most the effective max_ejection_percent of the hosts are
    ejected (Envoy counts the refused ejections), the rest keep failing in rotation."""
    started = time.perf_counter()
    scenario = cap_scenario(config, mesh_backend, sampler, admin_http)
    od = predicted(scenario.od, "the ejection cap")
    run = cap_run(
        mesh_backend,
        sampler,
        faults,
        scenario,
        cap=od.max_ejected(len(scenario.admin.hosts(scenario.cluster))),
        n=design.n_exact(),
        started=started,
    )
    evidence.require(
        cap_check(run, od),
        requests=run.requests,
        confidence="exact counts (Envoy), chunks inside continuous ejections",
        wall_s=time.perf_counter() - started,
        notes=f"DR+VS ACK {scenario.apply_s:.2f}s; the gateway runs: {od.describe()}",
    )


def gateway_errors_only(policy: dict[str, Any]) -> None:
    """The fast variant ejecting on gateway errors only (consecutive5xxErrors 0)."""
    fast(policy, consecutive5xxErrors=0, consecutiveGatewayErrors=5)


def test_gateway_errors_only_count_502_503_504(
    mesh_backend, sampler, config, faults, design, evidence, admin_http
) -> None:
    """Under consecutiveGatewayErrors (consecutive5xxErrors 0), 500s never eject; 503s do."""
    f = setup_fast(config, mesh_backend, admin_http, gateway_errors_only)
    admin, cluster = f.admin, f.cluster
    od = predicted(f.od, "gateway-error ejection")
    gateway_threshold = od.ejects_after_gateway_errors
    assert gateway_threshold is not None and od.ejects_after_5xx is None, (
        f"the gateway's cluster should eject on gateway errors only: {od.describe()}"
    )
    victim = f.pods[0]

    faults.inject(victim.name, AppFault(status=500, rate=1.0))
    many = 4 * gateway_threshold
    run = drive_to_threshold(mesh_backend, sampler, admin, cluster, victim, threshold=many, deadline_s=0.0)
    evidence.require(
        not_ejected_check(
            f"not_ejected_on_500({victim.name})",
            run,
            gateway_threshold=gateway_threshold,
            runs=od.describe(),
            key="not_ejected_on_500",
        ),
        requests=run.requests,
        confidence="exact count (Envoy rq_error); an ejection seen is real",
        wall_s=time.perf_counter() - run.started,
        notes=f"DR ACK {f.apply_s:.2f}s",
    )

    faults.inject(victim.name, AppFault(status=503, rate=1.0))  # positive control in the same config
    run = drive_to_threshold(
        mesh_backend,
        sampler,
        admin,
        cluster,
        victim,
        threshold=gateway_threshold,
        deadline_s=od.interval_s + SLACK_S,
    )
    evidence.require(
        ejection_check(run, what="503 (gateway errors)", interval_s=od.interval_s),
        requests=run.requests,
        confidence="exact count (Envoy rq_error), one request at a time",
        wall_s=time.perf_counter() - run.started,
    )


# --------------------------------------------------------------------------- negative controls


#: the negative control's broken threshold: the gateway ejects after this many 5xx
LOW_THRESHOLD = 2


@pytest.mark.negative
def test_negative_lower_threshold_fails_the_ejection_check(
    mesh_backend, sampler, config, faults, design, evidence, admin_http
) -> None:
    """Negative control: the gateway runs consecutive5xxErrors 2 while the ejection check asserts
    the manifests' threshold (5): the replica is ejected EARLY, so the check FAILS.

    The other way to fail it, no ejection at all, can only be seen by waiting out the positive
    test's deadline (one sweep + 10 s slack); the early ejection is seen at the 2nd error, and it
    exercises the one-sided bound ("never before the threshold") that slowness cannot flip.
    """
    _, route = ingress_route(config)
    d = next(d for d in route.destinations if d.weight != 0)
    cluster = outbound_cluster(d.port or 3000, d.subset, d.fqdn)
    admin = EnvoyAdmin(admin_http, mesh_backend.workload("ingress"))
    threshold = predicted(effective_outlier(admin, cluster), "the asserted threshold").ejects_after_5xx
    assert threshold is not None and threshold > LOW_THRESHOLD
    f = setup_fast(config, mesh_backend, admin_http, lambda p: fast(p, consecutive5xxErrors=LOW_THRESHOLD))
    od = predicted(f.od, "the ejection")
    assert od.ejects_after_5xx == LOW_THRESHOLD, od.describe()
    victim = f.pods[0]
    faults.inject(victim.name, AppFault(status=503, rate=1.0))
    run = drive_to_threshold(
        mesh_backend,
        sampler,
        f.admin,
        f.cluster,
        victim,
        threshold=threshold,
        deadline_s=od.interval_s + SLACK_S,
    )
    evidence.require_failure(
        ejection_check(run, interval_s=od.interval_s),
        requests=run.requests,
        confidence="exact count (Envoy rq_error), one request at a time",
        wall_s=time.perf_counter() - run.started,
        notes=f"DR ACK {f.apply_s:.2f}s; the gateway runs: {od.describe()}",
        because=(
            f"the host was ejected before the asserted {threshold} 5xx",
            lambda c: bool(c.evidence["early"]) and c.evidence["errors"] < threshold,
        ),
    )


#: the negative control's broken baseEjectionTime: a host ejected for this long (plus at most one
#: 1 s sweep) is back well before the fast variant's 3 s that the check asserts
SHORT_BASE = "0.5s"


@pytest.mark.negative
def test_negative_shorter_base_ejection_time_fails_the_return_check(
    mesh_backend, sampler, config, faults, design, evidence, admin_http
) -> None:
    """Negative control: the gateway runs baseEjectionTime 0.5s while the return check asserts the
    fast variant's 3s: the host comes back EARLY, so the check FAILS on its one-sided bound.

    A longer baseEjectionTime would fail only through the liveness deadline (3s + one sweep + 10s
    slack spent waiting); the shorter one exercises the bound that decides the verdict, in seconds.
    """
    f = setup_fast(config, mesh_backend, admin_http, lambda p: fast(p, baseEjectionTime=SHORT_BASE))
    od = predicted(f.od, "the ejection")
    asserted = dataclasses.replace(od, base_ejection_time_s=parse_duration(FAST["baseEjectionTime"]))
    assert od.base_ejection_time_s < asserted.base_ejection_time_s, od.describe()
    threshold = od.ejects_after_5xx
    assert threshold is not None, od.describe()
    victim = f.pods[0]
    faults.inject(victim.name, AppFault(status=503, rate=1.0))
    run = drive_to_threshold(
        mesh_backend,
        sampler,
        f.admin,
        f.cluster,
        victim,
        threshold=threshold,
        deadline_s=od.interval_s + SLACK_S,
    )
    assert run.ejected and not run.early, ejection_check(run, interval_s=od.interval_s)
    faults.clear(victim.name)
    t0 = time.perf_counter()
    n = design.n_exact()
    evidence.require_failure(
        await_return(
            mesh_backend,
            sampler,
            f.admin,
            f.cluster,
            victim,
            run.address,
            od=asserted,
            not_before=run.not_before,
            ejections=1,
            n=n,
        ),
        requests=run.requests + n,
        confidence="one-sided bound (>= baseEjectionTime); liveness deadline from the config",
        wall_s=time.perf_counter() - t0,
        notes=f"DR ACK {f.apply_s:.2f}s; the gateway runs: {od.describe()}",
        because=(
            f"the host came back before the asserted {asserted.base_ejection_time_s:g}s",
            lambda c: bool(c.evidence["early"]),
        ),
    )


@pytest.mark.negative
def test_negative_higher_max_ejection_percent_fails_the_cap_check(
    mesh_backend, sampler, config, faults, design, evidence, admin_http
) -> None:
    """Negative control: the gateway runs maxEjectionPercent 100 while the cap check asserts the
    manifests' (50%: 2 of 4 hosts): all three failing hosts are ejected, so the check FAILS on
    the cap."""
    started = time.perf_counter()
    scenario = cap_scenario(config, mesh_backend, sampler, admin_http, maxEjectionPercent=100)
    od = predicted(scenario.od, "the ejection cap")
    manifests = predicted(scenario.manifests_od, "the asserted cap")
    asserted = dataclasses.replace(od, max_ejection_percent=manifests.max_ejection_percent)
    hosts = len(scenario.admin.hosts(scenario.cluster))
    assert od.max_ejected(hosts) > asserted.max_ejected(hosts), (od.describe(), asserted.describe())
    run = cap_run(
        mesh_backend,
        sampler,
        faults,
        scenario,
        cap=asserted.max_ejected(hosts),
        n=design.n_exact(),
        started=started,
        # drive to what the gateway runs (all failing hosts out), so sampling starts settled
        drive_to=min(od.max_ejected(hosts), len(scenario.pods) - 1),
    )
    evidence.require_failure(
        cap_check(run, asserted),
        requests=run.requests,
        confidence="exact counts (Envoy), chunks inside continuous ejections",
        wall_s=time.perf_counter() - started,
        notes=f"DR+VS ACK {scenario.apply_s:.2f}s; the gateway runs: {od.describe()}",
        because=(
            f"more than the asserted {asserted.max_ejected(hosts)} hosts were ejected at once",
            lambda c: c.evidence["max_seen"] > c.evidence["cap"],
        ),
    )


def no_outlier_detection(policy: dict[str, Any]) -> None:
    """The DestinationRule without outlier detection."""
    policy.pop("outlierDetection", None)


@pytest.mark.negative
def test_negative_outlier_detection_removed_fails_the_no_5xx_while_ejected_check(
    mesh_backend, sampler, config, faults, design, evidence, admin_http
) -> None:
    """Negative control: the gateway runs no outlier detection (the DestinationRule's
    outlierDetection removed) while the check asserts the manifests' ejection (out on the 5th
    consecutive 5xx, for baseEjectionTime 30s): inside what was asserted to be the ejection the
    failing host keeps getting requests and answering 503, so the check FAILS.

    The asserted ejection is the manifests', as the gateway ran it before the change, not the
    fast variant's: with no flag to date it, a chunk must fit between the settle time after the
    threshold-th error and baseEjectionTime after it, and the fast variant's 3s leaves no room.
    """
    started = time.perf_counter()
    _, route = ingress_route(config)
    d = next(d for d in route.destinations if d.weight != 0)
    cluster = outbound_cluster(d.port or 3000, d.subset, d.fqdn)
    admin = EnvoyAdmin(admin_http, mesh_backend.workload("ingress"))
    asserted = predicted(effective_outlier(admin, cluster), "the asserted ejection")
    threshold = asserted.ejects_after_5xx
    assert threshold is not None, asserted.describe()
    f = setup_fast(config, mesh_backend, admin_http, no_outlier_detection)
    assert f.od is None, f"the gateway still runs outlier detection on {cluster}: {f.od.describe()}"
    victim = f.pods[0]
    faults.inject(victim.name, AppFault(status=503, rate=1.0))
    run = drive_to_threshold(
        mesh_backend, sampler, f.admin, f.cluster, victim, threshold=threshold, deadline_s=0.0
    )
    n = design.n_exact()
    inside = sample_inside_asserted_ejection(
        mesh_backend, sampler, f.admin, f.cluster, victim, run, od=asserted, n=n, concurrency=4
    )
    evidence.require_failure(
        inside_check(
            "no_5xx_while_ejected",
            inside,
            [victim.name],
            f"{victim.name} out as asserted: {asserted.describe()}; the gateway runs no outlier detection",
        ),
        requests=run.requests + inside.requests + inside.discarded,
        confidence=design.exact_confidence(),
        wall_s=time.perf_counter() - started,
        notes=f"DR ACK {f.apply_s:.2f}s; asserted (the manifests', as the gateway ran them): {asserted.describe()}",
        because=(
            f"5xx reached the clients and the gateway's Envoy sent requests to {victim.name} inside "
            "its asserted ejection",
            lambda c: (
                c.evidence["bad"] > 0 and c.evidence["to_ejected"] > 0 and c.evidence["from_victims"] > 0
            ),
        ),
    )


@pytest.mark.negative
def test_negative_5xx_mode_fails_the_not_ejected_on_500_check(
    mesh_backend, sampler, config, faults, design, evidence, admin_http
) -> None:
    """Negative control: the gateway runs the fast variant in plain 5xx mode (the manifests'
    consecutive5xxErrors, no consecutiveGatewayErrors) while the check asserts the gateway-errors
    mode of the positive test, as the gateway ran it: the host answering 500 IS ejected, so the
    check FAILS."""
    started = time.perf_counter()
    g = setup_fast(config, mesh_backend, admin_http, gateway_errors_only)
    asserted = predicted(g.od, "the asserted mode")
    gateway_threshold = asserted.ejects_after_gateway_errors
    assert gateway_threshold is not None and asserted.ejects_after_5xx is None, asserted.describe()
    f = setup_fast(config, mesh_backend, admin_http)
    od = predicted(f.od, "the ejection")
    assert od.ejects_after_5xx is not None, od.describe()
    victim = f.pods[0]
    faults.inject(victim.name, AppFault(status=500, rate=1.0))
    run = drive_to_threshold(
        mesh_backend, sampler, f.admin, f.cluster, victim, threshold=4 * gateway_threshold, deadline_s=0.0
    )
    evidence.require_failure(
        not_ejected_check("not_ejected_on_500", run, gateway_threshold=gateway_threshold, runs=od.describe()),
        requests=run.requests,
        confidence="exact count (Envoy rq_error); an ejection seen is real",
        wall_s=time.perf_counter() - started,
        notes=f"DR ACKs {g.apply_s:.2f}s (asserted mode) + {f.apply_s:.2f}s; asserted: {asserted.describe()}",
        because=(
            "the host answering 500 was ejected (flag seen, Envoy's ejections_enforced_total moved)",
            lambda c: bool(c.evidence["ejected"]) and (c.evidence["enforced"] or 0) > 0,
        ),
    )
