"""Helpers for the under-load suites: phases of the background load and their checks.

The load is Locust's (a subprocess, :class:`harness.load.LocustRun`), never the sampler's: its
per-request records say when each request started, what it got and which pod answered, so a
phase of the load is a sample like any other, only sent by many concurrent users.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from harness import wait
from harness.load import LoadReport, LocustRun, RequestRecord, SLOResult
from harness.traffic import stats
from harness.traffic.checks import CheckResult
from suites._support.design import Design
from suites._support.routing import Attribution


def as_check(slo: SLOResult) -> CheckResult:
    return CheckResult(slo.name, slo.passed, slo.detail, slo.evidence)


def collect(
    load: LocustRun, name: str, *, requests: int = 0, seconds: float = 0.0, timeout: float = 120.0
) -> LoadReport:
    """Run phase ``name`` until it holds ``requests`` requests and lasted ``seconds``; then start
    ``after <name>`` and return the settled snapshot (the phase complete)."""
    load.phase(name)
    start = load.progress()
    users = load.config.users

    def enough() -> bool:
        p = load.progress()
        return (
            p.requests - start.requests >= requests + 2 * users and p.elapsed_s - start.elapsed_s >= seconds
        )

    wait.until(
        enough,
        what=f"{requests} requests and {seconds:g} s of load in phase {name!r}",
        timeout=timeout,
        interval=0.1,
        hint="is the load failing to reach the mesh? see the Locust log in the test's tmp dir",
    )
    load.phase(f"after {name}")
    return load.snapshot()


def wait_while_loaded(load: LocustRun, seconds: float) -> None:
    """Let the load run ``seconds`` longer (a window of traffic, measured on the load's own clock)."""
    until = load.progress().elapsed_s + seconds
    wait.until(
        lambda: load.progress().elapsed_s >= until, what=f"{seconds:g} s of load", timeout=seconds + 30
    )


def split_of_load(
    records: Sequence[RequestRecord],
    who: Attribution,
    expected: Mapping[str, float],
    design: Design,
    *,
    what: str,
) -> CheckResult:
    """The load's 200s split over the routed destinations as configured, and all were 200s."""
    counts: Counter[str] = Counter()
    for r in records:
        if r.status == 200 and r.pod:
            counts[who.pod_category.get(r.pod, f"{r.pod} (in no routed destination)")] += 1
    verdict = stats.check_weights(
        expected, dict(counts), alpha=design.alpha, power=design.power, min_deviation=design.min_deviation
    )
    non_200 = len(records) - sum(counts.values())
    detail = verdict.table()
    if non_200:
        status = Counter(r.status for r in records)
        detail += (
            f"\nnote: {non_200} of {len(records)} load requests were not a 200 from the app: {dict(status)}"
        )
    split = "/".join(f"{k}={v:g}" for k, v in expected.items())
    return CheckResult(
        name=f"split_under_load({split}) {what}",
        passed=verdict.passed and non_200 == 0,
        detail=detail,
        evidence={"summary": verdict.summary(), "counts": dict(counts)},
    )


def errors_at_most(stats_: Sequence[RequestRecord], bound: int, *, why: str, name: str) -> CheckResult:
    """A count bound on failed load requests (deterministic, derived from the configuration)."""
    failed = [r for r in stats_ if r.failed]
    status = Counter(r.status for r in stats_)
    return CheckResult(
        name=name,
        passed=len(stats_) > 0 and len(failed) <= bound,
        detail=(
            f"{len(failed)} of {len(stats_)} load requests failed (status {dict(sorted(status.items()))}); "
            f"allowed at most {bound}: {why}" + ("" if stats_ else "; no load requests in the window")
        ),
        evidence={"failed": len(failed), "requests": len(stats_), "bound": bound},
    )


def load_notes(report: LoadReport, phase: str) -> str:
    p = report.phase(phase)
    return (
        f"Locust {report.config.users} users: {p.requests} req in {p.seconds:.1f}s ({p.rps:.0f}/s), "
        f"p50 {p.latency.p50_ms:.0f} ms, p95 {p.latency.p95_ms:.0f} ms"
    )
