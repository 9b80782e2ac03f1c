"""Unit tests for harness.traffic.power: the checks' own rejection regions, exact power, sample sizes.

The power is computed from each check's rejection region, so the tests first pin those regions to
the checks themselves (check_proportion, check_weights at the region's edges), then compute the
power from the region here, independently of the module's sums.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import special
from scipy import stats as sps  # type: ignore[import-untyped]

from harness.traffic import power, stats
from harness.traffic.stats import (
    check_proportion,
    check_weights,
    sample_size_for_proportion,
    sample_size_for_weights,
)

ALPHA, POWER, D = 0.001, 0.99, 0.05


def _power_from_region(n: int, low: int, high: int, true: float) -> float:
    """P(X <= low or X >= high) for X ~ Binomial(n, true), computed here, not by the module."""
    return float(sps.binom.cdf(low, n, true) + sps.binom.sf(high - 1, n, true))


def _proportion_region(n: int, expected: float, alpha: float) -> tuple[int, int]:
    """The module's region for check_proportion, confirmed at its edges by check_proportion itself."""
    low, high = (int(a[0]) for a in power._binomtest_region(np.array([n]), np.array([expected]), alpha))
    for x, fails in ((low, True), (low + 1, False), (high - 1, False), (high, True)):
        if 0 <= x <= n:
            assert check_proportion(x, n, expected, alpha).passed is not fails, (n, expected, x)
    return low, high


def _split_region(n: int, weights: dict[str, float], alpha: float) -> tuple[int, int]:
    """The module's region for check_weights over two categories, confirmed by check_weights."""
    share = next(iter(weights.values())) / sum(weights.values())
    first, second = weights
    low, high = power._binomtest_region(np.array([n]), np.array([share]), alpha)
    lo, hi = int(low[0]), int(high[0])
    for x, fails in ((lo, True), (lo + 1, False), (hi - 1, False), (hi, True)):
        if 0 <= x <= n:
            verdict = check_weights(weights, {first: x, second: n - x}, alpha=alpha)
            assert verdict.passed is not fails, (n, weights, x, verdict.summary())
    return lo, hi


# --------------------------------------------------------------------------- the tests' own p-values


def test_binomtest_pvalues_are_scipys_to_the_bit() -> None:
    rng = np.random.default_rng(5)
    cases = []
    for _ in range(150):
        n = int(rng.integers(1, 4000))
        p = float(rng.choice([0.001, 0.02, 0.1, 0.3, 0.5, 0.77, 0.9, 0.999, rng.random()]))
        sd = np.sqrt(n * p * (1 - p))
        near = np.clip(np.round(n * p + rng.normal(0.0, 4 * sd + 1, size=3)), 0, n)
        cases += [(int(k), n, p) for k in [*rng.integers(0, n + 1, size=2), *near]]
    k, n, p = (np.array(c) for c in zip(*cases, strict=True))
    mine = power.binomtest_pvalues(k, n, p)
    for (kk, nn, pp), m in zip(cases, mine, strict=True):
        ref = sps.binomtest(kk, nn, pp).pvalue
        assert m == ref or max(m, ref) < 1e-300, (kk, nn, pp, m, ref)  # a denormal 0 vs 5e-324 only


@pytest.mark.parametrize(
    ("n", "expected", "alpha"),
    [(1358, 0.1, 0.001), (1357, 0.1, 0.001), (3175, 0.5, 0.001), (2786, 0.3, 0.001), (811, 0.1, 0.05)]
    + [(40, 0.02, 0.05), (7, 0.5, 0.2), (1000, 0.999, 0.001), (500, 0.9, 0.0001)],
)
def test_proportion_region_is_check_proportions(n: int, expected: float, alpha: float) -> None:
    low, high = _proportion_region(n, expected, alpha)
    # and nowhere else: the p-value falls monotonically away from n * expected
    for x in range(max(0, low - 3), min(n, high + 3) + 1):
        assert check_proportion(x, n, expected, alpha).passed is (low < x < high), x


@pytest.mark.parametrize(
    ("n", "weights", "alpha"),
    [
        (1358, {"v1": 90, "v2": 10}, 0.001),
        (3164, {"v1": 50, "v2": 50}, 0.001),
        (796, {"v1": 90, "v2": 10}, 0.05),
        (300, {"v1": 99, "v2": 1}, 0.001),  # expected 3
        (194, {"a": 99.9, "b": 0.1}, 0.001),
    ],
)
def test_split_region_is_check_weights(n: int, weights: dict[str, float], alpha: float) -> None:
    low, high = _split_region(n, weights, alpha)
    first, second = weights
    for x in range(max(0, low - 2), min(n, high + 2) + 1):
        assert check_weights(weights, {first: x, second: n - x}, alpha=alpha).passed is (low < x < high), x


# --------------------------------------------------------------------------- exact power at the chosen N

DEFAULT_PROPORTIONS = [0.1, 0.3, 0.5]


@pytest.mark.parametrize("expected", DEFAULT_PROPORTIONS)
def test_proportion_sample_size_has_the_stated_exact_power(expected: float) -> None:
    """At the chosen N the exact power of check_proportion at expected ± 5pp is >= 0.99; one fewer
    falls short (the normal approximation's N did: 0.988 at 10%, 0.9897 at 50%)."""
    n = sample_size_for_proportion(expected)

    def worst(m: int) -> float:
        low, high = _proportion_region(m, expected, ALPHA)
        return min(_power_from_region(m, low, high, q) for q in (expected - D, expected + D))

    assert worst(n) >= POWER
    assert worst(n - 1) < POWER
    assert power.proportion_power(n, expected, expected - D, ALPHA) == pytest.approx(
        _power_from_region(n, *_proportion_region(n, expected, ALPHA), expected - D), abs=1e-12
    )
    # the false-failure rate at that N, exactly: at most alpha
    assert power.proportion_power(n, expected, expected, ALPHA) <= ALPHA


@pytest.mark.parametrize(("weights", "first"), [({"v1": 90, "v2": 10}, 0.9), ({"v1": 50, "v2": 50}, 0.5)])
def test_split_sample_size_has_the_stated_exact_power(weights: dict[str, float], first: float) -> None:
    n = sample_size_for_weights(weights)

    def worst(m: int) -> float:
        low, high = _split_region(m, weights, ALPHA)
        return min(_power_from_region(m, low, high, q) for q in (first - D, first + D))

    assert worst(n) >= POWER > worst(n - 1)


def test_sample_sizes_keep_their_power_above_n() -> None:
    """Power is saw-toothed in N; the chosen N keeps the stated power at every count up to 4N
    (the search guarantees 2N), for the defaults and a grid of other designs."""
    for expected, alpha, pw, d in [
        (0.1, ALPHA, POWER, D),
        (0.3, ALPHA, POWER, D),
        (0.5, ALPHA, POWER, D),
        *itertools.product((0.02, 0.3), (0.05,), (0.8,), (0.05, 0.2)),
    ]:
        n = sample_size_for_proportion(expected, alpha, pw, d)
        ns = np.arange(n - 1, 4 * n + 1)
        ok = power.proportion_powered(ns, expected, alpha, d, pw)
        assert not ok[0] and ok[1:].all(), (expected, alpha, pw, d, n, ns[1:][~ok[1:]][:5])
    for weights in ({"v1": 90, "v2": 10}, {"v1": 50, "v2": 50}, {"v1": 80, "v2": 10, "v3": 10}):
        n = sample_size_for_weights(weights)
        shares = tuple(w / 100 for w in weights.values())
        ns = np.arange(n - 1, 4 * n + 1)
        ok = power.fit_powered(ns, shares, ALPHA, D, POWER)
        assert not ok[0] and ok[1:].all(), (weights, n)


def test_power_is_saw_toothed() -> None:
    at = {n: power.proportion_power(n, 0.1, 0.15, ALPHA) for n in (1322, 1329, 1330, 1357, 1358)}
    assert at[1322] == pytest.approx(0.988, abs=5e-4)  # the normal approximation's N
    assert at[1329] == pytest.approx(0.9902, abs=5e-5)
    assert at[1330] == pytest.approx(0.9883, abs=5e-5)
    assert at[1357] < POWER <= at[1358]


@pytest.mark.parametrize(("expected", "alpha", "d"), [(0.1, ALPHA, D), (0.5, ALPHA, D), (0.02, 0.05, 0.2)])
def test_bounds_only_skip_rows_they_decide(expected: float, alpha: float, d: float) -> None:
    """proportion_powered bounds most rows instead of finding their region: same answers."""
    n = sample_size_for_proportion(expected, alpha, POWER, d)
    ns = np.arange(max(1, n // 2), 2 * n)
    low, high = power._binomtest_region(ns, np.full(ns.shape, expected), alpha)
    exact = np.min(
        [
            sps.binom.cdf(low, ns, q) + sps.binom.sf(high - 1, ns, q)
            for q in (expected - d, expected + d)
            if 0 <= q <= 1
        ],
        axis=0,
    )
    assert (power.proportion_powered(ns, expected, alpha, d, POWER) == (exact >= POWER)).all()


def test_smallest_powered_n_on_a_saw_tooth() -> None:
    # short at 1-9, 12 and 25: the answer keeps 26..52 powered
    short = {*range(1, 10), 12, 25}
    assert power.smallest_powered_n(lambda ns: np.array([int(n) not in short for n in ns]), guess=5) == 26
    # a dip beyond twice the first candidate is still found: the range grows to twice the answer
    short = {*range(1, 10), 19}
    assert power.smallest_powered_n(lambda ns: np.array([int(n) not in short for n in ns]), guess=50) == 20
    assert power.smallest_powered_n(lambda ns: np.ones(len(ns), dtype=bool), guess=40) == 1


# --------------------------------------------------------------------------- three categories


def _multinomial_power(n: int, expected: list[float], true: list[float], alpha: float) -> float:
    """Exact probability that check_weights' test over three categories (each against the rest,
    exact binomial at alpha / 3, rejecting when any rejects) rejects n draws of ``true``: every
    outcome (x1, x2, n - x1 - x2) within 12 standard deviations of the mean added up (the rest
    holds less than 1e-30). Each category's rejection region is confirmed by check_proportion."""

    def span(q: float) -> np.ndarray:
        sd = np.sqrt(n * q * (1 - q))
        return np.arange(max(0, int(n * q - 12 * sd)), min(n, int(n * q + 12 * sd)) + 1)

    x1 = span(true[0])[:, None]
    x2 = span(true[1])[None, :]
    x3 = n - x1 - x2
    valid = x3 >= 0
    x3 = np.where(valid, x3, 0)
    regions = [_proportion_region(n, e, alpha / 3) for e in expected]
    rejects = valid & np.zeros(np.broadcast(x1, x2).shape, dtype=bool)
    for x, (low, high) in zip((x1, x2, x3), regions, strict=True):
        rejects = rejects | (valid & ((x <= low) | (x >= high)))
    log_p = (
        special.gammaln(n + 1)
        - special.gammaln(x1 + 1)
        - special.gammaln(x2 + 1)
        - special.gammaln(x3 + 1)
        + x1 * np.log(true[0])
        + x2 * np.log(true[1])
        + x3 * np.log(true[2])
    )
    return float(np.exp(log_p[rejects]).sum())


def test_three_way_split_has_the_stated_power_exactly() -> None:
    """80/10/10: the per-category bound's N has exact multinomial power >= 0.99 against the least
    detectable 5pp alternatives (v1 off by 5pp, v2/v3 absorbing it in proportion, or one of them
    taking it all), and an exact false-failure rate at most alpha; the noncentral chi-square's N
    (2,256) had power 0.986."""
    expected = [0.8, 0.1, 0.1]
    n = sample_size_for_weights({"v1": 80, "v2": 10, "v3": 10})
    assert n == 2432
    for true in ([0.75, 0.125, 0.125], [0.85, 0.075, 0.075], [0.75, 0.15, 0.1]):
        assert _multinomial_power(n, expected, true, ALPHA) >= POWER, true
    assert _multinomial_power(n, expected, expected, ALPHA) <= ALPHA
    assert stats._ncx2_n((0.8, 0.1, 0.1), ALPHA, POWER, D) == 2256
    # the bound used for the search, exact for this outcome space: below the true power
    bound = power.fit_power(n, (0.8, 0.1, 0.1), 0, 0.75, ALPHA)
    assert POWER <= bound <= _multinomial_power(n, expected, [0.75, 0.125, 0.125], ALPHA)


@pytest.mark.parametrize("weights", [{"v1": 90, "v2": 10}, {"v1": 50, "v2": 50}, {"v1": 80, "v2": 20}])
def test_two_way_split_false_failure_rate_is_at_most_alpha_exactly(weights: dict[str, float]) -> None:
    """The fit test of a two-way split keeps its stated alpha exactly at the chosen N and around it
    (Pearson's chi-square, used before, did not: 0.00115 at 90/10 and N=1,136)."""
    n = sample_size_for_weights(weights)
    share = next(iter(weights.values())) / 100
    for m in (n - 7, n, n + 13, 2 * n):
        low, high = _split_region(m, weights, ALPHA)
        assert _power_from_region(m, low, high, share) <= ALPHA, (weights, m)
    # the chi-square test this replaced, at the old N: above alpha
    x = np.arange(0, 1137)
    chi = sps.chisquare(np.stack([x, 1136 - x]), np.array([[0.9 * 1136], [0.1 * 1136]]), axis=0).pvalue
    assert sps.binom.pmf(x, 1136, 0.9)[chi <= ALPHA].sum() > ALPHA


def test_sample_size_call_time_is_cached() -> None:
    stats._required_n.cache_clear()
    stats._proportion_n.cache_clear()
    first = sample_size_for_proportion(0.37)
    info = stats._proportion_n.cache_info()
    assert sample_size_for_proportion(0.37) == first
    assert stats._proportion_n.cache_info().hits == info.hits + 1
