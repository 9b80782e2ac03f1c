"""Helpers for the under-load suites: phases of the background load and their checks.

The load is Locust's (a subprocess, :class:`harness.load.LocustRun`), never the sampler's: its
per-request records say when each request started, what it got and which pod answered, so a
phase of the load is a sample like any other, only sent by many concurrent users.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from harness import wait
from harness.load import LoadReport, LocustRun, RequestRecord
from harness.traffic import stats
from harness.traffic.checks import CheckResult
from harness.traffic.design import Design
from harness.traffic.split import Attribution


def collect(
    load: LocustRun, name: str, *, requests: int = 0, seconds: float = 0.0, timeout: float = 120.0
) -> LoadReport:
    """Run phase ``name`` until it holds ``requests`` requests and lasted ``seconds``; then start
    ``after <name>`` and return the snapshot once every user has moved past the phase (it is then
    complete, slow requests included: :meth:`LocustRun.snapshot`)."""
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
    return load.snapshot(settle_s=0.0)


#: Load requests between two looks of a sequential check on the load (a look costs a snapshot).
LOOK_EVERY = 320


@dataclass(frozen=True)
class SequentialLoad:
    """What a sequential check on the load used: the records it looked at (in the order they
    started), each plan's verdict, the looks, and for the plans judged on Envoy's counters the
    ``(hits, trials)`` Envoy counted over all the looks."""

    records: list[RequestRecord]
    verdicts: dict[str, stats.SequentialVerdict]
    looks: int
    seconds: float
    counted: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def notes(self, users: int) -> str:
        rate = len(self.records) / self.seconds if self.seconds > 0 else 0.0
        return (
            f"Locust {users} users: {len(self.records)} req in {self.seconds:.1f}s ({rate:.0f}/s), "
            f"{self.looks} looks"
        )


#: Cumulative ``(hits, trials)`` per counted plan, from one read of the proxy that decides.
Counts = Callable[[], Mapping[str, tuple[int, int]]]


def sequential_on_load(
    load: LocustRun,
    name: str,
    plans: Mapping[str, stats.SequentialPlan],
    classify: Callable[[str, RequestRecord], str],
    *,
    counts: Counts | None = None,
    look_every: int = LOOK_EVERY,
    timeout: float = 120.0,
    after: str = "",
) -> SequentialLoad:
    """Phases ``<name> 1``, ``<name> 2``, ... of about ``look_every`` load requests each; after
    each one closes, every plan that has not decided observes its requests (``classify(plan,
    record)`` -> a category of the plan), until all have decided or the largest ``max_n`` is used.

    A phase is looked at only once every Locust user has logged a request started after it
    (``snapshot(settle_s=0)``): a user sends one request at a time, so the phase is then
    complete, slow requests included, and its requests are judged in the order they started.
    Looking after any number of requests keeps the SPRTs' error bounds
    (:mod:`harness.traffic.stats`). The phase after the looks is ``after`` (default ``after <name>``).

    Plans named in ``counts()`` are judged on the Envoy counters it reads instead of on records:
    each look observes the counters' movement since the previous read (``hits``, ``trials -
    hits``). The first read is taken before phase 1 starts and each later one after the phase's
    requests have all finished, so every judged record started after the first read and ended
    before the last: the records are a subset of the requests Envoy counted in between."""
    states = {what: plan.start() for what, plan in plans.items()}
    max_n = max(plan.max_n for plan in plans.values())
    used: list[RequestRecord] = []
    last = first = dict(counts()) if counts else {}
    k = 1
    t0 = time.perf_counter()
    load.phase(f"{name} {k}")
    while not all(st.decided for st in states.values()) and len(used) < max_n:
        start = load.progress().requests
        wait.until(
            lambda: load.progress().requests - start >= look_every,  # noqa: B023 - read at once
            what=f"{look_every} load requests in phase {name} {k}",
            timeout=timeout,
            interval=0.05,
            hint="is the load failing to reach the mesh? see the Locust log in the test's tmp dir",
        )
        k += 1
        load.phase(f"{name} {k}")
        batch = sorted(load.snapshot(settle_s=0.0).in_phase(f"{name} {k - 1}"), key=lambda r: r.start)
        used += batch
        now = dict(counts()) if counts else {}
        for what, st in states.items():
            if st.decided:
                continue
            if what in now:
                hits = now[what][0] - last[what][0]
                trials = now[what][1] - last[what][1]
                states[what] = st.observe({"hit": hits, "miss": trials - hits})
            else:
                states[what] = st.observe(Counter(classify(what, r) for r in batch))
        last = now
    load.phase(after or f"after {name}")
    return SequentialLoad(
        used,
        {what: st.verdict() for what, st in states.items()},
        k - 1,
        time.perf_counter() - t0,
        {what: (last[what][0] - first[what][0], last[what][1] - first[what][1]) for what in last},
    )


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
        evidence={
            "verdict": verdict,
            "summary": verdict.summary(),
            "counts": dict(counts),
            "non_200": non_200,
        },
    )


def errors_at_most(
    stats_: Sequence[RequestRecord], bound: int, *, why: str, name: str, key: str = ""
) -> CheckResult:
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
        key=key,
    )


def load_notes(report: LoadReport, phase: str) -> str:
    p = report.phase(phase)
    return (
        f"Locust {report.config.users} users: {p.requests} req in {p.seconds:.1f}s ({p.rps:.0f}/s), "
        f"p50 {p.latency.p50_ms:.0f} ms, p95 {p.latency.p95_ms:.0f} ms"
    )
