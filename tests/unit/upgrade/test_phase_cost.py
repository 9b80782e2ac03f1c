"""What a phase of an upgrade cost, from the load report's records (either runner's): requests,
failures, error-seconds and the longest gap without a successful response, in the report's JSON
and text (no mesh)."""

from __future__ import annotations

import pytest

from harness.load import LoadConfig, LoadTarget, PhaseMark, build_report
from harness.upgrade.report import Phase
from tests.unit.load.records import rec


def test_a_phase_of_the_load_report_carries_its_cost_into_the_upgrade_report() -> None:
    t0 = 5000.0
    recs = [rec(t0 + i * 0.05, latency=4) for i in range(40)]  # baseline: 0.00 .. 1.95
    # a proxy killed at 2.0 s: refused connections for 0.7 s, then the new one answers
    recs += [rec(t0 + 2.0 + i * 0.05, status=0, latency=1) for i in range(14)]
    recs += [rec(t0 + 2.7 + i * 0.05, latency=4) for i in range(20)]
    marks = [PhaseMark("baseline", t0, t0 + 2.0), PhaseMark("proxy sample/a-0", t0 + 2.0)]
    load = build_report(LoadConfig(), LoadTarget("http://x"), recs, marks, started_at=t0, ended_at=t0 + 9)
    base = Phase.of(load.phase("baseline"), "baseline", {"step_s": 0.0})
    hit = Phase.of(load.phase("proxy sample/a-0"), "data-plane")
    assert (base.requests, base.failures, base.error_seconds) == (40, 0, 0)
    assert base.longest_gap_s == pytest.approx(0.05)
    assert base.detail["step_s"] == 0.0 and base.detail["by_status"] == {"200": 40}
    assert (hit.requests, hit.failures, hit.error_seconds) == (34, 14, 1)
    assert hit.longest_gap_s == pytest.approx(0.704)  # 2.0 -> the first answer at 2.704
    doc = hit.as_json()
    assert doc["error_seconds"] == 1 and doc["longest_gap_s"] == pytest.approx(0.704)
