"""harness.load.slo: phase SLO verdicts on counts and latencies (pure)."""

from __future__ import annotations

from harness.load.config import LoadConfig, LoadTarget
from harness.load.report import PhaseMark, build_report
from harness.load.slo import error_ratio_below, latency_at_least
from tests.unit.load.records import rec as _rec


def test_error_ratio_below_is_one_sided_on_counts() -> None:
    t0 = 0.0

    def phase(n: int, k: int):  # type: ignore[no-untyped-def]
        recs = [_rec(t0 + i * 0.001, status=503 if i < k else 200) for i in range(n)]
        return build_report(
            LoadConfig(), LoadTarget("http://x"), recs, [PhaseMark("p", t0)], started_at=t0, ended_at=t0 + 1
        ).phase("p")

    assert error_ratio_below(phase(1000, 0), 0.0)
    assert error_ratio_below(phase(1000, 12), 0.01)  # 1.2% observed: not significantly above 1%
    assert not error_ratio_below(phase(1000, 40), 0.01)  # 4%: far above
    assert not error_ratio_below(phase(1000, 1), 0.0)  # any error breaks a zero bound
    assert not error_ratio_below(phase(0, 0), 0.5)  # no requests: no evidence


def test_latency_at_least() -> None:
    slow = [_rec(float(i), latency=210.0 + i) for i in range(10)]
    fast = [_rec(float(i), latency=5.0) for i in range(10)]
    assert latency_at_least(slow, 200)
    assert not latency_at_least(fast, 200)
    assert not latency_at_least([], 200)
