# Over 500 lines: the sampler with its sources, request records and results (owner: traffic).
"""The traffic sampler: send N requests into the mesh and record what each one saw.

Two places traffic can start (:class:`Source`):

``ingress``
    From outside the mesh through the ingress gateway: ``backend.ingress_url() + path``.
``ns/deployment`` or ``ns/pod``
    From inside the mesh, as a client workload: the harness asks the workload's app (on its
    app port, bypassing its inbound sidecar) to make the call through ``/api/call``, so the
    request leaves through that workload's outbound sidecar with its identity. The status,
    headers and body recorded are the *downstream* ones (what the client workload got back);
    a 502 from ``/api/call`` itself means the outbound connection failed and is recorded as
    status 0 with an ``error``.

A failed request never raises: it becomes a :class:`Response` with ``status == 0`` and
``error`` set, so a batch always has exactly ``n`` responses.

Waiting for a split to take effect (configuration propagates asynchronously) is the suites'
``converge_split`` (:mod:`harness.traffic.split`): a signal to start the real check, not the verdict.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import queue
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, TypedDict
from urllib.parse import urlencode

from harness import namespaces, timeline
from harness.errors import UserError
from harness.mesh import Workload
from harness.toolchain import sampler_engine
from harness.traffic.latency import latency_quantiles

if TYPE_CHECKING:
    import httpx


__all__ = [
    "BODY_TEXT_LIMIT",
    "EngineDied",
    "RBAC_DENIED_BODY",
    "Response",
    "SampleOptions",
    "SampleResult",
    "SampleSpec",
    "Sampler",
    "Source",
    "TrafficTarget",
]

#: The body Envoy's RBAC filter answers a denied request with (status 403).
RBAC_DENIED_BODY = "RBAC: access denied"
#: How much of each response body is kept in :attr:`Response.body_text`.
BODY_TEXT_LIMIT = 512
#: The sample service's service, namespace and port: the default target of in-mesh calls.
DEFAULT_TARGET: tuple[str, str, int] = ("microservice-1", "sample", 3000)
#: Extra seconds the harness waits for ``/api/call`` beyond the outbound call's own timeout.
CALL_MARGIN_S = 5.0

_METHOD = re.compile(r"^[A-Za-z]+$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token


class TrafficTarget(Protocol):
    """The part of :class:`harness.backends.base.Backend` the sampler needs."""

    def ingress_url(self) -> str: ...

    def workload(self, ref: str) -> Workload: ...

    def service_url(self, service: str, namespace: str, port: int) -> str: ...


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Response:
    """What one request saw. ``status == 0`` means no HTTP response at all (see ``error``).

    ``version``, ``pod`` and ``xfcc`` come from the sample service's JSON body ("" when the
    body is not the app's, e.g. an Envoy 503 or an RBAC denial). ``overloaded`` is true when
    Envoy set ``x-envoy-overloaded`` (circuit breaker or outlier ejection), ``server`` is the
    ``server`` header (``istio-envoy`` from the gateway, ``envoy`` from a sidecar),
    ``upstream_time_ms`` is ``x-envoy-upstream-service-time`` when present.
    """

    status: int
    version: str = ""
    pod: str = ""
    latency_ms: float = 0.0
    overloaded: bool = False
    server: str = ""
    body_text: str = ""
    rbac_denied: bool = False
    upstream_time_ms: float | None = None
    xfcc: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        """A 2xx answered by the sample service itself (it reported its version)."""
        return 200 <= self.status < 300 and bool(self.version)


@dataclass(frozen=True)
class Source:
    """Where requests start: the ingress gateway, or a workload inside the mesh."""

    kind: Literal["ingress", "workload"]
    ref: str

    @classmethod
    def parse(cls, text: str) -> Source:
        """``"ingress"``, or ``"ns/deployment"`` / ``"ns/pod"`` for a workload."""
        value = text.strip()
        if value == "ingress":
            return cls("ingress", "ingress")
        ns, sep, name = value.partition("/")
        if sep and ns and name and "/" not in name and not any(c.isspace() for c in value):
            return cls("workload", value)
        raise UserError(
            f"traffic source {text!r} is neither 'ingress' nor 'namespace/deployment' or 'namespace/pod'. "
            "Fix: pass e.g. --from ingress or --from sample/client (see `meshproof status` for workloads)"
        )

    def __str__(self) -> str:
        return self.ref


@dataclass(frozen=True)
class SampleResult:
    """The responses of one :meth:`Sampler.sample` call, in the order requests were issued."""

    responses: tuple[Response, ...]
    source: str
    method: str
    path: str
    wall_s: float
    #: responses to requests that were in flight when a sequential check stopped (not counted)
    discarded: int = 0

    @property
    def total(self) -> int:
        return len(self.responses)

    def status_counts(self) -> dict[int, int]:
        """Responses per status code (0 = no response), sorted by code."""
        return dict(sorted(Counter(r.status for r in self.responses).items()))

    def version_counts(self, only_status: int | None = 200) -> dict[str, int]:
        """Responses per reporting app version, among responses with ``only_status`` (None: any).

        Responses without a version (not answered by the app) are not counted.
        """
        return _count(r.version for r in self._with_status(only_status) if r.version)

    def pod_counts(self, only_status: int | None = 200) -> dict[str, int]:
        """Responses per reporting pod, among responses with ``only_status`` (None: any)."""
        return _count(r.pod for r in self._with_status(only_status) if r.pod)

    def latencies_ms(self) -> list[float]:
        """Latencies of the requests that got an HTTP response (any status)."""
        return [r.latency_ms for r in self.responses if not r.error]

    def latency_quantiles(self) -> dict[str, float]:
        """``{"p50", "p90", "p99"}`` in ms over requests that got a response (0.0 if none did)."""
        return latency_quantiles(self.latencies_ms())

    def overloaded_count(self) -> int:
        return sum(1 for r in self.responses if r.overloaded)

    def rbac_denied_count(self) -> int:
        return sum(1 for r in self.responses if r.rbac_denied)

    def errors(self) -> dict[str, int]:
        """Distinct request failures (status 0) and how often each occurred, most frequent first."""
        return dict(Counter(r.error for r in self.responses if r.error).most_common())

    def summary_json(self) -> dict[str, Any]:
        """The stable ``meshproof send --json`` document.

        ``{"total": n, "status": {"200": n, ...}, "versions": {...}, "pods": {...},
        "latency_ms": {"p50", "p90", "p99"}}``; versions and pods count 200 responses only.
        """
        return {
            "total": self.total,
            "status": {str(code): count for code, count in self.status_counts().items()},
            "versions": self.version_counts(),
            "pods": self.pod_counts(),
            "latency_ms": {k: round(v, 3) for k, v in self.latency_quantiles().items()},
        }

    def _with_status(self, status: int | None) -> Iterable[Response]:
        return (r for r in self.responses if status is None or r.status == status)


def _count(values: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(values).items()))


# --------------------------------------------------------------------------- sampler


class _State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class _Plan:
    """One sample() call, resolved: the request every worker sends."""

    method: str
    url: str
    params: tuple[tuple[str, str], ...]
    headers: Mapping[str, str]
    read_timeout: float
    connect_timeout: float
    via_call: bool  # through a workload's /api/call
    source: str

    @property
    def wire_method(self) -> str:
        """The method on the wire: ``/api/call`` is always a GET (the call's method is a parameter)."""
        return "GET" if self.via_call else self.method

    def wire_json(self) -> dict[str, Any]:
        """The plan as the engine takes it (``go/sampler/main.go``): ``Host`` and ``Connection:
        close`` become its host and close fields, the query string joins the URL."""
        url = self.url + ("?" + urlencode(self.params) if self.params else "")
        host = ""
        close = False
        headers = []
        for name, value in self.headers.items():
            lower = name.lower()
            if lower == "host":
                host = value
            elif lower == "connection" and value.lower() == "close":
                close = True
            else:
                headers.append((name, value))
        return {
            "method": self.wire_method,
            "url": url,
            "headers": headers,
            "host": host,
            "close": close,
            "timeout_s": self.read_timeout,
        }


class SampleOptions(TypedDict, total=False):
    """Keyword arguments of :meth:`Sampler.sample` that helpers driving the sampler pass through."""

    source: str | Source
    method: str
    path: str
    concurrency: int
    headers: Mapping[str, str] | None
    target: tuple[str, str, int]
    host_header: str | None
    fresh_connections: bool


@dataclass(frozen=True)
class SampleSpec:
    """One batch of :meth:`Sampler.sample_many`: ``n`` requests of one shape (as :meth:`Sampler.sample`)."""

    n: int
    source: str | Source = "ingress"
    method: str = "GET"
    path: str = "/api/greet"
    headers: Mapping[str, str] | None = None
    target: tuple[str, str, int] = DEFAULT_TARGET
    host_header: str | None = None
    fresh_connections: bool = False


# --------------------------------------------------------------------------- wires

#: What one request saw on the wire: status (0: no response), the response headers the sampler
#: reads (lower-case names), the body text, the latency in ms, and why there was no response.
Raw = tuple[int, Mapping[str, str], str, float, str]
#: Called with (batch, index, raw) for each finished request; True asks the wire to issue no more.
OnRecord = Callable[[int, int, Raw], bool]


def issue_order(counts: Sequence[int]) -> Iterator[tuple[int, int]]:
    """(batch, index) in the order requests are issued: round-robin over the batches, so every
    batch is in flight from the start (one batch: 0, 1, 2 ...). The engine issues in this order."""
    for i in range(max(counts, default=0)):
        for k, n in enumerate(counts):
            if i < n:
                yield k, i


class Wire(Protocol):
    """Sends a run's requests, at most ``concurrency`` in flight, in :func:`issue_order`, and
    hands each finished one to ``on_record`` in the calling thread. Once ``on_record`` returns
    True it issues nothing more; requests in flight still finish and are handed over (their
    return value is ignored). If ``on_record`` raises, the requests in flight finish unseen and
    the exception propagates."""

    def run(
        self, plans: Sequence[_Plan], counts: Sequence[int], concurrency: int, on_record: OnRecord
    ) -> None: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


class EngineDied(RuntimeError):
    """The sampler's engine process exited in the middle of a run."""


class _EngineWire:
    """The wire of every real run: ``meshproof-sampler`` (:mod:`harness.toolchain.sampler_engine`,
    Go's HTTP client), one process per sampler, started on first use. It keeps the sampler's pool
    of keep-alive connections; measured on this machine it spends about a tenth of a millisecond
    of CPU per request, where aiohttp spent 0.2-0.3 ms (docs/BENCHMARKS.md)."""

    def __init__(self, *, connect_timeout: float, max_connections: int) -> None:
        self._args = [f"{connect_timeout:g}", str(max_connections)]
        self._proc: subprocess.Popen[bytes] | None = None

    def _process(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            binary = sampler_engine.ensure()
            self._proc = subprocess.Popen(
                [str(binary), *self._args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                # one OS thread runs the goroutines: measured cheaper per request than two
                env={**os.environ, "GOMAXPROCS": "1"},
            )
        return self._proc

    def _send(self, p: subprocess.Popen[bytes], doc: Mapping[str, Any]) -> None:
        assert p.stdin is not None
        try:
            p.stdin.write(json.dumps(doc, separators=(",", ":")).encode() + b"\n")
            p.stdin.flush()
        except OSError as e:
            raise self._died(p) from e

    def _read(self, p: subprocess.Popen[bytes]) -> dict[str, Any]:
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line:
            raise self._died(p)
        doc: dict[str, Any] = json.loads(line)
        return doc

    def _died(self, p: subprocess.Popen[bytes]) -> EngineDied:
        self._proc = None
        try:
            code = p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            code = p.wait()
        err = p.stderr.read().decode(errors="replace").strip()[-500:] if p.stderr else ""
        for stream in (p.stdin, p.stdout, p.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return EngineDied(f"the sampler's engine ({sampler_engine.BINARY}) exited with status {code}: {err}")

    def run(
        self, plans: Sequence[_Plan], counts: Sequence[int], concurrency: int, on_record: OnRecord
    ) -> None:
        p = self._process()
        self._send(
            p,
            {
                "op": "run",
                "plans": [plan.wire_json() for plan in plans],
                "counts": list(counts),
                "concurrency": concurrency,
            },
        )
        stopped = False
        error: BaseException | None = None
        while True:
            doc = self._read(p)
            if "done" in doc:
                break
            if error is not None:
                continue
            raw: Raw = (doc["s"], doc.get("h") or {}, doc["b"], doc["l"], doc.get("e", ""))
            try:
                if on_record(doc["k"], doc["i"], raw) and not stopped:
                    stopped = True
                    self._send(p, {"op": "stop"})
            except BaseException as e:  # noqa: BLE001 - re-raised once the run has drained
                error = e
                if not stopped:
                    stopped = True
                    self._send(p, {"op": "stop"})
        if error is not None:
            raise error

    def reset(self) -> None:
        p = self._proc
        if p is None:
            return
        self._send(p, {"op": "reset"})
        self._read(p)

    def close(self) -> None:
        p, self._proc = self._proc, None
        if p is None:
            return
        with contextlib.suppress(OSError):
            assert p.stdin is not None
            p.stdin.close()  # the engine exits at the end of its input
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        for stream in (p.stdout, p.stderr):
            if stream is not None:
                stream.close()


class _TransportWire:
    """Tests only: an ``httpx`` transport (``httpx.MockTransport``) called from worker threads."""

    def __init__(
        self, transport: httpx.BaseTransport, *, timeout: float, connect_timeout: float, max_connections: int
    ) -> None:
        import httpx  # tests only: the production path never loads httpx

        self._client = httpx.Client(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections),
            trust_env=False,
            follow_redirects=False,
        )
        self._threads = ThreadPoolExecutor(max_workers=max_connections, thread_name_prefix="sampler")

    def run(
        self, plans: Sequence[_Plan], counts: Sequence[int], concurrency: int, on_record: OnRecord
    ) -> None:
        finished: queue.SimpleQueue[tuple[int, int, Raw | BaseException]] = queue.SimpleQueue()
        order = issue_order(counts)
        in_flight = 0
        stopped = False
        error: BaseException | None = None

        def issue() -> None:
            nonlocal in_flight
            while not stopped and in_flight < concurrency:
                job = next(order, None)
                if job is None:
                    return
                k, i = job
                in_flight += 1
                self._threads.submit(self._finish, finished, k, i, plans[k])

        issue()
        while in_flight:
            k, i, raw = finished.get()
            in_flight -= 1
            if isinstance(raw, BaseException):
                error, stopped = error or raw, True
            elif error is None:
                try:
                    stopped = on_record(k, i, raw) or stopped
                except BaseException as e:  # noqa: BLE001 - re-raised once the run has drained
                    error, stopped = e, True
            issue()
        if error is not None:
            raise error

    def _finish(
        self, finished: queue.SimpleQueue[tuple[int, int, Raw | BaseException]], k: int, i: int, plan: _Plan
    ) -> None:
        try:
            raw: Raw | BaseException = self._send(plan)
        except BaseException as e:  # noqa: BLE001 - a fake transport's bug: raised in the caller's thread
            raw = e
        finished.put((k, i, raw))

    def _send(self, plan: _Plan) -> Raw:
        import httpx

        start = time.perf_counter()
        try:
            r = self._client.request(
                plan.wire_method,
                plan.url,
                params=plan.params,
                headers=plan.headers,
                timeout=httpx.Timeout(plan.read_timeout, connect=plan.connect_timeout),
            )
        except httpx.HTTPError as e:
            kind = "timeout" if isinstance(e, httpx.TimeoutException) else "connection failed"
            latency = (time.perf_counter() - start) * 1000.0
            return 0, {}, "", latency, f"{kind}: {type(e).__name__}: {e or type(e).__name__}"
        latency = (time.perf_counter() - start) * 1000.0
        return r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.text, latency, ""

    def reset(self) -> None:
        pass

    def close(self) -> None:
        self._client.close()
        self._threads.shutdown(wait=True)


# --------------------------------------------------------------------------- sampler


class Sampler:
    """Sends batches of requests into the mesh over keep-alive connections.

    The requests go out through the sampler's engine (``meshproof-sampler``, Go's HTTP client, one
    process per sampler): it keeps the pool of connections across batches and records each
    response; this class decides what is sent and what the answers mean. Each :meth:`sample`
    keeps at most ``concurrency`` requests in flight (a bounded window).

    ``timeout`` bounds each measured request (for in-mesh sources it is passed to
    ``/api/call`` as ``timeout_ms``, and the harness waits ``CALL_MARGIN_S`` longer).
    ``max_connections`` is the pool size and the largest ``concurrency`` :meth:`sample`
    accepts. ``transport`` is for tests: an ``httpx`` transport (``httpx.MockTransport``)
    that is then called from worker threads instead of the network. Proxy environment
    variables are ignored: the harness always talks to the mesh directly.

    Use as a context manager; a closed sampler refuses to sample. Calls from several threads
    are serialised (one batch at a time).
    """

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        max_connections: int = 64,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError(f"timeouts must be > 0, got timeout={timeout} connect_timeout={connect_timeout}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self._lock = threading.Lock()
        self._wire: Wire = (
            _TransportWire(
                transport, timeout=timeout, connect_timeout=connect_timeout, max_connections=max_connections
            )
            if transport is not None
            else _EngineWire(connect_timeout=connect_timeout, max_connections=max_connections)
        )
        self._state = _State.OPEN

    def __enter__(self) -> Self:
        if self._state is _State.CLOSED:
            raise RuntimeError("this Sampler is closed; create a new one")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool and the engine (idempotent)."""
        with self._lock:
            if self._state is _State.CLOSED:
                return
            self._state = _State.CLOSED
            self._wire.close()

    def reset_connections(self) -> None:
        """Close the pooled keep-alive connections; the next batch opens new ones.

        Call it after a configuration change that replaces a listener (Telemetry,
        AuthorizationPolicy, PeerAuthentication ...): Envoy keeps serving connections accepted
        before the change with the old listener until they drain, so a pooled connection would
        measure the old configuration."""
        with self._lock:
            if self._state is _State.CLOSED:
                return
            self._wire.reset()

    def sample(
        self,
        backend: TrafficTarget,
        *,
        source: str | Source = "ingress",
        method: str = "GET",
        path: str = "/api/greet",
        n: int = 100,
        concurrency: int = 8,
        headers: Mapping[str, str] | None = None,
        target: tuple[str, str, int] = DEFAULT_TARGET,
        host_header: str | None = None,
        fresh_connections: bool = False,
    ) -> SampleResult:
        """Send ``n`` requests, at most ``concurrency`` in flight, and record each response.

        ``target`` (service, namespace, port) is what an in-mesh source calls; the ingress
        source calls the gateway, which routes by ``host_header`` (the ``Host`` header) and path.
        ``fresh_connections`` sends ``Connection: close`` so every request opens a new
        connection (circuit-breaker connection limits count connections); ``/api/call``
        always uses a fresh outbound connection anyway.
        """
        return self.sample_until(
            backend,
            None,
            max_n=n,
            source=source,
            method=method,
            path=path,
            concurrency=concurrency,
            headers=headers,
            target=target,
            host_header=host_header,
            fresh_connections=fresh_connections,
        )

    def sample_until(
        self,
        backend: TrafficTarget,
        decide: Callable[[Sequence[Response]], bool] | None,
        *,
        max_n: int,
        look_every: int = 50,
        source: str | Source = "ingress",
        method: str = "GET",
        path: str = "/api/greet",
        concurrency: int = 8,
        headers: Mapping[str, str] | None = None,
        target: tuple[str, str, int] = DEFAULT_TARGET,
        host_header: str | None = None,
        fresh_connections: bool = False,
    ) -> SampleResult:
        """Send requests until ``decide`` says stop (or ``max_n`` were sent); for sequential checks.

        ``decide`` sees the responses in the order the requests were *issued*, as a prefix
        with no gaps: a request that is still in flight hides everything issued after it. (In
        completion order, slow outcomes such as injected delays would arrive late and bias
        every look.) It is called whenever that prefix has grown by ``look_every`` and once
        it holds all ``max_n``; returning True stops issuing. Requests already issued then
        finish and are counted in :attr:`SampleResult.discarded`, not in ``responses``, which
        is exactly the prefix ``decide`` stopped on.
        """
        if self._state is _State.CLOSED:
            raise RuntimeError("this Sampler is closed; create a new one")
        if max_n < 0:
            raise ValueError(f"n must be >= 0, got {max_n}")
        if look_every < 1:
            raise ValueError(f"look_every must be >= 1, got {look_every}")
        if not 1 <= concurrency <= self.max_connections:
            raise ValueError(
                f"concurrency must be in 1..{self.max_connections} (the sampler's max_connections), "
                f"got {concurrency}"
            )
        plan = self._plan(
            backend,
            Source.parse(source) if isinstance(source, str) else source,
            method=method,
            path=path,
            headers=headers or {},
            target=target,
            host_header=host_header,
            fresh_connections=fresh_connections,
        )
        n = max_n
        slots: list[Response | None] = [None] * n
        prefix = 0
        stop_at: int | None = None
        next_look = min(look_every, n)

        def on_record(_k: int, index: int, raw: Raw) -> bool:
            nonlocal prefix, stop_at, next_look
            slots[index] = _decode(plan, raw)
            while prefix < n and slots[prefix] is not None:
                prefix += 1
            if decide is None or stop_at is not None or prefix < next_look:
                return False
            if decide([r for r in slots[:prefix] if r is not None]) or prefix == n:
                stop_at = prefix
                return True
            next_look = min(prefix + look_every, n)
            return False

        with self._lock:
            if self._closed():  # closed by another thread meanwhile
                raise RuntimeError("this Sampler is closed; create a new one")
            started, since = time.perf_counter(), time.time()
            try:
                if n:
                    self._wire.run([plan], [n], min(concurrency, n), on_record)
            finally:
                timeline.record(
                    "traffic", f"{plan.method} {path} from {plan.source}, concurrency {concurrency}", since
                )
            wall_s = time.perf_counter() - started
        used = n if stop_at is None else stop_at
        return SampleResult(
            responses=tuple(r for r in slots[:used] if r is not None),
            source=plan.source,
            method=plan.method,
            path=path,
            wall_s=wall_s,
            discarded=sum(1 for r in slots[used:] if r is not None),
        )

    def sample_many(
        self, backend: TrafficTarget, specs: Sequence[SampleSpec], *, concurrency: int = 8
    ) -> list[SampleResult]:
        """Send several independent batches at once, sharing one window of ``concurrency`` in flight.

        For read-only checks that each need their own request shape (an authorization matrix:
        one batch per source x method x path): instead of one batch after another, each
        waiting for its slowest request, all of them run interleaved. Returns one
        :class:`SampleResult` per spec, in order; each one's ``wall_s`` is the whole run's.
        """
        if self._state is _State.CLOSED:
            raise RuntimeError("this Sampler is closed; create a new one")
        if not 1 <= concurrency <= self.max_connections:
            raise ValueError(
                f"concurrency must be in 1..{self.max_connections} (the sampler's max_connections), "
                f"got {concurrency}"
            )
        plans = []
        for spec in specs:
            if spec.n < 0:
                raise ValueError(f"n must be >= 0, got {spec.n}")
            plans.append(
                self._plan(
                    backend,
                    Source.parse(spec.source) if isinstance(spec.source, str) else spec.source,
                    method=spec.method,
                    path=spec.path,
                    headers=spec.headers or {},
                    target=spec.target,
                    host_header=spec.host_header,
                    fresh_connections=spec.fresh_connections,
                )
            )
        counts = [spec.n for spec in specs]
        slots: list[list[Response | None]] = [[None] * n for n in counts]

        def on_record(k: int, index: int, raw: Raw) -> bool:
            slots[k][index] = _decode(plans[k], raw)
            return False

        with self._lock:
            if self._closed():
                raise RuntimeError("this Sampler is closed; create a new one")
            started, since = time.perf_counter(), time.time()
            try:
                if sum(counts):
                    self._wire.run(plans, counts, max(1, min(concurrency, sum(counts))), on_record)
            finally:
                timeline.record("traffic", f"{len(specs)} batches, concurrency {concurrency}", since)
            wall_s = time.perf_counter() - started
        return [
            SampleResult(
                responses=tuple(r for r in batch if r is not None),
                source=plan.source,
                method=plan.method,
                path=spec.path,
                wall_s=wall_s,
            )
            for plan, spec, batch in zip(plans, specs, slots, strict=True)
        ]

    def _closed(self) -> bool:  # a method, so that type checkers do not narrow the state
        return self._state is _State.CLOSED

    def _plan(
        self,
        backend: TrafficTarget,
        source: Source,
        *,
        method: str,
        path: str,
        headers: Mapping[str, str],
        target: tuple[str, str, int],
        host_header: str | None,
        fresh_connections: bool,
    ) -> _Plan:
        if not _METHOD.match(method):
            raise UserError(f"HTTP method {method!r} is not a method name. Fix: use e.g. GET or POST")
        method = method.upper()
        if not path.startswith("/"):
            raise UserError(f"request path {path!r} must start with '/'. Fix: e.g. /api/greet")
        for name, value in headers.items():
            if not _HEADER_NAME.match(name) or "\n" in value or "\r" in value:
                raise UserError(f"invalid request header {name!r}: {value!r}. Fix: use Name: value")
        if source.kind == "ingress":
            sent = dict(headers)
            if host_header:
                sent["Host"] = host_header
            if fresh_connections:
                sent["Connection"] = "close"
            return _Plan(
                method=method,
                url=backend.ingress_url().rstrip("/") + path,
                params=(),
                headers=MappingProxyType(sent),
                read_timeout=self.timeout,
                connect_timeout=self.connect_timeout,
                via_call=False,
                source=source.ref,
            )
        workload = backend.workload(source.ref)
        if not workload.app_url:
            raise UserError(
                f"workload {workload.ref} has no app port to send from (role {workload.role}). "
                "Fix: send from an app or client deployment, or from 'ingress'"
            )
        service, namespace, port = target  # a kube worker's copy of the sample: its own namespace
        url = backend.service_url(service, namespaces.ns(namespace), port).rstrip("/") + path
        params: list[tuple[str, str]] = [
            ("url", url),
            ("method", method),
            ("timeout_ms", str(max(1, round(self.timeout * 1000)))),
        ]
        outbound = dict(headers)
        if host_header:
            outbound["Host"] = host_header
        params += [("header", f"{name}:{value}") for name, value in outbound.items()]
        return _Plan(
            method=method,
            url=workload.app_url.rstrip("/") + "/api/call",
            params=tuple(params),
            headers=MappingProxyType({"Connection": "close"} if fresh_connections else {}),
            read_timeout=self.timeout + CALL_MARGIN_S,
            connect_timeout=self.connect_timeout,
            via_call=True,
            source=source.ref,
        )


def _decode(plan: _Plan, raw: Raw) -> Response:
    """What one request saw, from what the wire recorded."""
    status, headers, text, latency, error = raw
    if error:
        return Response(status=0, latency_ms=latency, error=error)
    if plan.via_call:
        return _from_call(status, text, latency, plan.source)
    return _response(status, headers, text, _json_object(text), latency)


def _from_call(status: int, text: str, latency_ms: float, source: str) -> Response:
    """Unwrap the downstream response that ``/api/call`` reports."""
    doc = _json_object(text)
    if status == 502 and doc is not None:
        code = doc.get("code") or "error"
        return Response(status=0, latency_ms=latency_ms, error=f"{code}: {doc.get('error', '')}")
    if status != 200 or doc is None or not isinstance(doc.get("status"), int):
        why = doc.get("error", "") if doc is not None else text[:200]
        return Response(
            status=0,
            latency_ms=latency_ms,
            error=f"/api/call on {source} answered {status}: {why}",
            body_text=text[:BODY_TEXT_LIMIT],
        )
    raw_headers = doc.get("headers")
    headers = {
        str(k).lower(): ", ".join(map(str, v)) if isinstance(v, list) else str(v)
        for k, v in (raw_headers.items() if isinstance(raw_headers, dict) else ())
    }
    body = doc.get("body")
    if isinstance(body, str):
        text, obj = body, None
    else:
        text = json.dumps(body, separators=(",", ":"))
        obj = body if isinstance(body, dict) else None
    return _response(doc["status"], headers, text, obj, latency_ms)


def _response(
    status: int,
    headers: Mapping[str, str],
    text: str,
    body: Mapping[str, Any] | None,
    latency_ms: float,
) -> Response:
    """``headers`` keys are lower-case."""
    body = body or {}
    return Response(
        status=status,
        version=_str(body.get("version")),
        pod=_str(body.get("pod")),
        latency_ms=latency_ms,
        overloaded="x-envoy-overloaded" in headers,
        server=headers.get("server", ""),
        body_text=text[:BODY_TEXT_LIMIT],
        rbac_denied=status == 403 and text.strip() == RBAC_DENIED_BODY,
        upstream_time_ms=_float(headers.get("x-envoy-upstream-service-time")),
        xfcc=_str(body.get("xfcc")),
    )


def _json_object(text: str) -> dict[str, Any] | None:
    if not text.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None
