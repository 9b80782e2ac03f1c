"""Routing-weight and proportion checks with stated error rates, fit to be signed off.

The usual mesh test ("send 100 requests, expect 50/50 within ±10") has no stated error
rate: a perfectly correct mesh fails it about 3.5% of the time
(:func:`false_failure_rate_of_tolerance_check` computes this exactly), and nobody can say
which wrong configurations it would let through. Every check in this module instead states
two numbers up front and derives the number of requests from them:

``alpha``
    The false-failure rate: the probability that a mesh whose traffic split is exactly as
    configured fails the check anyway. Default 0.001 (one run in a thousand).
``power`` at ``min_deviation``
    The probability that the check fails a mesh whose split is off by at least
    ``min_deviation`` (absolute: 0.05 means 5 percentage points) in some category. Default
    0.99 at 0.05. This holds for the *least* detectable such mis-split, and only when at least
    :func:`sample_size_for_weights` (or :func:`sample_size_for_proportion`) requests were
    observed; verdicts carry that number and say so when a check was underpowered.

Verdicts report the observed split with exact (Clopper-Pearson) confidence intervals, so a
reader sees not just PASS/FAIL but how close the mesh came.

How weights are tested (:func:`check_weights`):

* Categories with configured weight 0 (a ``100/0`` split, a drained subset) must receive no
  traffic at all. Any request there is a failure; this part never fails a correct mesh.
* Traffic to a category that is not configured at all fails the same way.
* The categories with non-zero weight are compared with Pearson's chi-square goodness-of-fit
  test at level ``alpha``. If some expected count is below 5, where the chi-square
  approximation is unreliable, an exact binomial test is used instead (Bonferroni-corrected
  over categories when there are more than two), and the verdict notes it.

The module is pure: no I/O, no logging, no environment. Nonsense inputs raise
:class:`ValueError`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from types import MappingProxyType

import numpy as np
from scipy import stats

__all__ = [
    "CategoryResult",
    "Interval",
    "ProportionVerdict",
    "SequentialWeights",
    "WeightVerdict",
    "batch_conforms",
    "check_proportion",
    "check_weights",
    "clopper_pearson",
    "false_failure_rate_of_tolerance_check",
    "latency_quantiles",
    "sample_size_for_proportion",
    "sample_size_for_weights",
]

#: Below this expected count in any category, the chi-square approximation is not trusted.
MIN_EXPECTED_COUNT = 5.0


# --------------------------------------------------------------------------- intervals


@dataclass(frozen=True)
class Interval:
    """A closed interval of proportions, ``0 <= low <= high <= 1``."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (0.0 <= self.low <= self.high <= 1.0):
            raise ValueError(f"interval must satisfy 0 <= low <= high <= 1, got [{self.low}, {self.high}]")

    def contains(self, p: float) -> bool:
        """Whether proportion ``p`` lies in the interval (ends included)."""
        return self.low <= p <= self.high

    def percent(self, digits: int = 1) -> str:
        """The interval as percentages, e.g. ``"[47.0,53.1]"``."""
        return f"[{self.low * 100:.{digits}f},{self.high * 100:.{digits}f}]"


def clopper_pearson(successes: int, trials: int, confidence: float) -> Interval:
    """Exact (Clopper-Pearson) two-sided confidence interval for a binomial proportion (scipy's
    ``binomtest(...).proportion_ci(method="exact")``).

    Its coverage is at least ``confidence`` for every true proportion, unlike the normal
    (Wald) interval, which undercovers near 0 and 1, exactly where routing checks live.
    With no trials the interval is ``[0, 1]``.

    >>> clopper_pearson(0, 10, 0.95).high  # doctest: +ELLIPSIS
    0.308...
    """
    _require_open_unit("confidence", confidence)
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")
    if trials == 0:
        return Interval(0.0, 1.0)
    ci = stats.binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="exact")
    return Interval(float(ci.low), float(ci.high))


# --------------------------------------------------------------------------- sample sizes


def sample_size_for_weights(
    expected: Mapping[str, float],
    alpha: float = 0.001,
    power: float = 0.99,
    min_deviation: float = 0.05,
) -> int:
    """Number of requests :func:`check_weights` needs to meet its stated error rates.

    ``expected`` maps category (e.g. subset or version) to its configured weight, as
    percentages or fractions; it is normalised. The result is the smallest N such that:

    * with two or more non-zero categories, the chi-square goodness-of-fit test at level
      ``alpha`` rejects with probability at least ``power`` under every alternative in which
      some category's share is off by ``min_deviation`` (absolute) with the difference taken
      from or given to the others. The least detectable such alternative shifts category
      ``j`` by ``d`` and spreads ``-d`` over the others in proportion to their weights; its
      noncentrality is ``N * d**2 / (p_j * (1 - p_j))``, minimised over ``j``. This is never
      easier to detect than moving ``d`` between a single pair of categories (the two agree
      for two categories), so the guarantee covers pairwise mis-splits too. Power uses the
      noncentral chi-square distribution (``scipy.stats.ncx2``).
    * with zero-weight categories present, additionally ``(1 - d)**N <= 1 - power``: a leak of
      ``d`` into a category that must stay empty shows at least one stray request with
      probability ``power``. With a single non-zero category (``100/0``) this is the whole
      rule; it has no false failures at all, so ``alpha`` does not enter.

    Raises :class:`ValueError` if ``alpha``, ``power`` or ``min_deviation`` is not in (0, 1),
    if the weights are empty, negative, non-finite or all zero, or if no category can be off
    by ``min_deviation`` at all (possible only for deviations above 0.5).
    """
    _require_design(alpha, power, min_deviation)
    shares = _normalise(expected)
    return _required_n(tuple(shares.values()), alpha, power, min_deviation)


def sample_size_for_proportion(
    expected: float,
    alpha: float = 0.001,
    power: float = 0.99,
    min_deviation: float = 0.05,
) -> int:
    """Number of trials :func:`check_proportion` needs to meet its stated error rates.

    For ``0 < expected < 1``: the two-sided test at level ``alpha`` detects a true proportion
    of ``expected ± min_deviation`` (whichever is harder, among those inside [0, 1]) with
    probability ``power``, by the normal approximation
    ``N = ((z_{1-alpha/2} sqrt(p0 q0) + z_power sqrt(p1 q1)) / d)**2``, rounded up.
    For ``expected`` 0 or 1 the exact rule ``(1 - d)**N <= 1 - power`` applies (one
    disagreeing trial already fails the check).
    """
    _require_design(alpha, power, min_deviation)
    if not 0.0 <= expected <= 1.0:
        raise ValueError(f"expected proportion must be in [0, 1], got {expected}")
    if expected in (0.0, 1.0):
        return _zero_rule_n(power, min_deviation)
    alternatives = [p1 for p1 in (expected - min_deviation, expected + min_deviation) if 0.0 <= p1 <= 1.0]
    if not alternatives:
        raise ValueError(f"no proportion differs from {expected} by {min_deviation} within [0, 1]")
    z_alpha = float(stats.norm.isf(alpha / 2.0))
    z_power = float(stats.norm.ppf(power))
    sd0 = math.sqrt(expected * (1.0 - expected))
    worst = max(
        ((z_alpha * sd0 + z_power * math.sqrt(p1 * (1.0 - p1))) / min_deviation) ** 2 for p1 in alternatives
    )
    return max(1, math.ceil(worst - 1e-9))


# --------------------------------------------------------------------------- weight checks


@dataclass(frozen=True)
class CategoryResult:
    """Observed versus expected traffic for one category.

    ``expected`` is the normalised configured share in [0, 1]; ``observed_share`` is
    ``observed / N`` over all observations (including ones in unexpected categories);
    ``interval`` is the Clopper-Pearson interval for the true share at confidence
    ``1 - alpha/k`` (Bonferroni over the ``k`` configured categories, so all ``k`` intervals
    hold together with probability at least ``1 - alpha``).
    """

    name: str
    expected: float
    observed: int
    observed_share: float
    interval: Interval


@dataclass(frozen=True)
class WeightVerdict:
    """The outcome of :func:`check_weights`.

    ``passed``
        No traffic in zero-weight or unconfigured categories, at least one observation, and
        the fit test over non-zero categories did not reject at ``alpha``.
    ``n``
        Total observations, including those in zero-weight and unexpected categories.
    ``alpha``, ``power``, ``min_deviation``
        The design: false-failure rate, and power at that absolute deviation.
    ``statistic``, ``p_value``, ``test``
        ``test`` is ``"chi-square"`` (Pearson goodness of fit over the non-zero categories),
        ``"binomial"`` (exact binomial test, Bonferroni over categories if more than two;
        used when an expected count is below 5), or ``"exact-zero"`` (one non-zero category:
        p-value 1 with no strays, 0 with any). ``statistic`` is Pearson's X² over the
        non-zero categories, or for ``"exact-zero"`` the number of stray observations.
        ``p_value`` belongs to ``test``; zero-weight and unexpected traffic fail the verdict
        separately (see ``notes``).
    ``categories``
        One row per configured category, in the order given.
    ``unexpected``
        Observation counts in categories that are not configured (only non-zero counts).
    ``required_n``
        Observations needed for the stated power (:func:`sample_size_for_weights`).
        If ``n < required_n`` the verdict is still valid at ``alpha``, but the power claim
        does not hold; :meth:`summary` and :meth:`table` say so.
    ``notes``
        Human-readable reasons and caveats (stray traffic, exact fallback, no data).
    """

    passed: bool
    n: int
    alpha: float
    power: float
    min_deviation: float
    statistic: float
    p_value: float
    test: str
    categories: tuple[CategoryResult, ...]
    unexpected: Mapping[str, int]
    required_n: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def verdict(self) -> str:
        """``"PASS"`` or ``"FAIL"``."""
        return "PASS" if self.passed else "FAIL"

    @property
    def underpowered(self) -> bool:
        """True when fewer than ``required_n`` requests were observed."""
        return self.n < self.required_n

    def power_claim(self) -> str:
        """What this verdict can detect, e.g. ``"detects >=5.0pp deviation with power 0.99"``."""
        dev = f"{self.min_deviation * 100:.1f}pp"
        if self.underpowered:
            return (
                f"UNDERPOWERED: N>={self.required_n} needed to detect {dev} deviation "
                f"with power {self.power:g}"
            )
        return f"detects >={dev} deviation with power {self.power:g}"

    def summary(self) -> str:
        """One line, e.g. ``PASS chi-square N=3200 p=0.41 alpha=0.001 (detects ...) v1 50.3% [47.2,53.4]``."""
        parts = [
            f"{self.verdict} {self.test} N={self.n} p={_fmt_p(self.p_value)} alpha={self.alpha:g}",
            f"({self.power_claim()})",
        ]
        parts += [f"{c.name} {c.observed_share * 100:.1f}% {c.interval.percent()}" for c in self.categories]
        if self.unexpected:
            parts.append("unexpected " + ",".join(f"{k}={v}" for k, v in self.unexpected.items()))
        return " ".join(parts)

    def table(self) -> str:
        """Plain-text observed-versus-expected table with a header line and any notes."""
        k = max(1, len(self.categories))
        ci_label = f"{(1.0 - self.alpha / k) * 100:.4g}% CI"
        header = (
            f"{self.test} test: N={self.n} p={_fmt_p(self.p_value)} alpha={self.alpha:g} "
            f"verdict={self.verdict} ({self.power_claim()})"
        )
        rows: list[tuple[str, str, str, str, str]] = [
            ("category", "expected %", "observed n", "observed %", ci_label),
            *(
                (
                    c.name,
                    f"{c.expected * 100:.1f}",
                    str(c.observed),
                    f"{c.observed_share * 100:.1f}",
                    c.interval.percent(),
                )
                for c in self.categories
            ),
        ]
        for name, count in self.unexpected.items():
            share = count / self.n if self.n else 0.0
            rows.append((name, "unexpected", str(count), f"{share * 100:.1f}", "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [header]
        for r in rows:
            cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, 5)]
            lines.append("  ".join(cells).rstrip())
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def check_weights(
    expected: Mapping[str, float],
    observed: Mapping[str, int],
    alpha: float = 0.001,
    power: float = 0.99,
    min_deviation: float = 0.05,
) -> WeightVerdict:
    """Check an observed traffic split against configured weights.

    ``expected`` maps category to configured weight (percentages or fractions, normalised;
    zero weights allowed). ``observed`` maps category to request count; configured
    categories missing from it count as 0. The verdict fails if:

    * any request landed in a zero-weight category (exact: impossible under a correct mesh);
    * any request landed in a category not in ``expected``;
    * nothing was observed at all (a check without data proves nothing);
    * with two or more non-zero categories, the goodness-of-fit test over them has
      ``p_value <= alpha``: chi-square, or an exact binomial test when some expected count
      is below 5 (noted in the verdict).

    ``power`` and ``min_deviation`` do not change the decision; they set
    ``WeightVerdict.required_n`` and how the verdict describes its own power.
    """
    _require_design(alpha, power, min_deviation)
    shares = _normalise(expected)
    counts = _validate_counts(observed)
    required_n = _required_n(tuple(shares.values()), alpha, power, min_deviation)

    n = sum(counts.values())
    unexpected = {name: counts[name] for name in sorted(counts) if name not in shares and counts[name] > 0}
    confidence = 1.0 - alpha / len(shares)
    categories = tuple(
        CategoryResult(
            name=name,
            expected=share,
            observed=counts.get(name, 0),
            observed_share=counts.get(name, 0) / n if n else 0.0,
            interval=clopper_pearson(counts.get(name, 0), n, confidence),
        )
        for name, share in shares.items()
    )

    notes: list[str] = []
    if n == 0:
        notes.append("no observations: nothing was verified")
    stray = {c.name: c.observed for c in categories if c.expected == 0.0 and c.observed > 0}
    if stray:
        notes.append("traffic in zero-weight categories: " + ", ".join(f"{k}={v}" for k, v in stray.items()))
    if unexpected:
        notes.append(
            "traffic in categories not configured: " + ", ".join(f"{k}={v}" for k, v in unexpected.items())
        )

    weighted = [c for c in categories if c.expected > 0.0]
    if len(weighted) == 1:
        test = "exact-zero"
        strays = n - weighted[0].observed
        statistic = float(strays)
        p_value = 0.0 if strays else 1.0
    else:
        statistic, p_value, test = _fit_test(weighted, notes)
    passed = n > 0 and not stray and not unexpected and p_value > alpha
    if n > 0 and n < required_n:
        notes.append(
            f"only {n} observations; {required_n} are needed to detect a {min_deviation * 100:.1f}pp "
            f"deviation with power {power:g}"
        )
    return WeightVerdict(
        passed=passed,
        n=n,
        alpha=alpha,
        power=power,
        min_deviation=min_deviation,
        statistic=statistic,
        p_value=p_value,
        test=test,
        categories=categories,
        unexpected=MappingProxyType(unexpected),
        required_n=required_n,
        notes=tuple(notes),
    )


def batch_conforms(expected: Mapping[str, float], observed: Mapping[str, int], alpha: float = 0.01) -> bool:
    """Whether one batch is consistent with the weights: ``check_weights(...).passed`` at ``alpha``.

    Meant for polling while configuration propagates, with a looser ``alpha`` than the final
    check. A conforming batch is not a verdict; run :func:`check_weights` on fresh traffic
    at the release ``alpha`` afterwards.
    """
    return check_weights(expected, observed, alpha=alpha).passed


@dataclass(frozen=True)
class SequentialWeights:
    """Immutable state of a "has the split converged yet?" poll.

    While new routing configuration propagates, the observed split moves from the old
    weights to the new ones. Feed one batch of counts at a time to :meth:`observe`, which
    returns the next state; a batch *conforms* when :func:`check_weights` passes on it at the
    looser ``alpha_batch``. The split counts as ``converged`` after ``required_consecutive``
    conforming batches in a row; a non-conforming batch resets the streak.

    Error rates: each batch of a correctly split mesh fails with probability at most about
    ``alpha_batch``, which only delays convergence. A mis-split mesh is declared converged
    with probability ``(1 - batch_power) ** required_consecutive``, where ``batch_power``
    depends on the batch size. Convergence is a signal to start the real check, not a
    substitute for it: the signed verdict comes from :func:`check_weights` on fresh traffic
    at the release ``alpha``, because batches chosen by when they passed are biased.
    """

    expected: Mapping[str, float]
    alpha_batch: float = 0.01
    required_consecutive: int = 3
    batches: int = 0
    consecutive: int = 0
    last: WeightVerdict | None = None

    def __post_init__(self) -> None:
        _require_open_unit("alpha_batch", self.alpha_batch)
        if self.required_consecutive < 1:
            raise ValueError(f"required_consecutive must be >= 1, got {self.required_consecutive}")
        if self.batches < 0 or not 0 <= self.consecutive <= self.batches:
            raise ValueError(f"need 0 <= consecutive <= batches, got {self.consecutive}/{self.batches}")
        _normalise(self.expected)
        if not isinstance(self.expected, MappingProxyType):
            object.__setattr__(self, "expected", MappingProxyType(dict(self.expected)))

    @property
    def converged(self) -> bool:
        """True once ``required_consecutive`` batches in a row conformed."""
        return self.consecutive >= self.required_consecutive

    def observe(self, observed: Mapping[str, int]) -> SequentialWeights:
        """Account for one batch of counts and return the new state (``last`` is its verdict)."""
        verdict = check_weights(self.expected, observed, alpha=self.alpha_batch)
        return replace(
            self,
            batches=self.batches + 1,
            consecutive=self.consecutive + 1 if verdict.passed else 0,
            last=verdict,
        )


# --------------------------------------------------------------------------- proportions


@dataclass(frozen=True)
class ProportionVerdict:
    """The outcome of :func:`check_proportion`.

    ``interval`` is the Clopper-Pearson interval at confidence ``1 - alpha``; ``p_value`` is
    from the two-sided exact binomial test (for ``expected`` 0 or 1: 1 if every trial agrees,
    else 0). ``passed`` is ``p_value > alpha`` and at least one trial.
    """

    passed: bool
    successes: int
    trials: int
    expected: float
    interval: Interval
    p_value: float
    alpha: float

    def summary(self) -> str:
        """One line, e.g. ``PASS binomial 480/1000 = 48.0% [43.0,53.0] expected 50.0% p=0.22 alpha=0.001``."""
        share = self.successes / self.trials if self.trials else 0.0
        return (
            f"{'PASS' if self.passed else 'FAIL'} binomial "
            f"{self.successes}/{self.trials} = {share * 100:.1f}% "
            f"{self.interval.percent()} expected {self.expected * 100:.1f}% "
            f"p={_fmt_p(self.p_value)} alpha={self.alpha:g}"
        )


def check_proportion(successes: int, trials: int, expected: float, alpha: float = 0.001) -> ProportionVerdict:
    """Two-sided exact binomial test of ``successes / trials`` against ``expected``.

    Use it for any single rate that configuration fixes: the share of requests a fault
    injection aborts, the share a retry policy rescues, a mirror's share. For ``expected``
    0 or 1 the check is exact and never fails a correct mesh: it passes iff every trial
    agrees. Zero trials fail (there is no evidence).
    """
    _require_open_unit("alpha", alpha)
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes}/{trials}")
    if not 0.0 <= expected <= 1.0:
        raise ValueError(f"expected proportion must be in [0, 1], got {expected}")
    interval = clopper_pearson(successes, trials, 1.0 - alpha)
    if trials == 0:
        p_value = 1.0
    elif expected == 0.0:
        p_value = 1.0 if successes == 0 else 0.0
    elif expected == 1.0:
        p_value = 1.0 if successes == trials else 0.0
    else:
        p_value = float(stats.binomtest(successes, trials, expected).pvalue)
    return ProportionVerdict(
        passed=trials > 0 and p_value > alpha,
        successes=successes,
        trials=trials,
        expected=expected,
        interval=interval,
        p_value=p_value,
        alpha=alpha,
    )


# --------------------------------------------------------------------------- comparison and latency


def false_failure_rate_of_tolerance_check(n: int, p: float, tolerance: int) -> float:
    """Probability that a *correct* split fails an "expected ± tolerance" count check.

    With ``n`` requests each going to the category with probability ``p``, the check passes
    iff the count lies in ``[n*p - tolerance, n*p + tolerance]``. Exact binomial. Istio's
    100 requests, ±10 at ``p = 0.5`` gives about 0.035: one correct run in 28 fails.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    centre = n * p
    low = max(0, math.ceil(centre - tolerance - 1e-9))
    high = min(n, math.floor(centre + tolerance + 1e-9))
    if low > high:
        return 1.0
    below = float(stats.binom.cdf(low - 1, n, p)) if low > 0 else 0.0
    above = float(stats.binom.sf(high, n, p))
    return min(1.0, below + above)


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


# --------------------------------------------------------------------------- internals


def _require_open_unit(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in (0, 1), got {value}")


def _require_design(alpha: float, power: float, min_deviation: float) -> None:
    _require_open_unit("alpha", alpha)
    _require_open_unit("power", power)
    _require_open_unit("min_deviation", min_deviation)


def _normalise(expected: Mapping[str, float]) -> dict[str, float]:
    """Configured weights as fractions summing to 1, in the given order."""
    if not expected:
        raise ValueError("expected weights are empty")
    for name, weight in expected.items():
        if not (math.isfinite(weight) and weight >= 0.0):
            raise ValueError(f"weight of {name!r} must be a finite number >= 0, got {weight}")
    total = math.fsum(expected.values())
    if total <= 0.0:
        raise ValueError("expected weights are all zero")
    return {name: weight / total for name, weight in expected.items()}


def _validate_counts(observed: Mapping[str, int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, count in observed.items():
        try:
            value = operator.index(count)
        except TypeError:
            raise ValueError(f"count of {name!r} must be an integer, got {count!r}") from None
        if value < 0:
            raise ValueError(f"count of {name!r} must be >= 0, got {value}")
        counts[name] = value
    return counts


def _zero_rule_n(power: float, min_deviation: float) -> int:
    """Smallest N with ``(1 - d)**N <= 1 - power``."""
    n = max(1, math.ceil(math.log1p(-power) / math.log1p(-min_deviation)))
    while (1.0 - min_deviation) ** n > 1.0 - power:
        n += 1
    while n > 1 and (1.0 - min_deviation) ** (n - 1) <= 1.0 - power:
        n -= 1
    return n


def _worst_effect(shares: Sequence[float], min_deviation: float) -> float:
    """Smallest per-request noncentrality among alternatives with one category off by ``d``."""
    d = min_deviation
    effects = [
        d * d / (p * (1.0 - p)) for p in shares if p >= d or p + d <= 1.0
    ]  # p - d >= 0 or p + d <= 1: category can move by d; the others absorb it proportionally
    if not effects:
        raise ValueError(f"no category can be off by {d}: min_deviation is too large for these weights")
    return min(effects)


def _chi_square_power(n: int, effect: float, df: int, critical: float) -> float:
    return float(stats.ncx2.sf(critical, df, n * effect))


@lru_cache(maxsize=256)
def _required_n(shares: tuple[float, ...], alpha: float, power: float, min_deviation: float) -> int:
    """:func:`sample_size_for_weights` on normalised shares (cached: check_weights calls it per batch)."""
    nonzero = [p for p in shares if p > 0.0]
    zero_n = _zero_rule_n(power, min_deviation)
    if len(nonzero) == 1:
        return zero_n
    df = len(nonzero) - 1
    effect = _worst_effect(nonzero, min_deviation)
    critical = float(stats.chi2.isf(alpha, df))
    low, high = 0, 1  # power(low) < power <= power(high)
    while _chi_square_power(high, effect, df, critical) < power:
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        if _chi_square_power(mid, effect, df, critical) >= power:
            high = mid
        else:
            low = mid
    return max(high, zero_n) if len(nonzero) < len(shares) else high


def _fit_test(weighted: Sequence[CategoryResult], notes: list[str]) -> tuple[float, float, str]:
    """Goodness of fit over the non-zero categories: (statistic, p-value, test name)."""
    n = sum(c.observed for c in weighted)
    if n == 0:
        return 0.0, 1.0, "chi-square"
    f_obs = np.array([c.observed for c in weighted], dtype=float)
    f_exp = np.array([c.expected for c in weighted], dtype=float)
    f_exp = f_exp / f_exp.sum() * n
    if float(f_exp.min()) >= MIN_EXPECTED_COUNT:
        result = stats.chisquare(f_obs, f_exp)
        return float(result.statistic), float(result.pvalue), "chi-square"
    statistic = float(np.sum((f_obs - f_exp) ** 2 / f_exp))
    k = len(weighted)
    p_values = [
        float(stats.binomtest(c.observed, n, f / n).pvalue) for c, f in zip(weighted, f_exp, strict=True)
    ]
    # Two categories: both tests are the same test. More: Bonferroni over the k tests.
    p_value = p_values[0] if k == 2 else min(1.0, k * min(p_values))
    small = ", ".join(
        f"{c.name}={f:.2g}" for c, f in zip(weighted, f_exp, strict=True) if f < MIN_EXPECTED_COUNT
    )
    how = "exact binomial test" if k == 2 else f"exact binomial tests, Bonferroni over {k} categories"
    notes.append(f"expected count below {MIN_EXPECTED_COUNT:g} ({small}): used {how} instead of chi-square")
    return statistic, p_value, "binomial"


def _fmt_p(p: float) -> str:
    return f"{p:.2g}"
