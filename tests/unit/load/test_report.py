"""harness.load.report: request records split at the phase boundaries into a LoadReport (pure)."""

from __future__ import annotations

import pytest

from harness.load.config import LoadConfig, LoadTarget
from harness.load.report import PhaseMark, RequestRecord, build_report
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
