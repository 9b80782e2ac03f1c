"""Exact sample sizes of the designs the suites use, computed once and written down.

:func:`harness.traffic.stats.sample_size_for_weights` and ``sample_size_for_proportion`` search
for the smallest N whose exact power holds (:mod:`harness.traffic.power`): 0.1-0.4 CPU-seconds per
design, paid again in every pytest process that needs it (about 2 CPU-seconds of a ``meshproof
test`` run). The entries below are the results of that search for the designs a run meets, keyed
exactly as :mod:`~harness.traffic.stats` looks them up (normalised shares, alpha, power, minimum
deviation). ``tests/unit/traffic/test_sizes.py`` recomputes every entry, so an entry cannot disagree
with the computation; a design not listed (another ``--alpha``, another split) is computed as before.
``bench/sample_sizes.py`` lists the designs a run still computes.
"""

from __future__ import annotations

#: (shares, alpha, power, min_deviation) -> the smallest N of :func:`stats.sample_size_for_weights`
WEIGHTS: dict[tuple[tuple[float, ...], float, float, float], int] = {
    ((0.9, 0.1), 0.001, 0.99, 0.05): 1358,
    ((0.8, 0.2), 0.001, 0.99, 0.05): 2198,
    ((0.5, 0.5), 0.001, 0.99, 0.05): 3175,
    ((0.3, 0.7), 0.001, 0.99, 0.05): 2786,
    ((0.8181818181818181, 0.18181818181818182), 0.001, 0.99, 0.05): 2070,
    ((0.8, 0.1, 0.1), 0.001, 0.99, 0.05): 2432,
}

#: (expected, alpha, power, min_deviation) -> the smallest N of :func:`stats.sample_size_for_proportion`
PROPORTIONS: dict[tuple[float, float, float, float], int] = {
    (0.1, 0.001, 0.99, 0.05): 1358,
    (0.3, 0.001, 0.99, 0.05): 2786,
    (0.5, 0.001, 0.99, 0.05): 3175,
}
