"""A typed client for Jaeger's query API, with ingestion waits.

Jaeger answers two query APIs on its query port: ``/api/v3/...`` (OTLP JSON; a search needs
``query.start_time_min`` and ``query.start_time_max`` in RFC 3339) and the internal one its UI
uses, ``/api/services``, ``/api/services/{s}/operations``, ``/api/traces?service=&tags=&start=&end=&limit=``
(times in microseconds) and ``/api/traces/{id}``. This client reads the internal one: its
documents carry each span's process (service name), references (parent links) and tags in a
flat shape that maps directly onto :class:`Trace` and :class:`Span`.

Spans reach Jaeger asynchronously (Envoy batches and flushes its spans; the collector batches
again), so every read that expects something polls with a deadline (:meth:`JaegerClient.wait_for`) and
on timeout says what it found instead.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

import httpx

from harness import httpclient, wait
from harness.errors import HarnessError, WaitTimeout

T = TypeVar("T")

__all__ = ["JaegerClient", "JaegerUnavailable", "Span", "Trace", "parse_trace"]


class JaegerUnavailable(HarnessError):
    """Jaeger's query API did not answer (or answered something that is not its API)."""


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str  # "" for a span without a CHILD_OF reference
    operation: str
    service: str
    start_us: int
    duration_us: int
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        """``server``, ``client``, ... (the ``span.kind`` tag)."""
        return self.tags.get("span.kind", "")

    def describe(self) -> str:
        return f"{self.service} {self.kind or '?'} {self.operation!r} ({self.span_id})"


@dataclass(frozen=True)
class Trace:
    trace_id: str
    spans: tuple[Span, ...]

    def roots(self) -> list[Span]:
        """Spans with no parent inside this trace (one for a well-formed trace)."""
        ids = {s.span_id for s in self.spans}
        return sorted((s for s in self.spans if s.parent_id not in ids), key=lambda s: s.start_us)

    def children(self, span: Span) -> list[Span]:
        return sorted((s for s in self.spans if s.parent_id == span.span_id), key=lambda s: s.start_us)

    @property
    def services(self) -> list[str]:
        return sorted({s.service for s in self.spans})

    @property
    def start_us(self) -> int:
        return min((s.start_us for s in self.spans), default=0)

    def mentions(self, needle: str) -> bool:
        """Whether any span's tag value contains ``needle`` (e.g. a probe id in ``http.url``)."""
        return any(needle in v for s in self.spans for v in s.tags.values())

    def summary(self) -> dict[str, Any]:
        """{trace_id, start, duration_ms, spans, root, services} for listings."""
        begin = self.start_us
        end = max((s.start_us + s.duration_us for s in self.spans), default=0)
        roots = self.roots()
        return {
            "trace_id": self.trace_id,
            "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(begin / 1e6)) if begin else "",
            "duration_ms": round((end - begin) / 1000, 3) if self.spans else 0.0,
            "spans": len(self.spans),
            "root": roots[0].operation if roots else "",
            "services": self.services,
        }

    def tree(self) -> str:
        """The span tree, one span per line, indented by depth (for failure evidence)."""
        lines: list[str] = [f"trace {self.trace_id}:"]

        def walk(span: Span, depth: int) -> None:
            lines.append("  " * (depth + 1) + span.describe())
            for c in self.children(span):
                walk(c, depth + 1)

        for r in self.roots():
            walk(r, 0)
        return "\n".join(lines)


def parse_trace(doc: Mapping[str, Any]) -> Trace:
    """One trace of the internal API (``{"traceID", "spans", "processes"}``)."""
    processes = doc.get("processes") or {}
    spans = []
    for s in doc.get("spans") or []:
        parent = next(
            (str(r.get("spanID", "")) for r in s.get("references") or [] if r.get("refType") == "CHILD_OF"),
            "",
        )
        process = processes.get(s.get("processID")) or {}
        spans.append(
            Span(
                trace_id=str(s.get("traceID", doc.get("traceID", ""))),
                span_id=str(s.get("spanID", "")),
                parent_id=parent,
                operation=str(s.get("operationName", "")),
                service=str(process.get("serviceName", "")),
                start_us=int(s.get("startTime", 0)),
                duration_us=int(s.get("duration", 0)),
                tags={str(t.get("key")): str(t.get("value")) for t in s.get("tags") or []},
            )
        )
    return Trace(str(doc.get("traceID", "")), tuple(sorted(spans, key=lambda s: s.start_us)))


class JaegerClient:
    """Jaeger's query API at ``base_url``. ``hint`` says where to look when it does not answer
    (the local backend passes Jaeger's log file). Use as a context manager."""

    def __init__(
        self,
        base_url: str,
        *,
        hint: str = "",
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        clock: wait.Clock = wait.REAL_CLOCK,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.hint = hint
        self.clock = clock
        self._http = httpclient.client(timeout=timeout, transport=transport)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ---- reads --------------------------------------------------------------------------
    def _get(self, path: str, params: Mapping[str, str] | None = None, *, missing_ok: bool = False) -> Any:
        url = f"{self.base_url}{path}"
        try:
            r = self._http.get(url, params=params)
        except httpx.HTTPError as e:
            raise self._unavailable(f"could not reach Jaeger's query API at {url}: {e}") from e
        if missing_ok and r.status_code == 404:
            return None
        if r.status_code != 200:
            raise self._unavailable(f"Jaeger's query API answered {r.status_code} for {url}: {r.text[:200]}")
        try:
            return r.json()
        except json.JSONDecodeError as e:
            raise self._unavailable(f"Jaeger at {url} answered something that is not JSON: {e}") from e

    def _unavailable(self, message: str) -> JaegerUnavailable:
        return JaegerUnavailable(message + (f". See {self.hint}" if self.hint else ""))

    def services(self) -> list[str]:
        return sorted(str(s) for s in self._get("/api/services").get("data") or [])

    def operations(self, service: str) -> list[str]:
        doc = self._get(f"/api/services/{service}/operations")
        return sorted(str(o.get("name", o)) if isinstance(o, dict) else str(o) for o in doc.get("data") or [])

    def find_traces(
        self,
        service: str,
        *,
        tags: Mapping[str, str] | None = None,
        start_us: int | None = None,
        end_us: int | None = None,
        limit: int = 20,
        operation: str | None = None,
    ) -> list[Trace]:
        """Traces with a span of ``service`` (and the given tags) in the time window, newest first."""
        params: dict[str, str] = {"service": service, "limit": str(limit)}
        if tags:
            params["tags"] = json.dumps(dict(tags))
        if start_us is not None:
            params["start"] = str(start_us)
        if end_us is not None:
            params["end"] = str(end_us)
        if operation:
            params["operation"] = operation
        data = self._get("/api/traces", params).get("data") or []
        return [parse_trace(t) for t in data]

    def trace(self, trace_id: str) -> Trace | None:
        """The trace with this id, or None if Jaeger has none (yet)."""
        doc = self._get(f"/api/traces/{trace_id}", missing_ok=True)
        data = (doc or {}).get("data") or []
        return parse_trace(data[0]) if data else None

    # ---- ingestion waits ----------------------------------------------------------------
    def wait_for(
        self,
        look: Callable[[], T],
        done: Callable[[T], bool],
        *,
        what: str,
        timeout: float = 60.0,
        interval: float = 0.25,
        describe: Callable[[T], str] = str,
    ) -> T:
        """Poll ``look()`` until ``done(value)``; on timeout raise :class:`WaitTimeout` with the
        last value seen (``describe``d). Jaeger not answering fails at once.

        A look that takes long (a query answering every trace of a big batch, on a busy machine)
        is repeated only after :data:`LOOK_PACE` times its own duration: polling never takes more
        than a quarter of the wait, of our CPU or of Jaeger's, which is ingesting the traces
        awaited."""
        last: list[T] = []

        def check() -> T | None:
            value = look()
            last[:] = [value]
            return value if done(value) else None

        try:
            return wait.until(
                check, what=what, timeout=timeout, interval=interval, clock=self.clock, pace=LOOK_PACE
            )
        except WaitTimeout as e:
            seen = describe(last[0]) if last else "(nothing)"
            raise WaitTimeout(what, timeout, seen, f"Jaeger at {self.base_url}; {self.hint}") from e

    def traces_mentioning(
        self, service: str, needles: Iterable[str], *, start_us: int, end_us: int, limit: int = 1500
    ) -> dict[str, list[Trace]]:
        """For each needle (a probe id sent in a request), the traces in the window whose spans
        mention it in a tag (``http.url``, ``guid:x-request-id``, ...)."""
        found: dict[str, list[Trace]] = {n: [] for n in needles}
        for t in self.find_traces(service, start_us=start_us, end_us=end_us, limit=limit):
            for n, traces in found.items():
                if t.mentions(n):
                    traces.append(t)
        return found


#: Between two looks of :meth:`JaegerClient.wait_for`: at least this many times the last look's duration.
LOOK_PACE = 3.0


def now_us() -> int:
    """Wall-clock time in microseconds (Jaeger's time unit; spans carry wall-clock times)."""
    return time.time_ns() // 1000
