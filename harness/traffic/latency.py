"""Latency quantiles on the standard library, so the sampler (and ``meshproof send``) starts fast.

``statistics.quantiles(..., method="inclusive")`` interpolates linearly between order
statistics, the same definition as ``numpy.quantile``'s default.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["latency_quantiles"]

_GRID = 10_000  # quantiles are resolved on a grid of 1/10,000 (0.5, 0.99, 0.999, 0.9999 exactly)


def latency_quantiles(
    samples_ms: Sequence[float], qs: Sequence[float] = (0.5, 0.9, 0.99)
) -> dict[str, float]:
    """Latency quantiles keyed ``"p50"``, ``"p90"``, ``"p99"`` (``0.999`` -> ``"p99.9"``).

    Linear interpolation between order statistics (``numpy.quantile``'s default); ``qs`` must
    be multiples of 0.0001. No samples gives 0.0 for every key.
    """
    steps = []
    for q in qs:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantiles must be in [0, 1], got {q}")
        step = round(q * _GRID)
        if abs(step - q * _GRID) > 1e-6:
            raise ValueError(f"quantiles must be multiples of 1/{_GRID}, got {q}")
        steps.append(step)
    keys = [f"p{q * 100:g}" for q in qs]
    data = sorted(float(x) for x in samples_ms)
    if not data:
        return dict.fromkeys(keys, 0.0)
    if len(data) == 1:
        return dict.fromkeys(keys, data[0])
    cuts = [data[0], *statistics.quantiles(data, n=_GRID, method="inclusive"), data[-1]]
    return {key: cuts[step] for key, step in zip(keys, steps, strict=True)}
