# Over 500 lines: every statistical check with its derivation in the docstrings; pure functions, no I/O.
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
* The categories with non-zero weight are compared with exact binomial tests at level
  ``alpha``: with two categories, the two-sided exact binomial test of the first one's count;
  with more, each category against the rest at ``alpha / k`` (Bonferroni). Both keep their
  false-failure rate at or below ``alpha`` exactly, at every N. (Pearson's chi-square, used
  before, only approximates its level: at 90/10 and N=1,136 its exact false-failure rate was
  0.00115, above the stated 0.001.)

Sequential checks (:func:`sequential_plan`, :class:`SequentialCheck`)
------------------------------------------------------------------------

A fixed-n check sends :func:`sample_size_for_weights` requests whatever they show. The
sequential checks keep the same two numbers, ``alpha`` and ``power`` at ``min_deviation``,
and stop as soon as the evidence decides. The design is Wald's sequential probability ratio
test (SPRT), one per way the split can be wrong:

* For each configured category ``j`` with share ``p0`` (only the first one when there are
  two non-zero categories, whose shares are complements) and each direction
  ``p1 = p0 - d`` and ``p1 = p0 + d`` inside [0, 1], a one-sided SPRT of ``p0`` against
  ``p1``. After ``n`` requests of which ``x`` went to ``j`` its log-likelihood ratio is
  ``L = x log(p1/p0) + (n - x) log((1 - p1)/(1 - p0))``. The category's count is
  Binomial(n, p_j) whatever the other categories do, so each SPRT sees exactly its model.
* With ``m`` such tests, each rejects (FAIL) when ``L >= log(m / alpha)`` and accepts when
  ``L <= log(1 - power)``; an accepted test stops for good. The check FAILS as soon as one
  test rejects, and PASSES once every test has accepted (and, if some category must stay
  empty, at least the zero-rule number of requests was seen). Traffic in a zero-weight or
  unconfigured category fails the check at once, exactly as in :func:`check_weights`.

Why the error rates hold, without any normal approximation: under the configured split
``p0`` the likelihood ratio ``exp(L_n)`` of one test is a non-negative martingale with mean 1,
so by Ville's inequality ``P(exp(L_n) >= m/alpha for some n) <= alpha/m``; the union over the
``m`` tests bounds the false-failure rate by ``alpha``. Under an alternative in which category
``j`` is off by ``d`` in one direction, ``exp(-L_n)`` of that test is a martingale with mean 1,
so ``P(L_n <= log(1 - power) for some n) <= 1 - power``: the check cannot PASS without that
test accepting, so it FAILS with probability at least ``power`` (for larger deviations the
test's ratio drifts up faster still). Both bounds hold for any rule about *when* to look, so
the sampler may look every few dozen responses, as long as it feeds responses in the order
the requests were issued. (These are Wald's inequalities ``alpha' <= 1/A``,
``beta' <= B`` with ``A = m/alpha`` and ``B = 1 - power``, the conservative choice; the
overshoot at group looks makes the real rates lower still.) The guarantee for
``min_deviation`` is per category and direction, so it covers the least favourable
alternative of :func:`sample_size_for_weights` too.

A run that has not decided after ``truncate_at`` (default 3) times the fixed-n size is
decided by the fixed-n check on everything observed; under either hypothesis that point lies
many standard deviations beyond the expected stopping time, because each test's ``L`` drifts
linearly away from both boundaries (by the Kullback-Leibler divergence per request).
Expected sample size under the configured split, measured by :func:`simulate_sequential`:
about half the fixed-n (90/10: ~560 of 1,314; 50/50: ~1,450 of 3,164). The unit tests
replay 10,000 runs per design to check both rates.

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

from harness.traffic import power as _power
from harness.traffic import sizes as _sizes
from harness.traffic.latency import latency_quantiles

__all__ = [
    "CategoryResult",
    "Interval",
    "OneSidedSprt",
    "ProportionVerdict",
    "SequentialCheck",
    "SequentialPlan",
    "SequentialVerdict",
    "SequentialWeights",
    "SimulatedRuns",
    "WeightVerdict",
    "batch_conforms",
    "check_proportion",
    "check_weights",
    "clopper_pearson",
    "false_failure_rate_of_tolerance_check",
    "latency_quantiles",
    "one_sided_proportion_plan",
    "sample_size_for_proportion",
    "sample_size_for_weights",
    "sequential_plan",
    "sequential_proportion_plan",
    "simulate_sequential",
]


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
    percentages or fractions; it is normalised. The result is the smallest N from which on (at
    N and at every larger N up to at least 2N: power is saw-toothed in N, and a check may
    observe more than N) these hold:

    * with two or more non-zero categories, the fit test of :func:`check_weights` at level
      ``alpha`` rejects with probability at least ``power`` under every alternative in which
      some category's share is off by ``min_deviation`` (absolute), however the difference is
      taken from or given to the others. With two categories the power is exact: binomial
      probabilities summed over the rejection region of the exact binomial test check_weights
      runs. With more it is an exact lower bound: the Bonferroni test rejects whenever the test
      of category ``j`` against the rest rejects at ``alpha / k``, and that depends only on the
      count of ``j``, binomial with its true share (:mod:`harness.traffic.power`). The
      noncentral chi-square approximation used before understated N (80/10/10: 2,256 requests,
      power 0.986).
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

    For ``0 < expected < 1``: the smallest N from which on (at N and every larger N up to at
    least 2N) the exact binomial test that :func:`check_proportion` runs at level ``alpha``
    rejects with probability at least ``power`` when the true proportion is ``expected ±
    min_deviation`` (each of the two inside [0, 1]). The power is exact: binomial
    probabilities summed over that test's own rejection region (:mod:`harness.traffic.power`).
    The normal approximation ``((z_{1-alpha/2} sqrt(p0 q0) + z_power sqrt(p1 q1)) / d)**2`` only
    seeds the search; it falls short (at 10% ± 5pp it gives 1,322 trials, whose exact power is
    0.988).
    For ``expected`` 0 or 1 the exact rule ``(1 - d)**N <= 1 - power`` applies (one
    disagreeing trial already fails the check).
    """
    _require_design(alpha, power, min_deviation)
    if not 0.0 <= expected <= 1.0:
        raise ValueError(f"expected proportion must be in [0, 1], got {expected}")
    if expected in (0.0, 1.0):
        return _zero_rule_n(power, min_deviation)
    if not [p1 for p1 in (expected - min_deviation, expected + min_deviation) if 0.0 <= p1 <= 1.0]:
        raise ValueError(f"no proportion differs from {expected} by {min_deviation} within [0, 1]")
    return _proportion_n(expected, alpha, power, min_deviation)


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
        ``test`` is ``"binomial"`` (the exact binomial test of the first non-zero category, with
        two), ``"binomial-bonferroni"`` (each category against the rest at ``alpha / k``, with
        ``k`` > 2 non-zero categories), or ``"exact-zero"`` (one non-zero category:
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
        does not hold; :meth:`summary` and :meth:`table` say so. 0: not computed (a batch of a
        convergence poll, ``check_weights(..., sample_size=False)``): no power is claimed.
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
        if not self.required_n:
            return "power not assessed: a batch of a convergence poll, not a verdict"
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
        return " ".join(parts + _split_words(self.categories, self.unexpected))

    def table(self) -> str:
        """Plain-text observed-versus-expected table with a header line and any notes."""
        header = (
            f"{self.test} test: N={self.n} p={_fmt_p(self.p_value)} alpha={self.alpha:g} "
            f"verdict={self.verdict} ({self.power_claim()})"
        )
        lines = [header, *_split_table(self.categories, self.unexpected, self.alpha, n=self.n)]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


def check_weights(
    expected: Mapping[str, float],
    observed: Mapping[str, int],
    alpha: float = 0.001,
    power: float = 0.99,
    min_deviation: float = 0.05,
    *,
    sample_size: bool = True,
) -> WeightVerdict:
    """Check an observed traffic split against configured weights.

    ``expected`` maps category to configured weight (percentages or fractions, normalised;
    zero weights allowed). ``observed`` maps category to request count; configured
    categories missing from it count as 0. The verdict fails if:

    * any request landed in a zero-weight category (exact: impossible under a correct mesh);
    * any request landed in a category not in ``expected``;
    * nothing was observed at all (a check without data proves nothing);
    * with two or more non-zero categories, the goodness-of-fit test over them has
      ``p_value <= alpha``: the exact binomial test (two categories), or exact binomial
      tests of each category against the rest, Bonferroni over ``k`` (more).

    ``power`` and ``min_deviation`` do not change the decision; they set
    ``WeightVerdict.required_n`` and how the verdict describes its own power. With
    ``sample_size=False`` that size is not computed (``required_n`` 0, no power claimed): finding
    it takes 0.1-0.4 s of CPU per design, which a convergence poll's batches, judged only on
    ``passed``, do not need.
    """
    _require_design(alpha, power, min_deviation)
    shares = _normalise(expected)
    counts = _validate_counts(observed)
    required_n = _required_n(tuple(shares.values()), alpha, power, min_deviation) if sample_size else 0

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
    return check_weights(expected, observed, alpha=alpha, sample_size=False).passed


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
        verdict = check_weights(self.expected, observed, alpha=self.alpha_batch, sample_size=False)
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


# --------------------------------------------------------------------------- sequential tests


@dataclass(frozen=True)
class OneSidedSprt:
    """One of a sequential plan's one-sided tests: category share ``p0`` against ``p1 = p0 ± d``.

    After ``n`` observations of which ``x`` fell in the category, its log-likelihood ratio is
    ``x * log(p1 / p0) + (n - x) * log((1 - p1) / (1 - p0))`` (``up`` and ``down`` below).
    """

    category: str
    p0: float
    p1: float

    @property
    def up(self) -> float:
        """LLR increment of an observation in the category (``-inf`` when ``p1 == 0``)."""
        return math.log(self.p1 / self.p0) if self.p1 > 0.0 else -math.inf

    @property
    def down(self) -> float:
        """LLR increment of an observation elsewhere (``-inf`` when ``p1 == 1``)."""
        return math.log((1.0 - self.p1) / (1.0 - self.p0)) if self.p1 < 1.0 else -math.inf

    def describe(self) -> str:
        side = ">=" if self.p1 > self.p0 else "<="
        return f"{self.category} {side} {self.p1 * 100:.1f}%"


@dataclass(frozen=True)
class SequentialPlan:
    """The boundaries of one sequential weight or proportion check (see the derivation above).

    ``names``/``shares`` are the configured categories and their normalised shares;
    ``tests`` the one-sided SPRTs, each with upper boundary ``log_a = log(m / alpha)`` and
    lower boundary ``log_b = log(1 - power)``; ``min_n`` the observations a PASS needs at
    least (the zero rule, when a category must stay empty); ``fixed_n`` the sample size of the
    fixed-n check this plan replaces (:func:`sample_size_for_weights`); ``max_n`` where the
    test is truncated and the fixed-n check decides on everything observed.
    """

    names: tuple[str, ...]
    shares: tuple[float, ...]
    alpha: float
    power: float
    min_deviation: float
    tests: tuple[OneSidedSprt, ...]
    log_a: float
    log_b: float
    min_n: int
    fixed_n: int
    max_n: int
    # one direction only (:func:`one_sided_proportion_plan`): truncation falls back to the
    # one-sided exact binomial test
    one_sided: bool = False

    def llr(self, counts: np.ndarray) -> np.ndarray:
        """Log-likelihood ratios, shape ``(..., m)``, of counts shaped ``(..., len(names))``."""
        counts = np.asarray(counts, dtype=float)
        n = counts[..., [i for i, p in enumerate(self.shares) if p > 0.0]].sum(axis=-1)
        out = np.zeros((*counts.shape[:-1], len(self.tests)))
        for j, t in enumerate(self.tests):
            x = counts[..., self.names.index(t.category)]
            with np.errstate(invalid="ignore"):
                out[..., j] = np.where(x > 0, x * t.up, 0.0) + np.where(n - x > 0, (n - x) * t.down, 0.0)
        return out

    def step(
        self, counts: np.ndarray, accepted: np.ndarray, strays: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One look at cumulative ``counts`` ``(R, k)``: ``(accepted, rejected, passed)``.

        ``accepted`` ``(R, m)`` marks tests that already crossed their lower boundary: they
        have stopped and stay accepted. ``strays`` ``(R,)`` counts observations in
        zero-weight or unconfigured categories; any stray rejects (exactly).
        """
        counts = np.asarray(counts)
        llr = self.llr(counts)
        still_open = ~accepted
        rejected = (still_open & (llr >= self.log_a)).any(axis=-1) | (np.asarray(strays) > 0)
        accepted = accepted | (still_open & (llr <= self.log_b))
        n = counts.sum(axis=-1)
        passed = ~rejected & accepted.all(axis=-1) & (n >= self.min_n)
        return accepted, rejected, passed

    def start(self, observed: Mapping[str, int] | None = None) -> SequentialCheck:
        """A check with nothing (or ``observed``) seen yet."""
        state = SequentialCheck(
            self, (0,) * len(self.names), MappingProxyType({}), (False,) * len(self.tests)
        )
        return state.observe(observed) if observed else state


def sequential_plan(
    expected: Mapping[str, float],
    alpha: float = 0.001,
    power: float = 0.99,
    min_deviation: float = 0.05,
    *,
    truncate_at: float = 3.0,
) -> SequentialPlan:
    """The sequential counterpart of :func:`check_weights` at the same design.

    ``truncate_at`` times the fixed-n sample size is where an undecided run stops and the
    fixed-n check decides (under the design's own hypotheses that point is practically never
    reached: the LLRs drift away from both boundaries linearly in ``n``).
    """
    _require_design(alpha, power, min_deviation)
    if truncate_at < 1.0:
        raise ValueError(f"truncate_at must be >= 1, got {truncate_at}")
    shares = _normalise(expected)
    names = tuple(shares)
    nonzero = [name for name in names if shares[name] > 0.0]
    d = min_deviation
    # Two categories: the second's share is 1 - the first's, so its tests are the first's.
    tested = nonzero[:1] if len(nonzero) == 2 else nonzero if len(nonzero) > 2 else []
    tests = tuple(
        OneSidedSprt(name, shares[name], p1)
        for name in tested
        for p1 in (shares[name] - d, shares[name] + d)
        if 0.0 <= p1 <= 1.0
    )
    if len(nonzero) > 1 and not tests:
        raise ValueError(f"no category can be off by {d}: min_deviation is too large for these weights")
    fixed_n = _required_n(tuple(shares.values()), alpha, power, min_deviation)
    zero_n = _zero_rule_n(power, min_deviation)
    return SequentialPlan(
        names=names,
        shares=tuple(shares.values()),
        alpha=alpha,
        power=power,
        min_deviation=min_deviation,
        tests=tests,
        log_a=math.log(len(tests) / alpha) if tests else math.inf,
        log_b=math.log1p(-power),
        # traffic must stay out of some category (zero weight, or any other with one destination)
        min_n=zero_n if len(nonzero) < len(names) or len(nonzero) == 1 else 1,
        fixed_n=fixed_n,
        max_n=max(fixed_n, math.ceil(truncate_at * fixed_n)),
    )


def sequential_proportion_plan(
    expected: float,
    alpha: float = 0.001,
    power: float = 0.99,
    min_deviation: float = 0.05,
    *,
    truncate_at: float = 3.0,
) -> SequentialPlan:
    """The sequential counterpart of :func:`check_proportion`: categories ``"hit"`` and ``"miss"``.

    ``fixed_n`` is :func:`sample_size_for_proportion` (the size the fixed-n check needs, by its
    exact power); the power claim of the sequential test is exact too (Wald's bound).
    """
    if not 0.0 <= expected <= 1.0:
        raise ValueError(f"expected proportion must be in [0, 1], got {expected}")
    plan = sequential_plan(
        {"hit": expected, "miss": 1.0 - expected}, alpha, power, min_deviation, truncate_at=truncate_at
    )
    fixed_n = sample_size_for_proportion(expected, alpha, power, min_deviation)
    return replace(plan, fixed_n=fixed_n, max_n=max(fixed_n, math.ceil(truncate_at * fixed_n)))


def one_sided_proportion_plan(
    bound: float,
    alpha: float = 0.001,
    power: float = 0.99,
    min_deviation: float = 0.05,
    *,
    above: bool,
    truncate_at: float = 3.0,
) -> SequentialPlan:
    """A one-sided sequential check of a share: FAIL only on evidence that it is above ``bound``
    (``above=True``; else below), with power ``power`` at ``bound ± min_deviation``.

    For a share that only errs one way: the share of requests answered faster than an injected
    delay is *at most* the undelayed share, and a busy machine only lowers it. One SPRT of
    ``p0 = bound`` against ``p1 = bound + d`` (or ``- d``), rejecting at ``log(1 / alpha)``,
    accepting at ``log(1 - power)``. Any true share on the far side of ``bound`` makes the
    likelihood ratio a supermartingale, so Ville's inequality bounds the false-failure rate by
    ``alpha`` there too (the composite null ``share <= bound`` is covered, not only the point).
    ``fixed_n`` is the two-sided :func:`sample_size_for_proportion`, the size the fixed-n check
    it replaces used; truncation (``truncate_at`` times it) decides by the one-sided exact
    binomial test.
    """
    _require_design(alpha, power, min_deviation)
    if not 0.0 < bound < 1.0:
        raise ValueError(f"bound must be in (0, 1), got {bound}")
    p1 = bound + min_deviation if above else bound - min_deviation
    if not 0.0 < p1 < 1.0:
        raise ValueError(f"bound {bound} ± min_deviation {min_deviation} leaves (0, 1)")
    fixed_n = sample_size_for_proportion(bound, alpha, power, min_deviation)
    return SequentialPlan(
        names=("hit", "miss"),
        shares=(bound, 1.0 - bound),
        alpha=alpha,
        power=power,
        min_deviation=min_deviation,
        tests=(OneSidedSprt("hit", bound, p1),),
        log_a=math.log(1.0 / alpha),
        log_b=math.log1p(-power),
        min_n=1,
        fixed_n=fixed_n,
        max_n=max(fixed_n, math.ceil(truncate_at * fixed_n)),
        one_sided=True,
    )


def _one_sided_fixed(plan: SequentialPlan, counts: Sequence[int]) -> tuple[bool, float]:
    """The truncation verdict of a one-sided plan: exact binomial p-value in the tested direction."""
    test = plan.tests[0]
    x, n = int(counts[plan.names.index(test.category)]), int(sum(counts))
    side = "greater" if test.p1 > test.p0 else "less"
    p = float(stats.binomtest(x, n, test.p0, alternative=side).pvalue) if n else 1.0
    return p >= plan.alpha, p


@dataclass(frozen=True)
class SequentialCheck:
    """Immutable state of a sequential check; :meth:`observe` returns the next state.

    Feed it observations in the order the requests were *issued* (not completed): the
    outcomes are then exchangeable and the boundaries hold. ``decided`` tells the caller to
    stop sending; :meth:`verdict` is the signed outcome.
    """

    plan: SequentialPlan
    counts: tuple[int, ...]
    unexpected: Mapping[str, int]
    accepted: tuple[bool, ...]
    rejected: bool = False
    passed: bool = False
    looks: int = 0

    @property
    def n(self) -> int:
        return sum(self.counts) + sum(self.unexpected.values())

    @property
    def truncated(self) -> bool:
        return not (self.rejected or self.passed) and self.n >= self.plan.max_n

    @property
    def decided(self) -> bool:
        """True once the check passed, failed, or reached ``max_n``."""
        return self.rejected or self.passed or self.truncated

    def observe(self, observed: Mapping[str, int]) -> SequentialCheck:
        """Add a batch of new observations (category -> count) and look once."""
        add = _validate_counts(observed)
        counts = tuple(c + add.get(name, 0) for name, c in zip(self.plan.names, self.counts, strict=True))
        unexpected = dict(self.unexpected)
        for name, count in add.items():
            if name not in self.plan.names and count > 0:
                unexpected[name] = unexpected.get(name, 0) + count
        stray = sum(unexpected.values()) + sum(
            c for c, p in zip(counts, self.plan.shares, strict=True) if p == 0.0
        )
        accepted, rejected, passed = self.plan.step(
            np.array([counts]), np.array([self.accepted], dtype=bool), np.array([stray])
        )
        return replace(
            self,
            counts=counts,
            unexpected=MappingProxyType(dict(sorted(unexpected.items()))),
            accepted=tuple(bool(a) for a in accepted[0]),
            rejected=self.rejected or bool(rejected[0]),
            passed=not self.rejected and bool(passed[0]),
            looks=self.looks + 1,
        )

    def verdict(self) -> SequentialVerdict:
        """The outcome so far (call once :attr:`decided`; before, it is a FAIL: undecided)."""
        plan = self.plan
        observed = {**dict(zip(plan.names, self.counts, strict=True)), **self.unexpected}
        fixed = check_weights(
            dict(zip(plan.names, plan.shares, strict=True)),
            observed,
            alpha=plan.alpha,
            power=plan.power,
            min_deviation=plan.min_deviation,
        )
        llr = plan.llr(np.array(self.counts))
        notes = [n for n in fixed.notes if not n.startswith("only ")]
        if self.rejected:
            crossed = [
                t.describe()
                for t, a, v in zip(plan.tests, self.accepted, llr, strict=True)
                if not a and v >= plan.log_a
            ]
            reason = (
                "evidence for " + " and ".join(crossed) if crossed else "traffic where none may go (exact)"
            )
            passed = False
        elif self.passed:
            reason = "evidence against every deviation of " + f"{plan.min_deviation * 100:g}pp"
            passed = True
        elif self.truncated and plan.one_sided:
            passed, p = _one_sided_fixed(plan, self.counts)
            reason = f"undecided at N={self.n}: the one-sided exact binomial test decided (p = {p:.3g})"
        elif self.truncated:
            reason = f"undecided at N={self.n}: the fixed-n {fixed.test} test decided"
            passed = fixed.passed
        else:
            reason = f"undecided after N={self.n}: nothing was verified"
            passed = False
        return SequentialVerdict(
            passed=passed,
            n=self.n,
            fixed_n=plan.fixed_n,
            alpha=plan.alpha,
            power=plan.power,
            min_deviation=plan.min_deviation,
            reason=reason,
            categories=fixed.categories,
            unexpected=fixed.unexpected,
            llr=tuple(
                (t.describe(), float(v), "accepted" if a else "open")
                for t, v, a in zip(plan.tests, llr, self.accepted, strict=True)
            ),
            log_a=plan.log_a,
            log_b=plan.log_b,
            notes=tuple(notes),
        )


@dataclass(frozen=True)
class SequentialVerdict:
    """The outcome of a sequential check: decision, the N it used and the fixed-n it replaced.

    ``categories`` are as in :class:`WeightVerdict` (Clopper-Pearson at ``1 - alpha/k``; after
    an optional stop they describe the sample, their coverage is not claimed). ``llr`` holds
    each one-sided test's final log-likelihood ratio and state against the boundaries
    ``log_b < 0 < log_a``.
    """

    passed: bool
    n: int
    fixed_n: int
    alpha: float
    power: float
    min_deviation: float
    reason: str
    categories: tuple[CategoryResult, ...]
    unexpected: Mapping[str, int]
    llr: tuple[tuple[str, float, str], ...]
    log_a: float
    log_b: float
    notes: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def power_claim(self) -> str:
        return f"detects >={self.min_deviation * 100:.1f}pp deviation with power {self.power:g}"

    def summary(self) -> str:
        """One line: verdict, N used versus fixed-n, design and the observed split."""
        parts = [
            f"{self.verdict} sequential N={self.n} (fixed-n {self.fixed_n}) alpha={self.alpha:g}",
            f"({self.power_claim()}): {self.reason}",
        ]
        return " ".join(parts + _split_words(self.categories, self.unexpected))

    def table(self) -> str:
        """Observed-versus-expected table, the one-sided tests' state, and notes."""
        header = (
            f"sequential test: N={self.n} (replaces fixed-n {self.fixed_n}) alpha={self.alpha:g} "
            f"verdict={self.verdict} ({self.power_claim()}): {self.reason}"
        )
        lines = [header, *_split_table(self.categories, self.unexpected, self.alpha, n=None)]
        if self.llr:
            lines.append(f"SPRT boundaries: accept <= {self.log_b:.2f}, reject >= {self.log_a:.2f}")
            lines += [f"  H1 {name}: LLR {value:.2f} ({state})" for name, value, state in self.llr]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


@dataclass(frozen=True)
class SimulatedRuns:
    """What :func:`simulate_sequential` saw: failure rate, mean and largest N, truncations."""

    runs: int
    failures: int
    mean_n: float
    max_n: int
    truncated: int

    @property
    def failure_rate(self) -> float:
        return self.failures / self.runs


def simulate_sequential(
    plan: SequentialPlan,
    true_shares: Sequence[float],
    *,
    runs: int,
    look_every: int,
    rng: np.random.Generator,
) -> SimulatedRuns:
    """Run ``runs`` independent sequential checks on multinomial traffic, vectorised.

    ``true_shares`` are the real shares of ``plan.names`` plus, optionally, one last share for
    traffic to an unconfigured category. Looks happen every ``look_every`` observations, as
    the sampler's do; truncated runs are decided by :func:`check_weights` as in production.
    """
    k = len(plan.names)
    p = np.asarray(true_shares, dtype=float)
    if p.shape not in ((k,), (k + 1,)) or not math.isclose(float(p.sum()), 1.0) or (p < 0).any():
        raise ValueError(f"true_shares must be {k} or {k + 1} probabilities summing to 1, got {true_shares}")
    if p.shape == (k,):
        p = np.append(p, 0.0)
    zero = np.append(np.asarray(plan.shares) == 0.0, True)
    counts = np.zeros((runs, k + 1), dtype=np.int64)
    accepted = np.zeros((runs, len(plan.tests)), dtype=bool)
    open_ = np.ones(runs, dtype=bool)
    failed = np.zeros(runs, dtype=bool)
    used = np.zeros(runs, dtype=np.int64)
    n = 0
    while open_.any() and n < plan.max_n:
        step = min(look_every, plan.max_n - n)
        n += step
        idx = np.flatnonzero(open_)
        counts[idx] += rng.multinomial(step, p, size=idx.size)
        acc, rej, ok = plan.step(counts[idx, :k], accepted[idx], counts[idx][:, zero].sum(axis=1))
        accepted[idx] = acc
        done = rej | ok
        failed[idx[rej]] = True
        used[idx[done]] = n
        open_[idx[done]] = False
    truncated = np.flatnonzero(open_)
    for i in truncated:
        if plan.one_sided:
            failed[i] = not _one_sided_fixed(plan, [int(c) for c in counts[i, :k]])[0]
            used[i] = n
            continue
        observed = {name: int(c) for name, c in zip(plan.names, counts[i, :k], strict=True)}
        observed["(unconfigured)"] = int(counts[i, k])
        fixed = check_weights(dict(zip(plan.names, plan.shares, strict=True)), observed, alpha=plan.alpha)
        failed[i] = not fixed.passed
        used[i] = n
    return SimulatedRuns(
        runs=runs,
        failures=int(failed.sum()),
        mean_n=float(used.mean()),
        max_n=int(used.max()),
        truncated=int(truncated.size),
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


def _ncx2_n(nonzero: Sequence[float], alpha: float, power: float, min_deviation: float) -> int:
    """Smallest N at which the noncentral chi-square approximation promises ``power``: only the
    seed of the exact search (it takes the null variance for the alternative's and understates N:
    at 80/10/10 its 2,256 requests have power 0.986)."""
    df = len(nonzero) - 1
    effect = _worst_effect(nonzero, min_deviation)
    critical = float(stats.chi2.isf(alpha, df))
    low, high = 0, 1  # ncx2 power(low) < power <= power(high)
    while float(stats.ncx2.sf(critical, df, high * effect)) < power:
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        if float(stats.ncx2.sf(critical, df, mid * effect)) >= power:
            high = mid
        else:
            low = mid
    return high


@lru_cache(maxsize=256)
def _required_n(shares: tuple[float, ...], alpha: float, power: float, min_deviation: float) -> int:
    """:func:`sample_size_for_weights` on normalised shares (cached: check_weights calls it per batch;
    the suites' designs come precomputed from :mod:`harness.traffic.sizes`, every entry unit-tested
    against :func:`_compute_required_n`)."""
    known = _sizes.WEIGHTS.get((shares, alpha, power, min_deviation))
    return known if known is not None else _compute_required_n(shares, alpha, power, min_deviation)


def _compute_required_n(shares: tuple[float, ...], alpha: float, power: float, min_deviation: float) -> int:
    """:func:`_required_n` computed (0.1-0.4 CPU-s per design)."""
    nonzero = tuple(p for p in shares if p > 0.0)
    zero_n = _zero_rule_n(power, min_deviation)
    if len(nonzero) == 1:
        return zero_n
    n = _power.smallest_powered_n(
        lambda ns: _power.fit_powered(ns, nonzero, alpha, min_deviation, power),
        _ncx2_n(nonzero, alpha, power, min_deviation),
    )
    return max(n, zero_n) if len(nonzero) < len(shares) else n


@lru_cache(maxsize=256)
def _proportion_n(expected: float, alpha: float, power: float, min_deviation: float) -> int:
    """:func:`sample_size_for_proportion` for ``0 < expected < 1`` (cached; precomputed as
    :func:`_required_n`)."""
    known = _sizes.PROPORTIONS.get((expected, alpha, power, min_deviation))
    return known if known is not None else _compute_proportion_n(expected, alpha, power, min_deviation)


def _compute_proportion_n(expected: float, alpha: float, power: float, min_deviation: float) -> int:
    """:func:`_proportion_n` computed."""
    z_alpha = float(stats.norm.isf(alpha / 2.0))
    z_power = float(stats.norm.ppf(power))
    sd0 = math.sqrt(expected * (1.0 - expected))
    alternatives = [p1 for p1 in (expected - min_deviation, expected + min_deviation) if 0.0 <= p1 <= 1.0]
    guess = max(
        ((z_alpha * sd0 + z_power * math.sqrt(p1 * (1.0 - p1))) / min_deviation) ** 2 for p1 in alternatives
    )
    return _power.smallest_powered_n(
        lambda ns: _power.proportion_powered(ns, expected, alpha, min_deviation, power),
        max(1, math.ceil(guess)),
    )


def _fit_test(weighted: Sequence[CategoryResult], notes: list[str]) -> tuple[float, float, str]:
    """Goodness of fit over the non-zero categories: (statistic, p-value, test name).

    Exact binomial tests (size <= alpha at every N): two categories, the first one's count;
    more, each category against the rest, Bonferroni over ``k``. The statistic is Pearson's X²,
    for the reader only."""
    n = sum(c.observed for c in weighted)
    if n == 0:
        return 0.0, 1.0, "binomial"
    f_obs = np.array([c.observed for c in weighted], dtype=float)
    f_exp = np.array([c.expected for c in weighted], dtype=float)
    f_exp = f_exp / f_exp.sum() * n
    statistic = float(np.sum((f_obs - f_exp) ** 2 / f_exp))
    k = len(weighted)
    if k == 2:
        return statistic, float(stats.binomtest(weighted[0].observed, n, f_exp[0] / n).pvalue), "binomial"
    p_values = [
        float(stats.binomtest(c.observed, n, f / n).pvalue) for c, f in zip(weighted, f_exp, strict=True)
    ]
    return statistic, min(1.0, k * min(p_values)), "binomial-bonferroni"


def _split_words(categories: Sequence[CategoryResult], unexpected: Mapping[str, int]) -> list[str]:
    """A summary line's observed split: each category's share and interval, then any unexpected."""
    words = [f"{c.name} {c.observed_share * 100:.1f}% {c.interval.percent()}" for c in categories]
    if unexpected:
        words.append("unexpected " + ",".join(f"{k}={v}" for k, v in unexpected.items()))
    return words


def _split_table(
    categories: Sequence[CategoryResult], unexpected: Mapping[str, int], alpha: float, *, n: int | None
) -> list[str]:
    """The observed-versus-expected table's lines: a header row, one row per category with its
    Bonferroni-adjusted interval (alpha / k), one per unexpected value with its share of ``n``
    ("-" when ``n`` is None)."""
    k = max(1, len(categories))
    rows: list[tuple[str, str, str, str, str]] = [
        ("category", "expected %", "observed n", "observed %", f"{(1.0 - alpha / k) * 100:.4g}% CI"),
        *(
            (
                c.name,
                f"{c.expected * 100:.1f}",
                str(c.observed),
                f"{c.observed_share * 100:.1f}",
                c.interval.percent(),
            )
            for c in categories
        ),
    ]
    for name, count in unexpected.items():
        share = "-" if n is None else f"{(count / n if n else 0.0) * 100:.1f}"
        rows.append((name, "unexpected", str(count), share, "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return [
        "  ".join([r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, 5)]).rstrip()
        for r in rows
    ]


def _fmt_p(p: float) -> str:
    return f"{p:.2g}"
