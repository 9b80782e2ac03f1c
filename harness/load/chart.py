"""The load chart: requests per second, error ratio and p95 latency over time, phases shaded,
named without overlap, and a table of each phase's figures; :func:`draw_timeline` draws every
time-axis chart (the upgrade's too) from the bins of :mod:`harness.load.bins`.

:func:`plot_load` draws one chart in this process (``meshproof load``). :class:`ChartWorker`
draws them in one background process instead (the pytest ``load`` fixture): importing
matplotlib and drawing a figure cost about a second of CPU each, which would otherwise sit on
every under-load test's teardown. The worker reads one JSON job per line on its stdin
(``python -m harness.load.chart``) and exits when stdin closes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from harness import proc, wait
from harness.load.report import LoadReport


def plot_load(report: LoadReport, path: Path, *, title: str = "") -> Path:
    """Write a PNG of ``report``'s binned series to ``path`` (parents created); returns it."""
    return plot_report_json(report.to_json(), path, title=title)


def plot_report_json(doc: Mapping[str, Any], path: Path, *, title: str = "") -> Path:
    """The chart of a report as :meth:`LoadReport.to_json` wrote it (what :class:`ChartWorker` reads).
    A report written before the bins had widths (whole seconds) is drawn with 1 s bins."""
    series = doc["series"]
    edges = [float(b["t"]) for b in series]
    if series:
        edges.append(edges[-1] + float(series[-1].get("width_s", 1.0)))
    widths = [float(b.get("width_s", 1.0)) for b in series]
    has = [b["requests"] > 0 for b in series]
    nan = float("nan")
    panels = (
        Panel(
            "requests / s", [b["requests"] / w if w > 0 else 0.0 for b, w in zip(series, widths, strict=True)]
        ),
        Panel(
            "errors %",
            [100 * b["failures"] / b["requests"] if h else nan for b, h in zip(series, has, strict=True)],
            "tab:red",
        ),
        Panel(
            "p95 latency ms",
            [b["p95_ms"] if h else nan for b, h in zip(series, has, strict=True)],
            "tab:purple",
        ),
    )
    spans = [
        Span(
            p["name"],
            float(p["start_s"]),
            float(p["end_s"]),
            int(p["requests"]),
            int(p["failures"]),
            p.get("latency_ms", {}).get("p50"),
            p.get("latency_ms", {}).get("p95"),
        )
        for p in doc["phases"]
    ]
    return draw_timeline(
        path,
        edges=edges,
        panels=panels,
        spans=spans,
        title=title
        or (
            f"{doc['users']} users ({doc['shape']}, {doc['user_class']}), {doc['requests']} requests, "
            f"{doc['failures']} failed, {doc['rps']:.0f} req/s"
        ),
        note=bin_note(widths),
    )


def bin_note(widths: Sequence[float]) -> str:
    """``bins of 100 ms``: the bins' common width (those beside a boundary differ), for the x label."""
    if not widths:
        return ""
    step = max(set(widths), key=widths.count)  # the common width; bins beside a boundary differ
    return f"bins of {step * 1000:.0f} ms" if step < 1 else f"bins of {step:g} s"


# --------------------------------------------------------------------------- the shared drawing


@dataclass(frozen=True)
class Panel:
    """One plot of the chart: a value per bin (NaN: nothing to show, e.g. no requests in the bin)."""

    label: str
    values: Sequence[float]
    color: str = "tab:blue"


@dataclass(frozen=True)
class Span:
    """A phase on the chart: shaded, labelled above the plots, and one row of the table below."""

    name: str
    start_s: float
    end_s: float
    requests: int
    failures: int
    p50_ms: float | None = None
    p95_ms: float | None = None
    color: str = ""  # "" = the next colour of the palette


#: Phase shades; consecutive phases never share one.
PALETTE = ("#e4e4e4", "#cfe0f3", "#fbd9c4", "#d5ebc8", "#e7d4f1", "#f7efb8")
_FONT = 8  # points, labels and table
_DPI = 100
_WIDTH_IN, _LEFT_IN, _RIGHT_IN = 10.0, 0.85, 0.25
_ROW_IN = 0.2  # a label row and a table row


def stagger(intervals: Sequence[tuple[float, float]], *, gap: float = 0.0) -> list[int]:
    """Rows for labels spanning ``intervals`` (left, right; in drawing order) so that no two labels in
    a row overlap: each goes to the lowest row whose last label ends ``gap`` before it starts."""
    ends: list[float] = []
    rows = []
    for left, right in intervals:
        row = next((i for i, end in enumerate(ends) if end + gap <= left), len(ends))
        if row == len(ends):
            ends.append(right)
        else:
            ends[row] = right
        rows.append(row)
    return rows


def draw_timeline(
    path: Path,
    *,
    edges: Sequence[float],
    panels: Sequence[Panel],
    spans: Sequence[Span],
    title: str,
    xlabel: str = "seconds since start",
    note: str = "",
) -> Path:
    """The one time-axis chart (load, upgrade): ``panels`` drawn as steps over the bins between
    ``edges`` (each bin at its own width), the ``spans`` (phases) shaded with their boundaries
    drawn, their names staggered above the plots so that none overlaps another, and a table of
    each phase's figures below. Writes a PNG to ``path`` (parents created); returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.font_manager import FontProperties
    from matplotlib.transforms import Bbox

    x0 = min([*edges[:1], *(s.start_s for s in spans)], default=0.0)
    x1 = max([*edges[-1:], *(s.end_s for s in spans)], default=1.0)
    if not x1 > x0:
        x1 = x0 + 1.0
    colors = [s.color or PALETTE[i % len(PALETTE)] for i, s in enumerate(spans)]

    fig = plt.figure(figsize=(_WIDTH_IN, 1.0), dpi=_DPI)
    # Where each label would sit, in pixels: measured with the figure's own renderer and font.
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    font = FontProperties(size=_FONT)
    ax_px = (_WIDTH_IN - _LEFT_IN - _RIGHT_IN) * _DPI
    px_per_s = ax_px / (x1 - x0)
    pad_px = 6.0
    lefts, boxes = [], []
    for s in spans:
        w = renderer.get_text_width_height_descent(s.name, font, ismath=False)[0] + pad_px
        left = min((s.start_s - x0) * px_per_s + 2, ax_px - w)  # the last one stays inside the plot
        lefts.append(left)
        boxes.append((left, left + w))
    rows = stagger(boxes, gap=3.0)
    n_rows = max(rows, default=-1) + 1

    title_in, strip_in, panel_in, gap_in, axis_in = 0.45, n_rows * _ROW_IN + 0.08, 1.6, 0.12, 0.55
    table_in = (len(spans) + 1) * _ROW_IN + 0.15 if spans else 0.0
    height = title_in + strip_in + len(panels) * (panel_in + gap_in) + axis_in + table_in
    fig.set_size_inches(_WIDTH_IN, height)

    def rect(top_in: float, h_in: float) -> tuple[float, float, float, float]:
        return (_LEFT_IN / _WIDTH_IN, 1 - (top_in + h_in) / height, ax_px / _DPI / _WIDTH_IN, h_in / height)

    top = title_in + strip_in
    axes: list[Any] = []
    for i, panel in enumerate(panels):
        ax = fig.add_axes(rect(top, panel_in), sharex=axes[0] if axes else None)
        top += panel_in + gap_in
        ax.stairs(panel.values, edges, color=panel.color, linewidth=1.2, baseline=None)
        finite = [v for v in panel.values if v == v]
        ax.set_ylim(0, (max(finite, default=0.0) or 1.0) * 1.12)
        ax.set_ylabel(panel.label, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8, labelbottom=i == len(panels) - 1)
        for s, c in zip(spans, colors, strict=True):
            ax.axvspan(s.start_s, s.end_s, color=c, zorder=0, linewidth=0)
            ax.axvline(s.start_s, color="0.45", linewidth=0.6, zorder=1)
        axes.append(ax)
    if axes:
        axes[0].set_xlim(x0, x1)
        axes[-1].set_xlabel(xlabel + (f" ({note})" if note else ""), fontsize=9)

    strip = fig.add_axes(rect(title_in, strip_in), sharex=axes[0] if axes else None)
    strip.set_xlim(x0, x1)
    strip.set_ylim(n_rows + 0.1, -0.1)
    strip.axis("off")
    for s, c, left, row in zip(spans, colors, lefts, rows, strict=True):
        x = x0 + left / px_per_s
        strip.plot([s.start_s, s.start_s], [row + 0.5, n_rows + 0.1], color="0.45", linewidth=0.6)
        strip.text(
            x,
            row + 0.5,
            s.name,
            fontsize=_FONT,
            va="center",
            ha="left",
            bbox={"boxstyle": "square,pad=0.15", "facecolor": c, "edgecolor": "0.45", "linewidth": 0.5},
        )

    if spans:
        tab_ax = fig.add_axes(rect(height - table_in + 0.05, table_in - 0.15))
        tab_ax.axis("off")
        cells = [
            [
                s.name,
                f"{s.start_s:.2f} - {s.end_s:.2f}",
                str(s.requests),
                str(s.failures),
                f"{100 * s.failures / s.requests:.2f}%" if s.requests else "-",
                _ms(s.p50_ms) if s.requests else "-",
                _ms(s.p95_ms) if s.requests else "-",
            ]
            for s in spans
        ]
        table = tab_ax.table(
            cellText=cells,
            colLabels=["phase", "seconds", "requests", "failed", "errors", "p50 ms", "p95 ms"],
            colWidths=[0.34, 0.16, 0.1, 0.1, 0.1, 0.1, 0.1],
            bbox=Bbox.from_bounds(0, 0, 1, 1),
            cellLoc="right",
        )
        table.auto_set_font_size(False)
        table.set_fontsize(_FONT)
        for (row, col), cell in table.get_celld().items():
            cell.set_linewidth(0.3)
            if col == 0:
                cell.set_text_props(ha="left")
                if row > 0:
                    cell.set_facecolor(colors[row - 1])
    fig.suptitle(title, y=1 - 0.12 / height, va="top", fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
    return path


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


class ChartWorker:
    """Charts drawn in one background process; a context manager whose exit waits for all of them.

    Started on the first :meth:`submit` (PDEATHSIG and its own session, like every child), so a
    run without load never starts it. :meth:`close` closes its stdin and waits for it to exit;
    it returns the charts that were not written, with the worker's log tail.
    """

    def __init__(self, workdir: Path, *, python: str = sys.executable, timeout: float = 300.0) -> None:
        self.workdir = Path(workdir)
        self._python, self._timeout = python, timeout
        self._popen: Any = None
        self._pending: list[Path] = []

    @property
    def log_path(self) -> Path:
        return self.workdir / "charts.log"

    def submit(self, report: LoadReport, path: Path, *, title: str = "") -> Path:
        """Queue ``report``'s chart for ``path``; returns ``path`` (written by :meth:`close` at the latest)."""
        if self._popen is None:
            self._popen = proc.spawn(
                [self._python, "-m", "harness.load.chart"],
                log_path=self.log_path,
                new_session=True,
                die_with_parent=True,
                stdin_pipe=True,
                nice=10,  # charts are for after the run: never compete with the mesh for CPU
            )
        job = {"path": str(path), "title": title, "report": report.to_json()}
        self._popen.stdin.write(json.dumps(job).encode() + b"\n")
        self._popen.stdin.flush()
        self._pending.append(Path(path))
        return Path(path)

    def close(self) -> list[str]:
        """Wait for the queued charts; the problems (charts not written), empty when all are."""
        popen, self._popen = self._popen, None
        if popen is None:
            return []
        popen.stdin.close()
        try:
            wait.until(
                lambda: popen.poll() is not None,
                what=f"the chart worker to draw {len(self._pending)} load charts",
                timeout=self._timeout,
                interval=0.05,
            )
        except Exception:
            popen.kill()
            popen.wait()
        missing = [str(p) for p in self._pending if not p.is_file()]
        if missing:
            return [
                f"load charts not written: {missing}; worker log {self.log_path}:\n{proc.tail(self.log_path)}"
            ]
        return []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve(lines: Any) -> int:
    failed = 0
    for line in lines:
        if not line.strip():
            continue
        job = json.loads(line)
        try:
            plot_report_json(job["report"], Path(job["path"]), title=job.get("title", ""))
        except Exception as e:  # one bad chart must not lose the others
            failed += 1
            print(f"chart {job.get('path')}: {type(e).__name__}: {e}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_serve(sys.stdin))
