"""Trace probes: requests that find their own traces in Jaeger, and the expected span topology.

A *probe* is one request carrying a fresh id in its URL (``?probe=<id>``; Envoy records the URL
in every span's ``http.url`` tag, also of an outbound call that starts a new trace) and, for the
shape checks, a W3C ``traceparent`` whose trace id the test chose. The spans of a probe are then
every trace in Jaeger that has the probe id in a tag, plus the trace with its trace id.

The expected topology is derived from the workloads the request crossed, not typed in: a span
is named by the proxy that produced it, ``<app label>.<namespace>`` (Envoy's service cluster,
which istiod gives each proxy), and its kind (server for a proxy receiving a request, client
for a proxy sending one upstream). Like Istio's own tracing test, a trace with too few or too
many children at any level fails.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from harness.backends.base import Backend, Workload
from harness.errors import WaitTimeout
from harness.tracing.jaeger import JaegerClient, Trace, now_us
from harness.traffic.checks import CheckResult
from harness.traffic.client import DEFAULT_TARGET, Response, Sampler, SampleSpec

PROBE_RE = re.compile(r"probe(?:=|%3D)([0-9a-f]{16})")


@dataclass(frozen=True)
class Probe:
    id: str  # 16 hex digits, in the URL
    trace_id: str  # 32 hex digits of the traceparent sent ("" when none was sent)
    sent_us: int
    response: Response

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.id}-01"


@dataclass(frozen=True)
class Hop:
    """One expected span: the proxy that produces it and the span's kind."""

    service: str  # <app>.<namespace>
    kind: str  # server | client

    def __str__(self) -> str:
        return f"{self.service} {self.kind}"


def service_name(w: Workload) -> str:
    """The span service name Envoy reports for a workload's proxy: ``<app>.<namespace>``."""
    return f"{w.labels.get('app', w.deployment)}.{w.namespace}"


def send_probes(
    sampler: Sampler,
    mesh: Backend,
    *,
    n: int,
    source: str = "ingress",
    path: Callable[[str], str] = lambda pid: f"/api/greet?probe={pid}",
    target: tuple[str, str, int] | None = None,
    traceparent: bool = False,
    concurrency: int = 16,
    host_header: str | None = None,
) -> list[Probe]:
    """Send ``n`` probes, each a single request with its own id (and traceparent if asked), at
    most ``concurrency`` in flight (one :meth:`Sampler.sample_many` batch), with ``host_header``
    as Host if given (e.g. a Gateway API listener's hostname). A probe's ``sent_us`` is the
    batch's start: delays measured from it are upper bounds."""
    ids = [(secrets.token_hex(8), secrets.token_hex(16) if traceparent else "") for _ in range(n)]
    specs = [
        SampleSpec(
            n=1,
            source=source,
            path=path(pid),
            headers={"traceparent": f"00-{trace_id}-{pid}-01"} if traceparent else None,
            target=target or DEFAULT_TARGET,
            host_header=host_header,
        )
        for pid, trace_id in ids
    ]
    sent = now_us()
    results = sampler.sample_many(mesh, specs, concurrency=max(1, min(concurrency, n))) if specs else []
    return [
        Probe(pid, trace_id, sent, result.responses[0])
        for (pid, trace_id), result in zip(ids, results, strict=True)
    ]


def call_path(service: str, namespace: str, port: int, inner: str = "/api/greet") -> Callable[[str], str]:
    """A probe path that makes the receiving app call ``service`` (through its sidecar) with
    the probe id in the inner URL, so the downstream hop carries it even without propagation."""

    def path(pid: str) -> str:
        url = f"http://{service}.{namespace}.svc.cluster.local:{port}{inner}?probe={pid}"
        return f"/api/call?url={quote(url, safe='')}&probe={pid}"

    return path


def probe_ids(trace: Trace) -> set[str]:
    return {m for s in trace.spans for v in s.tags.values() for m in PROBE_RE.findall(v)}


def traces_by_probe(
    jaeger: JaegerClient, service: str, probes: Sequence[Probe], *, slack_s: float = 5.0
) -> dict[str, list[Trace]]:
    """For each probe, the traces in Jaeger mentioning its id (one query for the whole window)."""
    if not probes:
        return {}
    start = min(p.sent_us for p in probes) - int(slack_s * 1e6)
    found: dict[str, list[Trace]] = {p.id: [] for p in probes}
    for t in jaeger.find_traces(
        service, start_us=start, end_us=now_us() + int(slack_s * 1e6), limit=len(probes) * 3 + 50
    ):
        for pid in probe_ids(t) & found.keys():
            found[pid].append(t)
    return found


# --------------------------------------------------------------------------- shape


def shape_problems(traces: Sequence[Trace], expected: Sequence[Hop]) -> list[str]:
    """Why these traces (all spans of one request) are not one chain of ``expected`` spans."""
    if not traces:
        return ["no trace at all"]
    problems: list[str] = []
    if len(traces) > 1:
        problems.append(f"{len(traces)} traces instead of one: {', '.join(t.trace_id for t in traces)}")
    roots = [r for t in traces for r in t.roots()]
    if len(roots) != 1:
        problems.append(f"{len(roots)} roots instead of one: " + "; ".join(r.describe() for r in roots))
    spans = sorted((s for t in traces for s in t.spans), key=lambda s: s.start_us)
    if len(spans) != len(expected):
        problems.append(f"{len(spans)} spans, expected {len(expected)}")
    if len(roots) == 1 and len(traces) == 1:
        trace, span = traces[0], roots[0]
        for depth, hop in enumerate(expected):
            seen = Hop(span.service, span.kind)
            if seen != hop:
                problems.append(f"level {depth}: expected a span of {hop}, got {span.describe()}")
            children = trace.children(span)
            want = 1 if depth + 1 < len(expected) else 0
            if len(children) != want:
                problems.append(
                    f"level {depth}: {span.describe()} has {len(children)} children, expected {want}"
                    + (": " + "; ".join(c.describe() for c in children) if children else "")
                )
            if not children:
                break
            span = children[0]
    return problems


def shape_check(probe: Probe, traces: Sequence[Trace], expected: Sequence[Hop], what: str) -> CheckResult:
    problems = shape_problems(traces, expected)
    trees = "\n".join(t.tree() for t in traces) or "(no spans)"
    chain = " -> ".join(map(str, expected))
    detail = (
        f"probe {probe.id} (trace id sent: {probe.trace_id or 'none'}; response {probe.response.status}"
        f" from {probe.response.pod or '?'})\nexpected one chain: {chain}\n"
    )
    detail += ("problems:\n- " + "\n- ".join(problems) + "\n" if problems else "matches\n") + trees
    return CheckResult(
        name=f"trace_shape({what})",
        passed=not problems,
        detail=detail,
        evidence={"problems": problems, "trace_ids": [t.trace_id for t in traces]},
    )


def first_seen_delays(
    jaeger: JaegerClient,
    service: str,
    probes: Sequence[Probe],
    complete: Callable[[list[Trace]], bool],
    *,
    timeout: float,
    expect: int | None = None,
) -> tuple[dict[str, list[Trace]], dict[str, float]]:
    """Poll Jaeger until ``expect`` probes (default: all) are ``complete`` or the deadline
    passes; return the traces and, per probe, the seconds from sending it to the first poll that
    saw it complete. The caller's verdict counts what arrived."""
    wanted = len(probes) if expect is None else min(expect, len(probes))
    seen_at: dict[str, float] = {}
    latest: dict[str, list[Trace]] = {}

    def look() -> dict[str, list[Trace]]:
        found = traces_by_probe(jaeger, service, probes)
        t = now_us()
        sent = {p.id: p.sent_us for p in probes}
        for pid, traces in found.items():
            if pid not in seen_at and complete(traces):
                seen_at[pid] = (t - sent[pid]) / 1e6
        latest.clear()
        latest.update(found)
        return found

    def describe(found: Mapping[str, list[Trace]]) -> str:
        missing = [p.id for p in probes if p.id not in seen_at]
        return f"{len(probes) - len(missing)} of {len(probes)} probes complete; incomplete: {', '.join(missing[:5])}"

    # the verdict counts what arrived; the caller reports the incomplete ones
    with contextlib.suppress(WaitTimeout):
        jaeger.wait_for(
            look,
            lambda _f: len(seen_at) >= wanted,
            what=f"traces of {len(probes)} probes",
            timeout=timeout,
            interval=0.3,
            describe=describe,
        )
    return latest, seen_at


def quantiles(values: Iterable[float]) -> dict[str, float]:
    from harness.traffic.stats import latency_quantiles

    q = latency_quantiles([v * 1000 for v in values], (0.5, 0.95))
    return {k: round(v / 1000, 3) for k, v in q.items()}
