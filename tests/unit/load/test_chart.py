"""harness.load.chart: the background chart worker."""

from __future__ import annotations

from pathlib import Path

from harness.load.config import LoadConfig, LoadTarget
from harness.load.report import PhaseMark, build_report
from tests.unit.load.records import rec as _rec


def test_chart_worker_draws_in_the_background_and_reports_missing_charts(tmp_path: Path) -> None:
    from harness.load.chart import ChartWorker

    t0 = 1000.0
    recs = [_rec(t0 + i * 0.1, status=503 if i % 5 == 0 else 200) for i in range(30)]
    report = build_report(
        LoadConfig(), LoadTarget("http://x"), recs, [PhaseMark("p", t0)], started_at=t0, ended_at=t0 + 3
    )
    with ChartWorker(tmp_path / "w") as worker:
        a = worker.submit(report, tmp_path / "a" / "load.png")
        b = worker.submit(report, tmp_path / "b" / "load.png", title="second")
    assert a.read_bytes()[:4] == b"\x89PNG" and b.is_file()
    assert ChartWorker(tmp_path / "unused").close() == []  # never started: nothing to wait for
    worker = ChartWorker(tmp_path / "w2")
    worker.submit(report, Path("/proc/no/such/dir/load.png"))
    problems = worker.close()
    assert len(problems) == 1 and "load charts not written" in problems[0] and "/proc/no/such" in problems[0]
