"""Exact power of the fixed-n checks in :mod:`harness.traffic.stats`, and the sample sizes it gives.

A check's power at N trials is the probability that its own test rejects when the true share is
off by the minimum deviation. Both fixed-n tests decide on one binomial count ``x`` of N (the
share under test, or one category of a split), so their power is a sum of binomial
probabilities over the test's rejection region, which is computed here for the very test the
check runs:

* :func:`~harness.traffic.stats.check_proportion` runs scipy's two-sided exact binomial test
  (``binomtest``: a count is as extreme as another when its probability is no larger, with
  scipy's relative tolerance of 1e-7). :func:`binomtest_pvalues` is that p-value, vectorised
  over counts and trial numbers: the same formula, the same search for the other tail, the
  same ``binom.pmf``/``cdf``/``sf`` calls, so it agrees with ``binomtest`` to the last bit.
* :func:`~harness.traffic.stats.check_weights` with two non-zero categories runs the same exact
  binomial test on the first category's count.

The rejection region of the test is the counts at or below a lower boundary and at or above an
upper one (the p-value only falls as the count moves away from the expected count), found by
bisection on the test's own p-value. The power at the true share ``q`` is then
``binom.cdf(low, N, q) + binom.sf(high - 1, N, q)``: exact, no normal approximation.

With three or more non-zero categories check_weights tests each category against the rest at
``alpha / k`` (Bonferroni) and rejects when any of them does. Its exact power is a sum over all
multinomial outcomes, too many to add up at test time; a lower bound is exact instead: the test
rejects whenever category ``j``'s own test rejects, and that depends on the count of ``j`` alone,
binomial with the true share of ``j`` however the other categories absorb the deviation, so its
rejection probability is computed exactly as above and bounds the power from below for every
alternative that moves ``j`` by ``d``.

Power is saw-toothed in N: the rejection region moves by whole counts, and right after it moves
the power drops a little (at 10% ± 5pp, alpha 0.001: 0.9902 at N=1,329, 0.9883 at 1,330).
:func:`smallest_powered_n` therefore returns the smallest N from which on the power stays at or
above the target: at N and at every larger N up to at least 2N. A check that observes more
than N (traffic under load is counted after at least N requests) keeps its stated power; the
smallest N whose power merely touches the target once would not promise that. The unit tests
scan to 4N for the default designs and a grid of others and find no shortfall beyond 2N.

The module is pure: no I/O; everything is vectorised over N, so a sample size is found in
milliseconds to tenths of a second (the callers cache it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "binomtest_pvalues",
    "fit_power",
    "fit_powered",
    "proportion_power",
    "proportion_powered",
    "smallest_powered_n",
]

#: scipy's binomtest compares probabilities with this relative tolerance.
_RERR = 1.0 + 1e-7
#: Rows whose bounds lie this close to the target are computed exactly rather than bounded.
_MARGIN = 1e-9

Predicate = Callable[..., np.ndarray]


# --------------------------------------------------------------------------- searches


def _last_true(
    pred: Predicate,
    low: np.ndarray,
    high: np.ndarray,
    args: tuple[np.ndarray, ...],
    guess: np.ndarray | None = None,
) -> np.ndarray:
    """Per row, the largest ``i`` in ``[low, high]`` with ``pred(i, *args)`` true, else ``low - 1``.

    ``pred`` must be true up to some point and false after it (``low - 1`` counts as true); the
    arrays in ``args`` are the rows' parameters. Vectorised bisection, one call of ``pred`` per
    halving. With ``guess``, rows whose answer lies within 8 of it are searched there (two calls
    to confirm the bracket, four to halve it) and only the others over the whole range.
    """
    low = np.asarray(low, dtype=np.int64)
    high = np.asarray(high, dtype=np.int64)
    if guess is not None and low.size:
        g = np.clip(np.asarray(guess, dtype=np.int64), low - 1, high)
        a, b = np.maximum(g - 8, low - 1), np.minimum(g + 8, high)
        near = ((a < low) | pred(np.maximum(a, low), *args)) & (
            (b >= high) | ~pred(np.minimum(b + 1, high), *args)
        )
        out = np.empty_like(low)
        if near.any():
            out[near] = _last_true(pred, a[near] + 1, b[near], tuple(x[near] for x in args))
        if (~near).any():
            out[~near] = _last_true(pred, low[~near], high[~near], tuple(x[~near] for x in args))
        return out
    yes, no = low - 1, high + 1
    while True:
        active = no - yes > 1
        if not active.any():
            return yes
        mid = np.where(active, (yes + no) // 2, np.clip(yes, low, high))
        ok = np.asarray(pred(mid, *args), dtype=bool)
        yes = np.where(active & ok, mid, yes)
        no = np.where(active & ~ok, mid, no)


def _first_true(
    pred: Predicate,
    low: np.ndarray,
    high: np.ndarray,
    args: tuple[np.ndarray, ...],
    guess: np.ndarray | None = None,
) -> np.ndarray:
    """Per row, the smallest ``i`` in ``[low, high]`` with ``pred(i, *args)`` true, else
    ``high + 1`` (``pred`` false up to some point and true after it)."""
    return (
        _last_true(
            lambda i, *a: ~np.asarray(pred(i, *a), dtype=bool),
            low,
            high,
            args,
            None if guess is None else np.asarray(guess) - 1,
        )
        + 1
    )


# --------------------------------------------------------------------------- the tests' own p-values


def binomtest_pvalues(k: np.ndarray, n: np.ndarray, p: np.ndarray | float) -> np.ndarray:
    """``scipy.stats.binomtest(k, n, p).pvalue`` (two-sided), vectorised over ``k``, ``n``, ``p``.

    scipy's own algorithm: for ``k`` below ``n p`` the p-value is ``cdf(k)`` plus the upper tail
    from the first count whose probability is at most ``pmf(k) * (1 + 1e-7)``, found by binary
    search; above ``n p`` the mirror image; exactly ``n p`` gives 1.
    """
    k, n, p = (
        np.array(a)
        for a in np.broadcast_arrays(
            np.asarray(k, dtype=np.int64), np.asarray(n, dtype=np.int64), np.asarray(p, dtype=float)
        )
    )
    binom = stats.binom
    threshold = binom.pmf(k, n, p) * _RERR
    pn = p * n
    args = (n, p, threshold)
    # k < pn: ix is the last count from ceil(pn) on with pmf >= threshold (pmf falls from there)
    ix = _last_true(_pmf_at_least, np.ceil(pn).astype(np.int64), n, args)
    y = n - ix + (threshold == binom.pmf(ix, n, p))
    below = binom.cdf(k, n, p) + binom.sf(n - y, n, p)
    # k > pn: ix is the last count up to floor(pn) with pmf <= threshold (pmf rises to there)
    ix = _last_true(_pmf_at_most, np.zeros_like(n), np.floor(pn).astype(np.int64), args)
    above = binom.cdf(ix, n, p) + binom.sf(k - 1, n, p)
    return np.asarray(np.minimum(1.0, np.where(k < pn, below, np.where(k > pn, above, 1.0))))


def _pmf_at_least(x: np.ndarray, n: np.ndarray, p: np.ndarray, level: np.ndarray) -> np.ndarray:
    return np.asarray(stats.binom.pmf(x, n, p) >= level)


def _pmf_at_most(x: np.ndarray, n: np.ndarray, p: np.ndarray, level: np.ndarray) -> np.ndarray:
    return np.asarray(stats.binom.pmf(x, n, p) <= level)


def _cdf_at_most(x: np.ndarray, n: np.ndarray, p: np.ndarray, level: np.ndarray) -> np.ndarray:
    return np.asarray(stats.binom.cdf(x, n, p) <= level)


def _cdf_below(x: np.ndarray, n: np.ndarray, p: np.ndarray, level: np.ndarray) -> np.ndarray:
    return np.asarray(stats.binom.cdf(x, n, p) < level)


def _sf_at_most(x: np.ndarray, n: np.ndarray, p: np.ndarray, level: np.ndarray) -> np.ndarray:
    """P(X >= x) <= level."""
    return np.asarray(stats.binom.sf(x - 1, n, p) <= level)


def _sf_below(x: np.ndarray, n: np.ndarray, p: np.ndarray, level: np.ndarray) -> np.ndarray:
    """P(X >= x) < level."""
    return np.asarray(stats.binom.sf(x - 1, n, p) < level)


def _binomtest_rejects(x: np.ndarray, n: np.ndarray, p: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return np.asarray(binomtest_pvalues(x, n, p) <= alpha)


def _binomtest_region(n: np.ndarray, p: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` per row: binomtest at ``alpha`` rejects exactly the counts ``<= low`` and
    ``>= high`` (``low = -1``/``high = n + 1`` when a side rejects nothing).

    Bisection on :func:`binomtest_pvalues` between the bounds of :func:`_binomtest_bounds`,
    starting next to the equal-tailed ``alpha/2`` boundaries.
    """
    b = _binomtest_bounds(n, p, alpha)
    args = (n, p, np.full(n.shape, alpha))
    low = _last_true(_binomtest_rejects, b.gl + 1, b.al, args, guess=b.cl)
    high = _first_true(_binomtest_rejects, b.au, b.gu - 1, args, guess=b.cu)
    return low, high


@dataclass(frozen=True)
class _Bounds:
    """Per row, for binomtest at ``alpha``: it rejects every count ``<= gl`` or ``>= gu`` and none in
    ``(al, au)``; ``cl``/``cu`` are the equal-tailed ``alpha/2`` boundaries (the last count with
    ``cdf < alpha/2``, the first with ``P(X >= x) < alpha/2``)."""

    gl: np.ndarray
    gu: np.ndarray
    al: np.ndarray
    au: np.ndarray
    cl: np.ndarray
    cu: np.ndarray


def _binomtest_bounds(n: np.ndarray, p: np.ndarray, alpha: float) -> _Bounds:
    """Where binomtest surely rejects and where it surely does not, from tail sums alone.

    A count below ``n p`` has p-value at least its ``cdf`` (above: ``P(X >= x)``), so nothing
    beyond ``al``/``au`` is rejected. A count less likely than both equal-tailed ``alpha/2``
    boundaries has a p-value summing only counts outside them, at most ``alpha``: rejected.
    """
    binom = stats.binom
    pn = p * n
    below_top = np.ceil(pn).astype(np.int64) - 1  # counts below n p: [0, below_top]
    above_bottom = np.floor(pn).astype(np.int64) + 1  # counts above n p: [above_bottom, n]
    zero = np.zeros_like(n)
    full, half = np.full(n.shape, alpha), np.full(n.shape, alpha / 2)
    al = _last_true(_cdf_at_most, zero, below_top, (n, p, full), guess=_quantile(n, p, alpha))
    au = _first_true(_sf_at_most, above_bottom, n, (n, p, full), guess=_quantile(n, p, 1 - alpha) + 1)
    cl = _last_true(_cdf_below, zero, below_top, (n, p, half), guess=_quantile(n, p, alpha / 2))
    cu = _first_true(_sf_below, above_bottom, n, (n, p, half), guess=_quantile(n, p, 1 - alpha / 2) + 1)
    faint = np.minimum(
        np.where(cl >= 0, binom.pmf(cl, n, p), 0.0), np.where(cu <= n, binom.pmf(cu, n, p), 0.0)
    ) / (_RERR * _RERR)
    gl = _last_true(_pmf_at_most, zero, cl, (n, p, faint), guess=cl)
    gu = _first_true(_pmf_at_most, np.maximum(cu, above_bottom), n, (n, p, faint), guess=cu)
    return _Bounds(gl=gl, gu=gu, al=al, au=au, cl=cl, cu=cu)


def _quantile(n: np.ndarray, p: np.ndarray, q: float) -> np.ndarray:
    """Cornish-Fisher approximation of the binomial ``q`` quantile: only a starting point for
    the searches, which confirm every boundary on scipy's own probabilities."""
    sd = np.sqrt(n * p * (1.0 - p))
    z = float(stats.norm.ppf(q))
    return np.asarray(np.floor(n * p + sd * z + (z * z - 1.0) * (1.0 - 2.0 * p) / 6.0 - 0.5), dtype=np.int64)


def _rejection_probability(n: np.ndarray, low: np.ndarray, high: np.ndarray, q: float) -> np.ndarray:
    return np.asarray(stats.binom.cdf(low, n, q) + stats.binom.sf(high - 1, n, q))


def _alternatives(p0: float, d: float) -> list[float]:
    return [q for q in (p0 - d, p0 + d) if 0.0 <= q <= 1.0]


# --------------------------------------------------------------------------- check_proportion


def proportion_power(n: int, expected: float, true: float, alpha: float) -> float:
    """Exact probability that ``check_proportion(x, n, expected, alpha)`` fails when ``x`` is
    Binomial(``n``, ``true``); at ``true == expected`` this is the check's exact false-failure
    rate."""
    ns = np.array([n], dtype=np.int64)
    low, high = _binomtest_region(ns, np.full(1, expected), alpha)
    return float(_rejection_probability(ns, low, high, true)[0])


def proportion_powered(ns: np.ndarray, expected: float, alpha: float, d: float, power: float) -> np.ndarray:
    """Per N in ``ns``: whether check_proportion at ``alpha`` has exact power ``>= power`` at both
    ``expected ± d`` (those inside [0, 1]).

    Rows whose power is certain to be above or below the target by the bounds of
    :func:`_binomtest_bounds` skip the exact region; the rest get it.
    """
    ns = np.asarray(ns, dtype=np.int64)
    p = np.full(ns.shape, expected)
    return _decide(ns, p, alpha, _alternatives(expected, d), power)


def _decide(
    ns: np.ndarray, p: np.ndarray, alpha: float, alternatives: Sequence[float], power: float
) -> np.ndarray:
    """Whether binomtest at ``alpha`` (null share ``p`` per row) has power ``>= power`` at every
    share in ``alternatives``, per row of ``ns``."""
    b = _binomtest_bounds(ns, p, alpha)
    surely = (
        np.min([_rejection_probability(ns, b.gl, b.gu, q) for q in alternatives], axis=0) >= power + _MARGIN
    )
    never = (
        np.min([_rejection_probability(ns, b.al, b.au, q) for q in alternatives], axis=0) < power - _MARGIN
    )
    out = np.array(surely, dtype=bool)
    rest = ~surely & ~never
    if rest.any():
        m, pm = ns[rest], p[rest]
        low, high = _binomtest_region(m, pm, alpha)
        worst = np.min([_rejection_probability(m, low, high, q) for q in alternatives], axis=0)
        out[rest] = worst >= power
    return out


# --------------------------------------------------------------------------- check_weights


def fit_power(n: int, shares: Sequence[float], category: int, true: float, alpha: float) -> float:
    """Probability that the fit test of :func:`~harness.traffic.stats.check_weights` over the
    non-zero ``shares`` (normalised) rejects ``n`` observations when category ``category`` has
    true share ``true``: exact for two categories, a lower bound for more (see the module
    docstring), whatever the other categories' true shares are."""
    ns = np.array([n], dtype=np.int64)
    return float(_fit_rejection(ns, tuple(shares), category, alpha, [true])[0][0])


def fit_powered(ns: np.ndarray, shares: Sequence[float], alpha: float, d: float, power: float) -> np.ndarray:
    """Per N in ``ns``: whether the fit test of check_weights over the non-zero ``shares`` has
    power ``>= power`` against every alternative that moves one category by ``d`` (exact for two
    categories, by the lower bound for more)."""
    ns = np.asarray(ns, dtype=np.int64)
    tested = range(1) if len(shares) == 2 else range(len(shares))  # two: one count decides
    worst = np.ones(ns.shape)
    for j in tested:
        alternatives = _alternatives(shares[j], d)
        if alternatives:
            rows = _fit_rejection(ns, tuple(shares), j, alpha, alternatives)
            worst = np.minimum(worst, np.min(rows, axis=0))
    return np.asarray(worst >= power)


def _fit_rejection(
    ns: np.ndarray,
    shares: tuple[float, ...],
    j: int,
    alpha: float,
    alternatives: Sequence[float],
) -> list[np.ndarray]:
    """Per alternative share of category ``j``: per row of ``ns``, the probability that the fit
    test rejects (exact for two categories, else the Bonferroni lower bound)."""
    weights = np.asarray(shares, dtype=float)
    # check_weights: binomtest(count of j, n, share of j), alone for two categories, at alpha / k otherwise
    level = alpha if len(shares) == 2 else alpha / len(shares)
    p = np.full(ns.shape, weights[j] / weights.sum())
    low, high = _binomtest_region(ns, p, level)
    return [_rejection_probability(ns, low, high, q) for q in alternatives]


# --------------------------------------------------------------------------- sample sizes


def smallest_powered_n(powered: Callable[[np.ndarray], np.ndarray], guess: int) -> int:
    """The smallest N such that ``powered`` holds at N and at every larger N up to at least 2N.

    ``powered`` maps an array of N to booleans; ``guess`` (an approximation) sets the first
    range scanned. The range widens down until it holds a shortfall (or reaches 1) and up until it
    reaches twice the answer; each N is evaluated once.
    """
    low = max(1, math.floor(0.9 * guess))
    high = max(low + 1, math.ceil(2.2 * guess))
    ok = np.asarray(powered(np.arange(low, high + 1, dtype=np.int64)), dtype=bool)
    while True:
        short = np.flatnonzero(~ok)
        if short.size == 0 and low > 1:
            new_low = max(1, low // 2)
            below = np.asarray(powered(np.arange(new_low, low, dtype=np.int64)), dtype=bool)
            low, ok = new_low, np.concatenate([below, ok])
            continue
        n = low + int(short[-1]) + 1 if short.size else 1
        if 2 * n > high:
            above = np.asarray(powered(np.arange(high + 1, 2 * n + 1, dtype=np.int64)), dtype=bool)
            high, ok = 2 * n, np.concatenate([ok, above])
            continue
        return n
