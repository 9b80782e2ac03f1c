"""Unit tests for harness.traffic.client: the sampler against httpx.MockTransport fakes, and its
real path (the meshproof-sampler engine) against a small HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import httpx
import pytest

from harness.backends.base import Workload
from harness.errors import UserError
from harness.traffic.client import (
    RBAC_DENIED_BODY,
    EngineDied,
    Response,
    Sampler,
    SampleResult,
    SampleSpec,
    Source,
    issue_order,
)
from harness.wait import Clock

INGRESS = "http://ingress.test:8080"
CLIENT_APP = "http://client.test:3000"
SERVICE = "http://microservice-1.sample.svc.cluster.local:3000"

Handler = Callable[[httpx.Request], httpx.Response]


class FakeBackend:
    """Just the three methods the sampler uses."""

    def __init__(self, *, app_url: str = CLIENT_APP, ingress: str = INGRESS) -> None:
        self.app_url = app_url
        self.ingress = ingress
        self.workload_refs: list[str] = []

    def ingress_url(self) -> str:
        return self.ingress + "/"

    def workload(self, ref: str) -> Workload:
        self.workload_refs.append(ref)
        ns, _, name = ref.partition("/")
        return Workload(
            name=f"{name}-0",
            namespace=ns,
            deployment=name,
            labels={"app": name, "version": "v1"},
            address="10.0.0.9",
            app_url=self.app_url,
            admin_url="",
            sidecar_url="",
            proxy_admin_url="",
            service_account=name,
            role="client",
        )

    def service_url(self, service: str, namespace: str, port: int) -> str:
        return f"http://{service}.{namespace}.svc.cluster.local:{port}"


class FakeClock(Clock):
    """A clock that only moves when told to (thread-safe)."""

    def __init__(self) -> None:
        self.t = 1000.0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self.t

    def sleep(self, seconds: float) -> None:
        self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.t += seconds


def greet(version: str = "v1", pod: str = "microservice-1-v1-0", method: str = "GET") -> dict[str, Any]:
    return {
        "message": "Hello from Microservice 1!",
        "version": version,
        "pod": pod,
        "method": method,
        "xfcc": None,
    }


def sampler(handler: Handler, **kwargs: Any) -> Sampler:
    return Sampler(transport=httpx.MockTransport(handler), **kwargs)


def call_answer(status: int, body: object, headers: dict[str, object] | None = None) -> httpx.Response:
    """What the client workload's /api/call answers when the downstream call completed."""
    return httpx.Response(
        200,
        json={
            "status": status,
            "headers": headers or {},
            "body": body,
            "pod": "client-0",
            "version": "client",
            "url": SERVICE + "/api/greet",
            "method": "GET",
            "elapsed_ms": 3,
        },
    )


# --------------------------------------------------------------------------- Source


@pytest.mark.parametrize(
    ("text", "kind", "ref"),
    [
        ("ingress", "ingress", "ingress"),
        (" ingress ", "ingress", "ingress"),
        ("sample/client", "workload", "sample/client"),
        ("sample/microservice-1-v2-1", "workload", "sample/microservice-1-v2-1"),
    ],
)
def test_source_parse(text: str, kind: str, ref: str) -> None:
    assert Source.parse(text) == Source(kind, ref)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["", "client", "/client", "sample/", "a/b/c", "sample/cli ent"])
def test_source_parse_rejects(text: str) -> None:
    with pytest.raises(UserError, match="neither 'ingress'"):
        Source.parse(text)


# --------------------------------------------------------------------------- ingress


def test_ingress_requests_and_parses_responses() -> None:
    seen: list[httpx.Request] = []
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            seen.append(request)
        return httpx.Response(
            200,
            json=greet(method=request.method) | {"xfcc": "By=spiffe://x;URI=spiffe://y"},
            headers={"server": "istio-envoy", "x-envoy-upstream-service-time": "7"},
        )

    with sampler(handler) as s:
        result = s.sample(
            FakeBackend(), method="post", n=10, headers={"x-user": "alice"}, host_header="greet.example.com"
        )

    assert len(seen) == 10
    req = seen[0]
    assert str(req.url) == INGRESS + "/api/greet"
    assert req.method == "POST"
    assert req.headers["host"] == "greet.example.com"
    assert req.headers["x-user"] == "alice"
    assert "close" not in req.headers.get("connection", "")
    assert (result.source, result.method, result.path, result.total) == ("ingress", "POST", "/api/greet", 10)
    r = result.responses[0]
    assert r.status == 200
    assert (r.version, r.pod, r.server) == ("v1", "microservice-1-v1-0", "istio-envoy")
    assert r.upstream_time_ms == 7.0
    assert r.xfcc == "By=spiffe://x;URI=spiffe://y"
    assert not r.overloaded
    assert not r.rbac_denied
    assert r.error == ""
    assert r.latency_ms >= 0.0
    assert json.loads(r.body_text)["method"] == "POST"
    assert result.wall_s >= 0.0


def test_ingress_envoy_errors_and_overload() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            503,
            text="upstream connect error or disconnect/reset before headers. reset reason: overflow",
            headers={"x-envoy-overloaded": "true", "server": "istio-envoy"},
        )

    with sampler(handler) as s:
        result = s.sample(FakeBackend(), n=5)
    r = result.responses[0]
    assert (r.status, r.version, r.pod, r.overloaded, r.upstream_time_ms) == (503, "", "", True, None)
    assert r.body_text.startswith("upstream connect error")
    assert result.overloaded_count() == 5
    assert result.version_counts() == {}
    assert result.version_counts(only_status=None) == {}


def test_fresh_connections_send_connection_close() -> None:
    headers: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        headers.append(request.headers.get("connection", ""))
        return httpx.Response(200, json=greet())

    with sampler(handler) as s:
        s.sample(FakeBackend(), n=3, fresh_connections=True)
        s.sample(FakeBackend(), source="sample/client", n=2, fresh_connections=True)
    assert headers == ["close"] * 5


@pytest.mark.parametrize(
    ("status", "body", "denied"),
    [
        (403, RBAC_DENIED_BODY, True),
        (403, "Forbidden by ext authz", False),
        (401, RBAC_DENIED_BODY, False),
        (200, RBAC_DENIED_BODY, False),
    ],
)
def test_rbac_detection_from_ingress(status: int, body: str, denied: bool) -> None:
    with sampler(lambda _: httpx.Response(status, text=body)) as s:
        result = s.sample(FakeBackend(), n=2)
    assert [r.rbac_denied for r in result.responses] == [denied, denied]
    assert result.rbac_denied_count() == (2 if denied else 0)


def test_body_text_is_truncated() -> None:
    with sampler(lambda _: httpx.Response(200, text="x" * 2000)) as s:
        result = s.sample(FakeBackend(), n=1)
    assert result.responses[0].body_text == "x" * 512


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused"), "connection failed: ConnectError"),
        (httpx.ReadTimeout("timed out"), "timeout: ReadTimeout"),
        (httpx.RemoteProtocolError("Server disconnected"), "connection failed: RemoteProtocolError"),
    ],
)
def test_transport_failure_is_status_zero(exc: httpx.HTTPError, kind: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    with sampler(handler) as s:
        result = s.sample(FakeBackend(), n=4)
    assert result.status_counts() == {0: 4}
    r = result.responses[0]
    assert r.error.startswith(kind)
    assert r.version == ""
    assert r.latency_ms >= 0.0
    assert result.errors() == {r.error: 4}
    assert result.latency_quantiles() == {"p50": 0.0, "p90": 0.0, "p99": 0.0}


# --------------------------------------------------------------------------- from a workload


def test_workload_source_calls_api_call_and_reads_downstream() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return call_answer(
            200,
            greet(version="v2", pod="microservice-1-v2-1", method="DELETE") | {"xfcc": "By=a;Hash=b"},
            {"server": "envoy", "x-envoy-upstream-service-time": "4", "set-cookie": ["a=1", "b=2"]},
        )

    backend = FakeBackend()
    with sampler(handler, timeout=2.5) as s:
        result = s.sample(
            backend,
            source="sample/client",
            method="DELETE",
            path="/api/greet?x=1",
            n=3,
            concurrency=2,
            headers={"x-user": "bob"},
            target=("microservice-1", "sample", 3000),
            host_header="alt.example.com",
        )

    assert backend.workload_refs == ["sample/client"]  # resolved once per batch
    req = seen[0]
    assert req.method == "GET"
    assert str(req.url).startswith(CLIENT_APP + "/api/call?")
    params = req.url.params
    assert params["url"] == SERVICE + "/api/greet?x=1"
    assert params["method"] == "DELETE"
    assert params["timeout_ms"] == "2500"
    assert params.get_list("header") == ["x-user:bob", "Host:alt.example.com"]
    assert (result.source, result.method, result.total) == ("sample/client", "DELETE", 3)
    r = result.responses[0]
    # The downstream's identity, not the client workload's ("client-0"/"client").
    assert (r.status, r.version, r.pod, r.server) == (200, "v2", "microservice-1-v2-1", "envoy")
    assert r.upstream_time_ms == 4.0
    assert r.xfcc == "By=a;Hash=b"
    assert json.loads(r.body_text)["method"] == "DELETE"
    assert result.version_counts() == {"v2": 3}
    assert result.pod_counts() == {"microservice-1-v2-1": 3}


def test_workload_downstream_rbac_and_overload() -> None:
    answers = iter(
        [
            call_answer(403, RBAC_DENIED_BODY, {"server": "envoy"}),
            call_answer(503, "upstream connect error", {"x-envoy-overloaded": "true"}),
            call_answer(503, "", {}),
        ]
    )
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            return next(answers)

    with sampler(handler) as s:
        result = s.sample(FakeBackend(), source="sample/client", n=3, concurrency=1)
    denied, overloaded, empty = result.responses
    assert (denied.status, denied.rbac_denied, denied.body_text) == (403, True, RBAC_DENIED_BODY)
    assert (overloaded.status, overloaded.overloaded, overloaded.rbac_denied) == (503, True, False)
    assert (empty.status, empty.body_text, empty.error) == (503, "", "")
    assert result.status_counts() == {403: 1, 503: 2}


def test_workload_connection_failure_is_status_zero() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            502, json={"error": "connect ECONNREFUSED 10.0.0.1:3000", "code": "ECONNREFUSED", "pod": "c"}
        )

    with sampler(handler) as s:
        result = s.sample(FakeBackend(), source="sample/client", n=2)
    assert result.status_counts() == {0: 2}
    assert result.responses[0].error == "ECONNREFUSED: connect ECONNREFUSED 10.0.0.1:3000"
    assert result.errors() == {"ECONNREFUSED: connect ECONNREFUSED 10.0.0.1:3000": 2}


def test_workload_call_rejected_is_status_zero_with_reason() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": "timeout_ms must be an integer 1..600000"})

    with sampler(handler) as s:
        result = s.sample(FakeBackend(), source="sample/client", n=1)
    r = result.responses[0]
    assert r.status == 0
    assert r.error == "/api/call on sample/client answered 400: timeout_ms must be an integer 1..600000"


def test_workload_without_app_port_is_refused() -> None:
    with sampler(lambda _: httpx.Response(200)) as s, pytest.raises(UserError, match="no app port"):
        s.sample(FakeBackend(app_url=""), source="istio-system/istio-ingressgateway", n=1)


# --------------------------------------------------------------------------- concurrency and lifecycle


@pytest.mark.parametrize("concurrency", [1, 3, 8])
def test_concurrency_bound_is_respected_and_reached(concurrency: int) -> None:
    # A barrier of `concurrency` parties: it only trips when that many requests are in flight
    # at once (so the bound is reached), and the in-flight counter proves it is never exceeded.
    barrier = threading.Barrier(concurrency, timeout=10)
    lock = threading.Lock()
    in_flight = 0
    peak = 0
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak, calls
        with lock:
            in_flight += 1
            calls += 1
            peak = max(peak, in_flight)
        try:
            barrier.wait()
        finally:
            with lock:
                in_flight -= 1
        return httpx.Response(200, json=greet())

    with sampler(handler, max_connections=8) as s:
        result = s.sample(FakeBackend(), n=concurrency * 5, concurrency=concurrency)
    assert calls == concurrency * 5
    assert result.status_counts() == {200: concurrency * 5}, result.errors()
    assert peak == concurrency


def test_sample_argument_validation() -> None:
    with sampler(lambda _: httpx.Response(200, json=greet()), max_connections=4) as s:
        with pytest.raises(ValueError, match=r"concurrency must be in 1\.\.4"):
            s.sample(FakeBackend(), concurrency=5)
        with pytest.raises(ValueError, match="n must be >= 0"):
            s.sample(FakeBackend(), n=-1, concurrency=4)
        with pytest.raises(UserError, match="must start with '/'"):
            s.sample(FakeBackend(), path="api/greet", concurrency=4)
        with pytest.raises(UserError, match="not a method name"):
            s.sample(FakeBackend(), method="GET /x", concurrency=4)
        with pytest.raises(UserError, match="invalid request header"):
            s.sample(FakeBackend(), headers={"bad header": "x"}, concurrency=4)
        empty = s.sample(FakeBackend(), n=0, concurrency=4)
    assert empty.total == 0
    assert empty.summary_json() == {
        "total": 0,
        "status": {},
        "versions": {},
        "pods": {},
        "latency_ms": {"p50": 0.0, "p90": 0.0, "p99": 0.0},
    }


def test_closed_sampler_refuses_reuse() -> None:
    s = sampler(lambda _: httpx.Response(200, json=greet()))
    with s:
        s.sample(FakeBackend(), n=1)
    s.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        s.sample(FakeBackend(), n=1)
    with pytest.raises(RuntimeError, match="closed"), s:
        pass


def test_sampler_ignores_proxy_environment(monkeypatch: pytest.MonkeyPatch, local_server: str) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("ALL_PROXY", "http://proxy.invalid:3128")
    with Sampler() as s:
        result = s.sample(FakeBackend(ingress=local_server), n=4, concurrency=2)
    assert result.status_counts() == {200: 4}, result.errors()


# --------------------------------------------------------------------------- the real path: the engine


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: ClassVar[set[tuple[str, int]]] = set()
    requests: ClassVar[list[tuple[str, str, dict[str, str]]]] = []  # method, path, headers

    def log_message(self, *args: Any) -> None:
        pass

    def version_string(self) -> str:
        return "envoy"

    def do_GET(self) -> None:
        type(self).connections.add(self.client_address)
        type(self).requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
        if self.path.startswith("/slow"):
            time.sleep(1.0)
        if self.path.startswith("/overloaded"):
            self._send(503, b"upstream connect error", {"x-envoy-overloaded": "true"})
            return
        body = json.dumps(greet(pod=f"pod-{self.headers.get('Host', '')}")).encode()
        self._send(200, body, {"content-type": "application/json", "x-envoy-upstream-service-time": "7"})

    do_POST = do_GET

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        if self.headers.get("Connection", "").lower() == "close":  # as Envoy answers it: the client drops it
            headers = {**headers, "Connection": "close"}
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def local_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    _Handler.connections = set()
    _Handler.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_engine_path_parses_responses_and_reuses_connections(local_server: str) -> None:
    with Sampler(timeout=5.0) as s:
        result = s.sample(FakeBackend(ingress=local_server), n=40, concurrency=4, host_header="h.example")
        again = s.sample(FakeBackend(ingress=local_server), path="/overloaded", n=3, concurrency=1)
    assert result.status_counts() == {200: 40}, result.errors()
    r = result.responses[0]
    assert (r.version, r.pod, r.upstream_time_ms, r.overloaded) == ("v1", "pod-h.example", 7.0, False)
    assert len(_Handler.connections) <= 4  # keep-alive: one connection per worker, reused across batches
    assert again.status_counts() == {503: 3}
    assert again.overloaded_count() == 3 and again.responses[0].server == "envoy"


def test_engine_path_fresh_connections(local_server: str) -> None:
    with Sampler() as s:
        result = s.sample(FakeBackend(ingress=local_server), n=6, concurrency=2, fresh_connections=True)
    assert result.status_counts() == {200: 6}
    assert len(_Handler.connections) == 6


def test_engine_path_failures_are_status_zero(local_server: str) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with Sampler(timeout=0.2) as s:
        refused = s.sample(FakeBackend(ingress=closed), n=2, concurrency=2)
        slow = s.sample(FakeBackend(ingress=local_server), path="/slow", n=1, concurrency=1)
    assert refused.status_counts() == {0: 2}
    assert next(iter(refused.errors())).startswith("connection failed: ")
    assert slow.status_counts() == {0: 1}
    assert next(iter(slow.errors())).startswith("timeout: ")


# --------------------------------------------------------------------------- sample_until


class ScriptedWire:
    """A wire whose completion order is a script: the request issued ``k``-th answers after
    ``turns(k)`` turns (each turn, the first request in flight with no turns left finishes, else
    every request in flight loses one), so the order is fixed by the script, not by threads."""

    def __init__(self, turns: Callable[[int], int]) -> None:
        self.turns = turns
        self.issued = 0

    def run(self, plans: Any, counts: Sequence[int], concurrency: int, on_record: Any) -> None:
        order = issue_order(counts)
        flight: list[list[int]] = []  # [issued as, turns left, batch, index]
        stopped = False

        def issue() -> None:
            while not stopped and len(flight) < concurrency:
                job = next(order, None)
                if job is None:
                    return
                flight.append([self.issued, self.turns(self.issued), *job])
                self.issued += 1

        issue()
        while flight:
            ready = next((f for f in flight if f[1] <= 0), None)
            if ready is None:
                for f in flight:
                    f[1] -= 1
                continue
            flight.remove(ready)
            body = json.dumps(greet(pod=f"p{ready[0]}"))
            stopped = on_record(ready[2], ready[3], (200, {}, body, 1.0, "")) or stopped
            issue()

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


class ScriptedSampler(Sampler):
    """The sampler on a :class:`ScriptedWire`."""

    def __init__(self, turns: Callable[[int], int]) -> None:
        super().__init__(transport=httpx.MockTransport(lambda _: httpx.Response(500)))  # never called
        self._wire.close()
        self._wire = self.script = ScriptedWire(turns)

    @property
    def issued(self) -> int:
        return self.script.issued


def test_sample_until_stops_on_the_issue_order_prefix() -> None:
    # Even-numbered requests are slow, so completion order differs from issue order; decide
    # must still see a gap-free prefix in issue order, and nothing is issued once it says stop.
    looks: list[list[str]] = []
    issued_at_stop: list[int] = []

    def decide(prefix: Sequence[Response]) -> bool:
        looks.append([r.pod for r in prefix])
        if len(prefix) >= 30:
            issued_at_stop.append(s.issued)
            return True
        return False

    with ScriptedSampler(lambda k: 3 if k % 2 == 0 else 0) as s:
        result = s.sample_until(FakeBackend(), decide, max_n=200, look_every=10, concurrency=4)
    assert all(seen == [f"p{k}" for k in range(len(seen))] for seen in looks)  # gap-free, issue order
    assert all(len(seen) >= 10 * (i + 1) for i, seen in enumerate(looks))
    assert result.total == len(looks[-1]) >= 30
    assert [r.pod for r in result.responses] == looks[-1]
    # nothing issued after decide said stop: what was issued by then beyond the prefix (in
    # flight, or completed past a gap) finished and was discarded
    assert issued_at_stop == [s.issued]
    assert s.issued == result.total + result.discarded
    assert result.discarded > 0  # the script leaves requests past the prefix when decide stops


def test_sample_until_runs_to_max_n_and_looks_at_the_end() -> None:
    looks: list[int] = []

    def decide(prefix: Sequence[Response]) -> bool:
        looks.append(len(prefix))
        return False

    with sampler(lambda _: httpx.Response(200, json=greet())) as s:
        result = s.sample_until(FakeBackend(), decide, max_n=25, look_every=10, concurrency=3)
    assert result.total == 25 and result.discarded == 0
    assert looks[-1] == 25 and looks == sorted(looks)
    with sampler(lambda _: httpx.Response(200)) as s, pytest.raises(ValueError, match="look_every"):
        s.sample_until(FakeBackend(), decide, max_n=5, look_every=0)


# --------------------------------------------------------------------------- SampleResult


def _result(*responses: Response) -> SampleResult:
    return SampleResult(responses=responses, source="ingress", method="GET", path="/api/greet", wall_s=0.5)


def test_counts_quantiles_and_summary_json_schema() -> None:
    result = _result(
        *[Response(200, version="v1", pod="p1", latency_ms=float(i)) for i in range(1, 8)],
        Response(200, version="v2", pod="p2", latency_ms=8.0),
        Response(503, version="v2", pod="p2", latency_ms=9.0, overloaded=True),
        Response(403, latency_ms=10.0, rbac_denied=True, body_text=RBAC_DENIED_BODY),
        Response(0, latency_ms=5000.0, error="timeout: ReadTimeout: timed out"),
    )
    assert result.status_counts() == {0: 1, 200: 8, 403: 1, 503: 1}
    assert list(result.status_counts()) == [0, 200, 403, 503]
    assert result.version_counts() == {"v1": 7, "v2": 1}
    assert result.version_counts(only_status=503) == {"v2": 1}
    assert result.version_counts(only_status=None) == {"v1": 7, "v2": 2}
    assert result.pod_counts() == {"p1": 7, "p2": 1}
    assert result.overloaded_count() == 1
    assert result.rbac_denied_count() == 1
    assert result.errors() == {"timeout: ReadTimeout: timed out": 1}
    q = result.latency_quantiles()  # failed request's 5000 ms excluded: 1..10
    assert q == {"p50": pytest.approx(5.5), "p90": pytest.approx(9.1), "p99": pytest.approx(9.91)}

    summary = result.summary_json()
    assert summary == {
        "total": 11,
        "status": {"0": 1, "200": 8, "403": 1, "503": 1},
        "versions": {"v1": 7, "v2": 1},
        "pods": {"p1": 7, "p2": 1},
        "latency_ms": {"p50": 5.5, "p90": 9.1, "p99": 9.91},
    }
    assert json.loads(json.dumps(summary)) == summary  # plain JSON types only


def test_sample_until_decide_error_propagates_and_the_sampler_stays_usable() -> None:
    def decide(prefix: Sequence[Response]) -> bool:
        raise ZeroDivisionError("boom")

    with sampler(lambda _: httpx.Response(200, json=greet())) as s:
        with pytest.raises(ZeroDivisionError, match="boom"):
            s.sample_until(FakeBackend(), decide, max_n=100, look_every=5, concurrency=4)
        assert s.sample(FakeBackend(), n=7, concurrency=3).status_counts() == {200: 7}


def test_sample_many_runs_batches_interleaved_in_one_window() -> None:
    lock = threading.Lock()
    arrivals = 0
    in_flight = 0
    peak = 0
    paths: list[str] = []
    # the first six requests wait for each other: they are answered only once all six are in flight
    # (a narrower window would break the barrier, and those requests would fail)
    six = threading.Barrier(6, timeout=30)

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal arrivals, in_flight, peak
        with lock:
            first_six = arrivals < 6
            arrivals += 1
            in_flight += 1
            peak = max(peak, in_flight)
            paths.append(request.url.path)
        if first_six:
            six.wait()
        with lock:
            in_flight -= 1
        if request.method == "POST":
            return httpx.Response(403, text=RBAC_DENIED_BODY)
        return httpx.Response(200, json=greet(method=request.method))

    specs = [
        SampleSpec(n=5, path="/a"),
        SampleSpec(n=3, method="POST", path="/b"),
        SampleSpec(n=0, path="/c"),
        SampleSpec(n=4, source="sample/client", path="/d"),
    ]
    with sampler(handler, max_connections=8) as s:
        results = s.sample_many(FakeBackend(), specs, concurrency=6)
    assert [r.total for r in results] == [5, 3, 0, 4]
    assert results[0].status_counts() == {200: 5} and results[0].path == "/a"
    assert results[1].rbac_denied_count() == 3 and results[1].method == "POST"
    assert results[3].source == "sample/client" and results[3].status_counts() == {0: 4}  # no /api/call fake
    # round-robin: the first six issued (all in flight together) are two of each non-empty batch
    assert sorted(paths[:6]) == ["/a", "/a", "/api/call", "/api/call", "/b", "/b"]
    assert peak == 6  # all six at once, never more than the window
    with sampler(handler, max_connections=4) as s, pytest.raises(ValueError, match="concurrency"):
        s.sample_many(FakeBackend(), specs, concurrency=5)


def test_reset_connections_makes_the_next_batch_open_new_connections(local_server: str) -> None:
    """After a listener change Envoy serves pooled connections with the old listener until they
    drain; reset_connections() drops the pool so the next batch measures the new configuration."""
    target = FakeBackend(ingress=local_server)
    with Sampler(max_connections=1) as s:
        s.sample(target, n=3, concurrency=1)
        s.sample(target, n=2, concurrency=1)
        before = set(_Handler.connections)
        assert len(before) == 1, f"one pooled connection expected, saw {before}"
        s.reset_connections()
        s.sample(target, n=2, concurrency=1)
        assert len(_Handler.connections - before) == 1, _Handler.connections  # one new connection, reused
        s.reset_connections()  # idempotent, also with no pool
        s.reset_connections()


# --------------------------------------------------------------------------- the engine's protocol


def test_engine_path_sends_method_headers_and_query(local_server: str) -> None:
    with Sampler() as s:
        result = s.sample(
            FakeBackend(ingress=local_server),
            method="post",
            path="/x?a=1",
            headers={"x-canary": "yes", "traceparent": "00-ab-cd-01"},
            n=2,
            concurrency=1,
        )
    assert result.status_counts() == {200: 2}, result.errors()
    method, path, headers = _Handler.requests[0]
    assert (method, path, headers["x-canary"], headers["traceparent"]) == (
        "POST",
        "/x?a=1",
        "yes",
        "00-ab-cd-01",
    )
    assert "accept-encoding" not in headers  # responses are never decompressed: none asked for


def test_engine_path_stops_issuing_when_decide_says_stop(local_server: str) -> None:
    looks: list[int] = []

    def decide(prefix: Sequence[Response]) -> bool:
        looks.append(len(prefix))
        assert [r.status for r in prefix] == [200] * len(prefix)
        return len(prefix) >= 40

    with Sampler() as s:
        result = s.sample_until(
            FakeBackend(ingress=local_server), decide, max_n=5000, look_every=20, concurrency=4
        )
        after = s.sample(FakeBackend(ingress=local_server), n=3, concurrency=3)  # the next batch runs anew
    assert looks[-1] == result.total >= 40
    served = len(_Handler.requests)
    assert served == result.total + result.discarded + 3
    assert served < 1000, f"{served} requests served: the engine went on issuing after stop"
    assert after.status_counts() == {200: 3}


def test_engine_path_decide_error_drains_the_run_and_keeps_the_sampler(local_server: str) -> None:
    def decide(prefix: Sequence[Response]) -> bool:
        raise ZeroDivisionError("boom")

    with Sampler() as s:
        with pytest.raises(ZeroDivisionError, match="boom"):
            s.sample_until(FakeBackend(ingress=local_server), decide, max_n=5000, look_every=5, concurrency=4)
        assert s.sample(FakeBackend(ingress=local_server), n=7, concurrency=3).status_counts() == {200: 7}
    assert len(_Handler.requests) < 1000


def test_engine_path_sample_many_round_robin(local_server: str) -> None:
    specs = [SampleSpec(n=3, path="/a"), SampleSpec(n=0, path="/b"), SampleSpec(n=2, path="/c")]
    with Sampler() as s:
        results = s.sample_many(FakeBackend(ingress=local_server), specs, concurrency=1)
    assert [r.total for r in results] == [3, 0, 2]
    assert [p for _m, p, _h in _Handler.requests] == ["/a", "/c", "/a", "/c", "/a"]
    assert list(issue_order([3, 0, 2])) == [(0, 0), (2, 0), (0, 1), (2, 1), (0, 2)]


def test_engine_that_dies_is_reported_and_replaced(local_server: str) -> None:
    with Sampler() as s:
        s.sample(FakeBackend(ingress=local_server), n=1, concurrency=1)
        engine = s._wire._proc  # type: ignore[attr-defined]
        engine.kill()
        engine.wait()
        with pytest.raises(EngineDied, match=r"meshproof-sampler\) exited with status -9"):
            s.sample(FakeBackend(ingress=local_server), n=1, concurrency=1)
        assert engine.stdin.closed and engine.stdout.closed and engine.stderr.closed  # no fds kept
        assert s.sample(FakeBackend(ingress=local_server), n=2, concurrency=1).status_counts() == {200: 2}
        replacement = s._wire._proc  # type: ignore[attr-defined]
    assert replacement.poll() is not None  # closed with the sampler: nothing left running


def test_engine_path_in_mesh_call_is_a_get_of_api_call_naming_the_method(local_server: str) -> None:
    with Sampler() as s:
        result = s.sample(FakeBackend(app_url=local_server), source="sample/client", method="DELETE", n=1)
    method, path, _headers = _Handler.requests[0]
    assert method == "GET" and path.startswith("/api/call?url=")
    assert "method=DELETE" in path
    assert result.status_counts() == {0: 1}  # the fake server's answer is no /api/call document
