"""What the load saw, built from the per-request records the locustfile writes (start time,
latency, status, answering pod and version, x-request-id): :class:`RequestRecord` parses one line,
:func:`build_report` (pure) splits the records at the phase boundaries into a :class:`LoadReport`
(totals, per phase, per time bin), so each request counts in the phase in which it started.

What an outage cost, per phase, from the same records (no extra logging: a record's start and
latency give when its answer or error arrived, :attr:`RequestRecord.end`):
:func:`error_seconds` (distinct wall-clock seconds in which a failure arrived) and
:func:`longest_gap` (the longest stretch of the phase in which no successful response arrived)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from harness.load.bins import Bin, bin_edges, bin_series
from harness.load.config import LoadConfig, LoadTarget


@dataclass(frozen=True)
class RequestRecord:
    """One request as the locustfile logged it."""

    start: float  # unix seconds when it was sent
    latency_ms: float
    status: int  # 0: no HTTP response (connection error, timeout)
    name: str
    pod: str = ""  # who answered a 200 ("" otherwise)
    version: str = ""
    request_id: str = ""
    error: str = ""
    overloaded: bool = False  # Envoy shed it: x-envoy-overloaded (a circuit breaker's 503)

    @property
    def failed(self) -> bool:
        return not 200 <= self.status < 400

    @property
    def end(self) -> float:
        """Unix seconds when its answer (or error) arrived: start plus latency."""
        return self.start + self.latency_ms / 1000.0

    @classmethod
    def parse(cls, line: str) -> RequestRecord | None:
        parts = line.rstrip("\n").split("\t")
        if len(parts) not in (8, 9):
            return None
        try:
            start, latency, status = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            return None
        overloaded = len(parts) == 9 and "overloaded" in parts[8].split(",")
        name, pod, version, request_id, error = parts[3:8]
        return cls(start, latency, status, name, pod, version, request_id, error, overloaded)


@dataclass(frozen=True)
class Latency:
    """Latency percentiles in milliseconds (0.0 when there were no requests)."""

    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0

    @classmethod
    def of(cls, latencies: Sequence[float]) -> Latency:
        if not latencies:
            return cls()
        q = np.percentile(np.asarray(latencies, dtype=float), [50, 90, 95, 99, 100])
        return cls(*(round(float(v), 3) for v in q))


@dataclass(frozen=True)
class PhaseMark:
    """A named interval of the run (unix seconds; ``end`` is None while it lasts)."""

    name: str
    start: float
    end: float | None = None


@dataclass(frozen=True)
class PhaseStats:
    name: str
    start_s: float  # seconds since the run started
    end_s: float
    requests: int
    failures: int
    by_status: Mapping[int, int]
    rps: float
    error_ratio: float
    latency: Latency
    versions: Mapping[str, int]  # who answered the 200s, by version label
    pods: Mapping[str, int]
    overloaded: int = 0  # 503s Envoy shed (x-envoy-overloaded)
    error_seconds: int = 0  # distinct wall-clock seconds in which one of its failures arrived
    longest_gap_s: float = 0.0  # the longest stretch of the phase without a successful response

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class LoadReport:
    """What the load saw: totals, per phase, per time bin; the raw records for custom SLOs."""

    config: LoadConfig
    target: LoadTarget
    started_at: float  # unix seconds
    duration_s: float
    requests: int
    failures: int
    by_status: Mapping[int, int]
    rps: float
    latency: Latency
    phases: tuple[PhaseStats, ...]
    series: tuple[Bin, ...]  # time bins (harness.load.bins): every phase boundary is a bin edge
    errors: Mapping[str, int]  # error message -> count (top 10)
    request_id_prefix: str  # every x-request-id starts with it
    locust_requests: int  # Locust's own total (cross-check of the event logs)
    locust_exit_code: int
    locust_cpu_s: float  # CPU seconds of the Locust processes (user + system)
    workdir: Path
    locust_note: str = ""  # why Locust's own total may differ from the records (the records count)
    records: tuple[RequestRecord, ...] = field(default=(), repr=False)

    @property
    def error_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def cpu_share(self) -> float:
        """Locust's share of the machine's CPU over the run (1.0 = every core busy)."""
        cores = os.cpu_count() or 1
        return self.locust_cpu_s / (self.duration_s * cores) if self.duration_s > 0 else 0.0

    def phase(self, name: str) -> PhaseStats:
        for p in self.phases:
            if p.name == name:
                return p
        raise KeyError(f"no phase {name!r} in the load report; phases: {[p.name for p in self.phases]}")

    def in_phase(self, name: str) -> list[RequestRecord]:
        p = self.phase(name)
        lo, hi = self.started_at + p.start_s, self.started_at + p.end_s
        return [r for r in self.records if lo <= r.start < hi]

    def summary(self) -> str:
        lines = [
            f"{self.requests} requests, {self.failures} failed ({100 * self.error_ratio:.2f}%), "
            f"{self.rps:.0f} req/s over {self.duration_s:.1f} s with {self.config.users} users "
            f"({self.config.shape}, {self.config.processes} process{'es' if self.config.processes > 1 else ''}); "
            f"p50 {self.latency.p50_ms:.1f} ms, p95 {self.latency.p95_ms:.1f} ms, p99 {self.latency.p99_ms:.1f} ms; "
            f"Locust CPU {self.locust_cpu_s:.1f} s ({100 * self.cpu_share:.0f}% of the machine)"
        ]
        for p in self.phases:
            status = ", ".join(f"{k}: {v}" for k, v in sorted(p.by_status.items()))
            lines.append(
                f"  {p.name:<14} {p.start_s:6.1f}-{p.end_s:6.1f} s  {p.requests:6d} req  {p.rps:7.1f}/s  "
                f"err {100 * p.error_ratio:5.2f}%  p50 {p.latency.p50_ms:6.1f}  p95 {p.latency.p95_ms:6.1f} ms  "
                f"[{status}]"
            )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        def phase(p: PhaseStats) -> dict[str, Any]:
            return {
                "name": p.name,
                "start_s": round(p.start_s, 3),
                "end_s": round(p.end_s, 3),
                "requests": p.requests,
                "failures": p.failures,
                "by_status": {str(k): v for k, v in sorted(p.by_status.items())},
                "rps": round(p.rps, 2),
                "error_ratio": round(p.error_ratio, 6),
                "latency_ms": _latency_json(p.latency),
                "versions": dict(p.versions),
                "pods": dict(p.pods),
                "overloaded": p.overloaded,
                "error_seconds": p.error_seconds,
                "longest_gap_s": round(p.longest_gap_s, 3),
            }

        return {
            "users": self.config.users,
            "shape": self.config.shape,
            "processes": self.config.processes,
            "user_class": self.config.user_class,
            "target": {
                "ingress_url": self.target.ingress_url,
                "call_url": self.target.call_url,
                "service_url": self.target.service_url,
            },
            "started_at": round(self.started_at, 3),
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "failures": self.failures,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "rps": round(self.rps, 2),
            "error_ratio": round(self.error_ratio, 6),
            "latency_ms": _latency_json(self.latency),
            "phases": [phase(p) for p in self.phases],
            "series": [
                {
                    "t": round(b.t, 3),
                    "width_s": round(b.width_s, 4),
                    "phase": b.phase,
                    "requests": b.requests,
                    "failures": b.failures,
                    "rps": round(b.rps, 2),
                    "error_ratio": round(b.error_ratio, 6),
                    "p50_ms": b.p50_ms,
                    "p95_ms": b.p95_ms,
                }
                for b in self.series
            ],
            "errors": dict(self.errors),
            "request_id_prefix": self.request_id_prefix,
            "locust": {
                "requests": self.locust_requests,
                "exit_code": self.locust_exit_code,
                "cpu_s": round(self.locust_cpu_s, 3),
                "cpu_share": round(self.cpu_share, 4),
                **({"note": self.locust_note} if self.locust_note else {}),
            },
            "workdir": str(self.workdir),
        }


def _latency_json(lat: Latency) -> dict[str, float]:
    return {"p50": lat.p50_ms, "p90": lat.p90_ms, "p95": lat.p95_ms, "p99": lat.p99_ms, "max": lat.max_ms}


def build_report(
    config: LoadConfig,
    target: LoadTarget,
    records: Iterable[RequestRecord],
    phases: Sequence[PhaseMark],
    *,
    started_at: float,
    ended_at: float,
    request_id_prefix: str = "",
    locust_requests: int = -1,
    locust_exit_code: int = 0,
    locust_cpu_s: float = 0.0,
    locust_note: str = "",
    workdir: Path = Path(),
) -> LoadReport:
    """Pure: the report of ``records`` split at ``phases`` (each request counts where it started)."""
    recs = tuple(sorted(records, key=lambda r: r.start))
    duration = max(ended_at - started_at, 1e-9)
    marks = [p if p.end is not None else PhaseMark(p.name, p.start, ended_at) for p in phases]
    ok_ends = np.sort(np.fromiter((r.end for r in recs if not r.failed), dtype=float))
    # the gaps are measured while the load ran: from its first request to its last answer (not
    # over Locust's spawn before it, nor its stop after it)
    first = recs[0].start if recs else started_at
    last = max((r.end for r in recs), default=ended_at)
    phase_stats = []
    for m in marks:
        end = m.end if m.end is not None else ended_at
        inside = [r for r in recs if m.start <= r.start < end]
        stats = _phase_stats(m.name, m.start - started_at, end - started_at, inside)
        gap = longest_gap(ok_ends, max(m.start, first), min(end, last))
        phase_stats.append(replace(stats, error_seconds=error_seconds(inside), longest_gap_s=gap))
    series = bin_series(
        [r.start - started_at for r in recs],
        [r.latency_ms for r in recs],
        [r.failed for r in recs],
        bin_edges(duration, [b for p in phase_stats for b in (p.start_s, p.end_s)]),
        phases=[(p.name, p.start_s, p.end_s) for p in phase_stats],
    )
    errors = Counter(r.error or f"HTTP {r.status}" for r in recs if r.failed)
    return LoadReport(
        config=config,
        target=target,
        started_at=started_at,
        duration_s=duration,
        requests=len(recs),
        failures=sum(r.failed for r in recs),
        by_status=MappingProxyType(dict(sorted(Counter(r.status for r in recs).items()))),
        rps=len(recs) / duration,
        latency=Latency.of([r.latency_ms for r in recs]),
        phases=tuple(phase_stats),
        series=series,
        errors=MappingProxyType(dict(errors.most_common(10))),
        request_id_prefix=request_id_prefix,
        locust_requests=locust_requests,
        locust_exit_code=locust_exit_code,
        locust_cpu_s=locust_cpu_s,
        locust_note=locust_note,
        workdir=workdir,
        records=recs,
    )


def error_seconds(records: Iterable[RequestRecord]) -> int:
    """How many distinct wall-clock seconds (unix seconds, floored) one of ``records``' failures
    arrived in (:attr:`RequestRecord.end`): 40 failures in one burst cost 1, 3 failures a few
    seconds apart cost 3."""
    return len({int(r.end // 1) for r in records if r.failed})


def longest_gap(ok_ends: Sequence[float] | np.ndarray, lo: float, hi: float) -> float:
    """The longest stretch of ``[lo, hi]`` (unix seconds) in which no successful response arrived,
    ``ok_ends`` being when each did (any order); the whole interval when none did, 0.0 when it is
    empty. Its ends count as edges: a phase that starts in an outage shows it from its start."""
    if not hi > lo:
        return 0.0
    ends = np.asarray(ok_ends, dtype=float)
    inside = np.sort(ends[(ends >= lo) & (ends <= hi)])
    edges = np.concatenate(([lo], inside, [hi]))
    return round(float(np.max(np.diff(edges))), 6)


def _phase_stats(name: str, start_s: float, end_s: float, recs: Sequence[RequestRecord]) -> PhaseStats:
    seconds = max(end_s - start_s, 1e-9)
    failures = sum(r.failed for r in recs)
    ok = [r for r in recs if r.status == 200]
    return PhaseStats(
        name=name,
        start_s=start_s,
        end_s=end_s,
        requests=len(recs),
        failures=failures,
        by_status=MappingProxyType(dict(sorted(Counter(r.status for r in recs).items()))),
        rps=len(recs) / seconds,
        error_ratio=failures / len(recs) if recs else 0.0,
        latency=Latency.of([r.latency_ms for r in recs]),
        versions=MappingProxyType(dict(sorted(Counter(r.version for r in ok if r.version).items()))),
        pods=MappingProxyType(dict(sorted(Counter(r.pod for r in ok if r.pod).items()))),
        overloaded=sum(r.overloaded for r in recs),
    )
