# Over 500 lines: LocustRun, its typed LoadReport and the SLO helpers around one subprocess lifecycle.
"""Background load with Locust, run as a subprocess: :class:`LocustRun` and its typed :class:`LoadReport`.

Locust is never imported here (``import locust`` monkey-patches the process with gevent); the
locustfile in ``loadtests/`` is the only importer. ::

    target = LoadTarget.from_mesh(mesh)                   # URLs of the running mesh, never fixed ports
    with LocustRun(LoadConfig(users=20), target, workdir=tmp) as run:
        run.phase("fault")                                # the previous phase ends here
        ...inject a fault...
        with run.phase("recovery"):                       # leaving the block starts "after recovery"
            ...
    report = run.report                                   # LoadReport: totals, per phase, per time bin
    report.phase("fault").by_status                       # {200: 1800, 503: 12}

Lifecycle: :meth:`LocustRun.start` spawns ``python -m locust --headless`` in its own process group
with PDEATHSIG (a SIGKILLed parent still takes it down; ``--processes`` workers die with their
master, see the locustfile), then waits (:func:`harness.wait.until`, no sleep) until Locust logs
that its users are spawned. :meth:`LocustRun.stop` creates the run's stop file, which the
locustfile's shape reads every tick (second): Locust then stops its users, writes its stats and
exits 0. After ``stop_timeout`` it gets SIGINT, then SIGKILL for the whole group; the report is
built once the process group is gone. Not SIGTERM: Locust 2.47 installs its SIGTERM handler only
after a headless run with a LoadTestShape has ended, so SIGTERM kills it without its stats; and
SIGINT can surface as a KeyboardInterrupt traceback inside a user greenlet (both measured). Locust's own failures raise :class:`~harness.errors.LoadError` with Locust's
message: an exit code other than 0 (2 = an unhandled greenlet error), or a traceback in its log.
Failed *requests* never do: Locust runs with ``--exit-code-on-error 0`` and the caller judges the
report (:func:`error_ratio_below`, :func:`latency_at_least`).

The report is built from the per-request event logs the locustfile writes (start time, latency,
status, answering pod and version, x-request-id), so phase boundaries are exact to the request;
Locust's own totals (``--json-file``) are kept beside them as a cross-check.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Protocol, Self

import numpy as np
from scipy.stats import beta

from harness import proc, wait
from harness.errors import LoadError, StateError, ToolMissing, UserError, WaitTimeout
from harness.load.bins import Bin, bin_edges, bin_series
from harness.mesh import Workload

__all__ = [
    "DEFAULT_CLIENT",
    "Bin",
    "LOCUSTFILE",
    "SHAPES",
    "USER_CLASSES",
    "Latency",
    "LoadConfig",
    "LoadReport",
    "LoadRun",
    "LoadTarget",
    "LocustRun",
    "PhaseClock",
    "PhaseMark",
    "PhaseStats",
    "Progress",
    "RequestRecord",
    "SLOResult",
    "error_ratio_below",
    "latency_at_least",
    "load_run",
    "parse_duration",
]

#: The locustfile shipped with meshproof (the only module that imports locust).
LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtests" / "locustfile.py"
SHAPES = ("steady", "ramp", "spike", "step")
#: LoadConfig.users_class -> the locustfile's user classes
USER_CLASSES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"ingress": ("IngressUser",), "mesh": ("MeshUser",), "both": ("IngressUser", "MeshUser")}
)
#: The client workload in-mesh load is sent from (``meshproof send --from`` has the same default shape).
DEFAULT_CLIENT = "other-namespace/client"
DEFAULT_SERVICE: tuple[str, str, int] = ("microservice-1", "sample", 3000)
#: Phase of the requests sent before Locust reported its users spawned.
SPAWN_PHASE = "spawn"
#: Phase between "users spawned" and the first :meth:`LocustRun.phase` call.
FIRST_PHASE = "load"
#: A user that has logged no request for this long (a shape stopped it, or it is stuck) is not
#: waited for by :meth:`LocustRun.snapshot`.
QUIET_USER_S = 5.0

_SPAWNED = re.compile(r"All users spawned|Spawning is complete")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def parse_duration(text: str | float) -> float:
    """Seconds from ``90``, ``15s``, ``2m``, ``1h30m``, ``500ms``; UserError for anything else."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        raw = text.strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", raw):
            seconds = float(raw)
        elif raw and _DURATION.sub("", raw) == "":
            unit = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
            seconds = sum(float(n) * unit[u] for n, u in _DURATION.findall(raw))
        else:
            raise UserError(f"duration {text!r} does not parse. Fix: use e.g. 30s, 2m, 1h30m or 45 (seconds)")
    if not math.isfinite(seconds) or seconds < 0:
        raise UserError(f"duration {text!r} must be a non-negative number of seconds")
    return seconds


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class LoadConfig:
    """What Locust runs. ``duration_s`` 0 means until the run is stopped (the context exits)."""

    users: int = 10
    spawn_rate: float | None = None  # users started per second (default: all within a second)
    duration_s: float = 0.0
    shape: str = "steady"
    processes: int = 1  # > 1: Locust's --processes N (a master plus N forked workers)
    user_class: str = "ingress"  # ingress | mesh | both
    path: str = "/api/greet"
    headers: Mapping[str, str] = field(default_factory=dict)
    spawn_timeout: float = 60.0
    stop_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.users, int) or self.users < 1:
            raise UserError(f"users={self.users!r}: at least 1 user. Fix: --users 10")
        if self.spawn_rate is not None and not self.spawn_rate > 0:
            raise UserError(f"spawn rate {self.spawn_rate!r} must be > 0 users per second")
        if self.shape not in SHAPES:
            raise UserError(f"unknown load shape {self.shape!r}. Fix: use one of {', '.join(SHAPES)}")
        if self.shape != "steady" and self.duration_s <= 0:
            raise UserError(f"shape {self.shape!r} needs a duration to follow. Fix: add --duration, e.g. 60s")
        if self.duration_s < 0:
            raise UserError(f"duration {self.duration_s!r} must not be negative")
        if self.processes < 1:
            raise UserError(f"processes={self.processes!r}: at least 1")
        if self.user_class not in USER_CLASSES:
            raise UserError(
                f"unknown user class {self.user_class!r}. Fix: use one of {', '.join(USER_CLASSES)}"
            )
        if not self.path.startswith("/"):
            raise UserError(f"request path {self.path!r} must start with '/'")
        if not isinstance(self.headers, MappingProxyType):
            object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))

    @property
    def rate(self) -> float:
        return self.spawn_rate if self.spawn_rate is not None else float(self.users)


class _Mesh(Protocol):
    """The part of the Backend protocol a load target needs."""

    def ingress_url(self) -> str: ...

    def workload(self, ref: str) -> Workload: ...

    def service_url(self, service: str, namespace: str, port: int) -> str: ...


@dataclass(frozen=True)
class LoadTarget:
    """Where the load goes, from the running mesh: never hard-coded ports."""

    ingress_url: str = ""
    call_url: str = ""  # a client workload's /api/call (in-mesh load leaves through its sidecar)
    service_url: str = ""  # the service's in-mesh URL, as that client calls it

    @classmethod
    def from_mesh(
        cls, mesh: _Mesh, *, client: str = DEFAULT_CLIENT, service: tuple[str, str, int] = DEFAULT_SERVICE
    ) -> LoadTarget:
        """Targets of a running backend: its ingress, and ``client``'s /api/call to ``service``."""
        try:
            ingress = mesh.ingress_url()
        except UserError:
            ingress = ""
        call = ""
        try:
            w = mesh.workload(client)
        except UserError:
            pass
        else:
            call = w.app_url.rstrip("/") + "/api/call" if w.app_url else ""
        return cls(ingress, call, mesh.service_url(*service) if call else "")

    @classmethod
    def from_status(
        cls,
        doc: Mapping[str, Any],
        *,
        client: str = DEFAULT_CLIENT,
        service: tuple[str, str, int] = DEFAULT_SERVICE,
    ) -> LoadTarget:
        """Targets from ``meshproof status --json`` (for callers outside the harness process)."""
        ns, _, deployment = client.partition("/")
        call = ""
        for w in doc.get("workloads") or []:
            if (
                w.get("namespace") == ns
                and deployment in (w.get("deployment"), w.get("name"))
                and w.get("app_url")
            ):
                call = str(w["app_url"]).rstrip("/") + "/api/call"
                break
        name, namespace, port = service
        svc = f"http://{name}.{namespace}.svc.cluster.local:{port}" if call else ""
        return cls(str(doc.get("ingress_url") or ""), call, svc)

    def check(self, user_class: str) -> None:
        if user_class in ("ingress", "both") and not self.ingress_url:
            raise StateError("the mesh has no ingress gateway to send load through. Fix: --user-class mesh")
        if user_class in ("mesh", "both") and not (self.call_url and self.service_url):
            raise StateError(
                f"the mesh has no client workload ({DEFAULT_CLIENT}) to send in-mesh load from. "
                "Fix: --user-class ingress"
            )


# --------------------------------------------------------------------------- results


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
    workdir: Path = Path(),
) -> LoadReport:
    """Pure: the report of ``records`` split at ``phases`` (each request counts where it started)."""
    recs = tuple(sorted(records, key=lambda r: r.start))
    duration = max(ended_at - started_at, 1e-9)
    marks = [p if p.end is not None else PhaseMark(p.name, p.start, ended_at) for p in phases]
    phase_stats = []
    for m in marks:
        end = m.end if m.end is not None else ended_at
        inside = [r for r in recs if m.start <= r.start < end]
        phase_stats.append(_phase_stats(m.name, m.start - started_at, end - started_at, inside))
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
        workdir=workdir,
        records=recs,
    )


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


# --------------------------------------------------------------------------- phase SLOs (pure)


@dataclass(frozen=True)
class SLOResult:
    """A phase SLO's verdict; the same fields as :class:`harness.traffic.checks.CheckResult`
    (``suites/_support/load.py`` turns it into one for the evidence report). Truthy iff passed."""

    name: str
    passed: bool
    detail: str
    evidence: Mapping[str, object] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def __str__(self) -> str:
        return f"{self.name}: {self.verdict}\n{self.detail}"


def error_ratio_below(stats: PhaseStats, bound: float, alpha: float = 0.001) -> SLOResult:
    """The phase's error ratio is not above ``bound``, one-sided at false-failure rate ``alpha``.

    Fails only when even the Clopper-Pearson lower confidence bound of the error ratio exceeds
    ``bound``: a mesh whose true error ratio is at most ``bound`` fails with probability <= alpha,
    whatever the machine's speed (the verdict is on counts, not on time).
    """
    n, k = stats.requests, stats.failures
    lower = float(beta.ppf(alpha, k, n - k + 1)) if k > 0 else 0.0
    passed = n > 0 and lower <= bound
    return SLOResult(
        name=f"error_ratio_below({bound:g}, phase {stats.name})",
        passed=passed,
        detail=(
            f"phase {stats.name!r}: {k} of {n} requests failed ({100 * (k / n if n else 0):.2f}%), "
            f"status {dict(stats.by_status)}; lower {100 * (1 - alpha):g}% confidence bound of the error "
            f"ratio {lower:.4f} vs the allowed {bound:g}" + ("" if n else "; no requests in the phase")
        ),
        evidence={"requests": n, "failures": k, "lower_bound": lower, "bound": bound, "alpha": alpha},
    )


def latency_at_least(
    records: Sequence[RequestRecord], floor_ms: float, *, share: float = 0.5, what: str = "requests"
) -> SLOResult:
    """At least ``share`` of ``records`` took ``floor_ms`` or longer (e.g. p50 of delayed requests
    is above an injected delay). A lower bound on latency: slowness cannot make it fail."""
    n = len(records)
    slow = sum(1 for r in records if r.latency_ms >= floor_ms)
    lat = Latency.of([r.latency_ms for r in records])
    return SLOResult(
        name=f"latency_at_least({floor_ms:g} ms for {share:.0%} of {what})",
        passed=n > 0 and slow >= share * n,
        detail=(
            f"{slow} of {n} {what} took >= {floor_ms:g} ms (needed {share:.0%}); p50 {lat.p50_ms:.1f} ms, "
            f"p95 {lat.p95_ms:.1f} ms"
        ),
        evidence={"n": n, "at_least": slow, "p50_ms": lat.p50_ms},
    )


# --------------------------------------------------------------------------- the run


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Progress:
    """Live figures while Locust runs (from the event logs read so far)."""

    elapsed_s: float
    requests: int
    failures: int
    rps: float  # over the last few seconds
    phase: str

    @classmethod
    def of(
        cls, records: Sequence[RequestRecord], failures: int, *, started_at: float, now: float, phase: str
    ) -> Progress:
        """The figures of ``records`` (in the order read) at ``now``: rps over the last 3 s."""
        recent = [r for r in records[-5000:] if r.start >= now - 3.0]
        return cls(now - started_at, len(records), failures, len(recent) / 3.0, phase)


def users_past(newest: Mapping[str, float], cut: float, *, now: float) -> int | None:
    """How many Locust users (``newest``: each user's newest request start) logged a request started
    at or after ``cut``; None until every user has, or has been quiet for ``QUIET_USER_S`` (a user
    sends one request at a time: the requests before ``cut`` are then all logged)."""
    quiet_since = now - QUIET_USER_S
    if newest and all(t >= cut or t < quiet_since for t in newest.values()):
        return None
    return sum(t >= cut for t in newest.values())


class _Phased(Protocol):
    """What a phase needs of its run (LocustRun, or the in-cluster KubeLocustRun)."""

    @property
    def current_phase(self) -> str: ...

    @property
    def running(self) -> bool: ...

    def phase(self, name: str) -> _Phase: ...


class _Phase:
    """Returned by :meth:`LocustRun.phase`; as a context manager, leaving it starts ``after <name>``."""

    def __init__(self, run: _Phased, name: str) -> None:
        self._run, self.name = run, name

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._run.current_phase == self.name and self._run.running:
            self._run.phase(f"after {self.name}")


class PhaseClock:
    """Phases on the harness's clock, shared by both runners (:class:`LocustRun`, and
    :class:`~harness.load.kube_run.KubeLocustRun` inside a cluster): a subclass sets
    ``_phases``, ``_state`` and ``_wall``."""

    _phases: list[PhaseMark]
    _state: _State
    _wall: Callable[[], float]

    @property
    def running(self) -> bool:
        return self._state is _State.RUNNING

    @property
    def current_phase(self) -> str:
        return self._phases[-1].name if self._phases else ""

    def phase(self, name: str) -> _Phase:
        """End the current phase and start ``name`` now (names must be unique within a run)."""
        if not name or name in {p.name for p in self._phases}:
            raise ValueError(
                f"phase name {name!r} is empty or already used: {[p.name for p in self._phases]}"
            )
        if self._state is not _State.RUNNING:
            raise LoadError(f"cannot start phase {name!r}: the load is {self._state.value}")
        now = self._wall()
        last = self._phases[-1]
        self._phases[-1] = PhaseMark(last.name, last.start, now)
        self._phases.append(PhaseMark(name, now))
        return _Phase(self, name)


class LocustRun(PhaseClock):
    """Locust headless as a subprocess; a context manager. Reuse after stop is refused."""

    def __init__(
        self,
        config: LoadConfig,
        target: LoadTarget,
        *,
        workdir: Path,
        locustfile: Path = LOCUSTFILE,
        python: str = sys.executable,
        wall: Callable[[], float] = time.time,
    ) -> None:
        target.check(config.user_class)
        if not locustfile.is_file():
            raise UserError(f"locustfile {locustfile} does not exist. Fix: run from a meshproof checkout")
        self.config, self.target = config, target
        self.workdir = Path(workdir)
        self.locustfile = locustfile
        self._python = python
        self._wall = wall
        self._state = _State.NEW
        self._popen: subprocess.Popen[bytes] | None = None
        self._pgid = 0
        self._phases: list[PhaseMark] = []
        self._records: list[RequestRecord] = []
        self._offsets: dict[Path, int] = {}
        self._started_at = 0.0
        self._cpu_s = 0.0
        self._cpu_sampled_at = float("-inf")
        self._newest_start: dict[str, float] = {}  # per Locust user: the latest request start logged
        self._failures = 0
        self.run_id = f"mp-{uuid.uuid4().hex[:10]}"
        self.report: LoadReport | None = None

    # ---- paths
    @property
    def log_path(self) -> Path:
        return self.workdir / "locust.log"

    @property
    def events_dir(self) -> Path:
        return self.workdir / "events"

    @property
    def json_path(self) -> Path:
        return self.workdir / "locust.json"  # Locust appends ".json" to --json-file

    @property
    def stop_file(self) -> Path:
        return self.workdir / "stop"

    @property
    def exited(self) -> bool:
        """Whether the Locust master has exited (a run with a duration ends by itself)."""
        return self._popen is not None and self._popen.poll() is not None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def argv(self, master_port: int = 0) -> list[str]:
        c, t = self.config, self.target
        argv = [
            self._python,
            "-m",
            "locust",
            "-f",
            str(self.locustfile),
            "--headless",
            "--users",
            str(c.users),
            "--spawn-rate",
            f"{c.rate:g}",
            "--exit-code-on-error",
            "0",
            "--only-summary",
            "--loglevel",
            "INFO",
            "--stop-timeout",
            "5",
            "--json-file",
            str(self.workdir / "locust"),
            "--mp-shape",
            c.shape,
            "--mp-duration",
            f"{c.duration_s:g}",
            "--mp-ingress",
            t.ingress_url,
            "--mp-call",
            t.call_url,
            "--mp-service",
            t.service_url,
            "--mp-path",
            c.path,
            "--mp-run-id",
            self.run_id,
            "--mp-events",
            str(self.events_dir),
            "--mp-stop-file",
            str(self.stop_file),
        ]
        if c.headers:
            argv += ["--mp-header", json.dumps(dict(c.headers))]
        if c.processes > 1:
            port = str(master_port)
            argv += ["--processes", str(c.processes), "--master-bind-host", "127.0.0.1"]
            argv += ["--master-bind-port", port, "--master-host", "127.0.0.1", "--master-port", port]
        return argv + list(USER_CLASSES[c.user_class])

    # ---- lifecycle
    def start(self) -> Self:
        if self._state is not _State.NEW:
            raise LoadError(f"this LocustRun is {self._state.value}; start a new one")
        if find_spec("locust") is None:
            raise ToolMissing("locust", "meshproof load", "run ./scripts/setup (locust is a dependency)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.events_dir.mkdir(exist_ok=True)
        argv = self.argv(_free_port() if self.config.processes > 1 else 0)
        (self.workdir / "argv.json").write_text(json.dumps(argv))
        self._started_at = self._wall()
        self._phases = [PhaseMark(SPAWN_PHASE, self._started_at)]
        self._popen = proc.spawn(
            argv,
            log_path=self.log_path,
            new_session=True,
            die_with_parent=True,
            env={"PYTHONUNBUFFERED": "1"},
        )
        self._pgid = self._popen.pid
        self._state = _State.RUNNING
        try:
            wait.until(
                self._spawned,
                what=f"Locust to spawn {self.config.users} users (log {self.log_path})",
                timeout=self.config.spawn_timeout,
                interval=0.1,
                hint="the machine may be overloaded; see the log's last lines",
            )
        except BaseException as e:
            self._kill()
            self._state = _State.STOPPED
            tail = proc.tail(self.log_path, 15)
            if tail:
                e.add_note(f"Locust log ({self.log_path}):\n{tail}")
            raise
        if self.current_phase == SPAWN_PHASE:
            self.phase(FIRST_PHASE)
        return self

    def _spawned(self) -> bool:
        assert self._popen is not None
        text = _read_text(self.log_path)
        if _SPAWNED.search(text):
            return True
        code = self._popen.poll()
        if code is not None:
            raise LoadError(f"Locust exited {code} before spawning its users:\n{_locust_message(text)}")
        return False

    def progress(self) -> Progress:
        """Figures so far (reads the new lines of the event logs)."""
        self._read_events()
        self._sample_cpu()
        return Progress.of(
            self._records,
            self._failures,
            started_at=self._started_at,
            now=self._wall(),
            phase=self.current_phase,
        )

    def snapshot(self, *, settle_s: float = 1.0, timeout: float = 30.0) -> LoadReport:
        """The report so far, while the load keeps running: every phase up to now, the current one
        cut at this moment. Waits until each Locust user has logged a request that started
        ``settle_s`` after the last phase boundary: a user sends one request at a time, so every
        request of the closed phases is then logged, however slow it was (the event logs are
        flushed every 0.5 s). A user that has logged nothing for ``QUIET_USER_S`` (stopped by a
        shape, or stuck) is not waited for."""
        if self._state is not _State.RUNNING:
            if self.report is None:
                raise LoadError("snapshot() of a load that is not running")
            return self.report
        boundary = self._phases[-1].start

        def settled() -> bool:
            self._read_events()
            return users_past(self._newest_start, boundary + settle_s, now=self._wall()) is None

        wait.until(
            settled,
            what=f"every Locust process to log requests started {settle_s:g} s after the phase boundary",
            timeout=timeout,
            interval=0.1,
            hint="is the load still running? see the Locust log",
        )
        return build_report(
            self.config,
            self.target,
            self._records,
            self._phases,
            started_at=self._started_at,
            ended_at=self._wall(),
            request_id_prefix=self.run_id,
            locust_cpu_s=self._cpu_s,
            workdir=self.workdir,
        )

    def wait(self, timeout: float) -> int:
        """Block until Locust exits on its own (a run with a duration); returns its exit code."""
        assert self._popen is not None
        popen = self._popen

        def done() -> bool:
            self._sample_cpu()
            return popen.poll() is not None

        wait.until(
            done,
            what=f"Locust to finish its {self.config.duration_s:g} s run",
            timeout=timeout,
            interval=0.1,
        )
        return int(popen.returncode)

    def stop(self) -> LoadReport:
        """Ask Locust to stop, wait for its process group to be gone to be gone, read the results; idempotent."""
        if self.report is not None:
            return self.report
        if self._popen is None:
            raise LoadError("LocustRun.stop() before start()")
        ended_at = self._wall()
        popen = self._popen
        finished_alone = popen.poll() is not None  # a run with a duration ended by itself
        if not finished_alone:
            self._sample_cpu(now=True)
            self.stop_file.touch()
            if not self._exits_within(self.config.stop_timeout):
                popen.send_signal(signal.SIGINT)
                self._exits_within(5.0)
        self._kill()
        # Requests sent until Locust stopped belong to the last phase.
        last = self._last_activity()
        ended_at = last if finished_alone and self._records else max(ended_at, last)
        self._state = _State.STOPPED
        self._phases[-1] = PhaseMark(self._phases[-1].name, self._phases[-1].start, ended_at)
        self._read_events()
        text = _read_text(self.log_path)
        code = int(popen.returncode)
        if code != 0:
            raise LoadError(
                f"Locust exited {code} (2: an unhandled error in a user):\n{_locust_message(text)}"
            )
        if "Traceback (most recent call last)" in text:
            raise LoadError(f"Locust logged a traceback ({self.log_path}):\n{_locust_message(text)}")
        self.report = build_report(
            self.config,
            self.target,
            self._records,
            self._phases,
            started_at=self._started_at,
            ended_at=ended_at,
            request_id_prefix=self.run_id,
            locust_requests=_locust_total(self.json_path),
            locust_exit_code=code,
            locust_cpu_s=self._cpu_s,
            workdir=self.workdir,
        )
        (self.workdir / "report.json").write_text(json.dumps(self.report.to_json(), indent=2))
        return self.report

    def __enter__(self) -> Self:
        return self.start()  # start() cleans up a half-started run before re-raising

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and not isinstance(exc, Exception):  # Ctrl-C, SystemExit: just clean up
            self._kill()
            self._state = _State.STOPPED
            return
        try:
            self.stop()
        except Exception as e:
            if exc is None:
                raise
            exc.add_note(f"and stopping Locust failed too: {e}")

    # ---- internals
    def _kill(self) -> None:
        """SIGKILL whatever is left of the process group, and reap the master."""
        if self._pgid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._pgid, signal.SIGKILL)
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=10)
        if self._pgid:
            pgid = self._pgid
            wait.until(
                lambda: not _group_alive(pgid),
                what=f"the Locust process group {pgid} to be gone",
                timeout=10,
                interval=0.05,
            )

    def _sample_cpu(self, *, now: bool = False) -> None:
        """CPU seconds of the live group (its processes vanish at exit: sample while it runs).
        At most once a second unless ``now`` (finding the group scans /proc)."""
        if not now and time.monotonic() - self._cpu_sampled_at < 1.0:
            return
        if self._pgid and self._popen is not None and self._popen.poll() is None:
            self._cpu_s = max(self._cpu_s, _group_cpu_seconds(self._pgid))
            self._cpu_sampled_at = time.monotonic()

    def _exits_within(self, seconds: float) -> bool:
        popen = self._popen
        assert popen is not None
        try:
            wait.until(
                lambda: popen.poll() is not None, what="Locust to stop", timeout=seconds, interval=0.05
            )
        except WaitTimeout:
            return False
        return True

    def _read_events(self) -> None:
        for path in sorted(self.events_dir.glob("events-*.tsv")):
            offset = self._offsets.get(path, 0)
            try:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
            except OSError:
                continue
            cut = data.rfind(b"\n") + 1  # only complete lines; the rest is read next time
            self._offsets[path] = offset + cut
            for line in data[:cut].decode(errors="replace").splitlines():
                rec = RequestRecord.parse(line)
                if rec is not None:
                    self._records.append(rec)
                    self._failures += rec.failed
                    key = rec.request_id.rsplit("-", 1)[0]  # <run id>-<pid>.<user>: one Locust user
                    if rec.start > self._newest_start.get(key, 0.0):
                        self._newest_start[key] = rec.start

    def _last_activity(self) -> float:
        self._read_events()
        if not self._records:
            return self._wall()
        return max(r.start + r.latency_ms / 1000 for r in self._records)


class LoadRun(Protocol):
    """What :class:`LocustRun` (a local subprocess) and the in-cluster
    :class:`~harness.load.kube_run.KubeLocustRun` share: the API callers use."""

    config: LoadConfig
    target: LoadTarget
    run_id: str
    workdir: Path
    report: LoadReport | None

    @property
    def running(self) -> bool: ...

    @property
    def exited(self) -> bool: ...

    @property
    def current_phase(self) -> str: ...

    def start(self) -> Self: ...

    def phase(self, name: str) -> _Phase: ...

    def progress(self) -> Progress: ...

    def snapshot(self, *, settle_s: float = 1.0, timeout: float = 30.0) -> LoadReport: ...

    def wait(self, timeout: float) -> int: ...

    def stop(self) -> LoadReport: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class _Meshlike(_Mesh, Protocol):
    name: str


def load_run(config: LoadConfig, mesh: _Meshlike, *, workdir: Path, image: str = "") -> LoadRun:
    """The load run for ``mesh``'s backend: Locust as a local subprocess (local backend), or a Locust
    master and workers as Deployments inside the cluster (kind, existing: the load enters through the
    mesh from other-namespace; see :mod:`harness.load.kube_run`), with ``image`` if given
    (``MESHPROOF_LOCUST_IMAGE``: e.g. one built and loaded for a cluster that cannot pull)."""
    if mesh.name in ("kind", "existing"):
        from harness.load.kube_run import KubeLocustRun

        api = getattr(mesh, "api", None)
        if api is None:
            raise StateError(f"the {mesh.name} backend has no Kubernetes API connection (is the mesh up?)")
        image = image or str(getattr(mesh, "locust_image", "") or "")  # kind: the locally built one
        if image:
            return KubeLocustRun(config, api=api, workdir=workdir, image=image)
        return KubeLocustRun(config, api=api, workdir=workdir)
    return LocustRun(config, LoadTarget.from_mesh(mesh), workdir=workdir)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _locust_message(log: str, lines: int = 15) -> str:
    """The part of Locust's log that explains a failure: from the last traceback, else the tail."""
    at = log.rfind("Traceback (most recent call last)")
    text = log[at:] if at >= 0 else log
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


def _locust_total(path: Path) -> int:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return -1
    return sum(int(e.get("num_requests", 0)) for e in entries if isinstance(e, dict))


def _group_members(pgid: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields[2]: pgrp; state Z: a zombie
            pids.append(int(d.name))
    return pids


def _group_alive(pgid: int) -> bool:
    return bool(_group_members(pgid))


def _group_cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process in the group (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in _group_members(pgid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / ticks
