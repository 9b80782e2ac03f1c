"""The upgrade check's report: phases with request/failure counts, error-seconds and the longest
gap without a successful response (:meth:`Phase.of`, from either load runner's report), the
versions read from every proxy and istiod before and after, suite figures before vs after, config
differences per proxy, the verdict with its reasons; JSON, text and a chart."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.report.compare import BY_ID, SuiteComparison
from harness.upgrade.configdiff import Classified
from harness.upgrade.held import Held
from harness.upgrade.running import VersionReport

if TYPE_CHECKING:
    from harness.load import PhaseStats


@dataclass(frozen=True)
class Phase:
    name: str  # "baseline", "control-plane", "proxy sample/microservice-1-v1-0", "after", ...
    kind: str  # baseline | control-plane | data-plane | cleanup | after
    start_s: float  # seconds since the load started
    end_s: float
    requests: int  # requests the load generator completed in the phase
    failures: int  # of which failed (any non-2xx, connection error or timeout)
    detail: dict[str, Any] = field(default_factory=dict)  # what the step measured
    error_seconds: int = 0  # distinct wall-clock seconds in which a failure arrived
    longest_gap_s: float = 0.0  # the longest stretch without a successful response
    held: tuple[Held, ...] = ()  # connections held across the step (data-plane phases): their fate

    @classmethod
    def of(
        cls,
        stats: PhaseStats,
        kind: str,
        detail: Mapping[str, Any] | None = None,
        held: Sequence[Held] = (),
    ) -> Phase:
        """The phase of a load report (either runner's: :func:`harness.load.build_report`) with what
        its step measured: counts, error-seconds, longest gap, the load's rate and latency, and the
        fate of the connections held across it (:mod:`harness.upgrade.held`)."""
        return cls(
            stats.name,
            kind,
            stats.start_s,
            stats.end_s,
            stats.requests,
            stats.failures,
            {
                **(detail or {}),
                "rps": round(stats.rps, 1),
                "p50_ms": stats.latency.p50_ms,
                "p95_ms": stats.latency.p95_ms,
                "p99_ms": stats.latency.p99_ms,
                "by_status": {str(k): v for k, v in stats.by_status.items()},
            },
            stats.error_seconds,
            stats.longest_gap_s,
            tuple(held),
        )

    @property
    def wall_s(self) -> float:
        return round(self.end_s - self.start_s, 3)

    def as_json(self) -> dict[str, Any]:
        return {
            "phase": self.name,
            "kind": self.kind,
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "wall_s": self.wall_s,
            "requests": self.requests,
            "failures": self.failures,
            "error_seconds": self.error_seconds,
            "longest_gap_s": round(self.longest_gap_s, 3),
            "held": [h.as_json() for h in self.held],
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Point:
    t: float  # the bin's start, seconds since the load started (harness.load.bins)
    requests: int  # started in the bin
    failures: int
    width_s: float = 1.0


@dataclass(frozen=True)
class UpgradeReport:
    from_label: str
    to_label: str
    mode: str
    backend: str
    users: int
    max_failures: int  # the bound: a phase may lose at most this many requests
    phases: tuple[Phase, ...]
    suites: SuiteComparison | None  # None: not run (--no-suites)
    config: Classified
    versions: VersionReport
    timeline: tuple[Point, ...] = ()
    chart: str = ""
    wall_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # install, up, suites before/after ...
    load_tool: str = ""

    @property
    def reasons(self) -> list[str]:
        out = [
            f"phase {p.name}: {p.failures} of {p.requests} requests failed (bound {self.max_failures})"
            for p in self.phases
            if p.failures > self.max_failures
        ]
        if not self.phases or sum(p.requests for p in self.phases) == 0:
            out.append("no load ran: nothing shows that no request failed")
        out += self.versions.reasons
        if self.suites is not None:
            out += self.suites.reasons
        out += [f"config difference not allowed: {d.summary}" for d in self.config.unexpected]
        return out

    @property
    def passed(self) -> bool:
        return not self.reasons

    def as_json(self) -> dict[str, Any]:
        return {
            "from": self.from_label,
            "to": self.to_label,
            "mode": self.mode,
            "backend": self.backend,
            "users": self.users,
            "load_tool": self.load_tool,
            "verdict": "PASS" if self.passed else "FAIL",
            "reasons": self.reasons,
            "bound": {
                "max_failures_per_phase": self.max_failures,
                "config": "every difference covered by a reviewed allowance of this release pair",
                "suites": "every check ran before and after and reaches its expected verdict after the upgrade",
                "versions": "every proxy and istiod runs FROM's build before and TO's after (read from them)",
            },
            "phases": [p.as_json() for p in self.phases],
            "totals": {
                "requests": sum(p.requests for p in self.phases),
                "failures": sum(p.failures for p in self.phases),
                "error_seconds": sum(p.error_seconds for p in self.phases),
                "longest_gap_s": round(max((p.longest_gap_s for p in self.phases), default=0.0), 3),
            },
            "versions": self.versions.as_json(),
            "suites": {"ran": False} if self.suites is None else {"ran": True, **self.suites.as_json()},
            "config_diff": self.config.as_json(),
            "timeline": [[round(p.t, 3), p.requests, p.failures, round(p.width_s, 4)] for p in self.timeline],
            "chart": self.chart,
            "wall_s": round(self.wall_s, 3),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }

    def text(self) -> str:
        lines = [
            f"upgrade {self.from_label} -> {self.to_label} ({self.mode}, {self.backend} backend, "
            f"{self.users} users, {self.load_tool})",
            "",
            f"{'phase':<44} {'wall s':>7} {'requests':>9} {'failed':>7} {'err-s':>6} {'gap s':>6}",
        ]
        lines += [
            f"{p.name:<44} {p.wall_s:>7.2f} {p.requests:>9} {p.failures:>7} {p.error_seconds:>6} "
            f"{p.longest_gap_s:>6.2f}"
            for p in self.phases
        ]
        lines.append(
            "err-s: distinct seconds in which a request failed; gap s: the longest stretch without a "
            "successful response"
        )
        held = [(p, h) for p in self.phases for h in p.held]
        if held:
            lines.append("connections held across each proxy restart (shown, never decided):")
            lines += [f"  {p.name:<42} {h.summary}" for p, h in held]
        lines.append("")
        v = self.versions
        lines.append(
            f"versions read from the mesh: expected {v.expected_from.label} (Envoy {v.expected_from.envoy}) "
            f"before, {v.expected_to.label} (Envoy {v.expected_to.envoy}) after"
        )
        for snap in (v.before, v.after):
            istiods = ", ".join(f"{c.revision} {c.istio_version or '?'}" for c in snap.control_planes)
            kinds: dict[str, int] = {}
            for p in snap.proxies:
                kinds[p.short] = kinds.get(p.short, 0) + 1
            proxies = ", ".join(f"{n} x {k}" for k, n in kinds.items())
            lines.append(f"  {snap.when}: istiod {istiods}; proxies {proxies}")
        if self.suites is not None:
            s = self.suites
            ok = sum(1 for c in s.checks if c.ok)
            lines.append(
                f"suites: {ok}/{len(s.checks)} checks as expected after the upgrade, "
                f"{s.paired} paired before/after"
            )
            lines.append(("  " if s.matched_on == BY_ID else "  warning: ") + s.note)
            lines += [f"  {r}" for r in s.reasons]
        else:
            lines.append("suites: not run (--no-suites)")
        cfg = self.config
        lines.append(
            f"config: {cfg.proxies} proxies, {cfg.resources} resources compared; "
            f"{len(cfg.allowed)} allowed differences, {len(cfg.unexpected)} unexpected"
        )
        lines += [f"  {d.summary}" for d in cfg.unexpected[:20]]
        if self.chart:
            lines.append(f"chart: {self.chart}")
        lines.append("")
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"{verdict} in {self.wall_s:.1f}s")
        lines += [f"  {r}" for r in self.reasons]
        return "\n".join(lines)


def chart(phases: Sequence[Phase], timeline: Sequence[Point], path: Path, title: str) -> Path:
    """Requests and failures per second over the upgrade, in the load report's time bins (every phase
    boundary a bin edge), each phase shaded and named, its figures in a table below."""
    from harness.load.chart import Panel, Span, bin_note, draw_timeline

    colors = {
        "baseline": ("#e4e4e4", "#d4d4d4"),
        "control-plane": ("#f8d6a5", "#f4c27a"),
        "data-plane": ("#cfe4f1", "#a9cfe6"),
        "cleanup": ("#ddd1f0", "#c7b3e5"),
        "after": ("#d5ebc8", "#c7e9c0"),
    }
    edges = [p.t for p in timeline] + ([timeline[-1].t + timeline[-1].width_s] if timeline else [])
    spans = [
        Span(
            p.name,
            p.start_s,
            p.end_s,
            p.requests,
            p.failures,
            p.detail.get("p50_ms"),
            p.detail.get("p95_ms"),
            colors.get(p.kind, ("#eeeeee", "#e0e0e0"))[i % 2],  # neighbours of one kind alternate
        )
        for i, p in enumerate(phases)
    ]
    rate = [
        Panel("requests / s", [p.requests / p.width_s for p in timeline], "#08519c"),
        Panel("failures / s", [p.failures / p.width_s for p in timeline], "#cb181d"),
    ]
    return draw_timeline(
        path,
        edges=edges,
        panels=rate,
        spans=spans,
        title=title,
        xlabel="seconds since load start",
        note=bin_note([p.width_s for p in timeline]),
    )
