"""A client of the Jaeger query HTTP API (``/api/services``, ``/api/traces``).

Used by ``meshproof traces`` and the suites; the base URL comes from ``Backend.trace_query_url()``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Self

import httpx

from harness.errors import HarnessError


class JaegerClient:
    """Queries one Jaeger query service. A context manager: ``with JaegerClient(url) as jaeger: ...``.

    Pass ``http`` to use your own client (e.g. one with an ``httpx.MockTransport`` in tests); it is
    then not closed here.
    """

    def __init__(self, base_url: str, *, http: httpx.Client | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._own = http is None
        self._http = http if http is not None else httpx.Client(timeout=timeout, trust_env=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self._http.close()

    def services(self) -> list[str]:
        """Names of the services Jaeger holds traces of, sorted."""
        return sorted(self._get("/api/services").get("data") or [])

    def traces(self, service: str, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent traces of ``service``, each summarised by :func:`trace_summary`."""
        doc = self._get("/api/traces", service=service, limit=str(limit))
        return [trace_summary(t) for t in doc.get("data") or []]

    def _get(self, path: str, **params: str) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        try:
            resp = self._http.get(url, params=params or None)
            resp.raise_for_status()
            doc = resp.json()
        except httpx.HTTPError as e:
            raise HarnessError(f"could not query Jaeger at {self.base_url}: {e}") from e
        except ValueError as e:
            raise HarnessError(
                f"Jaeger at {self.base_url} answered with something that is not JSON: {e}"
            ) from e
        return doc if isinstance(doc, dict) else {}


def trace_summary(trace: Mapping[str, Any]) -> dict[str, Any]:
    """One Jaeger trace as {trace_id, start, duration_ms, spans, root, services}. Times are in µs."""
    spans = list(trace.get("spans") or [])
    processes = trace.get("processes") or {}
    starts = [int(s.get("startTime", 0)) for s in spans]
    ends = [int(s.get("startTime", 0)) + int(s.get("duration", 0)) for s in spans]
    ids = {s.get("spanID") for s in spans}
    roots = [s for s in spans if not any(r.get("spanID") in ids for r in s.get("references") or [])]
    root = roots[0] if roots else (spans[0] if spans else {})
    begin = min(starts) if starts else 0
    return {
        "trace_id": str(trace.get("traceID", "")),
        "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(begin / 1e6)) if begin else "",
        "duration_ms": round((max(ends) - begin) / 1000, 3) if spans else 0.0,
        "spans": len(spans),
        "root": str(root.get("operationName", "")),
        "services": sorted({str(p.get("serviceName", "")) for p in processes.values()}),
    }
