"""Time bins of a run, from its per-request records: the one binning every time-axis chart draws.

Pure (numpy, no I/O). A bin's width is chosen from the run's length (:func:`bin_width`: about a
fiftieth of it, on a readable step, at least 50 ms), and every phase boundary is a bin edge
(:func:`bin_edges`), so no bin mixes two phases: a phase's errors land only in its own bins. A
bin that a boundary or the run's end cuts short keeps its own width (its rate is its requests
over that width, not over a whole step). Each request counts in the bin in which it started,
exactly as it counts in the phase in which it started. ::

    edges = bin_edges(6.4, [0.9, 1.75])  # 0, 0.1, ..., 0.8, 0.9, 1.0, ..., 1.7, 1.75, 1.9, ...
    bins = bin_series(starts, latencies, failed, edges, phases=[("spawn", 0, 0.9), ...])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["MIN_BIN_S", "TARGET_BINS", "Bin", "bin_edges", "bin_series", "bin_width"]

#: About this many bins per run, whatever its length.
TARGET_BINS = 50
#: No bin is narrower than this (except one cut short by a phase boundary or the run's end).
MIN_BIN_S = 0.05
#: Bin widths a reader can count in: 1-2-5 steps below a second, clock steps above.
_STEPS = (0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)


@dataclass(frozen=True)
class Bin:
    """One time bin of the run, by request start time."""

    t: float  # its start, seconds since the run started
    width_s: float
    requests: int
    failures: int
    p50_ms: float  # 0.0 when the bin has no requests
    p95_ms: float
    phase: str = ""  # the phase the bin lies in ("" outside every phase)

    @property
    def end_s(self) -> float:
        return self.t + self.width_s

    @property
    def rps(self) -> float:
        """Requests per second over the bin's own width."""
        return self.requests / self.width_s if self.width_s > 0 else 0.0

    @property
    def error_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def bin_width(duration_s: float, *, target: int = TARGET_BINS, minimum: float = MIN_BIN_S) -> float:
    """The step nearest (on a log scale) to ``duration_s / target``, at least ``minimum``:
    a 6 s run gets 0.1 s bins, a 10 min run 10 s bins."""
    raw = max(duration_s / target, minimum)
    if raw >= _STEPS[-1]:
        return float(math.ceil(raw / 3600) * 3600)
    return float(min((s for s in _STEPS if s >= minimum), key=lambda s: abs(math.log(s / raw))))


def bin_edges(
    duration_s: float, boundaries: Sequence[float] = (), *, width_s: float | None = None
) -> list[float]:
    """Bin edges from 0 to ``duration_s``: multiples of the width, plus every boundary inside the
    run. A multiple closer than half a width to a boundary is dropped, so a bin beside a boundary
    is between half and one and a half widths wide (never a sliver); a phase shorter than that is
    one bin of its own length."""
    end = max(float(duration_s), 0.0)
    w = width_s if width_s is not None else bin_width(end)
    if not w > 0:
        raise ValueError(f"bin width {w!r} must be > 0")
    eps = 1e-9 * max(w, 1.0)
    cuts = sorted({0.0, end, *(float(b) for b in boundaries if 0.0 < b < end)})
    edges: list[float] = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        edges.append(a)
        k = math.ceil((a + w / 2) / w - eps)  # the first multiple at least half a width after a
        while k * w <= b - w / 2 + eps:
            edges.append(round(k * w, 9))
            k += 1
    edges.append(end)
    return edges


def bin_series(
    starts_s: Sequence[float] | np.ndarray,
    latencies_ms: Sequence[float] | np.ndarray,
    failed: Sequence[bool] | np.ndarray,
    edges: Sequence[float],
    *,
    phases: Sequence[tuple[str, float, float]] = (),
) -> tuple[Bin, ...]:
    """The bins between consecutive ``edges`` (seconds since the run started): requests that
    started in ``[edge_i, edge_i+1)``, how many failed, their p50/p95 latency; each bin named by
    the phase (name, start_s, end_s) it lies in. Requests outside ``[edges[0], edges[-1])`` are in
    no bin (as they are in no phase)."""
    starts = np.asarray(starts_s, dtype=float)
    lat = np.asarray(latencies_ms, dtype=float)
    bad = np.asarray(failed, dtype=bool)
    e = np.asarray(edges, dtype=float)
    if len(e) < 2:
        return ()
    order = np.argsort(starts, kind="stable")
    starts, lat, bad = starts[order], lat[order], bad[order]
    cuts = np.searchsorted(starts, e, side="left")  # bin i holds starts[cuts[i]:cuts[i+1]]
    bins = []
    for i in range(len(e) - 1):
        lo, hi = int(cuts[i]), int(cuts[i + 1])
        if hi > lo:
            p50, p95 = (round(float(v), 3) for v in np.percentile(lat[lo:hi], [50, 95]))
        else:
            p50 = p95 = 0.0
        t, width = float(e[i]), float(e[i + 1] - e[i])
        mid = t + width / 2
        phase = next((name for name, a, b in phases if a <= mid < b), "")
        bins.append(Bin(t, width, hi - lo, int(bad[lo:hi].sum()), p50, p95, phase))
    return tuple(bins)
