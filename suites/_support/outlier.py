"""The outlier suite's machinery: the fast variant, driving a replica to its ejection, sampling
inside an ejection, the return after baseEjectionTime, the ejection cap, and their checks.

Every count is Envoy's own (the gateway's ``/clusters`` and ``outlier_detection.*`` statistics);
every expectation comes from the effective outlier detection of the gateway's cluster
(:mod:`harness.istio.oracles.outlier`). Why no verdict depends on the machine's speed:
``suites/test_outlier.py``'s docstring.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from harness import wait
from harness.backends.base import AppFault, Backend, Workload
from harness.envoy import EnvoyAdmin, HostState, address_owner, outbound_cluster
from harness.errors import WaitTimeout
from harness.guards import ConfigGuard
from harness.istio import DestinationRule, parse_duration
from harness.istio.oracles.outlier import EffectiveOutlier
from harness.traffic.checks import CheckResult
from harness.traffic.client import Sampler, SampleResult
from harness.traffic.split import attribution, converge_split, expected_split, route_for

FAST = {"interval": "1s", "baseEjectionTime": "3s"}
#: Envoy admin is polled this often while waiting for a host to be ejected or to come back
POLL_S = 0.05
#: slack added to liveness deadlines derived from the configuration (never to a verdict bound)
SLACK_S = 10.0
#: requests per chunk while sampling inside an ejection
CHUNK = 30
#: slack on top of Envoy's update merge window before traffic is judged inside an ejection
SETTLE_SLACK_S = 2.0
ENFORCED = "outlier_detection.ejections_enforced_total"
OVERFLOW = "outlier_detection.ejections_overflow"


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


def apply_outlier(
    config: ConfigGuard, admin: EnvoyAdmin, cluster: str, *bodies: dict[str, Any], label: str
) -> tuple[EffectiveOutlier | None, float]:
    """Apply ``bodies``; once the gateway runs the changed ``cluster``, its effective outlier
    detection: the oracle over the cluster's ``/config_dump`` (Envoy's defaults where Istio left a
    field unset), never the DestinationRule's field names. Returns it with the ACK seconds."""
    before = admin.active_cluster(cluster)
    apply_s = config.apply(*bodies, label=label)
    running = admin.await_change(cluster, before, changed=apply_s > 0, what=f"as the {label} variant made it")
    return EffectiveOutlier.from_cluster(running), apply_s


def effective_outlier(admin: EnvoyAdmin, cluster: str) -> EffectiveOutlier | None:
    """The effective outlier detection of ``cluster`` as the proxy runs it now."""
    running = admin.active_cluster(cluster)
    assert running is not None, f"{admin.proxy.ref} runs no cluster {cluster}"
    return EffectiveOutlier.from_cluster(running)


def predicted(od: EffectiveOutlier | None, what: str) -> EffectiveOutlier:
    assert od is not None, f"the gateway's cluster runs no outlier detection, so {what} cannot be predicted"
    return od


# --------------------------------------------------------------------------- driving traffic


def enforced(admin: EnvoyAdmin, cluster: str) -> int | None:
    """Envoy's ``ejections_enforced_total`` for the cluster (None: not exposed)."""
    value = admin.counter(cluster, ENFORCED)
    return None if value is None else int(value)


def need_enforced(admin: EnvoyAdmin, cluster: str) -> int:
    value = enforced(admin, cluster)
    if value is None:
        pytest.fail(
            f"{admin.proxy.ref} exposes no cluster.{cluster}.{ENFORCED}: the verdict needs Envoy's own "
            "count of ejections. Fix: include '.*outlier_detection\\..*' in the mesh's "
            "proxyStatsMatcher.inclusionRegexps (harness/proxy_stats.py; both backends set it)",
            pytrace=False,
        )
    return value


@dataclass(frozen=True)
class EjectionRun:
    """Errors sent one at a time at a faulted replica until Envoy counted ``threshold`` of them,
    then (traffic stopped) whether the ejection came."""

    pod: str
    address: str
    threshold: int
    errors: int  # rq_error of the host at the gateway over the run (no traffic after the last)
    early: bool  # flagged ejected while fewer than ``threshold`` errors were counted
    ejected: bool  # flagged by the end of the wait (or early)
    requests: int
    started: float  # perf_counter at the first request
    not_before: float  # perf_counter when the last request was sent: the ejection is no earlier
    waited_s: float  # from the last answer until the flag was seen (0: seen at once)
    deadline_s: float  # how long the flag was awaited with no traffic
    enforced: int | None  # ejections_enforced_total moved over the run

    @property
    def seconds(self) -> float:
        return self.not_before - self.started + self.waited_s


def drive_to_threshold(
    mesh: Backend,
    sampler: Sampler,
    admin: EnvoyAdmin,
    cluster: str,
    pod: Workload,
    *,
    threshold: int,
    deadline_s: float,
    timeout: float = 60.0,
) -> EjectionRun:
    """Send single requests until the gateway's Envoy counted ``threshold`` 5xx from ``pod``
    (or flagged it ejected), then wait up to ``deadline_s`` with no traffic for the flag."""
    hosts = admin.hosts(cluster)
    address = next((a for a in hosts if address_owner(a, [pod])), "")
    assert address, (
        f"{pod.name} ({pod.address}) is not an endpoint of {cluster} at {admin.proxy.ref}: {list(hosts)}"
    )
    base_errors = hosts[address].rq_error
    enforced0 = enforced(admin, cluster)
    errors = sent = 0
    early = flagged = False
    started = last_send = time.perf_counter()

    def host() -> HostState:
        return admin.hosts(cluster).get(address) or HostState(address, False, 0)

    def step() -> bool:
        nonlocal errors, sent, early, flagged, last_send
        last_send = time.perf_counter()
        sent += sampler.sample(mesh, n=1, concurrency=1).total
        h = host()
        errors = h.rq_error - base_errors
        if h.ejected:
            flagged, early = True, errors < threshold
            return True
        return errors >= threshold

    wait.until(
        step,
        what=f"{threshold} 5xx from {pod.name} counted at {admin.proxy.ref} (or its ejection)",
        timeout=timeout,
        interval=0.0,
        hint="is traffic reaching the faulted pod at all?",
    )
    answered = time.perf_counter()
    if not flagged and deadline_s > 0:
        try:
            wait.until(
                lambda: host().ejected,
                what=f"{pod.name} ejected at {admin.proxy.ref} after {errors} errors, with no traffic",
                timeout=deadline_s,
                interval=POLL_S,
            )
            flagged = True
        except WaitTimeout:
            pass
    waited = time.perf_counter() - answered if flagged and not early else 0.0
    errors = host().rq_error - base_errors
    enforced1 = enforced(admin, cluster)
    moved = None if enforced0 is None or enforced1 is None else enforced1 - enforced0
    return EjectionRun(
        pod.name,
        address,
        threshold,
        errors,
        early,
        flagged,
        sent,
        started,
        last_send,
        waited,
        deadline_s,
        moved,
    )


def ejection_check(run: EjectionRun, *, what: str = "5xx", interval_s: float) -> CheckResult:
    """Ejected with exactly ``threshold`` errors counted, never before."""
    passed = run.ejected and not run.early and run.errors == run.threshold
    if run.early:
        seen = f"ejected EARLY, after only {run.errors} {what} (one-sided: the flag can only lag)"
    elif run.ejected:
        seen = (
            f"ejected after {run.errors} {what} from {run.pod}, flag seen {run.waited_s:.2f}s after the "
            f"last answer with no traffic since"
        )
    else:
        seen = (
            f"NOT ejected although the gateway counted {run.errors} {what} from {run.pod} and waited "
            f"{run.deadline_s:g}s with no traffic"
        )
    return CheckResult(
        name=f"ejected_after({run.threshold} consecutive {what}, {run.pod})",
        key=f"ejected_after({run.threshold} consecutive {what})",
        passed=passed,
        detail=(
            f"expected: ejection at exactly {run.threshold} errors as the gateway's Envoy counts them "
            f"(rq_error), not before; observed: {seen}; {run.requests} requests one at a time; "
            f"ejections_enforced_total moved {run.enforced}. Deadline {run.deadline_s:g}s = one "
            f"{interval_s:g}s sweep + {SLACK_S:g}s slack (Envoy ejects on the threshold-th error itself)"
        ),
        evidence={
            "errors": run.errors,
            "ejected": run.ejected,
            "early": run.early,
            "enforced": run.enforced,
            "seconds": run.seconds,
        },
    )


@dataclass(frozen=True)
class InsideEjection:
    """Chunks of traffic each lying inside one continuous ejection of the hosts ejected around it."""

    kept: tuple[tuple[SampleResult, frozenset[str], dict[str, HostState], dict[str, HostState]], ...]
    discarded: int  # requests in chunks that straddled an ejection change, or sent to re-eject
    most_ejected: int  # the most hosts seen ejected at once at any read
    not_before: float  # the newest ejection seen cannot be older than this perf_counter
    ejections: int  # ejections_enforced_total moved while sampling
    settle_s: float  # how long an ejection state held before a chunk was sent inside it

    @property
    def results(self) -> list[SampleResult]:
        return [k[0] for k in self.kept]

    @property
    def requests(self) -> int:
        return sum(r.total for r in self.results)

    def to_ejected(self) -> int:
        """Requests Envoy sent to a host while it was ejected for the whole chunk."""
        total = 0
        for _, out, before, after in self.kept:
            total += sum(after[a].rq_total - before[a].rq_total for a in out if a in after and a in before)
        return total


def merge_window_s(admin: EnvoyAdmin, cluster: str) -> float:
    """The cluster's ``common_lb_config.update_merge_window`` as the proxy runs it (Envoy: 1s unset).

    Envoy delivers health-flag changes (an ejection, a return) to its workers merged over this
    window: ``/clusters`` (the main thread) may show an ejection up to a window before the worker
    that routes requests acts on it.
    """
    running = admin.active_cluster(cluster) or {}
    window = (running.get("common_lb_config") or {}).get("update_merge_window")
    return parse_duration(window) if isinstance(window, str) else 1.0


def sample_inside_ejection(
    mesh: Backend,
    sampler: Sampler,
    admin: EnvoyAdmin,
    cluster: str,
    *,
    n: int,
    not_before: float,
    concurrency: int,
    timeout: float = 120.0,
) -> InsideEjection:
    """Gather ``n`` requests from chunks that each lie inside one continuous ejection.

    A chunk is kept when the same hosts are flagged ejected before and after it, at least one is,
    and ``ejections_enforced_total`` did not move. It starts only once that state has held for
    the update merge window plus ``SETTLE_SLACK_S`` (no traffic meanwhile), so the worker routes
    by the host set the flags show. When nothing is ejected, a chunk is sent (and discarded) to
    eject the still-faulted hosts again.
    """
    settle_s = merge_window_s(admin, cluster) + SETTLE_SLACK_S
    kept: list[tuple[SampleResult, frozenset[str], dict[str, HostState], dict[str, HostState]]] = []
    discarded = most = 0
    newest = not_before
    first = last = need_enforced(admin, cluster)
    last_sent = not_before  # when the last read that returned ``last`` was sent
    state: tuple[frozenset[str], int] | None = None
    state_since = 0.0  # perf_counter when ``state`` was first read

    def ejected_set(hosts: Mapping[str, HostState]) -> frozenset[str]:
        return frozenset(a for a, h in hosts.items() if h.ejected)

    def read() -> tuple[dict[str, HostState], int]:
        """Hosts and the enforced count; a moved count dates a new ejection after the last read."""
        nonlocal newest, last, last_sent, state, state_since, most
        sent_at = time.perf_counter()
        hosts, count = admin.hosts(cluster), need_enforced(admin, cluster)
        if count != last:
            newest = max(newest, last_sent)
        last, last_sent = count, sent_at
        now = (ejected_set(hosts), count)
        most = max(most, len(now[0]))
        if now != state:
            state, state_since = now, time.perf_counter()
        return hosts, count

    def settled() -> bool:
        key = state
        read()
        return state != key or time.perf_counter() >= state_since + settle_s

    def chunk() -> bool:
        nonlocal discarded
        before, e0 = read()
        out = ejected_set(before)
        if out and time.perf_counter() < state_since + settle_s:
            wait.until(settled, what="the ejection state to settle", timeout=settle_s + 30, interval=POLL_S)
            return False
        want = min(CHUNK, n - sum(k[0].total for k in kept))
        result = sampler.sample(mesh, n=want, concurrency=concurrency)
        after, e1 = read()
        if out and ejected_set(after) == out and e1 == e0:
            kept.append((result, out, dict(before), dict(after)))
        else:
            discarded += result.total
        return sum(k[0].total for k in kept) >= n

    wait.until(
        chunk,
        what=f"{n} requests sampled inside one continuous ejection at {admin.proxy.ref} ({cluster})",
        timeout=timeout,
        interval=0.0,
        hint="do the ejected hosts keep failing (the fault still on) so that they are ejected again?",
    )
    return InsideEjection(tuple(kept), discarded, most, newest, last - first, settle_s)


def inside_check(
    name: str, inside: InsideEjection, victims: Sequence[str], what: str, *, key: str = ""
) -> CheckResult:
    """While ejected for the whole chunk: no client 5xx, no answer from an ejected pod, and
    Envoy sent nothing to an ejected host."""
    statuses: dict[int, int] = {}
    for r in inside.results:
        for code, k in r.status_counts().items():
            statuses[code] = statuses.get(code, 0) + k
    bad = sum(k for code, k in statuses.items() if code >= 500 or code == 0)
    from_victims = sum(1 for r in inside.results for x in r.responses if x.pod in victims)
    to_ejected = inside.to_ejected()
    return CheckResult(
        name=name,
        key=key,
        passed=inside.requests > 0 and bad == 0 and from_victims == 0 and to_ejected == 0,
        detail=(
            f"{inside.requests} requests in {len(inside.kept)} chunks each inside one continuous ejection "
            f"({what}); status {statuses}; {from_victims} answered by {list(victims)}; the gateway's Envoy "
            f"sent {to_ejected} to a host while it was ejected (rq_total); {inside.discarded} requests "
            f"discarded (a chunk that straddled an ejection change; ejections_enforced_total moved "
            f"{inside.ejections}). Each chunk started once the ejection had held {inside.settle_s:g}s: "
            f"Envoy's update merge window + {SETTLE_SLACK_S:g}s slack for its workers to act on it"
        ),
        evidence={
            "requests": inside.requests,
            "bad": bad,
            "to_ejected": to_ejected,
            "from_victims": from_victims,
        },
    )


def sample_inside_asserted_ejection(
    mesh: Backend,
    sampler: Sampler,
    admin: EnvoyAdmin,
    cluster: str,
    victim: Workload,
    run: EjectionRun,
    *,
    od: EffectiveOutlier,
    n: int,
    concurrency: int,
    timeout: float = 120.0,
) -> InsideEjection:
    """Gather ``n`` requests from chunks that each lie inside the ejection ``od`` asserts for the
    host ``run`` drove to ``od``'s consecutive-5xx threshold, whatever the gateway runs (its
    flags are not consulted: a negative control asserts an ejection the gateway may not make).

    Under ``od`` Envoy ejects the host on the threshold-th 5xx itself, so it is out once ``run``
    returned, and stays out for at least baseEjectionTime after the request that caused it was
    sent (``run.not_before``). A chunk starts once that ejection has held the update merge window
    plus ``SETTLE_SLACK_S`` (as in :func:`sample_inside_ejection`) and is kept when its closing
    read came before baseEjectionTime was over; a later one is discarded. Once the asserted
    ejection is over, the host is driven to the threshold again (a new asserted ejection).
    """
    threshold = od.ejects_after_5xx
    assert threshold is not None, f"the asserted outlier detection does not eject on 5xx: {od.describe()}"
    settle_s = merge_window_s(admin, cluster) + SETTLE_SLACK_S
    out = frozenset({run.address})
    kept: list[tuple[SampleResult, frozenset[str], dict[str, HostState], dict[str, HostState]]] = []
    discarded = 0
    first = enforced(admin, cluster)
    since, until, newest = time.perf_counter(), run.not_before + od.base_ejection_time_s, run.not_before

    def chunk() -> bool:
        nonlocal discarded, since, until, newest
        if time.perf_counter() + settle_s >= until:  # no room left in this asserted ejection
            again = drive_to_threshold(
                mesh, sampler, admin, cluster, victim, threshold=threshold, deadline_s=0.0
            )
            discarded += again.requests
            since, until, newest = (
                time.perf_counter(),
                again.not_before + od.base_ejection_time_s,
                again.not_before,
            )
        if time.perf_counter() < since + settle_s:
            wait.until(
                lambda: time.perf_counter() >= since + settle_s,
                what=f"the asserted ejection of {victim.name} to have held {settle_s:g}s",
                timeout=settle_s + 30,
                interval=POLL_S,
            )
        before = admin.hosts(cluster)
        result = sampler.sample(
            mesh, n=min(CHUNK, n - sum(k[0].total for k in kept)), concurrency=concurrency
        )
        after = admin.hosts(cluster)
        if time.perf_counter() <= until:
            kept.append((result, out, dict(before), dict(after)))
        else:
            discarded += result.total
        return sum(k[0].total for k in kept) >= n

    wait.until(
        chunk,
        what=f"{n} requests sampled inside the asserted ejection of {victim.name} at {admin.proxy.ref} ({cluster})",
        timeout=timeout,
        interval=0.0,
    )
    last = enforced(admin, cluster)
    moved = 0 if first is None or last is None else last - first
    return InsideEjection(tuple(kept), discarded, len(out), newest, moved, settle_s)


@dataclass(frozen=True)
class Fast:
    """The fast variant as the gateway runs it."""

    admin: EnvoyAdmin
    cluster: str
    od: EffectiveOutlier | None  # the oracle over the gateway's cluster (None: no outlier detection)
    pods: list[Workload]  # the replicas behind ``cluster``
    apply_s: float


def setup_fast(
    config: ConfigGuard, mesh: Backend, admin_http: Any, edit: Callable[[dict[str, Any]], None] | None = None
) -> Fast:
    """Apply the fast variant (``edit`` changes its traffic policy further) to the ingress route's
    first cluster; read what the gateway runs."""
    _, route = ingress_route(config)
    d = next(d for d in route.destinations if d.weight != 0)
    cluster = outbound_cluster(d.port or 3000, d.subset, d.fqdn)
    admin = EnvoyAdmin(admin_http, mesh.workload("ingress"))
    od, apply_s = apply_outlier(
        config, admin, cluster, outlier_variant(config, edit or fast), label="outlier-fast"
    )
    who = attribution(config.applied, route, mesh.workloads())
    pods = [mesh.workload(p) for p in who.pods(d.subset or d.host)]
    return Fast(admin, cluster, od, pods, apply_s)


def await_return(
    mesh: Backend,
    sampler: Sampler,
    admin: EnvoyAdmin,
    cluster: str,
    victim: Workload,
    address: str,
    *,
    od: EffectiveOutlier,
    not_before: float,
    ejections: int,
    n: int,
) -> CheckResult:
    """The victim (healthy again) is back no earlier than ``od``'s baseEjectionTime after the
    request that caused its ejection was sent (one-sided), back within Envoy's re-admission time
    (baseEjectionTime x ejections, at a sweep) + slack, and then serves."""
    base, interval = od.base_ejection_time_s, od.interval_s
    limit = od.readmitted_after_s(ejections) + interval + SLACK_S
    seen_back: float | None = None

    def back_yet() -> bool:
        nonlocal seen_back
        out = address in admin.ejected(cluster)
        if not out:
            seen_back = time.perf_counter()
        return not out

    with contextlib.suppress(WaitTimeout):  # not back in time: the check below says so
        wait.until(back_yet, what=f"{victim.name} back in {cluster}", timeout=limit, interval=POLL_S)
    out_at_most = None if seen_back is None else seen_back - not_before
    hosts_before = admin.hosts(cluster)
    back = sampler.sample(mesh, n=n, concurrency=4)
    hosts_after = admin.hosts(cluster)
    served = back.pod_counts().get(victim.name, 0)
    envoy_sent = hosts_after[address].rq_total - hosts_before[address].rq_total
    early = out_at_most is not None and out_at_most < base - 0.01
    return CheckResult(
        name=f"returns_after_base_ejection({base:g}s, {victim.name})",
        key=f"returns_after_base_ejection({base:g}s)",
        passed=(
            seen_back is not None
            and not early
            and served > 0
            and envoy_sent > 0
            and back.status_counts() == {200: n}
        ),
        detail=(
            f"expected: out for at least {base:g}s (baseEjectionTime), back within {limit:g}s = "
            f"{od.readmitted_after_s(ejections):g}s (baseEjectionTime x {ejections} ejection(s)) + one "
            f"{interval:g}s sweep + {SLACK_S:g}s slack.\n"
            + (
                f"observed: back; the ejection lasted at most {out_at_most:.2f}s (from before the "
                "request that caused it to the read that saw it back: one-sided, slowness only "
                "lengthens it)" + (f": EARLY, less than baseEjectionTime {base:g}s" if early else "")
                if out_at_most is not None
                else f"observed: still ejected after {limit:g}s"
            )
            + f"; then {served} of {n} requests served by {victim.name} (Envoy sent it {envoy_sent}), "
            f"status {back.status_counts()}"
        ),
        evidence={
            "out_at_most": out_at_most,
            "early": early,
            "back": seen_back is not None,
            "ejections": ejections,
            "served": served,
        },
    )


@dataclass(frozen=True)
class CapRun:
    """Three of four replicas failing under one outlier-detection config: what the gateway did."""

    hosts: int
    max_seen: int  # the most hosts flagged ejected at any read
    refused: int | None  # ejections_overflow moved (None: not exposed)
    to_ejected: int  # requests Envoy sent to a host while it was ejected for the whole chunk
    errors_in: int  # 503s Envoy counted from failing hosts left in rotation, inside the chunks
    inside: InsideEjection
    ejected_names: list[str]
    failing: list[str]
    requests: int  # all requests sent


@dataclass(frozen=True)
class CapScenario:
    admin: EnvoyAdmin
    cluster: str
    manifests_od: EffectiveOutlier | None  # what the manifests' DestinationRule gave the cluster
    od: EffectiveOutlier | None  # what the cluster runs now
    pods: list[str]  # the replicas behind the cluster, sorted
    requests: int  # sent to converge the route
    apply_s: float


def cap_scenario(
    config: ConfigGuard, mesh: Backend, sampler: Sampler, admin_http: Any, **overrides: Any
) -> CapScenario:
    """Route the ingress to the whole host (all 4 replicas: one cluster) and apply the fast variant
    (baseEjectionTime 10s, and ``overrides``); the cluster's effective outlier detection before
    (the manifests') and after, both read from the gateway."""
    vs, route = ingress_route(config)
    template = route.destinations[0]
    cluster = outbound_cluster(template.port or 3000, None, template.fqdn)
    admin = EnvoyAdmin(admin_http, mesh.workload("ingress"))
    manifests_od = effective_outlier(admin, cluster)

    def one_cluster(body: dict[str, Any]) -> None:  # route to the host, not a subset: all 4 replicas
        body["spec"]["http"][0]["route"] = [
            {"destination": {"host": template.host, "port": {"number": template.port or 3000}}}
        ]

    od, apply_s = apply_outlier(
        config,
        admin,
        cluster,
        outlier_variant(config, lambda p: fast(p, baseEjectionTime="10s", **overrides)),
        config.variant("VirtualService", vs.name, vs.namespace, one_cluster),
        label="outlier-cap",
    )
    _, route = ingress_route(config)
    who = attribution(config.applied, route, mesh.workloads())
    gate = converge_split(sampler, mesh, who, expected_split(route), batch=50, consecutive=2)
    pods = sorted(who.pods(template.host))
    return CapScenario(admin, cluster, manifests_od, od, pods, gate.requests, apply_s)


def cap_run(
    mesh: Backend,
    sampler: Sampler,
    faults: Any,
    scenario: CapScenario,
    *,
    cap: int,
    n: int,
    started: float,
    drive_to: int | None = None,
) -> CapRun:
    """Fail all replicas but one; drive traffic until ``drive_to`` hosts (default ``cap``) are
    ejected, then sample ``n`` requests inside continuous ejections."""
    admin, cluster = scenario.admin, scenario.cluster
    hosts = admin.hosts(cluster)
    failing = scenario.pods[: len(scenario.pods) - 1]
    assert cap < len(failing), (
        f"the cap {cap} of {len(hosts)} hosts does not bind with {len(failing)} failing"
    )
    overflow0 = admin.counter(cluster, OVERFLOW)
    faults.inject(failing, AppFault(status=503, rate=1.0))
    workloads = list(mesh.workloads())
    owner = {a: address_owner(a, workloads) for a in hosts}
    failing_addrs = {a for a, w in owner.items() if w and w.name in failing}
    max_seen = sent = 0
    want = cap if drive_to is None else drive_to

    def capped() -> bool:
        nonlocal max_seen, sent
        sent += sampler.sample(mesh, n=20, concurrency=1).total
        now = len(admin.ejected(cluster))
        max_seen = max(max_seen, now)
        return now >= want

    wait.until(capped, what=f"{want} hosts ejected at {admin.proxy.ref}", timeout=60, interval=0.0)
    inside = sample_inside_ejection(mesh, sampler, admin, cluster, n=n, not_before=started, concurrency=1)
    overflow1 = admin.counter(cluster, OVERFLOW)
    errors_in = sum(  # 503s Envoy counted from failing hosts that were in rotation for the chunk
        after[a].rq_error - before[a].rq_error
        for _, out, before, after in inside.kept
        for a in failing_addrs - out
        if a in before and a in after
    )
    return CapRun(
        hosts=len(hosts),
        max_seen=max(max_seen, inside.most_ejected),
        refused=None if overflow0 is None or overflow1 is None else int(overflow1 - overflow0),
        to_ejected=inside.to_ejected(),
        errors_in=errors_in,
        inside=inside,
        ejected_names=sorted({w.name for k in inside.kept for a in k[1] if (w := owner.get(a))}),
        failing=failing,
        requests=scenario.requests + sent + inside.requests + inside.discarded,
    )


def cap_check(run: CapRun, od: EffectiveOutlier) -> CheckResult:
    """At most ``od``'s cap ejected at any read, Envoy refused ejections for it, the failing hosts
    left in rotation kept failing and nothing was sent to an ejected host."""
    cap = od.max_ejected(run.hosts)
    inside = run.inside
    return CheckResult(
        name=f"max_ejection_percent({od.max_ejection_percent}% of {run.hosts} hosts = {cap})",
        passed=(
            run.max_seen <= cap
            and run.to_ejected == 0
            and run.errors_in > 0
            and (run.refused is None or run.refused > 0)
            and inside.requests > 0
        ),
        detail=(
            f"{len(run.failing)} of {run.hosts} replicas answer 503; expected at most {cap} ejected "
            f"(effective max_ejection_percent {od.max_ejection_percent}), the others still in rotation.\n"
            f"observed: most ejected at any read {run.max_seen}; Envoy refused {run.refused} ejections for "
            f"the cap (ejections_overflow); in {inside.requests} requests sampled inside continuous "
            f"ejections of {run.ejected_names}, Envoy sent {run.to_ejected} to an ejected host and counted "
            f"{run.errors_in} 503s from the failing host(s) left in rotation (rq_error); "
            f"{inside.discarded} requests discarded\n"
            + "\n".join(
                f"chunk: out {sorted(out)}; Envoy rq_total moved "
                f"{ {a: after[a].rq_total - before[a].rq_total for a in after if a in before} }; "
                f"clients: pods {r.pod_counts(None)} status {r.status_counts()}"
                for r, out, before, after in inside.kept
            )
        ),
        evidence={
            "cap": cap,
            "max_seen": run.max_seen,
            "refused": run.refused,
            "to_ejected": run.to_ejected,
            "errors_in": run.errors_in,
        },
    )


def not_ejected_check(
    name: str, run: EjectionRun, *, gateway_threshold: int, runs: str, key: str = ""
) -> CheckResult:
    """A host answering only 500 (not a gateway error) is never ejected although the gateway
    counted ``run.threshold`` (4x the gateway-error threshold) of them, and Envoy enforced no
    ejection."""
    return CheckResult(
        name=name,
        key=key,
        passed=not run.ejected and run.errors >= run.threshold and run.enforced in (0, None),
        detail=(
            f"{run.errors} consecutive 500s from {run.pod} counted by the gateway, of {run.threshold} "
            f"wanted (4x the gateway-error threshold {gateway_threshold}); ejected: {run.ejected}; "
            f"ejections_enforced_total moved {run.enforced}. The gateway runs: {runs}"
        ),
        evidence={"ejected": run.ejected, "errors": run.errors, "enforced": run.enforced},
    )
