"""Request records for the load tests: one request as the locustfile logs it."""

from __future__ import annotations

from harness.load.report import RequestRecord


def rec(
    start: float, status: int = 200, latency: float = 10.0, pod: str = "p1", version: str = "v1"
) -> RequestRecord:
    return RequestRecord(start, latency, status, "ingress /api/greet", pod if status == 200 else "", version)
