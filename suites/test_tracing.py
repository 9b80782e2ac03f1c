"""Tracing: requests crossing the mesh arrive in Jaeger as complete traces, sampled as configured.

Istio configures tracing (meshConfig ``extensionProviders`` names the Jaeger collector, the
manifests' Telemetry ``mesh-default`` selects it and sets ``randomSamplingPercentage``); Envoy
produces the spans; Jaeger stores them. The suite reads them back through Jaeger's query API:

- shape: one request through the ingress, one in-mesh call (other-namespace/client ->
  microservice-1) and one two-hop chain (client -> microservice-1 /api/call -> microservice-1)
  each give exactly one trace whose span tree is the chain of proxies the request crossed
  (service names ``<app>.<namespace>`` of the workloads that answered, server/client kinds, one
  child per level, nothing extra). Negative control: the same chain through a relay that does
  not propagate trace headers (``PROPAGATE_TRACE_HEADERS=false``) breaks into two roots.
- completeness: at the manifests' sampling percentage, of N requests (the zero rule at the
  design's power and minimum deviation) every one has its complete trace. Negative control: a
  Telemetry sampling 1% fails the same check because the gateway sampled fewer requests than
  were answered (Envoy's ``tracing.random_sampling``) and every answered request it sampled has
  a complete trace: the missing traces were never sampled, none is broken.
- sampling: with a Telemetry sampling 10%, the share of N requests (N from the design for a
  proportion of 0.10) that produced a trace agrees with 10% by the exact binomial test at the
  design's alpha. Jaeger must hold exactly the traces Envoy's own counter says the gateway
  sampled before the share is counted. Negative control: a Telemetry sampling 50% fails the
  same check, asserted at 10%, because the share of traced requests is above 10% beyond the
  test (and no more are traced than Envoy says the gateway sampled).
- ingestion delay: seconds from sending a request to its complete trace being visible in the
  query API, p50/p95, reported in the evidence (never asserted: a busy machine is slower).

Requests through the ingress take the mesh's ingress route whichever traffic API it runs
(``--traffic-api``): under Gateway API they carry the Gateway listener's hostname as ``Host``, and
in-mesh calls take the GAMMA route; the expected shapes are the same.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.backends.base import Backend, Workload
from harness.guards import ConfigGuard
from harness.tracing.jaeger import JaegerClient, Trace
from harness.tracing.probes import (
    Hop,
    Probe,
    call_path,
    first_seen_delays,
    quantiles,
    send_probes,
    service_name,
    shape_check,
    traces_by_probe,
)
from harness.traffic.checks import CheckResult, proportion_match
from harness.traffic.client import Sampler
from harness.traffic.design import Design

pytestmark = [pytest.mark.e2e]

TELEMETRY = ("Telemetry", "mesh-default", "istio-system")
SERVICE = ("microservice-1", "sample", 3000)
CLIENT = "other-namespace/client"
FORGETFUL_MANIFEST = Path(__file__).parent / "manifests" / "tracing-forgetful-relay.yaml"
RELAY = ("relay", "tracing-lab", 3000)
INGEST_TIMEOUT = 60.0


# --------------------------------------------------------------------------- fixtures


def _jaeger_for(mesh: Backend) -> JaegerClient:
    url = mesh.trace_query_url()
    hint = mesh.trace_hint()
    if url is None and (why := getattr(mesh, "unavailable", dict)().get("tracing")):
        pytest.skip(f"tracing suite skipped: {why}")  # backend existing: the cluster has no tracing provider
    if url is None:
        pytest.fail(
            f"backend {mesh.name} reports no Jaeger query URL: tracing is not deployed "
            f"({hint or 'the manifests need manifests/40-jaeger.yaml'})",
            pytrace=False,
        )
    return JaegerClient(url, hint=hint)


@pytest.fixture(scope="module")
def jaeger(mesh_backend: Backend) -> Iterator[JaegerClient]:
    with _jaeger_for(mesh_backend) as j:
        yield j


def _sampling(config: ConfigGuard) -> float:
    """The sampling share the applied Telemetry sets (Istio's default 1% when it sets none)."""
    kind, name, namespace = TELEMETRY
    doc = config.applied.find(kind, namespace, name)
    assert doc is not None, f"the manifests define no {kind} {namespace}/{name}"
    tracing = (doc.body.get("spec") or {}).get("tracing") or [{}]
    return float(tracing[0].get("randomSamplingPercentage", 1.0)) / 100


def _set_sampling(config: ConfigGuard, percent: float) -> None:
    def edit(body: dict[str, Any]) -> None:
        body["spec"]["tracing"][0]["randomSamplingPercentage"] = percent

    config.apply(
        config.variant(TELEMETRY[0], TELEMETRY[1], TELEMETRY[2], edit), label=f"sampling-{percent:g}"
    )


def _workload(mesh: Backend, pod: str, namespace: str) -> Workload:
    return mesh.workload(f"{namespace}/{pod}")


def _gateway(mesh: Backend) -> Workload:
    return next(w for w in mesh.workloads() if w.role == "gateway")


def _ingress_chain(mesh: Backend, probe: Probe) -> list[Hop]:
    gw, answered = service_name(_gateway(mesh)), _workload(mesh, probe.response.pod, SERVICE[1])
    return [Hop(gw, "server"), Hop(gw, "client"), Hop(service_name(answered), "server")]


def _trace_sets(jaeger: JaegerClient, probe: Probe, found: list[Trace]) -> list[Trace]:
    by_id = {t.trace_id: t for t in found}
    if probe.trace_id and probe.trace_id not in by_id:
        t = jaeger.trace(probe.trace_id)
        if t is not None:
            by_id[t.trace_id] = t
    return list(by_id.values())


def _spans_sent(mesh: Backend, admin: Any) -> int | None:
    """Spans every proxy of the mesh has handed to the collector (Envoy's own counter,
    ``tracing.opentelemetry.spans_sent``); None when a proxy does not expose it."""
    total = 0
    for w in mesh.workloads():
        text = admin.get(
            f"{w.proxy_admin_url}/stats", params={"filter": r"tracing\.opentelemetry\.spans_sent$"}
        ).text
        counts = [int(line.rsplit(":", 1)[1]) for line in text.splitlines() if ":" in line]
        if not counts:
            return None
        total += sum(counts)
    return total


def _await_shape(
    jaeger: JaegerClient,
    mesh: Backend,
    admin: Any,
    service: str,
    probe: Probe,
    sent_before: int | None,
    spans: int,
) -> list[Trace]:
    """Wait until Jaeger holds every span the proxies sent since the probe started (Envoy's
    ``spans_sent``; only the probe's traffic runs), and at least ``spans`` of the probe's.
    A missing or an extra span then shows in the shape check, not as a timing accident."""

    def look() -> tuple[list[Trace], int | None]:
        sent = _spans_sent(mesh, admin)
        traces = _trace_sets(jaeger, probe, traces_by_probe(jaeger, service, [probe])[probe.id])
        return traces, None if sent is None or sent_before is None else sent - sent_before

    def done(seen: tuple[list[Trace], int | None]) -> bool:
        traces, sent = seen
        held = sum(len(t.spans) for t in traces)
        return held >= (spans if sent is None else max(1, sent)) and (sent is None or held >= sent)

    def describe(seen: tuple[list[Trace], int | None]) -> str:
        traces, sent = seen
        trees = "; ".join(t.tree() for t in traces) or "no spans"
        return f"proxies sent {sent if sent is not None else '?'} spans; Jaeger holds: {trees}"

    traces, _sent = jaeger.wait_for(
        look, done, what=f"the spans of probe {probe.id}", timeout=INGEST_TIMEOUT, describe=describe
    )
    return traces


def _probe_shape(
    mesh: Backend,
    sampler: Sampler,
    jaeger: JaegerClient,
    admin: Any,
    evidence: Any,
    chain: Callable[[Probe], list[Hop]],
    what: str,
    *,
    because: tuple[str, Callable[[CheckResult], bool]] | None = None,
    **send: Any,
) -> CheckResult:
    """Send one probe (with a traceparent), wait for its spans, check their tree against ``chain``;
    with ``because`` (a negative control) the check must fail for that reason."""
    started = time.monotonic()
    before = _spans_sent(mesh, admin)
    (probe,) = send_probes(sampler, mesh, n=1, traceparent=True, **send)
    assert probe.response.ok, f"probe {probe.id} was not answered by the app: {probe.response}"
    expected = chain(probe)
    traces = _await_shape(jaeger, mesh, admin, expected[-1].service, probe, before, len(expected))
    check = shape_check(probe, traces, expected, what)
    common = {
        "requests": 1,
        "confidence": "exact (one trace, span by span)",
        "wall_s": time.monotonic() - started,
    }
    if because is not None:
        return evidence.require_failure(check, **common, because=because)  # type: ignore[no-any-return]
    return evidence.require(check, **common)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- shape


def _mesh_call_chain(mesh: Backend, probe: Probe, via: str | None = None) -> list[Hop]:
    """client's sidecar -> [via's sidecar in, via's sidecar out] -> the answering sidecar.

    Without ``via`` the probe's response names the replica that answered; with ``via`` the
    response is the relay's, and the last hop is a replica behind SERVICE."""
    client = service_name(mesh.workload(CLIENT))
    if via is None:
        answered = service_name(_workload(mesh, probe.response.pod, SERVICE[1]))
        return [Hop(client, "client"), Hop(answered, "server")]
    relay = service_name(mesh.workload(via))
    (backend,) = {
        service_name(w)
        for w in mesh.workloads()
        if w.namespace == SERVICE[1] and w.labels.get("app") == SERVICE[0]
    }
    return [Hop(client, "client"), Hop(relay, "server"), Hop(relay, "client"), Hop(backend, "server")]


def test_ingress_request_is_one_trace_gateway_to_sidecar(
    mesh_backend, baseline, sampler, jaeger, evidence, admin_http, ingress_host
) -> None:
    """Through the ingress route (the VirtualService, or the HTTPRoute on the Gateway API Gateway)."""
    _probe_shape(
        mesh_backend,
        sampler,
        jaeger,
        admin_http,
        evidence,
        lambda probe: _ingress_chain(mesh_backend, probe),
        "ingress -> microservice-1",
        host_header=ingress_host,
    )


def test_in_mesh_call_is_one_trace_client_to_server(
    mesh_backend, baseline, sampler, jaeger, evidence, admin_http
) -> None:
    _probe_shape(
        mesh_backend,
        sampler,
        jaeger,
        admin_http,
        evidence,
        lambda probe: _mesh_call_chain(mesh_backend, probe),
        "other-namespace/client -> microservice-1",
        source=CLIENT,
    )


def test_two_hop_chain_is_one_trace(mesh_backend, baseline, sampler, jaeger, evidence, admin_http) -> None:
    """client -> microservice-1 (/api/call, propagating) -> microservice-1: one parent/child chain."""
    via = f"{SERVICE[1]}/{SERVICE[0]}-v1"
    _probe_shape(
        mesh_backend,
        sampler,
        jaeger,
        admin_http,
        evidence,
        lambda probe: _mesh_call_chain(mesh_backend, probe, via),
        "client -> microservice-1 -> microservice-1",
        source=CLIENT,
        target=SERVICE,
        path=call_path(*SERVICE),
    )


@pytest.fixture(scope="module")
def forgetful_mesh(mesh_backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """A mesh that also runs the relay of FORGETFUL_MANIFEST (it does not propagate trace headers),
    from :meth:`Backend.with_workloads`: the running mesh with the relay applied (deleted
    afterwards), or a second mesh from the manifests plus that file where workloads are fixed at
    start-up (local)."""
    with mesh_backend.with_workloads([FORGETFUL_MANIFEST], tmp_path_factory.mktemp("forgetful")) as mesh:
        yield mesh


@pytest.mark.negative
def test_relay_without_header_propagation_breaks_the_trace(
    forgetful_mesh, sampler, evidence, admin_http
) -> None:
    """The same chain through a relay with PROPAGATE_TRACE_HEADERS=false: two roots, not one link."""
    via = f"{RELAY[1]}/{RELAY[0]}"
    with _jaeger_for(forgetful_mesh) as jaeger:
        _probe_shape(
            forgetful_mesh,
            sampler,
            jaeger,
            admin_http,
            evidence,
            lambda probe: _mesh_call_chain(forgetful_mesh, probe, via),
            "client -> relay (no propagation) -> microservice-1",
            because=(
                "the relay started new traces: the chain arrived as several roots instead of one linked trace",
                lambda c: any("roots instead of one" in p for p in c.evidence["problems"]),  # type: ignore[attr-defined]
            ),
            source=CLIENT,
            target=RELAY,
            path=call_path(*SERVICE),
        )


# --------------------------------------------------------------------------- completeness and sampling


def _gateway_sampled(mesh: Backend, admin: Any) -> int | None:
    """Envoy's count of requests the gateway chose to trace (``tracing.random_sampling`` summed
    over its HTTP connection managers); None when the proxy does not expose the counter."""
    url = f"{_gateway(mesh).proxy_admin_url}/stats"
    text = admin.get(url, params={"filter": r"tracing\.random_sampling$"}).text
    counts = [int(line.rsplit(":", 1)[1]) for line in text.splitlines() if ":" in line]
    return sum(counts) if counts else None


def _await_sampled(
    jaeger: JaegerClient, probes: list[Probe], sampled: int, complete: Any
) -> tuple[dict[str, list[Trace]], dict[str, float]]:
    """Poll Jaeger until as many probes are complete as Envoy says it sampled (bounded)."""
    return first_seen_delays(
        jaeger, f"{SERVICE[0]}.{SERVICE[1]}", probes, complete, timeout=INGEST_TIMEOUT, expect=sampled
    )


def _completeness(
    mesh: Backend, sampler: Sampler, jaeger: JaegerClient, design: Design, admin: Any, host: str | None
) -> tuple[CheckResult, dict[str, float], int, int]:
    """N probes through the ingress; how many have their complete trace (3 spans, one root)."""
    n = design.n_exact()
    before = _gateway_sampled(mesh, admin)
    probes = send_probes(sampler, mesh, n=n, host_header=host)
    after = _gateway_sampled(mesh, admin)
    answered = [p for p in probes if p.response.ok]
    # Envoy counted how many it traced; wait for exactly those (all of them if it cannot say).
    sampled = after - before if before is not None and after is not None else len(answered)

    def complete(traces: list[Trace]) -> bool:
        return len(traces) == 1 and len(traces[0].spans) == 3 and len(traces[0].roots()) == 1

    found, seen = _await_sampled(jaeger, answered, sampled, complete)
    ok = sum(1 for p in answered if complete(found.get(p.id, [])))
    check = proportion_match(ok, len(answered), 1.0, design.alpha, what="requests with a complete trace")
    missing = [p.id for p in answered if not complete(found.get(p.id, []))]
    unanswered = len(probes) - len(answered)
    check = dataclasses.replace(
        check, evidence={**check.evidence, "sampled": sampled, "unanswered": unanswered}
    )
    if missing:
        check = dataclasses.replace(
            check,
            detail=check.detail
            + f"\ngateway sampled {sampled} of {n} (Envoy tracing.random_sampling)"
            + f"\nprobes without a complete trace ({len(missing)}): {', '.join(missing[:8])}",
        )
    return check, quantiles(seen.values()), len(probes), sampled


def test_every_request_has_a_complete_trace(
    mesh_backend, baseline, config, sampler, jaeger, design, evidence, admin_http, ingress_host
) -> None:
    started = time.monotonic()
    share = _sampling(config)
    assert share == 1.0, f"the manifests' Telemetry samples {share:.0%}; this check needs 100%"
    check, delay, n, _sampled = _completeness(mesh_backend, sampler, jaeger, design, admin_http, ingress_host)
    evidence.require(
        check,
        requests=n,
        confidence=design.exact_confidence(),
        wall_s=time.monotonic() - started,
        notes=f"ingestion delay send->visible p50 {delay.get('p50', 0):.2f} s p95 {delay.get('p95', 0):.2f} s",
    )


@pytest.mark.negative
def test_sampling_one_percent_fails_completeness(
    mesh_backend, baseline, config, sampler, jaeger, design, evidence, admin_http, ingress_host
) -> None:
    started = time.monotonic()
    _set_sampling(config, 1)
    check, _delay, n, _sampled = _completeness(
        mesh_backend, sampler, jaeger, design, admin_http, ingress_host
    )
    evidence.require_failure(
        check,
        requests=n,
        confidence=design.exact_confidence(),
        wall_s=time.monotonic() - started,
        because=(
            "the gateway sampled fewer requests than were answered (Envoy tracing.random_sampling) "
            "and every answered request it sampled has a complete trace: the missing traces were "
            "never sampled, none is broken",
            lambda c: (
                c.evidence["sampled"] - c.evidence["unanswered"]
                <= (v := c.evidence["verdict"]).successes
                <= c.evidence["sampled"]
                < v.trials
            ),
        ),
    )


#: the sampling percentage the share check applies and asserts
SHARE_PERCENT = 10


def _sampling_share(
    mesh: Backend,
    sampler: Sampler,
    jaeger: JaegerClient,
    design: Design,
    admin: Any,
    expected: float,
    host: str | None,
) -> tuple[CheckResult, int, int, int]:
    """N probes through the ingress (N from the design for ``expected``); the share that produced
    a trace against ``expected`` (exact binomial), once Jaeger holds as many traces of ours as
    Envoy says the gateway sampled. Returns the check, N, Envoy's sampled count, the traced."""
    n = design.n_proportion(expected)
    before = _gateway_sampled(mesh, admin)
    probes = send_probes(sampler, mesh, n=n, concurrency=32, host_header=host)
    after = _gateway_sampled(mesh, admin)
    assert before is not None and after is not None, "the gateway exposes no tracing.random_sampling counter"
    sampled = after - before
    answered = [p for p in probes if p.response.ok]

    # Envoy counted its sampling decisions; wait until Jaeger holds that many traces of ours.
    found, _seen = _await_sampled(jaeger, answered, sampled, lambda traces: bool(traces))
    got = sum(1 for p in answered if found.get(p.id))
    check = proportion_match(got, len(answered), expected, design.alpha, what="requests with a trace")
    return (
        dataclasses.replace(check, evidence={**check.evidence, "sampled": sampled}),
        n,
        sampled,
        got,
    )


def test_sampling_share_matches_telemetry(
    mesh_backend, baseline, config, sampler, jaeger, design, evidence, admin_http, ingress_host
) -> None:
    """randomSamplingPercentage 10: the share of requests with a trace is 10% (exact binomial)."""
    started = time.monotonic()
    _set_sampling(config, SHARE_PERCENT)
    expected = _sampling(config)
    check, n, sampled, got = _sampling_share(
        mesh_backend, sampler, jaeger, design, admin_http, expected, ingress_host
    )
    evidence.require(
        check,
        requests=n,
        confidence=design.proportion_confidence(),
        wall_s=time.monotonic() - started,
        notes=f"gateway sampled {sampled} (Envoy stat); Jaeger holds {got}",
    )


#: the negative control's sampling percentage, applied while the share check asserts SHARE_PERCENT
WRONG_SHARE_PERCENT = 50


@pytest.mark.negative
def test_negative_sampling_fifty_percent_fails_the_share_check(
    mesh_backend, baseline, config, sampler, jaeger, design, evidence, admin_http, ingress_host
) -> None:
    """Negative control: the Telemetry samples 50% while the share check asserts the positive
    test's 10%: far more requests produce a trace, so the check FAILS on the share."""
    started = time.monotonic()
    _set_sampling(config, WRONG_SHARE_PERCENT)
    assert _sampling(config) == WRONG_SHARE_PERCENT / 100
    asserted = SHARE_PERCENT / 100
    check, n, sampled, got = _sampling_share(
        mesh_backend, sampler, jaeger, design, admin_http, asserted, ingress_host
    )
    evidence.require_failure(
        check,
        requests=n,
        confidence=design.proportion_confidence(),
        wall_s=time.monotonic() - started,
        notes=f"gateway sampled {sampled} (Envoy stat); Jaeger holds {got}",
        because=(
            f"the share of answered requests with a trace is above the asserted {SHARE_PERCENT}% "
            "beyond the exact binomial test, and no more are traced than the gateway's Envoy sampled "
            "(tracing.random_sampling)",
            lambda c: (
                (v := c.evidence["verdict"]).p_value <= v.alpha
                and v.successes > v.expected * v.trials
                and v.successes <= c.evidence["sampled"]
            ),
        ),
    )
