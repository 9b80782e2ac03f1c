"""The load chart: requests per second, error ratio and p95 latency over time, phases shaded.

:func:`plot_load` draws one chart in this process (``meshproof load``). :class:`ChartWorker`
draws them in one background process instead (the pytest ``load`` fixture): importing
matplotlib and drawing a figure cost about a second of CPU each, which would otherwise sit on
every under-load test's teardown. The worker reads one JSON job per line on its stdin
(``python -m harness.load.chart``) and exits when stdin closes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from harness import proc, wait
from harness.load import LoadReport


def plot_load(report: LoadReport, path: Path, *, title: str = "") -> Path:
    """Write a PNG of ``report``'s per-second series to ``path`` (parents created); returns it."""
    return plot_report_json(report.to_json(), path, title=title)


def plot_report_json(doc: Mapping[str, Any], path: Path, *, title: str = "") -> Path:
    """The chart of a report as :meth:`LoadReport.to_json` wrote it (what :class:`ChartWorker` reads)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = doc["series"]
    t = [s["t"] for s in series]
    rps = [s["requests"] for s in series]
    err = [100 * s["failures"] / s["requests"] if s["requests"] else 0.0 for s in series]
    p95 = [s["p95_ms"] for s in series]
    fig, axes = plt.subplots(3, 1, sharex=True, figsize=(10, 7), constrained_layout=True)
    for ax, ys, label, color in (
        (axes[0], rps, "requests / s", "tab:blue"),
        (axes[1], err, "errors %", "tab:red"),
        (axes[2], p95, "p95 latency ms", "tab:purple"),
    ):
        ax.step(t, ys, where="post", color=color, linewidth=1.2)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    colors = ("#f2f2f2", "#dde9f7", "#fbe3d6", "#e2f0d9", "#efe1f5")
    for i, phase in enumerate(doc["phases"]):
        for ax in axes:
            ax.axvspan(phase["start_s"], phase["end_s"], color=colors[i % len(colors)], zorder=0)
        axes[0].annotate(
            phase["name"],
            xy=(phase["start_s"], 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -10),
            textcoords="offset points",
            fontsize=8,
        )
    axes[-1].set_xlabel("seconds since start")
    fig.suptitle(
        title
        or (
            f"{doc['users']} users ({doc['shape']}, {doc['user_class']}), {doc['requests']} requests, "
            f"{doc['failures']} failed, {doc['rps']:.0f} req/s"
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


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
