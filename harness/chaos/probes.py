"""Chaos Toolkit probes: what the mesh does now, as evidence with a verdict.

Every probe returns a JSON object with ``holds`` (the verdict) and the values it is based on, so
the journal keeps the numbers, not just a boolean. In a steady-state hypothesis use the
tolerance probe :func:`holds`::

    tolerance: {
        type: probe,
        name: holds,
        provider: {type: python, module: harness.chaos.probes, func: holds, arguments: {}},
    }

In the method, a probe whose ``holds`` is false fails the run (the meshproof control marks the
journal failed; see :mod:`harness.chaos.control`).

Traffic-based probes read the running background load (:func:`harness.chaos.actions.start_load`)
over the last ``window_s`` seconds when it runs, else they send a burst of ``n`` requests with
the harness sampler. Verdicts rest on counts: a healthy mesh answers every request, so "at most
``max_ratio`` errors" holds exactly (0 errors) on a busy machine. A load window is a count: it is
extended until it holds ``min_requests`` requests (up to ``wait_s`` seconds more), so a slow load
makes the probe wait instead of failing; still too few at that deadline is "no evidence" and fails
instead of passing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from harness import httpclient, wait
from harness.chaos.context import Configuration, chaos_dir, mesh
from harness.chaos.ledger import Ledger
from harness.errors import MeshproofError, WaitTimeout

__all__ = [
    "authorization_matrix",
    "certificates_rotated",
    "ejected_hosts",
    "error_ratio",
    "errors_settle",
    "holds",
    "latency_percentiles",
    "mark_certificate",
    "mark_network_loss",
    "mark_retry_counters",
    "mesh_ready",
    "packet_loss_hidden",
    "retries_hid_failures",
    "timeouts_hid_slowness",
    "status_share",
    "trace_completeness",
]

#: statuses that count as errors: 5xx and "no HTTP response" (0)
ERROR = "5xx or no response"
#: ledger kinds that disrupt the traffic (app and route faults, kills, objects, istiod, certificates):
#: :func:`errors_settle` counts from the latest of them (its output still calls it "fault")
DISRUPTION_KINDS = (
    "app-fault",
    "replica-fault",
    "kill",
    "route-fault",
    "control-plane",
    "object",
    "cert-ttl",
    "network-loss",
)


def holds(value: Mapping[str, Any] | None = None) -> bool:
    """Tolerance probe: the probe's verdict (``value["holds"]``)."""
    return bool(value and value.get("holds"))


# --------------------------------------------------------------------------- traffic windows


def _load(load: str, configuration: Configuration) -> Mapping[str, Any] | None:
    """The ledger data of the running background load ``load`` (None when none runs)."""
    entry = Ledger.of(configuration).get(f"load:{load}")
    return None if entry is None else entry.data


def _traffic(
    load: str,
    window_s: float,
    source: str,
    n: int,
    configuration: Configuration,
    headers: Mapping[str, str] | None = None,
    min_requests: int = 0,
    wait_s: float = 30.0,
) -> tuple[int, dict[str, int], dict[str, int], list[float], str]:
    """(total, status counts, pod counts, latencies, where from) over the window or a burst.

    With a running load: its last ``window_s`` seconds, extended until they hold ``min_requests``
    requests (at most ``wait_s`` seconds more), so the sample is a count however slow the machine.
    With ``headers`` the probe always sends its own burst (the load sends none)."""
    from harness.chaos.load_window import window_with_at_least

    running = None if headers else _load(load, configuration)
    if running is not None:
        w = window_with_at_least(running, window_s, min_requests, timeout=wait_s)
        span = w.end - w.start
        where = f"load {load!r}, last {window_s:g} s" + (
            f" (extended to {span:.3g} s for {min_requests} requests)" if span > window_s else ""
        )
        return w.total, w.status, w.pods, list(w.latencies_ms), where
    from harness.traffic.client import Sampler

    with Sampler(timeout=5.0) as sampler:
        r = sampler.sample(mesh(configuration), source=source, n=n, concurrency=8, headers=headers or {})
    status = {str(k): v for k, v in r.status_counts().items()}
    with_headers = f" with {dict(headers)}" if headers else ""
    return r.total, status, r.pod_counts(None), r.latencies_ms(), f"{n} requests from {source}{with_headers}"


def _errors(status: Mapping[str, int]) -> int:
    return sum(v for k, v in status.items() if k == "0" or k.startswith("5"))


def error_ratio(
    max_ratio: float = 0.01,
    window_s: float = 2.0,
    load: str = "default",
    source: str = "ingress",
    n: int = 200,
    min_requests: int = 20,
    headers: Mapping[str, str] | None = None,
    only_deployment: str | None = None,
    wait_s: float = 30.0,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Share of requests answered 5xx or not at all; holds when at most ``max_ratio`` (and there
    were at least ``min_requests``; with ``only_deployment`` ``ns/name``, every answer came from
    one of its replicas). Under a running load the window of ``window_s`` seconds is extended (up to
    ``wait_s`` seconds) until it holds ``min_requests`` requests: a count, not a rate."""
    max_ratio = float(max_ratio)
    total, status, pods, _lat, where = _traffic(
        load, float(window_s), source, int(n), configuration, headers, int(min_requests), float(wait_s)
    )
    errors = _errors(status)
    ratio = errors / total if total else None
    ok = total >= int(min_requests) and ratio is not None and ratio <= max_ratio
    doc: dict[str, Any] = {
        "holds": ok,
        "errors": errors,
        "requests": total,
        "ratio": None if ratio is None else round(ratio, 5),
        "max_ratio": max_ratio,
        "status": status,
        "measured": where,
    }
    if only_deployment:
        prefix = only_deployment.rpartition("/")[2] + "-"
        others = {p: c for p, c in pods.items() if not p.startswith(prefix)}
        doc["pods"] = pods
        doc["holds"] = ok and not others
    return doc


def latency_percentiles(
    max_p99_ms: float | None = None,
    window_s: float = 2.0,
    load: str = "default",
    source: str = "ingress",
    n: int = 200,
    min_requests: int = 20,
    wait_s: float = 30.0,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """p50/p90/p99 latency (ms) of answered requests; holds when p99 <= ``max_p99_ms`` (if given).

    A latency bound is the one verdict a slow machine can flip: use it for observation, or with
    a bound far above the configured delays. Under a running load the window is extended (up to
    ``wait_s`` seconds) until it holds ``min_requests`` requests."""
    from harness.traffic import stats

    total, _status, _pods, lat, where = _traffic(
        load, float(window_s), source, int(n), configuration, None, int(min_requests), float(wait_s)
    )
    q = stats.latency_quantiles(lat)
    ok = total >= min_requests and (max_p99_ms is None or q["p99"] <= max_p99_ms)
    return {"holds": ok, "requests": total, **{k: round(v, 2) for k, v in q.items()}, "measured": where}


def errors_settle(
    max_ratio: float = 0.01,
    within_s: float = 10.0,
    window_s: float = 1.0,
    load: str = "default",
    max_errors: int | None = None,
    destination_rule: str | None = None,
    min_requests: int = 5,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """After the latest disruption in the ledger (:data:`DISRUPTION_KINDS`), under the background
    load: the errors stop within ``within_s`` seconds of it (the last error is followed by
    ``window_s`` seconds of traffic with at most ``max_ratio`` errors), and (count-based, immune to a
    slow machine) the errors since the disruption stay within a budget: ``max_errors``, or from
    ``destination_rule`` (``ns/name``) the consecutive errors that eject as the ingress gateway's
    Envoy runs them for its host (the outlier oracle, not the YAML's field names) plus the load's
    concurrency (requests in flight when the ejection lands). Returns as soon as that is seen, else
    at ``within_s`` after the disruption."""
    from harness.chaos.load_window import last_error_of, window_of

    max_ratio, within_s, window_s = float(max_ratio), float(within_s), float(window_s)
    running = _load(load, configuration)
    if running is None:
        return {"holds": False, "error": f"no background load {load!r} runs: start_load first"}

    disruptions = [e for e in Ledger.of(configuration).entries() if e.kind in DISRUPTION_KINDS]
    since = max((e.since for e in disruptions), default=time.time())
    budget, derivation = (None if max_errors is None else int(max_errors)), "max_errors"
    if budget is None and destination_rule:
        budget, derivation = _outlier_budget(destination_rule, load, configuration)

    def clean_after(t: float, now: float) -> bool:
        w = window_of(running, t + 1e-6, now)
        return now - t >= window_s and w.total >= int(min_requests) and w.errors <= max_ratio * w.total

    def settled() -> bool:
        now = time.time()
        last = last_error_of(running, since, now)
        return last is not None and clean_after(last, now)

    with contextlib.suppress(WaitTimeout):  # no early settle: judged on the final window below
        wait.until(
            settled,
            what=f"{window_s:g} s of at most {max_ratio:.1%} errors after the last error",
            timeout=max(0.0, since + within_s - time.time()),
            interval=0.1,
        )
    end = time.time()
    last = last_error_of(running, since, end)
    final = window_of(running, max(since, end - window_s), end)
    settled_after = 0.0 if last is None else last - since
    if last is None:
        calm = final.total >= int(min_requests) and final.errors <= max_ratio * final.total
    else:
        calm = clean_after(last, end)
    total = window_of(running, since, end)
    ok = calm and settled_after <= within_s and (budget is None or total.errors <= budget)
    return {
        "holds": ok,
        "last_error_after_s": None if last is None else round(settled_after, 3),
        "within_s": within_s,
        "max_ratio": max_ratio,
        "final_window": {"requests": final.total, "errors": final.errors, "seconds": window_s},
        "errors_since_fault": total.errors,
        "requests_since_fault": total.total,
        "error_budget": budget,
        "budget_from": derivation,
        "fault": [e.key for e in disruptions],
    }


def _outlier_budget(destination_rule: str, load: str, configuration: Configuration) -> tuple[int, str]:
    """Errors the load may see before the ejection: the consecutive errors that eject, as the
    ingress gateway's Envoy runs them for the DestinationRule's host (the outlier oracle over its
    clusters' ``/config_dump``, Envoy's defaults where Istio left a field unset; the largest over
    the host's subsets), plus the load's requests in flight."""
    from harness import envoy
    from harness.chaos.objects import find_object
    from harness.istio.model import fqdn
    from harness.istio.oracles.outlier import EffectiveOutlier

    dr = find_object("DestinationRule", destination_rule, configuration)
    host = str(((dr or {}).get("spec") or {}).get("host") or "")
    if not host:
        raise MeshproofError(
            f"DestinationRule {destination_rule} is not running: no budget to derive from it"
        )
    namespace = str(((dr or {}).get("metadata") or {}).get("namespace") or "default")
    target = fqdn(host, namespace)
    gateway = mesh(configuration).workload("ingress")
    with httpclient.client(timeout=10.0) as http:
        clusters = envoy.active_clusters(http, gateway.proxy_admin_url, envoy.outbound_clusters_regex(target))
    thresholds = {}
    for c in clusters:
        od = EffectiveOutlier.from_cluster(c)
        threshold = None if od is None else (od.ejects_after_5xx or od.ejects_after_gateway_errors)
        if threshold:
            thresholds[str(c.get("name"))] = threshold
    if not thresholds:
        raise MeshproofError(
            f"the ingress gateway runs no outlier detection that ejects on errors for {target} "
            f"(DestinationRule {destination_rule}; clusters {sorted(str(c.get('name')) for c in clusters)}): "
            "no budget to derive. Fix: give the experiment max_errors, or the DestinationRule outlierDetection"
        )
    threshold = max(thresholds.values())
    entry = Ledger.of(configuration).get(f"load:{load}")
    concurrency = int((entry.data if entry else {}).get("concurrency", 1))
    return threshold + concurrency, (
        f"DestinationRule {destination_rule} as the gateway runs it: {threshold} consecutive errors eject "
        f"(effective, {len(thresholds)} cluster(s)) + {concurrency} in flight"
    )


def status_share(
    status: int,
    expected: float,
    source: str = "ingress",
    headers: Mapping[str, str] | None = None,
    n: int | None = None,
    alpha: float = 0.001,
    power: float = 0.99,
    min_deviation: float = 0.1,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Share of requests answered ``status``, by the exact binomial test against ``expected``
    (false-failure rate ``alpha``; ``n`` from alpha, power and min_deviation when not given)."""
    from harness.traffic import stats
    from harness.traffic.client import Sampler

    if n is None:
        n = stats.sample_size_for_proportion(expected, alpha, power, min_deviation)
    with Sampler(timeout=5.0) as sampler:
        r = sampler.sample(mesh(configuration), source=source, n=n, concurrency=8, headers=headers or {})
    hits = sum(1 for x in r.responses if x.status == status)
    verdict = stats.check_proportion(hits, r.total, expected, alpha)
    return {
        "holds": verdict.passed,
        "status": status,
        "hits": hits,
        "requests": r.total,
        "expected": expected,
        "verdict": verdict.summary(),
        "all_status": {str(k): v for k, v in r.status_counts().items()},
        "source": source,
        "headers": dict(headers or {}),
    }


# --------------------------------------------------------------------------- mesh state


def ejected_hosts(
    caller: str = "ingress", pods: Sequence[str] | None = None, configuration: Configuration = None
) -> dict[str, Any]:
    """Hosts the calling proxy ``caller`` has ejected (outlier detection), per upstream cluster.
    With ``pods``, holds when every one of them is ejected; without, when none is."""
    backend = mesh(configuration)
    proxy = backend.workload(caller).ref
    by_cluster = dict(backend.ejections().get(proxy, {}))
    ejected = sorted({h for hosts in by_cluster.values() for h in hosts})
    wanted = [backend.workload(p) for p in pods or []]
    missing = [w.ref for w in wanted if not any(h.split(":")[0] == w.address for h in ejected)]
    return {
        "holds": not missing if wanted else not ejected,
        "caller": proxy,
        "ejected": {c: sorted(h) for c, h in by_cluster.items() if h},
        "expected_ejected": [w.ref for w in wanted],
        "not_ejected": missing,
    }


def authorization_matrix(
    expect: Mapping[str, int],
    n: int = 20,
    retries: int = 3,
    converge_within_s: float = 0.0,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Send ``n`` requests per cell and compare every authorization decision with the expected one.

    ``expect`` maps ``"SOURCE METHOD"`` (``ingress GET``, ``other-namespace/client POST``) to the
    status every request must get: 200 (allowed) or 403 (denied; it must be Envoy's RBAC denial).
    An answer that is neither (a 503 while a listener drains, no answer) is no decision: such
    requests are sent again, up to ``retries`` rounds, and reported as ``undecided``.
    Deterministic: one wrong decision fails the cell.

    After a policy change every proxy has ACKed, connections opened before it still run the old
    filter chain until Envoy drains them. With ``converge_within_s`` > 0 the matrix is sent in
    rounds until two rounds in a row hold, for at most that long; ``converged_after_s`` and the
    rounds it took are reported, the verdict is the last round's."""
    from harness.traffic.client import Response, Sampler

    def decision(r: Response) -> int | None:
        if r.status == 200:
            return 200
        if r.status == 403 and r.rbac_denied:
            return 403
        return None

    rounds: list[dict[str, Any]] = []
    started = time.monotonic()

    def one_round(sampler: Sampler) -> bool:
        cells = []
        for cell, want in expect.items():
            source, _, method = cell.partition(" ")
            want = int(want)
            decided: list[int] = []
            undecided: dict[str, int] = {}
            todo = int(n)
            for _round in range(1 + int(retries)):
                if not todo:
                    break
                r = sampler.sample(
                    mesh(configuration), source=source, method=method or "GET", n=todo, concurrency=4
                )
                todo = 0
                for x in r.responses:
                    d = decision(x)
                    if d is None:
                        undecided[str(x.status)] = undecided.get(str(x.status), 0) + 1
                        todo += 1
                    else:
                        decided.append(d)
            good = sum(1 for d in decided if d == want)
            cells.append(
                {
                    "cell": cell,
                    "expected": want,
                    "matching": good,
                    "requests": int(n),
                    "decisions": {str(k): decided.count(k) for k in sorted(set(decided))},
                    "undecided": undecided,
                    "holds": good == int(n) and len(decided) == int(n),
                }
            )
        ok = all(c["holds"] for c in cells)
        rounds.append({"t": round(time.monotonic() - started, 3), "holds": ok, "cells": cells})
        return ok

    with Sampler(timeout=5.0) as sampler:
        if float(converge_within_s) > 0:
            with contextlib.suppress(WaitTimeout):  # the last round's verdict says it
                wait.until(
                    lambda: one_round(sampler),
                    what="the authorization matrix to hold two rounds in a row",
                    timeout=float(converge_within_s),
                    interval=0.2,
                    converge=2,
                )
        else:
            one_round(sampler)
    last = rounds[-1]
    first_ok = next((i for i, r in enumerate(rounds) if r["holds"]), None)
    doc: dict[str, Any] = {"holds": last["holds"], "cells": last["cells"]}
    if float(converge_within_s) > 0:
        doc["rounds"] = [{"t": r["t"], "holds": r["holds"]} for r in rounds]
        doc["converged_after_s"] = None if first_ok is None or not last["holds"] else rounds[first_ok]["t"]
    return doc


def mesh_ready(timeout_s: float = 30.0, configuration: Configuration = None) -> dict[str, Any]:
    """Every workload ready (and every app answering its health check), and every proxy
    connected with the current config ACKed."""
    backend = mesh(configuration)
    workloads = list(backend.workloads())
    unready = [w.ref for w in workloads if not w.ready]
    with httpclient.client(timeout=5.0) as http:
        for w in workloads:
            if not w.admin_url or w.ref in unready:
                continue
            try:
                healthy = http.get(f"{w.admin_url}/healthz").status_code == 200
            except httpx.HTTPError:
                healthy = False
            if not healthy:
                unready.append(w.ref)
    try:
        synced_s: float | None = backend.wait_synced(timeout=timeout_s)
        sync_error = ""
    except MeshproofError as e:
        synced_s, sync_error = None, str(e).splitlines()[0]
    return {
        "holds": not unready and synced_s is not None,
        "workloads": len(workloads),
        "unready": unready,
        "synced_after_s": None if synced_s is None else round(synced_s, 3),
        "sync_error": sync_error,
    }


def trace_completeness(
    service: str = "microservice-1.sample",
    expect_services: Sequence[str] = (),
    min_ratio: float = 1.0,
    limit: int = 50,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Share of recent traces of ``service`` (Jaeger query API) that contain a span of every
    service in ``expect_services``; holds when at least ``min_ratio``. Fails with a reason when
    the mesh deploys no tracing."""
    base = mesh(configuration).trace_query_url()
    if base is None:
        return {"holds": False, "error": "tracing is not deployed in this mesh"}
    try:
        with httpclient.client(timeout=10.0) as http:
            r = http.get(f"{base.rstrip('/')}/api/traces", params={"service": service, "limit": str(limit)})
            r.raise_for_status()
            traces = list(r.json().get("data") or [])
    except (httpx.HTTPError, ValueError) as e:
        return {"holds": False, "error": f"Jaeger query failed: {e}"}
    complete = 0
    for t in traces:
        names = {str(p.get("serviceName")) for p in (t.get("processes") or {}).values()}
        complete += all(s in names for s in expect_services)
    ratio = complete / len(traces) if traces else 0.0
    return {
        "holds": bool(traces) and ratio >= min_ratio,
        "traces": len(traces),
        "complete": complete,
        "ratio": round(ratio, 4),
    }


# --------------------------------------------------------------------------- retries


def _retry_counts(host: str, victim: str, caller: str, configuration: Configuration) -> dict[str, int]:
    """The caller's ``upstream_rq_retry`` and ``upstream_rq_timeout`` summed over its outbound
    clusters of ``host``, and the victim's own inbound ``aborts_injected``/``delays_injected``."""
    from harness import envoy, sidecar_fault
    from harness.chaos.context import admin_http

    backend = mesh(configuration)
    gw, w = backend.workload(caller), backend.workload(victim)
    with admin_http(configuration) as http:
        stats = envoy.cluster_stats(http, gw.proxy_admin_url, f"|{host}")
        faults = sidecar_fault.inbound_counts(http, w)

    def total(suffix: str) -> int:
        return int(
            sum(v for k, v in stats.items() if k.startswith("cluster.outbound|") and k.endswith(suffix))
        )

    return {
        "retries": total(".upstream_rq_retry"),
        "timeouts": total(".upstream_rq_timeout"),
        "per_try_timeouts": total(".upstream_rq_per_try_timeout"),
        "aborts": faults.aborts,
        "delays": faults.delays,
    }


def mark_retry_counters(
    host: str,
    victim: str,
    caller: str = "ingress",
    name: str = "retries",
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Record the counters :func:`retries_hid_failures` compares against (``<state>/chaos/marks``)."""
    import json

    counts = _retry_counts(host, victim, caller, configuration)
    path = chaos_dir(configuration) / "marks" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"counts": counts, "at": time.time()}))
    return {"holds": True, **counts}


def retries_hid_failures(
    host: str,
    victim: str,
    caller: str = "ingress",
    name: str = "retries",
    load: str = "default",
    max_errors: int = 0,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Since :func:`mark_retry_counters`: the victim's own sidecar failed requests (its inbound
    ``aborts_injected`` moved), the caller retried at least that many (its ``upstream_rq_retry`` for
    ``host``, Envoy's count), and the load saw at most ``max_errors`` errors. All three are counts:
    a slow machine cannot flip them."""
    import json

    from harness.chaos.load_window import window_of

    mark = json.loads((chaos_dir(configuration) / "marks" / f"{name}.json").read_text())
    now = _retry_counts(host, victim, caller, configuration)
    delta = {k: now[k] - int(mark["counts"].get(k, 0)) for k in now}
    running = _load(load, configuration)
    if running is None:
        return {"holds": False, "error": f"no background load {load!r} runs: start_load first"}
    w = window_of(running, float(mark["at"]), time.time())
    reasons = []
    if delta["aborts"] < 1:
        reasons.append(f"the victim's sidecar aborted nothing ({delta['aborts']} aborts_injected)")
    if delta["retries"] < delta["aborts"]:
        reasons.append(f"{delta['retries']} retries for {delta['aborts']} aborts")
    if w.errors > int(max_errors):
        reasons.append(f"the load saw {w.errors} errors of {w.total} (at most {max_errors})")
    return {
        "holds": not reasons,
        "since_mark": delta,
        "load": {"requests": w.total, "errors": w.errors, "status": w.status},
        "why_not": reasons,
    }


def timeouts_hid_slowness(
    host: str,
    victim: str,
    caller: str = "ingress",
    name: str = "retries",
    load: str = "default",
    max_errors: int = 0,
    max_route_timeouts: int = 0,
    catch_up_s: float = 30.0,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Since :func:`mark_retry_counters`, with the victim's own sidecar delaying requests beyond the
    route's ``perTryTimeout``: the victim delayed D requests (its inbound ``delays_injected``,
    D >= 1), the caller's Envoy timed out at least D tries (``upstream_rq_per_try_timeout`` for
    ``host``) and retried at least D times (``upstream_rq_retry``), its whole-route timeout fired at
    most ``max_route_timeouts`` times (``upstream_rq_timeout``), and the load saw at most
    ``max_errors`` errors. D is read once; the caller's counters may take until ``catch_up_s`` to
    reach it (a try times out ``perTryTimeout`` after its delay began). Counts only."""
    import json

    from harness.chaos.load_window import window_of

    running = _load(load, configuration)
    if running is None:
        return {"holds": False, "error": f"no background load {load!r} runs: start_load first"}
    mark = json.loads((chaos_dir(configuration) / "marks" / f"{name}.json").read_text())

    def since() -> dict[str, int]:
        now = _retry_counts(host, victim, caller, configuration)
        return {k: now[k] - int(mark["counts"].get(k, 0)) for k in now}

    delayed = since()["delays"]
    delta: dict[str, int] = {}

    def caught_up() -> bool:
        delta.update(since())
        return delta["per_try_timeouts"] >= delayed and delta["retries"] >= delayed

    with contextlib.suppress(WaitTimeout):  # judged below on the last counts
        wait.until(
            caught_up,
            what=f"{caller}'s per-try timeouts and retries for {host} to reach the {delayed} delays",
            timeout=float(catch_up_s),
            interval=0.1,
        )
    w = window_of(running, float(mark["at"]), time.time())
    reasons = []
    if delayed < 1:
        reasons.append(f"the victim's sidecar delayed nothing ({delayed} delays_injected)")
    if delta["per_try_timeouts"] < delayed:
        reasons.append(f"{delta['per_try_timeouts']} per-try timeouts for {delayed} delayed requests")
    if delta["retries"] < delayed:
        reasons.append(f"{delta['retries']} retries for {delayed} delayed requests")
    if delta["timeouts"] > int(max_route_timeouts):
        reasons.append(f"the route's timeout fired {delta['timeouts']} times (at most {max_route_timeouts})")
    if w.errors > int(max_errors):
        reasons.append(f"the load saw {w.errors} errors of {w.total} (at most {max_errors})")
    return {
        "holds": not reasons,
        "delayed": delayed,
        "since_mark": delta,
        "load": {"requests": w.total, "errors": w.errors, "status": w.status},
        "why_not": reasons,
    }


# --------------------------------------------------------------------------- certificate rotation


def _certificate_and_requests(victim: str, configuration: Configuration) -> tuple[Any, int]:
    """The workload certificate ``victim``'s Envoy holds now, and its inbound requests so far."""
    from harness import envoy, sidecar_fault
    from harness.chaos.context import admin_http

    w = mesh(configuration).workload(victim)
    with admin_http(configuration) as http:
        return envoy.workload_certificate(http, w.proxy_admin_url), sidecar_fault.inbound_counts(
            http, w
        ).requests


def mark_certificate(victim: str, name: str = "certs", configuration: Configuration = None) -> dict[str, Any]:
    """Record the certificate ``victim``'s Envoy holds and its inbound request count, for
    :func:`certificates_rotated` (``<state>/chaos/marks``)."""
    import json

    cert, requests = _certificate_and_requests(victim, configuration)
    path = chaos_dir(configuration) / "marks" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"serial": cert.serial, "requests": requests, "at": time.time()}))
    return {"holds": True, "serial": cert.serial, "not_after": cert.not_after, "requests": requests}


def certificates_rotated(
    victim: str,
    rotations: int = 2,
    within_s: float = 120.0,
    served_within_s: float = 60.0,
    name: str = "certs",
    load: str = "default",
    max_errors: int = 0,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Since :func:`mark_certificate`, under the background load: ``victim``'s Envoy took
    ``rotations`` new workload certificates (each a new serial in its SDS secret, polled until seen
    or ``within_s`` is over), the victim served requests after the last of them (its inbound
    ``downstream_rq_total`` moved, awaited up to ``served_within_s``), and the load saw at most
    ``max_errors`` errors over the whole time. Counts only: a slow machine delays the rotations,
    it cannot fake one or hide an error."""
    import json

    from harness.chaos.load_window import window_of
    from harness.errors import BackendError

    running = _load(load, configuration)
    if running is None:
        return {"holds": False, "error": f"no background load {load!r} runs: start_load first"}
    mark = json.loads((chaos_dir(configuration) / "marks" / f"{name}.json").read_text())
    serials = [str(mark["serial"])]
    seen: list[dict[str, Any]] = []
    last_requests = {"n": int(mark["requests"])}

    def rotated() -> bool:
        cert, requests = _certificate_and_requests(victim, configuration)
        if cert.serial not in serials:
            serials.append(cert.serial)
            seen.append(
                {
                    "serial": cert.serial,
                    "seen_after_s": round(time.time() - float(mark["at"]), 3),
                    "not_after": cert.not_after,
                    "victim_requests_before": requests - int(mark["requests"]),
                }
            )
            last_requests["n"] = requests
        return len(seen) >= int(rotations)

    with contextlib.suppress(WaitTimeout):  # judged below on what was seen
        wait.until(
            rotated,
            what=f"{rotations} new certificate serials on {victim}'s Envoy",
            timeout=float(within_s),
            interval=0.25,
            retry_on=(BackendError,),
        )
    served = {"n": 0}
    if len(seen) >= int(rotations):

        def served_after() -> bool:
            served["n"] = _certificate_and_requests(victim, configuration)[1] - last_requests["n"]
            return served["n"] > 0

        with contextlib.suppress(WaitTimeout):
            wait.until(
                served_after,
                what=f"{victim} to serve a request after its last rotation",
                timeout=float(served_within_s),
                interval=0.1,
            )
    w = window_of(running, float(mark["at"]), time.time())
    reasons = []
    if len(seen) < int(rotations):
        reasons.append(
            f"{len(seen)} of {rotations} rotations seen on {victim}'s Envoy within {float(within_s):g} s "
            f"(serials {', '.join(serials)})"
        )
    elif served["n"] < 1:
        reasons.append(f"{victim} served no request after its last rotation")
    if w.total < 1:
        reasons.append("the load sent nothing since the mark")
    if w.errors > int(max_errors):
        reasons.append(f"the load saw {w.errors} errors of {w.total} (at most {max_errors})")
    return {
        "holds": not reasons,
        "marked_serial": mark["serial"],
        "rotations": seen,
        "victim_requests_after_last_rotation": served["n"],
        "load": {"requests": w.total, "errors": w.errors, "status": w.status},
        "why_not": reasons,
    }


#: the caller's Envoy counters :func:`packet_loss_hidden` reports for the host's clusters
CALLER_COUNTERS = (
    "upstream_rq_retry",
    "upstream_cx_connect_fail",
    "upstream_cx_connect_timeout",
    "upstream_rq_timeout",
    "upstream_rq_per_try_timeout",
)


def _caller_counts(host: str, caller: str, configuration: Configuration) -> dict[str, int]:
    from harness import envoy
    from harness.chaos.context import admin_http

    if not host:
        return {}
    with admin_http(configuration) as http:
        stats = envoy.cluster_stats(http, mesh(configuration).workload(caller).proxy_admin_url, f"|{host}")
    return {
        c: int(sum(v for k, v in stats.items() if k.startswith("cluster.outbound|") and k.endswith(f".{c}")))
        for c in CALLER_COUNTERS
    }


def mark_network_loss(
    victim: str,
    host: str = "",
    caller: str = "ingress",
    name: str = "loss",
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Record when, how many packets the victim's loss rule had dropped (0 without one) and, with
    ``host``, the caller's counters for it, for :func:`packet_loss_hidden` (``<state>/chaos/marks``)."""
    import json

    dropped = mesh(configuration).network_dropped(victim) or 0
    counts = _caller_counts(host, caller, configuration)
    path = chaos_dir(configuration) / "marks" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"dropped": dropped, "caller": counts, "at": time.time()}))
    return {"holds": True, "dropped": dropped, "caller": counts}


def packet_loss_hidden(
    victim: str,
    host: str = "",
    caller: str = "ingress",
    min_dropped: int = 100,
    max_ratio: float = 0.01,
    min_requests: int = 100,
    within_s: float = 120.0,
    name: str = "loss",
    load: str = "default",
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Since :func:`mark_network_loss`: the victim's loss rule dropped at least ``min_dropped``
    packets (awaited up to ``within_s``: the loss was real and sustained), and of the requests the
    load completed meanwhile (at least ``min_requests``) at most ``max_ratio`` got a 5xx or no
    answer. Counts only (the rule's packet counter, the load's statuses); the latencies and, with
    ``host``, the caller's retries, connect failures and timeouts for it are reported, not judged."""
    import json

    from harness.chaos.load_window import window_of

    mark = json.loads((chaos_dir(configuration) / "marks" / f"{name}.json").read_text())
    running = _load(load, configuration)
    if running is None:
        return {"holds": False, "error": f"no background load {load!r} runs: start_load first"}
    backend = mesh(configuration)
    seen: dict[str, int] = {"dropped": 0, "requests": 0}

    def enough() -> bool:
        seen["dropped"] = (backend.network_dropped(victim) or 0) - int(mark["dropped"])
        seen["requests"] = window_of(running, float(mark["at"]), time.time()).total
        return seen["dropped"] >= int(min_dropped) and seen["requests"] >= int(min_requests)

    reasons = []
    try:
        wait.until(
            enough,
            what=f"{victim}'s loss rule to drop {min_dropped} packets and the load to complete {min_requests} requests",
            timeout=float(within_s),
            interval=0.5,
        )
    except WaitTimeout:
        reasons.append(
            f"within {float(within_s):g} s the loss rule dropped {seen['dropped']} packets (at least {min_dropped}) "
            f"and the load completed {seen['requests']} requests (at least {min_requests})"
        )
    w = window_of(running, float(mark["at"]), time.time())
    ratio = w.errors / w.total if w.total else None
    if ratio is not None and ratio > float(max_ratio):
        reasons.append(
            f"the load saw {w.errors} errors of {w.total} (ratio {ratio:.4f} > {float(max_ratio):g})"
        )
    lat = sorted(w.latencies_ms)
    now = _caller_counts(host, caller, configuration)
    return {
        "holds": not reasons,
        "dropped": seen["dropped"],
        "caller_since_mark": {k: v - int(mark.get("caller", {}).get(k, 0)) for k, v in now.items()},
        "load": {
            "requests": w.total,
            "errors": w.errors,
            "ratio": None if ratio is None else round(ratio, 5),
            "status": w.status,
            "p50_ms": round(lat[len(lat) // 2], 1) if lat else None,
            "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1) if lat else None,
            "max_ms": round(lat[-1], 1) if lat else None,
        },
        "max_ratio": float(max_ratio),
        "why_not": reasons,
    }
