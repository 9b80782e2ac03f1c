"""Latency quantiles: numpy only, so the sampler (and ``meshproof send``) never imports scipy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["latency_quantiles"]


def latency_quantiles(
    samples_ms: Sequence[float], qs: Sequence[float] = (0.5, 0.9, 0.99)
) -> dict[str, float]:
    """Latency quantiles keyed ``"p50"``, ``"p90"``, ``"p99"`` (``0.999`` -> ``"p99.9"``).

    Linear interpolation (``numpy.quantile`` default). No samples gives 0.0 for every key.
    """
    for q in qs:
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantiles must be in [0, 1], got {q}")
    keys = [f"p{q * 100:g}" for q in qs]
    if len(samples_ms) == 0:
        return dict.fromkeys(keys, 0.0)
    values = np.quantile(np.asarray(samples_ms, dtype=float), np.asarray(qs, dtype=float))
    return {key: float(v) for key, v in zip(keys, values, strict=True)}
