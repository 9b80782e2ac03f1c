"""The Jaeger query client (against a fake Jaeger), the span-tree shape check, and Jaeger's
place in the local topology and config."""

from __future__ import annotations

import json

import httpx
import pytest
import yaml

from harness import paths
from harness.backends.local import cluster, topology
from harness.backends.local import jaeger as local_jaeger
from harness.errors import WaitTimeout
from harness.tracing.jaeger import JaegerClient, JaegerUnavailable, parse_trace
from harness.tracing.probes import Hop, probe_ids, shape_problems
from harness.wait import Clock

MANIFESTS = paths.MANIFESTS


def span(sid: str, parent: str, service: str, kind: str, start: int, url: str = "") -> dict[str, object]:
    refs = [{"refType": "CHILD_OF", "traceID": "t1", "spanID": parent}] if parent else []
    tags = [{"key": "span.kind", "type": "string", "value": kind}]
    if url:
        tags.append({"key": "http.url", "type": "string", "value": url})
    return {
        "traceID": "t1",
        "spanID": sid,
        "operationName": f"op-{sid}",
        "references": refs,
        "startTime": start,
        "duration": 10,
        "processID": service,
        "tags": tags,
    }


def trace_doc(*spans: dict[str, object]) -> dict[str, object]:
    services = {str(s["processID"]) for s in spans}
    return {"traceID": "t1", "spans": list(spans), "processes": {p: {"serviceName": p} for p in services}}


GW, MS = "istio-ingressgateway.istio-system", "microservice-1.sample"
GOOD = trace_doc(
    span("a", "", GW, "server", 1, "http://x/api/greet?probe=0123456789abcdef"),
    span("b", "a", GW, "client", 2),
    span("c", "b", MS, "server", 3),
)
CHAIN = [Hop(GW, "server"), Hop(GW, "client"), Hop(MS, "server")]


def fake(handler):  # type: ignore[no-untyped-def]
    return JaegerClient(
        "http://jaeger.test", hint="Jaeger's log /tmp/jaeger.log", transport=httpx.MockTransport(handler)
    )


def test_parse_trace_links_parents_and_names_services() -> None:
    t = parse_trace(GOOD)
    (root,) = t.roots()
    assert (root.service, root.kind, root.parent_id) == (GW, "server", "")
    assert [c.span_id for c in t.children(root)] == ["b"]
    assert t.services == [GW, MS]
    assert probe_ids(t) == {"0123456789abcdef"}
    assert t.summary()["spans"] == 3


def test_a_parent_outside_the_trace_makes_a_root() -> None:
    doc = trace_doc(span("a", "sent-by-test", GW, "server", 1), span("b", "a", GW, "client", 2))
    assert [r.span_id for r in parse_trace(doc).roots()] == ["a"]


def test_shape_accepts_the_expected_chain() -> None:
    assert shape_problems([parse_trace(GOOD)], CHAIN) == []


def test_shape_names_two_roots_when_propagation_broke() -> None:
    first = parse_trace(trace_doc(span("a", "", GW, "server", 1), span("b", "a", GW, "client", 2)))
    second = parse_trace({**trace_doc(span("c", "", MS, "server", 3)), "traceID": "t2"})
    problems = shape_problems([first, second], CHAIN)
    assert any("2 roots instead of one" in p for p in problems)
    assert any("2 traces instead of one" in p for p in problems)


def test_shape_fails_an_extra_child_and_a_wrong_service() -> None:
    extra = trace_doc(*GOOD["spans"], span("d", "b", MS, "server", 4))  # type: ignore[misc]
    assert any("2 children, expected 1" in p for p in shape_problems([parse_trace(extra)], CHAIN))
    wrong = [Hop(GW, "server"), Hop(GW, "client"), Hop("other.sample", "server")]
    assert any("level 2" in p for p in shape_problems([parse_trace(GOOD)], wrong))


def test_client_queries_the_internal_api() -> None:
    seen: list[httpx.Request] = []

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        if req.url.path == "/api/services":
            return httpx.Response(200, json={"data": [MS, GW]})
        if req.url.path == "/api/traces":
            return httpx.Response(200, json={"data": [GOOD]})
        return httpx.Response(404, json={"data": None})

    with fake(handler) as j:
        assert j.services() == [GW, MS]
        (t,) = j.find_traces(MS, tags={"http.status_code": "200"}, start_us=5, end_us=9, limit=3)
        assert t.trace_id == "t1"
        assert j.trace("nope") is None
    params = seen[1].url.params
    assert (params["service"], params["start"], params["end"], params["limit"]) == (MS, "5", "9", "3")
    assert json.loads(params["tags"]) == {"http.status_code": "200"}


def test_unreachable_jaeger_names_its_log() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=req)

    with fake(handler) as j, pytest.raises(JaegerUnavailable, match="/tmp/jaeger.log"):
        j.services()


class FakeClock(Clock):
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def test_wait_for_says_what_it_found() -> None:
    j = JaegerClient(
        "http://jaeger.test", transport=httpx.MockTransport(lambda r: httpx.Response(200)), clock=FakeClock()
    )
    with pytest.raises(WaitTimeout, match="2 traces"):
        j.wait_for(lambda: 2, lambda k: k >= 3, what="3 traces", timeout=5, describe=lambda k: f"{k} traces")


def _docs() -> list[dict[str, object]]:
    return [d for f in sorted(MANIFESTS.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]


def test_the_manifests_jaeger_becomes_a_native_workload_with_its_service_ports() -> None:
    ports = iter(range(20000, 21000))
    topo = topology.derive(_docs(), block=10, allocate=lambda: next(ports))
    (native,) = topo.native
    assert native.image.startswith("jaegertracing/")
    assert native.service_ports["grpc-otlp"] == 4317
    assert native.service_ports["http-query"] == 16686
    assert all(r.deployment != "jaeger" for r in topo.replicas)
    # its Pod in istiod's cluster: Jaeger's address, the Deployment's labels and container ports
    (pod,) = [
        o
        for o in cluster.objects(_docs(), topo, jaeger_address="127.10.4.1")
        if o["kind"] == "Pod" and o["metadata"]["name"] == "jaeger-0"
    ]
    assert pod["status"]["podIP"] == "127.10.4.1"
    assert pod["metadata"]["labels"]["app"] == "jaeger"
    assert "security.istio.io/tlsMode" not in pod["metadata"]["labels"]  # not injected
    ports = {p["containerPort"] for c in pod["spec"]["containers"] for p in c["ports"]}
    assert {4317, 4318, 9411, 16686} <= ports
    # the process listens where the pod would: its address, the container ports
    assert local_jaeger.JaegerPorts("127.10.4.1", 4317, 4318, 9411, 16686, 16685).query_url.endswith(":16686")


def test_jaeger_config_binds_every_listener_to_the_mesh_address() -> None:
    cfg = local_jaeger.config(local_jaeger.JaegerPorts("127.10.4.1", 1, 2, 3, 4, 5))
    text = json.dumps(cfg)
    endpoints = [v for v in _walk(cfg) if isinstance(v, str) and ":" in v and v[0].isdigit()]
    assert endpoints and all(e.startswith("127.10.4.1:") for e in endpoints)
    assert cfg["service"]["pipelines"]["traces"]["receivers"] == ["otlp", "zipkin"]
    assert "memory" in text
    # Jaeger traces nothing of its own: its default exporter targets localhost:4317, outside the mesh
    # address, and waits out an export timeout at shutdown
    assert cfg["extensions"]["jaeger_query"]["enable_tracing"] is False
    assert cfg["service"]["telemetry"]["traces"]["level"] == "none"
    (provider,) = local_jaeger.mesh_providers()
    assert provider["opentelemetry"]["port"] == 4317


def _walk(x: object):  # type: ignore[no-untyped-def]
    if isinstance(x, dict):
        for v in x.values():
            yield from _walk(v)
    elif isinstance(x, list):
        for v in x:
            yield from _walk(v)
    else:
        yield x
