"""The load chart: requests per second, error ratio and p95 latency over time, phases shaded."""

from __future__ import annotations

from pathlib import Path

from harness.load import LoadReport


def plot_load(report: LoadReport, path: Path, *, title: str = "") -> Path:
    """Write a PNG of ``report``'s per-second series to ``path`` (parents created); returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.t for s in report.series]
    rps = [s.requests for s in report.series]
    err = [100 * s.failures / s.requests if s.requests else 0.0 for s in report.series]
    p95 = [s.p95_ms for s in report.series]
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
    for i, phase in enumerate(report.phases):
        for ax in axes:
            ax.axvspan(phase.start_s, phase.end_s, color=colors[i % len(colors)], zorder=0)
        axes[0].annotate(
            phase.name,
            xy=(phase.start_s, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(2, -10),
            textcoords="offset points",
            fontsize=8,
        )
    axes[-1].set_xlabel("seconds since start")
    c = report.config
    fig.suptitle(
        title
        or (
            f"{c.users} users ({c.shape}, {c.user_class}), {report.requests} requests, "
            f"{report.failures} failed, {report.rps:.0f} req/s"
        )
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
