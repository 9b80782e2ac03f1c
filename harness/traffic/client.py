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

import asyncio
import enum
import functools
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol, Self, TypedDict

import aiohttp

from harness import namespaces, timeline
from harness.errors import UserError
from harness.mesh import Workload
from harness.traffic.latency import latency_quantiles

if TYPE_CHECKING:
    import httpx


__all__ = [
    "BODY_TEXT_LIMIT",
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

    @functools.cached_property
    def aiohttp_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(sock_connect=self.connect_timeout, sock_read=self.read_timeout)


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


class Sampler:
    """Sends batches of requests into the mesh over keep-alive connections, on asyncio.

    One event loop and one ``aiohttp`` connection pool live as long as the sampler; each
    :meth:`sample` runs ``concurrency`` workers on that loop, so at most ``concurrency``
    requests are in flight (a bounded window) and idle connections are reused across
    batches. (``aiohttp`` rather than ``httpx.AsyncClient``: measured on this machine against
    one Node server, aiohttp served about 2,000 requests/s at ~0.2 ms of client CPU each,
    ``httpx.AsyncClient`` about 50 at ~4 ms; see docs/BENCHMARKS.md.)

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
        self._loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._session: aiohttp.ClientSession | None = None
        self._client: httpx.Client | None = None
        self._threads: ThreadPoolExecutor | None = None
        if transport is not None:
            import httpx  # tests only: the production path never loads httpx

            self._client = httpx.Client(
                transport=transport,
                timeout=httpx.Timeout(timeout, connect=connect_timeout),
                limits=httpx.Limits(max_connections=max_connections),
                trust_env=False,
                follow_redirects=False,
            )
            self._threads = ThreadPoolExecutor(max_workers=max_connections, thread_name_prefix="sampler")
        self._state = _State.OPEN

    def __enter__(self) -> Self:
        if self._state is _State.CLOSED:
            raise RuntimeError("this Sampler is closed; create a new one")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool and the event loop (idempotent)."""
        with self._lock:
            if self._state is _State.CLOSED:
                return
            self._state = _State.CLOSED
            try:
                if self._session is not None:
                    self._loop.run_until_complete(self._session.close())
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            finally:
                self._loop.close()
                if self._client is not None:
                    self._client.close()
                if self._threads is not None:
                    self._threads.shutdown(wait=True)

    def reset_connections(self) -> None:
        """Close the pooled keep-alive connections; the next batch opens new ones.

        Call it after a configuration change that replaces a listener (Telemetry,
        AuthorizationPolicy, PeerAuthentication ...): Envoy keeps serving connections accepted
        before the change with the old listener until they drain, so a pooled connection would
        measure the old configuration."""
        with self._lock:
            if self._state is _State.CLOSED or self._session is None:
                return
            session, self._session = self._session, None
            self._loop.run_until_complete(session.close())

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
        it holds all ``max_n``; returning True stops issuing. Requests already in flight then
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
        with self._lock:
            if self._closed():  # closed by another thread meanwhile
                raise RuntimeError("this Sampler is closed; create a new one")
            started, since = time.perf_counter(), time.time()
            try:
                responses, discarded = self._loop.run_until_complete(
                    self._run(plan, max_n, min(concurrency, max(1, max_n)), decide, look_every)
                )
            except BaseExceptionGroup as group:  # decide raised (in one worker or several): the first
                raise group.exceptions[0] from None
            finally:
                timeline.record(
                    "traffic", f"{plan.method} {path} from {plan.source}, concurrency {concurrency}", since
                )
            wall_s = time.perf_counter() - started
        return SampleResult(
            responses=responses,
            source=plan.source,
            method=plan.method,
            path=path,
            wall_s=wall_s,
            discarded=discarded,
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
        with self._lock:
            if self._closed():
                raise RuntimeError("this Sampler is closed; create a new one")
            started, since = time.perf_counter(), time.time()
            try:
                slots = self._loop.run_until_complete(
                    self._run_many(plans, [spec.n for spec in specs], concurrency)
                )
            finally:
                timeline.record("traffic", f"{len(specs)} batches, concurrency {concurrency}", since)
            wall_s = time.perf_counter() - started
        return [
            SampleResult(
                responses=tuple(r), source=plan.source, method=plan.method, path=spec.path, wall_s=wall_s
            )
            for plan, spec, r in zip(plans, specs, slots, strict=True)
        ]

    async def _run_many(
        self, plans: Sequence[_Plan], counts: Sequence[int], concurrency: int
    ) -> list[list[Response]]:
        self._ensure_session()
        slots: list[list[Response | None]] = [[None] * n for n in counts]
        # round-robin over the batches, so every batch is in flight from the start
        jobs = [(k, i) for i in range(max(counts, default=0)) for k in range(len(plans)) if i < counts[k]]
        position = 0

        async def worker() -> None:
            nonlocal position
            while position < len(jobs):
                k, i = jobs[position]
                position += 1
                slots[k][i] = await self._one(plans[k])

        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, min(concurrency, len(jobs)))):
                group.create_task(worker())
        return [[r for r in batch if r is not None] for batch in slots]

    def _ensure_session(self) -> None:
        if self._client is None and self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections, use_dns_cache=True),
                timeout=aiohttp.ClientTimeout(sock_connect=self.connect_timeout, sock_read=self.timeout),
                trust_env=False,
                auto_decompress=False,
            )

    def _closed(self) -> bool:  # a method, so that type checkers do not narrow the state
        return self._state is _State.CLOSED

    async def _run(
        self,
        plan: _Plan,
        n: int,
        concurrency: int,
        decide: Callable[[Sequence[Response]], bool] | None,
        look_every: int,
    ) -> tuple[tuple[Response, ...], int]:
        if n == 0:
            return (), 0
        self._ensure_session()
        slots: list[Response | None] = [None] * n
        issued = 0
        prefix = 0
        stop_at: int | None = None
        next_look = min(look_every, n)

        async def worker() -> None:
            nonlocal issued, prefix, stop_at, next_look
            while stop_at is None and issued < n:
                index = issued
                issued += 1
                slots[index] = await self._one(plan)
                while prefix < n and slots[prefix] is not None:
                    prefix += 1
                if decide is None or stop_at is not None or prefix < next_look:
                    continue
                done = [r for r in slots[:prefix] if r is not None]
                if decide(done) or prefix == n:
                    stop_at = prefix
                next_look = min(prefix + look_every, n)

        async with asyncio.TaskGroup() as group:  # an exception (e.g. in decide) cancels the others
            for _ in range(concurrency):
                group.create_task(worker())
        used = n if stop_at is None else stop_at
        responses = tuple(r for r in slots[:used] if r is not None)
        discarded = sum(1 for r in slots[used:] if r is not None)
        return responses, discarded

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

    async def _one(self, plan: _Plan) -> Response:
        start = time.perf_counter()
        try:
            if self._client is not None:
                status, headers, text = await self._loop.run_in_executor(
                    self._threads, self._send_httpx, plan
                )
            else:
                status, headers, text = await self._send_aiohttp(plan)
        except (_TransportError, aiohttp.ClientError, TimeoutError) as e:
            latency = (time.perf_counter() - start) * 1000.0
            return Response(status=0, latency_ms=latency, error=_describe(e))
        latency = (time.perf_counter() - start) * 1000.0
        if plan.via_call:
            return _from_call(status, text, latency, plan.source)
        return _response(status, headers, text, _json_object(text), latency)

    async def _send_aiohttp(self, plan: _Plan) -> tuple[int, Mapping[str, str], str]:
        assert self._session is not None
        async with self._session.request(
            "GET" if plan.via_call else plan.method,
            plan.url,
            params=plan.params or None,
            headers=plan.headers,
            allow_redirects=False,
            timeout=plan.aiohttp_timeout,
        ) as r:
            body = await r.read()
            return r.status, r.headers, body.decode(r.charset or "utf-8", errors="replace")

    def _send_httpx(self, plan: _Plan) -> tuple[int, Mapping[str, str], str]:
        import httpx

        assert self._client is not None
        try:
            r = self._client.request(
                "GET" if plan.via_call else plan.method,
                plan.url,
                params=plan.params,
                headers=plan.headers,
                timeout=httpx.Timeout(plan.read_timeout, connect=self.connect_timeout),
            )
        except httpx.HTTPError as e:
            raise _TransportError(_describe(e, timeout=isinstance(e, httpx.TimeoutException))) from e
        return r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.text


class _TransportError(Exception):
    """A test transport's failure, already described."""


def _describe(e: BaseException, *, timeout: bool = False) -> str:
    if isinstance(e, _TransportError):
        return str(e)
    timeout = timeout or isinstance(e, TimeoutError | aiohttp.ServerTimeoutError)
    kind = "timeout" if timeout else "connection failed"
    detail = str(e) or type(e).__name__
    return f"{kind}: {type(e).__name__}: {detail}"


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
