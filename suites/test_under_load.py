"""The suites' properties while Locust drives load (``under_load``): routing weights, outlier
ejection, circuit breaking and fault injection, each with its negative control under the same load.

The load is the evidence: the load's own requests in a phase are the sample (who answered, which
status, how long), so each check judges what concurrent users saw, not a quiet side channel.
Bounds are counts derived from the configuration the mesh runs (no timing verdicts):

* routing: the 200s of the load split as the VirtualService says (the design's exact binomial test);
* outlier ejection: once the gateway's Envoy reports the faulted replica ejected, load requests
  started in the next window (shorter than baseEjectionTime, and the host still ejected at its end)
  fail at most once per user (a request already routed to the replica when it was ejected);
* circuit breaking: with 1 active + 1 pending allowed and every request held HOLD_MS, Locust's
  users are shed (503 x-envoy-overloaded) and at most the limits' share is served;
* fault injection: the abort and delay shares match the VirtualService's percentages, judged by
  SPRTs looked at every ~320 load requests: the abort share on the load's own requests (an abort
  is a status no app answered), the delay share on the gateway's own count over the same looks
  (``fault.delays_injected`` over ``downstream_rq_total``, as the suite without load does);
  latency is only a one-sided cross-check (requests too fast to have been delayed are at most the
  requests Envoy left undelayed).

Short by default (a few seconds of load each, 8-16 users); ``tox -e load-soak`` runs them with more
users and Locust processes.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from harness import wait
from harness.backends.base import AppFault
from harness.envoy import EnvoyAdmin, address_owner
from harness.load import RequestRecord
from harness.traffic.checks import CheckResult, all_of
from harness.traffic.split import route_for, split_toward
from suites._support.load import (
    SequentialLoad,
    collect,
    errors_at_most,
    load_notes,
    sequential_on_load,
    split_of_load,
    wait_while_loaded,
)
from suites._support.outlier import outlier_variant, setup_fast
from suites._support.routes import (
    FAULTS_ARE_VIRTUAL_SERVICES,
    POLICY_IS_THE_DESTINATION_RULE,
    ingress_route,
)
from suites.test_circuit_breaking import HOLD_MS, LIMITS, RAISED, Limits, hold_one_subset
from suites.test_fault_injection import (
    ABORT_PERCENT,
    ABORT_STATUS,
    DELAY,
    DELAY_PERCENT,
    DELAY_SEEN,
    FaultCounters,
    configured,
    fault_variant,
    ingress_vs,
)
from suites.test_routing import swapped

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

USERS = 8
CB_USERS = 16
FI_USERS = 48  # half the requests wait 200 ms: more users keep the phase short


# --------------------------------------------------------------------------- routing weights


@pytest.fixture
def load_headers(mesh_backend, config) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Headers every load request carries (the plugin's ``load`` fixture reads them): the Host the
    ingress route needs (a Gateway API listener takes only its hostname), else none."""
    host = ingress_route(config.applied, mesh_backend.traffic_api).request.get("host_header")
    return {"Host": host} if host else {}


def _prove_split_under_load(mesh, load, config, design, evidence, *, asserted=None, negative=False) -> None:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    predicted = ingress_route(config.applied, mesh.traffic_api).predict(config.applied, mesh.workloads())
    running, who = predicted.split, predicted.who
    expected = asserted or running
    n = design.n_weights(expected)
    snap = collect(load, "split", requests=n)
    check = split_of_load(snap.in_phase("split"), who, expected, design, what="via the ingress")
    common = {
        "requests": snap.phase("split").requests,
        "confidence": design.weights_confidence(expected),
        "wall_s": time.perf_counter() - started,
        "notes": f"{predicted.via}; "
        + load_notes(snap, "split")
        + (f"; running {running}" if negative else ""),
    }
    if negative:
        evidence.require_failure(check, **common, because=split_toward(running, expected))
    else:
        evidence.require(check, **common)


@pytest.mark.under_load(users=USERS)
def test_routing_weights_hold_under_load(mesh_backend, load_headers, load, config, design, evidence) -> None:
    """The ingress split (90/10 in the manifests) holds for the load's own requests (through the
    VirtualService, or the HTTPRoute on the Gateway API Gateway)."""
    _prove_split_under_load(mesh_backend, load, config, design, evidence)


@pytest.mark.negative
@pytest.mark.under_load(users=USERS)
def test_negative_swapped_split_fails_under_load(
    mesh_backend, load_headers, load, config, design, evidence
) -> None:
    """Negative control: 10/90 applied while the load runs; asserting 90/10 on the load FAILS."""
    ingress = ingress_route(config.applied, mesh_backend.traffic_api)
    original = ingress.predict(config.applied, mesh_backend.workloads()).split
    running = swapped(original)
    config.apply(
        ingress.weighted(config, {k: int(v) for k, v in running.items()}), label="swapped-under-load"
    )
    _prove_split_under_load(mesh_backend, load, config, design, evidence, asserted=original, negative=True)


# --------------------------------------------------------------------------- outlier ejection


def _ejection_window(mesh, load, config, faults, admin_http, evidence, *, detection: bool) -> None:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fast = setup_fast(config, mesh, admin_http)  # what the gateway runs (the outlier oracle)
    admin, cluster, od, pods, apply_s = fast.admin, fast.cluster, fast.od, fast.pods, fast.apply_s
    assert od is not None, f"the fast variant left {cluster} without outlier detection at the gateway"
    base = od.base_ejection_time_s
    if not detection:  # the same fast variant first, then outlier detection removed
        apply_s += config.apply(
            outlier_variant(config, lambda p: p.pop("outlierDetection", None)), label="no-od"
        )
        wait.until(
            lambda: (admin.active_cluster(cluster) or {}).get("outlier_detection") is None,
            what=f"{cluster} at the gateway without outlier detection",
            timeout=30,
            interval=0.05,
        )
    victim = pods[0]
    address = next(a for a in admin.hosts(cluster) if address_owner(a, [victim]))
    load.phase("fault")
    load.snapshot(settle_s=0.0)  # every request started in "load" has ended: none meets the fault
    faults.inject(victim.name, AppFault(status=503, rate=1.0))
    threshold = od.consecutive_5xx  # effective: Envoy's default (5) where Istio leaves it unset
    users = load.config.users

    def ejected_or_errors() -> bool:
        if address in admin.ejected(cluster):
            return True
        if detection:
            return False
        p = load.progress()  # without detection: go on once the replica has failed well past the threshold
        return p.failures >= 4 * threshold

    wait.until(
        ejected_or_errors,
        what=f"{victim.name} ejected (or failing) at the gateway",
        timeout=30,
        interval=0.02,
    )
    window = base / 2  # shorter than the ejection: the host cannot come back inside it
    load.phase("ejected")
    wait_while_loaded(load, window)
    still_out = address in admin.ejected(cluster)
    load.phase("after ejected")
    snap = load.snapshot(settle_s=0.0)  # every user has moved past the window: it is complete
    fault_recs = snap.in_phase("fault")
    victim_503 = sum(1 for r in fault_recs if r.status == 503 and r.pod == victim.name)
    window_check = errors_at_most(
        snap.in_phase("ejected"),
        users,
        why=(
            f"{victim.name} ejected after consecutive5xxErrors={threshold}; for {window:g}s "
            f"(baseEjectionTime {base:g}s / 2) no new request may reach it, so only requests already "
            f"routed to it ({users} users, one request each) can fail; still ejected at the end: {still_out}"
        ),
        name=f"errors_while_ejected <= {users} users ({victim.name})",
        key=f"errors_while_ejected <= {users} users",
    )
    # Envoy's own flag is the count that matters: the gateway retries a 503 on another host
    # (Istio's default retry policy), so the load may see fewer than `threshold` of the victim's
    # 503s although Envoy counted them all. Without outlier detection (the negative control) the
    # flag must never be set: both halves fail, each for its own reason.
    flagged = CheckResult(
        name=f"ejected_by_envoy({victim.name})",
        passed=still_out,
        detail=(
            f"{cluster} at {admin.proxy.ref} flags {victim.name} ejected (consecutive5xxErrors "
            f"{threshold}) and still at the end of the window: {still_out}; the load saw "
            f"{victim_503} of its 503s before the ejection (the rest retried elsewhere)"
        ),
        key="ejected_by_envoy",
    )
    check = all_of(window_check, flagged)
    common = {
        "requests": snap.phase("fault").requests + snap.phase("ejected").requests,
        "confidence": "count bound from the DestinationRule (deterministic)",
        "wall_s": time.perf_counter() - started,
        "notes": f"DR ACK {apply_s:.2f}s; " + load_notes(snap, "ejected"),
    }
    if detection:
        evidence.require(check, **common)
        return
    evidence.require_failure(
        check,
        **common,
        because=(
            f"without outlier detection the failing replica keeps its share (more than {users} failures "
            "in the window) and Envoy never flags it ejected",
            lambda c: not any(sub.passed for sub in c.evidence["checks"]),  # type: ignore[attr-defined]
        ),
    )


@pytest.mark.istio_routes(reason=POLICY_IS_THE_DESTINATION_RULE)
@pytest.mark.under_load(users=USERS)
def test_outlier_ejection_under_load(mesh_backend, load, config, faults, evidence, admin_http) -> None:
    """A replica failing under load is ejected; while it is out, the load sees no new errors."""
    _ejection_window(mesh_backend, load, config, faults, admin_http, evidence, detection=True)


@pytest.mark.istio_routes(reason=POLICY_IS_THE_DESTINATION_RULE)
@pytest.mark.negative
@pytest.mark.under_load(users=USERS)
def test_negative_without_outlier_detection_errors_continue_under_load(
    mesh_backend, load, config, faults, evidence, admin_http
) -> None:
    """Negative control: without outlierDetection the failing replica keeps its share: the bound FAILS."""
    _ejection_window(mesh_backend, load, config, faults, admin_http, evidence, detection=False)


# --------------------------------------------------------------------------- circuit breaking


def _shed_under_load(
    mesh, load, sampler, config, faults, admin_http, evidence, *, pool, asserted=None, negative=False
) -> None:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    scenario = hold_one_subset(config, mesh, sampler, faults, admin_http, pool)  # converges before the load
    limits: Limits = asserted or scenario.limits
    load.start()
    wait_while_loaded(load, 0.5)
    t0 = time.perf_counter()
    snap = collect(load, "overload", seconds=1.5)
    wall = time.perf_counter() - t0
    recs = snap.in_phase("overload")
    over = sum(1 for r in recs if r.status == 503 and r.overloaded)
    served = sum(1 for r in recs if r.status == 200)
    other = len(recs) - over - served
    hold = HOLD_MS / 1000
    # requests that started in the phase are served during it or up to one hold (plus a pending wait) after
    cap = limits.max_served(snap.phase("overload").seconds + 2 * hold, hold)
    users = load.config.users
    check = CheckResult(
        name=f"shed_under_load({users} users vs {limits.active} active + {limits.pending} pending)",
        passed=users > limits.in_flight and over > 0 and served <= cap and other == 0,
        detail=(
            f"{len(recs)} load requests in {snap.phase('overload').seconds:.2f}s, each served one held {HOLD_MS}ms: "
            f"at most {cap} can be served; observed {served} served, {over} shed (503 x-envoy-overloaded), "
            f"{other} other; status {dict(snap.phase('overload').by_status)}"
        ),
        evidence={"served": served, "overloaded": over, "other": other, "cap": cap},
    )
    common = {
        "requests": len(recs),
        "confidence": "bound from the limits (deterministic)",
        "wall_s": time.perf_counter() - started,
        "notes": f"DR+VS ACK {scenario.apply_s:.2f}s; "
        + load_notes(snap, "overload")
        + f"; window {wall:.1f}s",
    }
    if not negative:
        evidence.require(check, **common)
        return
    evidence.require_failure(
        check,
        **common,
        because=(
            "the raised limits shed nothing (no 503 x-envoy-overloaded) and served more than the asserted "
            "limits allow, every request answered 200 or shed",
            lambda c: (
                c.evidence["overloaded"] == 0
                and c.evidence["served"] > c.evidence["cap"]  # type: ignore[operator]
                and c.evidence["other"] == 0
            ),
        ),
    )


@pytest.mark.istio_routes(reason=POLICY_IS_THE_DESTINATION_RULE)
@pytest.mark.under_load(users=CB_USERS, start=False)
def test_circuit_breaker_sheds_under_load(
    mesh_backend, load, sampler, config, faults, evidence, admin_http
) -> None:
    """16 Locust users against 1 active + 1 pending: Envoy sheds the excess, serves at most the limits."""
    _shed_under_load(mesh_backend, load, sampler, config, faults, admin_http, evidence, pool=LIMITS)


@pytest.mark.istio_routes(reason=POLICY_IS_THE_DESTINATION_RULE)
@pytest.mark.negative
@pytest.mark.under_load(users=CB_USERS, start=False)
def test_negative_raised_limits_fail_the_shed_check_under_load(
    mesh_backend, load, sampler, config, faults, evidence, admin_http
) -> None:
    """Negative control: limits raised to 1000 while asserting 1 + 1: nothing is shed, the check FAILS."""
    asserted = Limits(max_connections=1, max_pending_requests=1, max_requests=1)
    _shed_under_load(
        mesh_backend,
        load,
        sampler,
        config,
        faults,
        admin_http,
        evidence,
        pool=RAISED,
        asserted=asserted,
        negative=True,
    )


# --------------------------------------------------------------------------- fault injection


def _fault_shares_under_load(
    mesh,
    load,
    config,
    design,
    evidence,
    admin_http,
    *,
    abort_percent: float,
    asserted: float,
    negative: bool,
    delay_percent: float = DELAY_PERCENT,
    judge_abort: bool = True,
) -> None:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    fault: dict[str, Any] = {"abort": {"httpStatus": ABORT_STATUS, "percentage": {"value": abort_percent}}}
    if not negative:
        fault["delay"] = {"fixedDelay": DELAY, "percentage": {"value": delay_percent}}
    load.phase("fault applying")  # the aborts start with the apply: phase "load" stays fault-free
    load.snapshot(settle_s=0.0)  # every request started in "load" has ended before the apply
    apply_s = config.apply(fault_variant(config, fault), label="fault-under-load")
    status, _, delay_s, _ = configured(route_for(ingress_vs(config)))
    assert status is not None
    wait.until(
        lambda: any(r.status == status for r in load.snapshot(settle_s=0.5).records[-500:]),
        what=f"the load to see aborts with {status} (the fault filter is live)",
        timeout=30,
        interval=0.2,
    )
    # The abort share is judged on the load's own records (an abort is a status with no app behind
    # it: exact per request). The delay share is judged on the gateway's own count, as without
    # load: fault.delays_injected over downstream_rq_total between reads (FaultCounts), each look's
    # movement one batch of whole trials. Latency is only the one-sided cross-check: a judged
    # request answered faster than DELAY_SEEN x the delay cannot have been delayed, and every judged
    # request lies between the first and the last read, so such requests can number at most the
    # requests Envoy left undelayed; slowness only lowers the fast count.
    asserted_delay = DELAY_PERCENT / 100  # the negative control applies another share than it asserts
    plans = {"abort": design.sequential_proportion(asserted)} if judge_abort else {}
    counts = None
    if delay_s is not None:
        plans["delays"] = design.sequential_proportion(asserted_delay)
        counters = FaultCounters(EnvoyAdmin(admin_http, mesh.workload("ingress")))

        def counts() -> dict[str, tuple[int, int]]:
            c = counters.read()
            return {"delays": (c.delays, c.requests)}

    def classify(what: str, r: RequestRecord) -> str:
        if r.status == status and not r.pod:
            return "hit"  # aborted by Envoy (no app answered)
        return "miss" if r.status == 200 and r.pod else f"status {r.status} (neither an abort nor an app 200)"

    # the fault stays applied after the looks, until the test's teardown restores the config
    run = sequential_on_load(load, "fault", plans, classify, counts=counts, after="fault (decided)")
    if judge_abort:
        abort = run.verdicts["abort"]
        check = CheckResult(
            f"abort_share_under_load({status}, {asserted:g}): {abort.summary()}",
            abort.passed,
            abort.table(),
            {"verdict": abort},
            key=f"abort_share_under_load({status}, {asserted:g})",
        )
        common = {
            "requests": len(run.records),
            "confidence": design.sequential_confidence(),
            "wall_s": time.perf_counter() - started,
            "notes": f"ACK {apply_s:.2f}s; " + run.notes(load.config.users),
            "used_n": abort.n,
            "fixed_n": abort.fixed_n,
        }
        if not negative:
            evidence.require(check, **common)
        else:
            evidence.require_failure(
                check,
                **common,
                because=(
                    "the load's abort share is above the asserted (the SPRT finds evidence for it), "
                    "with no request outside abort/app-200",
                    lambda c: (
                        c.evidence["verdict"].reason.startswith("evidence for hit >=")  # type: ignore[attr-defined]
                        and not c.evidence["verdict"].unexpected
                    ),  # type: ignore[attr-defined]
                ),
            )
    if delay_s is None:
        return
    check = delay_check_under_load(run, delay_s)
    common = {
        "requests": 0 if judge_abort else len(run.records),
        "confidence": design.sequential_confidence(),
        "wall_s": 0.0 if judge_abort else time.perf_counter() - started,
        "notes": (
            "same load phases as the abort check; " if judge_abort else run.notes(load.config.users) + "; "
        )
        + f"Envoy counted {run.counted['delays'][0]} delays in {run.counted['delays'][1]} requests",
        "used_n": run.verdicts["delays"].n,
        "fixed_n": run.verdicts["delays"].fixed_n,
    }
    if delay_percent == DELAY_PERCENT:
        evidence.require(check, **common)
    else:
        evidence.require_failure(
            check,
            **common,
            because=(
                "Envoy's delays_injected share is below the asserted while the latency cross-check holds",
                lambda c: (
                    c.evidence["checks"][0].evidence["verdict"].reason.startswith("evidence for hit <=")  # type: ignore[index]
                    and c.evidence["checks"][1].passed
                ),  # type: ignore[index]
            ),
        )


def delay_check_under_load(run: SequentialLoad, delay_s: float) -> CheckResult:
    """The gateway's delays_injected share over the requests it counted (the SPRT), and the
    one-sided cross-check: judged load requests answered faster than DELAY_SEEN x the delay are
    at most the requests Envoy left undelayed."""
    verdict = run.verdicts["delays"]
    share = verdict.categories[0].expected
    shares = CheckResult(
        f"delay share (Envoy delays_injected): {verdict.summary()}",
        verdict.passed,
        verdict.table(),
        {"verdict": verdict},
        key="delay share (Envoy delays_injected)",
    )
    delays, requests = run.counted["delays"]
    bound_ms = DELAY_SEEN * delay_s * 1000
    fast = sum(1 for r in run.records if not r.failed and r.latency_ms < bound_ms)
    undelayed = requests - delays
    cross = CheckResult(
        name=f"fast_load_requests_were_not_delayed(<{bound_ms:.0f}ms)",
        passed=0 <= delays <= requests and fast <= undelayed,
        detail=(
            f"{fast} of {len(run.records)} judged load requests answered in under {bound_ms:.0f}ms (cannot "
            f"have been delayed); Envoy left {undelayed} of the {requests} requests it counted over the same "
            "looks undelayed, so at most that many may be that fast (one-sided: slowness only lowers the "
            "fast count)"
        ),
    )
    return CheckResult(
        f"delay_share_under_load({delay_s * 1000:g}ms, {share:g})",
        shares.passed and cross.passed,
        f"{shares.detail}\n{cross.detail}",
        {"checks": (shares, cross), "delays_injected": delays, "requests_counted": requests, "fast": fast},
    )


@pytest.mark.istio_routes(reason=FAULTS_ARE_VIRTUAL_SERVICES)
@pytest.mark.under_load(users=FI_USERS)
def test_fault_injection_shares_under_load(mesh_backend, load, config, design, evidence, admin_http) -> None:
    """abort 555 for 30% of the load's requests (its records) and a 200ms delay for 50% (the gateway's
    own count over the same looks)."""
    _fault_shares_under_load(
        mesh_backend,
        load,
        config,
        design,
        evidence,
        admin_http,
        abort_percent=ABORT_PERCENT,
        asserted=ABORT_PERCENT / 100,
        negative=False,
    )


@pytest.mark.istio_routes(reason=FAULTS_ARE_VIRTUAL_SERVICES)
@pytest.mark.negative
@pytest.mark.under_load(users=FI_USERS)
def test_negative_delay_share_too_low_under_load(
    mesh_backend, load, config, design, evidence, admin_http
) -> None:
    """Negative control: the same 200 ms delay applied to 20% while asserting 50%: the delay check
    FAILS because the gateway's delays_injected share is off (its latency cross-check holds).
    (The abort share is the positive test's to judge; here only the delay check decides.)"""
    _fault_shares_under_load(
        mesh_backend,
        load,
        config,
        design,
        evidence,
        admin_http,
        abort_percent=ABORT_PERCENT,
        asserted=ABORT_PERCENT / 100,
        negative=False,
        delay_percent=20.0,
        judge_abort=False,
    )


@pytest.mark.istio_routes(reason=FAULTS_ARE_VIRTUAL_SERVICES)
@pytest.mark.negative
@pytest.mark.under_load(users=FI_USERS)
def test_negative_abort_share_differs_under_load(
    mesh_backend, load, config, design, evidence, admin_http
) -> None:
    """Negative control: 50% aborts applied while asserting 30% on the load: the abort check FAILS."""
    _fault_shares_under_load(
        mesh_backend,
        load,
        config,
        design,
        evidence,
        admin_http,
        abort_percent=50.0,
        asserted=ABORT_PERCENT / 100,
        negative=True,
    )
