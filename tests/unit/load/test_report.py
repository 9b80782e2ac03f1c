"""harness.load.report: request records split at the phase boundaries into a LoadReport (pure)."""

from __future__ import annotations

import pytest

from harness.load.config import LoadConfig, LoadTarget
from harness.load.report import PhaseMark, RequestRecord, build_report, error_seconds, longest_gap
from tests.unit.load.records import rec as _rec


def test_report_splits_phases_by_request_start() -> None:
    t0 = 1000.0
    recs = [_rec(t0 + 0.5 + i * 0.1) for i in range(20)]  # 1000.5 .. 1002.4: phase "load"
    recs += [
        _rec(t0 + 3.0 + i * 0.1, status=503 if i % 2 else 200, latency=300) for i in range(10)
    ]  # "fault"
    recs += [_rec(t0 + 4.5, pod="p2", version="v2")]  # "after fault"
    phases = [
        PhaseMark("spawn", t0, t0 + 0.4),
        PhaseMark("load", t0 + 0.4, t0 + 3.0),
        PhaseMark("fault", t0 + 3.0, t0 + 4.0),
        PhaseMark("after fault", t0 + 4.0),
    ]
    r = build_report(LoadConfig(), LoadTarget("http://x"), recs, phases, started_at=t0, ended_at=t0 + 5.0)
    assert (r.requests, r.failures) == (31, 5)
    assert dict(r.by_status) == {200: 26, 503: 5}
    assert [p.requests for p in r.phases] == [0, 20, 10, 1]
    fault = r.phase("fault")
    assert dict(fault.by_status) == {200: 5, 503: 5}
    assert fault.error_ratio == 0.5 and fault.latency.p50_ms == 300.0
    assert dict(r.phase("after fault").versions) == {"v2": 1}
    assert sum(b.requests for b in r.series) == 31  # the time bins: see tests/unit/load/test_bins.py
    assert {b.phase for b in r.series if b.failures} == {"fault"}
    assert len(r.in_phase("fault")) == 10
    doc = r.to_json()
    assert doc["phases"][2]["by_status"] == {"200": 5, "503": 5}
    assert doc["requests"] == 31 and doc["failures"] == 5
    with pytest.raises(KeyError, match="no phase 'nope'"):
        r.phase("nope")
    assert "fault" in r.summary()


def test_request_record_parse_skips_partial_lines() -> None:
    line = "1700000000.5\t12.5\t200\tingress /api/greet\tp1\tv1\tmp-x-1-1\t\n"
    assert RequestRecord.parse(line) == RequestRecord(
        1700000000.5, 12.5, 200, "ingress /api/greet", "p1", "v1", "mp-x-1-1", ""
    )
    assert RequestRecord.parse("1700000000.5\t12") is None
    assert RequestRecord.parse("x\ty\tz\ta\tb\tc\td\te") is None


# ---- what an outage cost: error-seconds and the longest gap without a success -----------------


def test_error_seconds_counts_distinct_wall_clock_seconds_of_failures() -> None:
    t0 = 2000.0
    burst = [_rec(t0 + 0.1 + i * 0.01, status=503, latency=5) for i in range(40)]  # all in 2000.x
    assert error_seconds(burst) == 1
    spread = [_rec(t0 + s, status=0, latency=1) for s in (0.2, 3.5, 7.9)]
    assert error_seconds(spread) == 3
    assert error_seconds([_rec(t0 + s) for s in range(10)]) == 0  # successes cost nothing
    # by when the failure arrived (start + latency): a timeout sent in 2000 arrives in 2002
    assert error_seconds([_rec(t0 + 0.5, status=0, latency=2000.0), _rec(t0 + 2.2, status=503)]) == 1


def test_longest_gap_is_measured_between_successful_answers_and_the_edges() -> None:
    assert longest_gap([1.0, 2.0, 2.5, 6.0, 6.5], 0.0, 7.0) == 3.5  # 2.5 -> 6.0
    assert longest_gap([1.0, 2.0], 0.0, 10.0) == 8.0  # from the last answer to the end
    assert longest_gap([9.0, 9.5], 0.0, 10.0) == 9.0  # from the start: a phase opening in an outage
    assert longest_gap([], 3.0, 5.0) == 2.0  # no success at all: the whole interval
    assert longest_gap([4.0, 1.0, 3.0], 0.0, 5.0) == 2.0  # any order; answers outside are ignored
    assert longest_gap([1.0], 5.0, 5.0) == 0.0


def test_report_gives_each_phase_its_error_seconds_and_longest_gap() -> None:
    # an injected clock: one answer every 0.1 s, then 1.2 s of failures in phase "restart", then
    # answers again; the load's first request and last answer bound the gaps (not Locust's stop)
    t0 = 1000.0
    recs = [_rec(t0 + i * 0.1, latency=10) for i in range(20)]  # answers 1000.01 .. 1001.91
    recs += [_rec(t0 + 2.0 + i * 0.1, status=0, latency=5) for i in range(12)]  # 1002.0 .. 1003.1
    recs += [_rec(t0 + 3.2 + i * 0.1, latency=10) for i in range(10)]  # answers 1003.21 .. 1004.11
    phases = [
        PhaseMark("baseline", t0 - 1.0, t0 + 2.0),
        PhaseMark("restart", t0 + 2.0, t0 + 4.0),
        PhaseMark("after", t0 + 4.0),
    ]
    r = build_report(LoadConfig(), LoadTarget("http://x"), recs, phases, started_at=t0 - 1, ended_at=t0 + 30)
    base, restart, after = r.phases
    assert (base.failures, base.error_seconds) == (0, 0)
    assert base.longest_gap_s == pytest.approx(0.1)  # from the first request, not from t0 - 1
    assert (restart.failures, restart.error_seconds) == (12, 2)  # failures in 1002.x and 1003.x
    assert restart.longest_gap_s == pytest.approx(3.21 - 2.0)  # the phase's start to the first success
    assert after.longest_gap_s == pytest.approx(0.1)  # to the last answer (1004.11), not to the stop
    doc = r.to_json()["phases"][1]
    assert doc["error_seconds"] == 2 and doc["longest_gap_s"] == pytest.approx(1.21)
