"""The time bins every chart draws (harness.load.bins), through build_report: tests on the binned
series, not on pixels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.load.bins import MIN_BIN_S, bin_edges, bin_series, bin_width
from harness.load.chart import plot_report_json, stagger
from harness.load.config import LoadConfig, LoadTarget
from harness.load.report import LoadReport, PhaseMark, RequestRecord, build_report

T0 = 1_796_000_000.0  # unix seconds, as the locustfile logs them


def _report(records: list[RequestRecord], marks: list[tuple[str, float]], end: float) -> LoadReport:
    phases = [
        PhaseMark(name, T0 + start, T0 + (marks[i + 1][1] if i + 1 < len(marks) else end))
        for i, (name, start) in enumerate(marks)
    ]
    return build_report(
        LoadConfig(), LoadTarget("http://x"), records, phases, started_at=T0, ended_at=T0 + end
    )


def _steady(
    end: float, *, every: float = 0.01, failing: tuple[float, float] = (0.0, 0.0)
) -> list[RequestRecord]:
    """One request every ``every`` s (mid-slot), failing (503) iff it starts in ``failing``."""
    out = []
    for k in range(round(end / every)):
        t = (k + 0.5) * every
        bad = failing[0] <= t < failing[1]
        out.append(
            RequestRecord(T0 + t, 20.0 + (300 if bad else 0), 503 if bad else 200, "ingress /api/greet")
        )
    return out


def test_errors_inside_a_phase_stay_in_its_bins() -> None:
    """The outlier suite's shape: the fault at 1.75 s, every request from then on fails (up to the
    last one before the boundary: nothing of phase "fault" may leak into a bin of "load")."""
    marks = [("spawn", 0.0), ("load", 0.9), ("fault", 1.75), ("after fault", 3.2)]
    recs = _steady(5.0, every=0.001, failing=(1.75, 3.2))
    recs.append(RequestRecord(T0 + 1.75 - 1e-6, 20.0, 200, "x"))  # the last request of "load"
    recs.append(RequestRecord(T0 + 1.75, 320.0, 503, "x"))  # the first of "fault"
    r = _report(recs, marks, 5.0)
    fault = r.phase("fault")  # 1.75-3.2 s on the unix clock: 3.2 is 3.20000005 s after T0
    assert fault.failures == fault.requests > 0
    for b in r.series:
        assert (b.phase == "fault") == (fault.start_s <= b.t and b.end_s <= fault.end_s), b
        if b.phase != "fault":
            assert b.failures == 0, b
            assert b.p95_ms == 20.0, b  # no slow faulted request either
        else:
            assert b.failures == b.requests > 0, b
    # every bin lies in one phase, and a phase's bins add up to its figures
    for p in r.phases:
        mine = [b for b in r.series if b.phase == p.name]
        assert all(p.start_s - 1e-9 <= b.t and b.end_s <= p.end_s + 1e-9 for b in mine)
        assert sum(b.requests for b in mine) == p.requests
        assert sum(b.failures for b in mine) == p.failures
    assert sum(b.requests for b in r.series) == r.requests


def test_negative_control_whole_second_bins_mix_the_phases() -> None:
    """Negative control of the test above: the same records in whole-second bins (the old series)
    put failures of "fault" into the bin 1-2 s, which the check above would see in phase "load"."""
    recs = _steady(5.0, failing=(1.75, 5.0))
    bins = bin_series(
        [x.start - T0 for x in recs],
        [x.latency_ms for x in recs],
        [x.failed for x in recs],
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        phases=[("load", 0.0, 1.75), ("fault", 1.75, 5.0)],
    )
    assert bins[1].phase == "load" and bins[1].failures == 25


@pytest.mark.parametrize("boundary", [1.75, 1.7, 1.74, 1.76, 0.001, 4.999, 2.0])
def test_a_phase_boundary_is_a_bin_edge(boundary: float) -> None:
    r = _report(_steady(5.0), [("load", 0.0), ("fault", boundary)], 5.0)
    edge = r.phase("fault").start_s  # the boundary on the unix clock, minus the start: ~1e-7 off
    assert edge == pytest.approx(boundary, abs=1e-6)
    assert edge in [b.t for b in r.series]
    w = bin_width(5.0)
    for b in r.series:  # no sliver: a bin beside a boundary is between half and 1.5 widths
        assert b.width_s >= min(w / 2, edge, 5.0 - edge) - 1e-9
        assert b.width_s <= 1.5 * w + 1e-9
    doc = r.to_json()
    for p in doc["phases"]:
        for edge in (p["start_s"], p["end_s"]):
            assert any(abs(s["t"] - edge) < 0.002 for s in doc["series"]) or edge == doc["duration_s"]


@pytest.mark.parametrize(
    ("seconds", "width"), [(5.0, 0.1), (6.4, 0.1), (30.0, 0.5), (600.0, 10.0), (3600.0, 60.0)]
)
def test_any_run_length_gives_a_readable_number_of_bins(seconds: float, width: float) -> None:
    assert bin_width(seconds) == width
    r = _report(_steady(seconds, every=0.05), [("spawn", 0.0), ("load", 0.9), ("fault", 1.75)], seconds)
    assert 40 <= len(r.series) <= 80, len(r.series)
    assert r.series[0].t == 0.0 and r.series[-1].end_s == pytest.approx(seconds)
    assert all(b.end_s == pytest.approx(n.t) for b, n in zip(r.series, r.series[1:], strict=False))


def test_short_runs_keep_the_minimum_width() -> None:
    assert bin_width(1.0) == MIN_BIN_S
    assert bin_width(0.0) == MIN_BIN_S
    assert bin_edges(0.07) == [0.0, 0.07]  # shorter than 1.5 bins: one bin of its own length
    assert bin_edges(0.12) == [0.0, 0.05, 0.12]
    edges = bin_edges(1.0, [0.51, 0.52])  # a 10 ms phase is one bin of 10 ms; no sliver beside it
    assert edges[8:14] == [0.4, 0.45, 0.51, 0.52, 0.55, 0.6] and len(edges) == 22


def test_a_partial_last_bin_keeps_its_rate() -> None:
    """100 requests per second throughout, a run of 6.33 s cut mid-bin and phases mid-bin: every
    bin, the last and those beside the boundaries included, reads 100 req/s (no drop)."""
    r = _report(_steady(6.33), [("spawn", 0.0), ("load", 0.93), ("fault", 1.75), ("after fault", 2.31)], 6.33)
    assert r.series[-1].width_s != pytest.approx(bin_width(6.33))  # it is a partial bin
    for b in r.series:
        assert b.rps == pytest.approx(100.0), b


def test_the_json_series_has_bin_starts_and_widths() -> None:
    r = _report(
        _steady(5.0, failing=(1.75, 2.0)), [("load", 0.0), ("fault", 1.75), ("after fault", 2.0)], 5.0
    )
    doc = json.loads(json.dumps(r.to_json()))
    s = doc["series"]
    assert {"t", "width_s", "phase", "requests", "failures", "rps", "error_ratio", "p50_ms", "p95_ms"} <= set(
        s[0]
    )
    assert [x["t"] for x in s if x["phase"] == "fault"][0] == 1.75
    assert sum(x["failures"] for x in s if x["phase"] != "fault") == 0


def test_stagger_never_overlaps() -> None:
    boxes = [(0, 40), (10, 30), (35, 60), (41, 50), (60, 90), (61, 62), (200, 260)]
    rows = stagger(boxes, gap=1)
    assert rows == [0, 1, 1, 0, 0, 1, 0]
    for i, (a, ra) in enumerate(zip(boxes, rows, strict=True)):
        for b, rb in zip(boxes[i + 1 :], rows[i + 1 :], strict=True):
            assert ra != rb or a[1] + 1 <= b[0]


def test_chart_draws_a_report_and_an_old_whole_second_one(tmp_path: Path) -> None:
    r = _report(_steady(3.0, failing=(1.75, 2.0)), [("load", 0.0), ("fault", 1.75), ("ejected", 1.8)], 3.0)
    doc = r.to_json()
    assert plot_report_json(doc, tmp_path / "new.png").read_bytes()[:4] == b"\x89PNG"
    old = {**doc, "series": [{"t": t, "requests": 10, "failures": 0, "p95_ms": 1.0} for t in range(3)]}
    assert plot_report_json(old, tmp_path / "old.png").is_file()
