"""Unit tests for harness.traffic.stats: exact values, monotonicity, and simulated error rates."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps  # type: ignore[import-untyped]

from harness.traffic import power, stats
from harness.traffic.stats import (
    Interval,
    SequentialWeights,
    batch_conforms,
    check_proportion,
    check_weights,
    clopper_pearson,
    false_failure_rate_of_tolerance_check,
    latency_quantiles,
    sample_size_for_proportion,
    sample_size_for_weights,
)

FIFTY = {"v1": 50, "v2": 50}
NINETY = {"v1": 90, "v2": 10}
EIGHTY = {"v1": 80, "v2": 10, "v3": 10}


def _counts(names: Mapping[str, float], row: np.ndarray) -> dict[str, int]:
    return {name: int(c) for name, c in zip(names, row, strict=True)}


# --------------------------------------------------------------------------- Clopper-Pearson


def test_clopper_pearson_known_values() -> None:
    zero = clopper_pearson(0, 10, 0.95)
    assert zero.low == 0.0
    assert zero.high == pytest.approx(0.3085, abs=1e-4)
    half = clopper_pearson(5, 10, 0.95)
    assert half.low == pytest.approx(0.1871, abs=1e-4)
    assert half.high == pytest.approx(0.8129, abs=1e-4)
    full = clopper_pearson(10, 10, 0.95)
    assert full.low == pytest.approx(1 - 0.3085, abs=1e-4)
    assert full.high == 1.0
    # Matches scipy's exact interval.
    ci = sps.binomtest(37, 120).proportion_ci(confidence_level=0.99, method="exact")
    mine = clopper_pearson(37, 120, 0.99)
    assert (mine.low, mine.high) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_clopper_pearson_edges_and_monotonic_in_confidence() -> None:
    assert clopper_pearson(0, 0, 0.95) == Interval(0.0, 1.0)
    narrow, wide = clopper_pearson(30, 100, 0.9), clopper_pearson(30, 100, 0.999)
    assert wide.low < narrow.low < 0.3 < narrow.high < wide.high


def test_interval_contains_and_validation() -> None:
    iv = Interval(0.2, 0.4)
    assert iv.contains(0.2) and iv.contains(0.3) and iv.contains(0.4)
    assert not iv.contains(0.19) and not iv.contains(0.41)
    with pytest.raises(ValueError):
        Interval(0.5, 0.4)
    with pytest.raises(ValueError):
        Interval(-0.1, 0.4)


# --------------------------------------------------------------------------- sample sizes


def test_sample_sizes_at_defaults() -> None:
    # Exact power (harness.traffic.power; tests/unit/traffic/test_power.py pins it to the checks).
    # The normal approximation gave 3155, 1136 and the noncentral chi-square 2256: short of 0.99.
    # A two-way split runs the exact binomial test, so it needs what the proportion check needs.
    assert sample_size_for_weights(FIFTY) == sample_size_for_proportion(0.5) == 3175
    assert sample_size_for_weights(NINETY) == sample_size_for_proportion(0.9) == 1358
    assert sample_size_for_weights(EIGHTY) == 2432
    assert sample_size_for_weights({"v1": 100, "v2": 0}) == 90  # 0.95**90 <= 0.01 < 0.95**89
    # check_proportion's exact binomial test (normal approximation: 1322, 2741, 3142)
    assert sample_size_for_proportion(0.1) == sample_size_for_proportion(0.9) == 1358
    assert sample_size_for_proportion(0.3) == 2786
    assert sample_size_for_proportion(0.5) == 3175


def test_sample_size_monotone() -> None:
    base = sample_size_for_weights(NINETY)
    assert sample_size_for_weights(NINETY, alpha=0.0001) > base > sample_size_for_weights(NINETY, alpha=0.01)
    assert sample_size_for_weights(NINETY, power=0.999) > base > sample_size_for_weights(NINETY, power=0.9)
    assert (
        sample_size_for_weights(NINETY, min_deviation=0.02)
        > base
        > sample_size_for_weights(NINETY, min_deviation=0.1)
    )
    zero = sample_size_for_weights({"a": 1, "b": 0})
    assert sample_size_for_weights({"a": 1, "b": 0}, power=0.999) > zero
    assert sample_size_for_weights({"a": 1, "b": 0}, min_deviation=0.01) > zero


def test_sample_size_normalises_and_handles_zero_categories() -> None:
    assert sample_size_for_weights({"a": 0.9, "b": 0.1}) == sample_size_for_weights(NINETY)
    assert sample_size_for_weights({"b": 10, "a": 90}) == sample_size_for_weights(NINETY)
    assert sample_size_for_weights({**NINETY, "v3": 0}) == sample_size_for_weights(NINETY)
    # A tiny-but-nonzero split needs few requests for the fit test; the zero rule still binds.
    assert sample_size_for_weights({"a": 99.9, "b": 0.1, "c": 0}) >= 90


def test_sample_size_for_proportion() -> None:
    assert 3100 <= sample_size_for_proportion(0.5) <= 3200
    assert sample_size_for_proportion(0.1) < sample_size_for_proportion(0.3) < sample_size_for_proportion(0.5)
    assert sample_size_for_proportion(0.5, alpha=0.0001) > sample_size_for_proportion(0.5)
    assert sample_size_for_proportion(0.5, power=0.999) > sample_size_for_proportion(0.5)
    assert sample_size_for_proportion(0.5, min_deviation=0.02) > sample_size_for_proportion(0.5)
    assert sample_size_for_proportion(0.0) == sample_size_for_proportion(1.0) == 90
    assert sample_size_for_proportion(0.02) > 0


# --------------------------------------------------------------------------- check_weights


def test_exact_expected_counts_pass() -> None:
    for weights in (FIFTY, NINETY, EIGHTY):
        n = sample_size_for_weights(weights)
        total = sum(weights.values())
        counts = {k: round(n * w / total) for k, w in weights.items()}
        verdict = check_weights(weights, counts)
        assert verdict.passed, verdict.table()
        assert verdict.test == ("binomial" if len(weights) == 2 else "binomial-bonferroni")
        assert verdict.p_value > 0.5
        assert not verdict.underpowered
        for c in verdict.categories:
            assert c.interval.contains(c.expected)


def test_swapped_split_fails() -> None:
    n = sample_size_for_weights(NINETY)
    verdict = check_weights(NINETY, {"v1": n // 10, "v2": n - n // 10})
    assert not verdict.passed
    assert verdict.p_value < 1e-100
    assert "FAIL" in verdict.summary()


def test_zero_weight_category() -> None:
    weights = {"v1": 100, "v2": 0}
    ok = check_weights(weights, {"v1": 90})
    assert ok.passed and ok.test == "exact-zero" and ok.p_value == 1.0
    assert ok.required_n == 90 and not ok.underpowered
    stray = check_weights(weights, {"v1": 5000, "v2": 1})
    assert not stray.passed and stray.statistic == 1.0 and stray.p_value == 0.0
    assert "v2=1" in stray.table()
    # With a fit test as well: the fit is perfect, the stray request still fails it.
    mixed = check_weights({**FIFTY, "old": 0}, {"v1": 2000, "v2": 2000, "old": 1})
    assert mixed.test == "binomial" and mixed.p_value > 0.5
    assert not mixed.passed
    assert any("zero-weight" in note for note in mixed.notes)


def test_unexpected_category_fails() -> None:
    verdict = check_weights(FIFTY, {"v1": 2000, "v2": 2000, "canary": 3})
    assert not verdict.passed
    assert dict(verdict.unexpected) == {"canary": 3}
    assert verdict.n == 4003
    assert "canary" in verdict.table() and "canary" in verdict.summary()
    # A listed-but-empty unknown category is not traffic.
    assert check_weights(FIFTY, {"v1": 2000, "v2": 2000, "canary": 0}).passed


def test_no_observations_never_pass() -> None:
    for weights in (FIFTY, {"v1": 1, "v2": 0}):
        verdict = check_weights(weights, {})
        assert not verdict.passed
        assert any("no observations" in note for note in verdict.notes)


def test_small_expected_counts_are_tested_exactly() -> None:
    verdict = check_weights({"a": 99, "b": 1}, {"a": 99, "b": 1})
    assert verdict.test == "binomial" and verdict.passed
    assert verdict.underpowered and "UNDERPOWERED" in verdict.summary()
    # Far too many in the small category fails.
    bad = check_weights({"a": 99, "b": 1}, {"a": 80, "b": 20})
    assert bad.test == "binomial" and not bad.passed
    three = check_weights({"a": 97, "b": 2, "c": 1}, {"a": 90, "b": 0, "c": 10})
    assert three.test == "binomial-bonferroni" and not three.passed


def test_categories_and_intervals() -> None:
    verdict = check_weights(EIGHTY, {"v1": 1600, "v2": 210, "v3": 190})
    assert [c.name for c in verdict.categories] == ["v1", "v2", "v3"]
    assert [c.expected for c in verdict.categories] == pytest.approx([0.8, 0.1, 0.1])
    v1 = verdict.categories[0]
    assert v1.observed == 1600 and v1.observed_share == pytest.approx(0.8)
    assert v1.interval == clopper_pearson(1600, 2000, 1 - 0.001 / 3)


def test_table_and_summary() -> None:
    n = sample_size_for_weights(NINETY)
    good = check_weights(NINETY, {"v1": round(0.9 * n), "v2": n - round(0.9 * n)})
    summary = good.summary()
    assert summary.startswith("PASS binomial N=1358 ")
    assert "alpha=0.001" in summary and "5.0pp" in summary and "0.99" in summary
    assert "v1 90.0%" in summary and "v2 10.0%" in summary
    assert "\n" not in summary
    table = good.table()
    lines = table.splitlines()
    assert "PASS" in lines[0] and "binomial" in lines[0] and "N=1358" in lines[0]
    assert any(line.startswith("v1") and "90.0" in line for line in lines)
    assert any(line.startswith("v2") and "10.0" in line for line in lines)
    bad = check_weights(NINETY, {"v1": 10, "v2": 90})
    assert bad.summary().startswith("FAIL") and "FAIL" in bad.table().splitlines()[0]


def test_verdicts_are_frozen() -> None:
    verdict = check_weights(FIFTY, {"v1": 10, "v2": 10})
    with pytest.raises(AttributeError):
        verdict.passed = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        verdict.unexpected["x"] = 1  # type: ignore[index]


# --------------------------------------------------------------------------- sequential polling


def test_batch_conforms() -> None:
    assert batch_conforms(NINETY, {"v1": 180, "v2": 20})
    assert not batch_conforms(NINETY, {"v1": 100, "v2": 100})
    assert not batch_conforms(NINETY, {})


def test_sequential_weights_converges_after_propagation() -> None:
    rng = np.random.default_rng(11)
    state = SequentialWeights(NINETY, alpha_batch=0.01, required_consecutive=3)
    # Before propagation the mesh still splits 50/50; after it, 90/10.
    for true in [[0.5, 0.5]] * 4 + [[0.9, 0.1]] * 3:
        assert not state.converged
        state = state.observe(_counts(NINETY, rng.multinomial(300, true)))
    assert state.converged and state.batches == 7 and state.consecutive == 3
    assert state.last is not None and state.last.passed
    # A relapse resets the streak; the old state is untouched.
    relapsed = state.observe({"v1": 150, "v2": 150})
    assert relapsed.consecutive == 0 and not relapsed.converged
    assert state.converged


def test_sequential_weights_validation() -> None:
    with pytest.raises(ValueError):
        SequentialWeights(NINETY, required_consecutive=0)
    with pytest.raises(ValueError):
        SequentialWeights(NINETY, alpha_batch=1.5)
    with pytest.raises(ValueError):
        SequentialWeights({})


# --------------------------------------------------------------------------- proportions


def test_check_proportion() -> None:
    ok = check_proportion(480, 1000, 0.5)
    assert ok.passed and ok.p_value == pytest.approx(sps.binomtest(480, 1000, 0.5).pvalue)
    assert ok.interval == clopper_pearson(480, 1000, 0.999)
    assert ok.summary().startswith("PASS") and "480/1000" in ok.summary()
    bad = check_proportion(400, 1000, 0.5)
    assert not bad.passed and bad.summary().startswith("FAIL")


def test_check_proportion_exact_ends() -> None:
    assert check_proportion(0, 500, 0.0).passed
    assert not check_proportion(1, 500, 0.0).passed
    assert check_proportion(500, 500, 1.0).passed
    assert not check_proportion(499, 500, 1.0).passed
    assert not check_proportion(0, 0, 0.0).passed


# --------------------------------------------------------------------------- simulated error rates
#
# The fixed-n checks' rates, by simulation, with enough runs to tell the stated rate from a
# doubled alpha or a power one point short. The false-failure runs use alpha = 0.05: the sample
# size and the tests are derived the same way for any alpha, and at 0.001 telling 0.001 from 0.002
# would need ~30,000 runs. Power runs use the defaults. Every draw is checked by the check itself
# (each distinct outcome once), except three-way splits, whose Bonferroni p-values come from
# scipy's binomtest per category (vectorised by harness.traffic.power.binomtest_pvalues, which
# equals it to the bit), as check_weights computes them, with check_weights confirming the rows
# nearest the decision.

NULL_RUNS = 4_000
POWER_RUNS = 10_000
SIM_ALPHA = 0.05


def _failures(check: Callable[..., bool], draws: np.ndarray) -> int:
    """How many simulated runs (rows of ``draws``) ``check`` fails; each distinct row is checked once."""
    rows, counts = np.unique(draws.reshape(len(draws), -1), axis=0, return_counts=True)
    return int(sum(c for row, c in zip(rows, counts, strict=True) if not check(*(int(v) for v in row))))


def _at_most(rate: float, runs: int) -> int:
    """Most failures consistent with a true rate <= ``rate``: the 99.9% quantile of Binomial(runs, rate)."""
    return int(sps.binom.ppf(0.999, runs, rate))


def _at_least(rate: float, runs: int) -> int:
    """Fewest failures consistent with a true rate >= ``rate``: the 0.1% quantile."""
    return int(sps.binom.ppf(0.001, runs, rate))


def test_simulation_run_counts_separate_the_rates() -> None:
    # A check with a doubled alpha exceeds the false-failure bound, and one with power 0.98 falls
    # below the power bound, each with probability >= 0.999.
    assert _at_most(SIM_ALPHA, NULL_RUNS) < _at_least(2 * SIM_ALPHA, NULL_RUNS)
    assert _at_least(0.99, POWER_RUNS) > _at_most(0.98, POWER_RUNS)


def _three_way_failures(
    expected: Mapping[str, float], draws: np.ndarray, alpha: float, rng: np.random.Generator
) -> int:
    n = int(draws[0].sum())
    shares = np.array(list(expected.values()), dtype=float)
    shares = shares / shares.sum()
    # check_weights: each category against the rest by the exact binomial test, Bonferroni over k
    each = power.binomtest_pvalues(draws, np.full(draws.shape, n), shares[None, :])
    p = np.minimum(1.0, len(shares) * each.min(axis=1))
    nearest = np.argsort(np.abs(np.log(p / alpha)))[:15]
    for i in [*nearest, *rng.choice(len(draws), size=10, replace=False)]:
        verdict = check_weights(expected, _counts(expected, draws[i]), alpha=alpha)
        assert verdict.passed is bool(p[i] > alpha), (draws[i], p[i], verdict.summary())
    return int((p <= alpha).sum())


PROPORTION_NULL_CASES = [0.1, 0.5]
SPLIT_NULL_CASES = [NINETY, EIGHTY]


@pytest.mark.parametrize("expected", PROPORTION_NULL_CASES)
def test_proportion_false_failures_within_alpha(expected: float) -> None:
    n = sample_size_for_proportion(expected, alpha=SIM_ALPHA)
    draws = np.random.default_rng(4).binomial(n, expected, size=NULL_RUNS)
    at = {
        a: _failures(lambda x, a=a: check_proportion(x, n, expected, a).passed, draws)
        for a in (SIM_ALPHA, 2 * SIM_ALPHA)
    }
    assert at[SIM_ALPHA] <= _at_most(SIM_ALPHA, NULL_RUNS), at
    assert at[2 * SIM_ALPHA] > _at_most(SIM_ALPHA, NULL_RUNS), at  # the same check at 2 alpha is caught


@pytest.mark.parametrize("expected", SPLIT_NULL_CASES)
def test_split_false_failures_within_alpha(expected: Mapping[str, float]) -> None:
    n = sample_size_for_weights(expected, alpha=SIM_ALPHA)
    rng = np.random.default_rng(5)
    shares = [w / sum(expected.values()) for w in expected.values()]
    draws = rng.multinomial(n, shares, size=NULL_RUNS)
    names = list(expected)
    at = {}
    for a in (SIM_ALPHA, 2 * SIM_ALPHA):
        if len(names) == 2:
            at[a] = _failures(
                lambda x, a=a: check_weights(expected, {names[0]: x, names[1]: n - x}, alpha=a).passed,
                draws[:, 0],
            )
        else:
            at[a] = _three_way_failures(expected, draws, a, rng)
    assert at[SIM_ALPHA] <= _at_most(SIM_ALPHA, NULL_RUNS), at
    assert at[2 * SIM_ALPHA] > _at_most(SIM_ALPHA, NULL_RUNS), at


def test_exact_fallback_false_failures_within_alpha() -> None:
    # expected counts below 5: Bonferroni over exact binomial tests, which must not exceed alpha
    small = {"a": 97, "b": 2, "c": 1}
    draws = np.random.default_rng(6).multinomial(150, [0.97, 0.02, 0.01], size=NULL_RUNS)
    failures = _failures(
        lambda a, b, c: check_weights(small, {"a": a, "b": b, "c": c}, alpha=SIM_ALPHA).passed, draws
    )
    assert failures <= _at_most(SIM_ALPHA, NULL_RUNS)


@pytest.mark.parametrize(("expected", "true"), [(0.1, 0.05), (0.1, 0.15), (0.5, 0.45)])
def test_proportion_power_at_the_stated_deviation(expected: float, true: float) -> None:
    n = sample_size_for_proportion(expected)
    draws = np.random.default_rng(7).binomial(n, true, size=POWER_RUNS)
    failures = _failures(lambda x: check_proportion(x, n, expected).passed, draws)
    assert failures >= _at_least(0.99, POWER_RUNS)
    # and the simulation agrees with the exact power the sample size was chosen by
    exact = power.proportion_power(n, expected, true, 0.001)
    assert _at_least(exact, POWER_RUNS) <= failures <= _at_most(exact, POWER_RUNS), (failures, exact)


def test_a_one_point_power_shortfall_is_caught() -> None:
    # the N of a design with power 0.98 instead of 0.99, checked against the 0.99 bound: rejected
    n = sample_size_for_proportion(0.1, power=0.98)
    draws = np.random.default_rng(7).binomial(n, 0.15, size=POWER_RUNS)
    assert _failures(lambda x: check_proportion(x, n, 0.1).passed, draws) < _at_least(0.99, POWER_RUNS)


@pytest.mark.parametrize(
    ("expected", "true"), [(NINETY, [0.85, 0.15]), (NINETY, [0.95, 0.05]), (EIGHTY, [0.75, 0.125, 0.125])]
)
def test_split_power_at_the_stated_deviation(expected: Mapping[str, float], true: list[float]) -> None:
    n = sample_size_for_weights(expected)
    rng = np.random.default_rng(8)
    draws = rng.multinomial(n, true, size=POWER_RUNS)
    if len(expected) == 2:
        first, second = expected
        failures = _failures(lambda x: check_weights(expected, {first: x, second: n - x}).passed, draws[:, 0])
        exact = power.fit_power(n, (0.9, 0.1), 0, true[0], 0.001)
        assert _at_least(exact, POWER_RUNS) <= failures <= _at_most(exact, POWER_RUNS), (failures, exact)
    else:
        failures = _three_way_failures(expected, draws, 0.001, rng)
    assert failures >= _at_least(0.99, POWER_RUNS)


# --------------------------------------------------------------------------- comparison and latency


def test_false_failure_rate_of_tolerance_check() -> None:
    istio = false_failure_rate_of_tolerance_check(100, 0.5, 10)
    assert istio == pytest.approx(0.035, abs=0.005)
    assert istio == pytest.approx(2 * sps.binom.cdf(39, 100, 0.5))
    assert false_failure_rate_of_tolerance_check(100, 0.5, 100) == 0.0
    assert (
        false_failure_rate_of_tolerance_check(100, 0.5, 20)
        < istio
        < false_failure_rate_of_tolerance_check(100, 0.5, 5)
    )
    assert false_failure_rate_of_tolerance_check(100, 0.9, 10) == pytest.approx(
        sps.binom.cdf(79, 100, 0.9), abs=1e-12
    )


def test_latency_quantiles() -> None:
    samples = np.random.default_rng(3).exponential(20.0, size=1000)
    q = latency_quantiles(list(samples))
    assert list(q) == ["p50", "p90", "p99"]
    assert q["p50"] == pytest.approx(float(np.quantile(samples, 0.5)))
    assert q["p50"] < q["p90"] < q["p99"]
    assert latency_quantiles([]) == {"p50": 0.0, "p90": 0.0, "p99": 0.0}
    assert list(latency_quantiles([1.0, 2.0], qs=(0.999, 0.25))) == ["p99.9", "p25"]
    with pytest.raises(ValueError):
        latency_quantiles([1.0], qs=(1.5,))


# --------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": 0.0},
        {"alpha": 1.0},
        {"alpha": math.nan},
        {"power": 0.0},
        {"power": 1.0},
        {"min_deviation": 0.0},
        {"min_deviation": 1.0},
        {"min_deviation": -0.1},
    ],
)
def test_bad_design_raises(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        sample_size_for_weights(FIFTY, **kwargs)
    with pytest.raises(ValueError):
        check_weights(FIFTY, {"v1": 1, "v2": 1}, **kwargs)
    with pytest.raises(ValueError):
        sample_size_for_proportion(0.5, **kwargs)


@pytest.mark.parametrize(
    "weights",
    [{}, {"a": -1, "b": 2}, {"a": 0, "b": 0}, {"a": math.inf, "b": 1}, {"a": math.nan}],
)
def test_bad_weights_raise(weights: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        sample_size_for_weights(weights)
    with pytest.raises(ValueError):
        check_weights(weights, {"a": 1})


def test_other_bad_inputs_raise() -> None:
    with pytest.raises(ValueError):
        check_weights(FIFTY, {"v1": -1, "v2": 3})
    with pytest.raises(ValueError):
        check_weights(FIFTY, {"v1": 1.5, "v2": 3})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        sample_size_for_weights(FIFTY, min_deviation=0.6)  # no 50/50 category can be off by 60pp
    with pytest.raises(ValueError):
        clopper_pearson(11, 10, 0.95)
    with pytest.raises(ValueError):
        clopper_pearson(1, 10, 1.0)
    with pytest.raises(ValueError):
        check_proportion(5, 4, 0.5)
    with pytest.raises(ValueError):
        check_proportion(1, 4, 1.5)
    with pytest.raises(ValueError):
        sample_size_for_proportion(-0.1)
    with pytest.raises(ValueError):
        false_failure_rate_of_tolerance_check(100, 0.5, -1)


@pytest.mark.parametrize("module", [stats, power])
def test_module_is_pure(module: object) -> None:
    tree = ast.parse(Path(module.__file__).read_text())  # type: ignore[attr-defined]
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
    }
    assert not imported & {"os", "logging", "sys", "subprocess", "socket", "io", "pathlib"}


# --------------------------------------------------------------------------- sequential checks

SEQUENTIAL_DESIGNS = [
    # (configured weights, true shares under the configuration, alpha)
    (NINETY, [0.9, 0.1], 0.001),
    (FIFTY, [0.5, 0.5], 0.001),
    (EIGHTY, [0.8, 0.1, 0.1], 0.001),
    ({"v1": 80, "v2": 20}, [0.8, 0.2], 0.01),
    (NINETY, [0.9, 0.1], 0.05),
    ({"v1": 100, "v2": 0}, [1.0, 0.0], 0.001),
]


def _shifted(true: list[float], j: int, delta: float) -> list[float] | None:
    """``true`` with category ``j`` moved by ``delta``, the rest absorbing it proportionally."""
    p = np.array(true, dtype=float)
    if not 0.0 <= p[j] + delta <= 1.0:
        return None
    rest = np.delete(np.arange(len(p)), j)
    if p[rest].sum() <= 0:
        return None
    p[rest] -= delta * p[rest] / p[rest].sum()
    p[j] += delta
    return list(p) if (p >= 0).all() else None


@pytest.mark.parametrize(("expected", "true", "alpha"), SEQUENTIAL_DESIGNS)
def test_sequential_false_failure_rate_within_alpha(
    expected: Mapping[str, float], true: list[float], alpha: float
) -> None:
    # 10,000 simulated runs of a correct mesh, looking every 50 responses as the sampler does.
    plan = stats.sequential_plan(expected, alpha=alpha)
    sim = stats.simulate_sequential(plan, true, runs=10_000, look_every=50, rng=np.random.default_rng(7))
    # The observed rate must be consistent with <= alpha: above the 99.9% quantile of
    # Binomial(10,000, alpha) would refute it. (At alpha=0.001 the expected count is only 10.)
    assert sim.failures <= sps.binom.ppf(0.999, sim.runs, alpha), sim
    if alpha >= 0.01:
        assert sim.failure_rate <= alpha, sim
    # and at the strict alphas it is worth it: on average well under the fixed-n sample size
    if alpha <= 0.01 and plan.tests:
        assert sim.mean_n <= 0.65 * plan.fixed_n, (sim, plan.fixed_n)
    assert sim.truncated <= 5


@pytest.mark.parametrize(("expected", "true", "alpha"), SEQUENTIAL_DESIGNS)
def test_sequential_power_at_the_stated_deviation(
    expected: Mapping[str, float], true: list[float], alpha: float
) -> None:
    # Every category, in every direction it can move by min_deviation: fails w.p. >= power.
    plan = stats.sequential_plan(expected, alpha=alpha)
    rng = np.random.default_rng(11)
    seen: set[tuple[float, ...]] = set()
    for j in range(len(true)):
        for delta in (-plan.min_deviation, plan.min_deviation):
            alternative = _shifted(true, j, delta)
            if alternative is None or tuple(np.round(alternative, 9)) in seen:
                continue
            seen.add(tuple(np.round(alternative, 9)))
            sim = stats.simulate_sequential(plan, alternative, runs=10_000, look_every=50, rng=rng)
            assert sim.failure_rate >= plan.power, (j, delta, alternative, sim)


def test_sequential_proportion_rates() -> None:
    plan = stats.sequential_proportion_plan(0.3, alpha=0.001)
    assert plan.fixed_n == sample_size_for_proportion(0.3)
    rng = np.random.default_rng(3)
    null = stats.simulate_sequential(plan, [0.3, 0.7], runs=10_000, look_every=50, rng=rng)
    assert null.failures <= sps.binom.ppf(0.999, null.runs, 0.001)
    assert null.mean_n < 0.6 * plan.fixed_n
    for p in (0.25, 0.35):
        alt = stats.simulate_sequential(plan, [p, 1 - p], runs=10_000, look_every=50, rng=rng)
        assert alt.failure_rate >= 0.99, (p, alt)


def test_one_sided_proportion_rates() -> None:
    """At most 50% may be fast (undelayed): no more false failures than alpha at 50% or below
    (a busy machine only lowers the fast share), power 0.99 at 55%; about half the fixed-n."""
    plan = stats.one_sided_proportion_plan(0.5, alpha=0.001, above=True)
    assert plan.fixed_n == sample_size_for_proportion(0.5)
    assert [t.describe() for t in plan.tests] == ["hit >= 55.0%"]
    rng = np.random.default_rng(11)
    for p in (0.5, 0.45, 0.2):
        null = stats.simulate_sequential(plan, [p, 1 - p], runs=10_000, look_every=50, rng=rng)
        assert null.failures <= sps.binom.ppf(0.999, null.runs, 0.001), (p, null)
        if p == 0.5:
            assert null.mean_n < 0.6 * plan.fixed_n, null
    for p in (0.55, 0.6, 0.8):
        alt = stats.simulate_sequential(plan, [p, 1 - p], runs=10_000, look_every=50, rng=rng)
        assert alt.failure_rate >= 0.99, (p, alt)


def test_one_sided_truncation_is_decided_by_the_one_sided_binomial() -> None:
    plan = stats.one_sided_proportion_plan(0.5, above=True, truncate_at=1.0)
    n = plan.max_n
    # hit shares whose LLR stays between the boundaries at max_n: the exact test decides
    for hits, passes in ((round(0.525 * n), True), (round(0.534 * n), False)):
        state = plan.start().observe({"hit": hits, "miss": n - hits})
        assert state.truncated, (hits, state)
        verdict = state.verdict()
        assert verdict.passed is passes and "one-sided exact binomial" in verdict.reason, verdict.reason
    below = plan.start().observe({"hit": 0, "miss": 3000})
    assert below.decided and below.verdict().passed
    above = plan.start().observe({"hit": 2000, "miss": 1000})
    assert above.decided and not above.verdict().passed
    with pytest.raises(ValueError, match="bound"):
        stats.one_sided_proportion_plan(1.0, above=True)
    with pytest.raises(ValueError, match="leaves"):
        stats.one_sided_proportion_plan(0.98, above=True)


def test_sequential_plan_boundaries() -> None:
    plan = stats.sequential_plan(NINETY)
    assert [t.describe() for t in plan.tests] == ["v1 <= 85.0%", "v1 >= 95.0%"]
    assert plan.log_a == pytest.approx(math.log(2 / 0.001))
    assert plan.log_b == pytest.approx(math.log(0.01))
    assert (plan.fixed_n, plan.max_n, plan.min_n) == (1358, 4074, 1)
    three = stats.sequential_plan(EIGHTY)
    assert len(three.tests) == 6 and three.log_a == pytest.approx(math.log(6 / 0.001))
    drained = stats.sequential_plan({"v1": 100, "v2": 0})
    assert drained.tests == () and drained.min_n == drained.fixed_n == 90
    single = stats.sequential_plan({"v2": 100})
    assert single.tests == () and single.min_n == single.fixed_n == 90
    with pytest.raises(ValueError, match="truncate_at"):
        stats.sequential_plan(NINETY, truncate_at=0.5)


def test_sequential_check_passes_a_clean_split_early() -> None:
    state = stats.sequential_plan(NINETY).start()
    for _ in range(40):
        state = state.observe({"v1": 45, "v2": 5})
        if state.decided:
            break
    verdict = state.verdict()
    assert verdict.passed and verdict.n < verdict.fixed_n == 1358
    assert f"N={verdict.n} (replaces fixed-n 1358)" in verdict.table()
    assert "accepted" in verdict.table()
    assert verdict.summary().startswith(f"PASS sequential N={verdict.n} (fixed-n 1358)")


def test_sequential_check_fails_a_swapped_split_fast() -> None:
    state = stats.sequential_plan(NINETY).start()
    state = state.observe({"v1": 5, "v2": 45})
    assert state.decided and not state.passed
    verdict = state.verdict()
    assert not verdict.passed and verdict.n == 50
    assert "evidence for v1 <= 85.0%" in verdict.reason


@pytest.mark.parametrize("stray", [{"v2": 1}, {"(not a 200 from the app)": 1}])
def test_sequential_check_fails_on_stray_traffic_exactly(stray: dict[str, int]) -> None:
    state = stats.sequential_plan({"v1": 100, "v2": 0}).start({"v1": 49, **stray})
    assert state.decided and not state.verdict().passed
    assert "none may go" in state.verdict().reason


def test_sequential_zero_rule_needs_its_n() -> None:
    state = stats.sequential_plan({"v1": 100, "v2": 0}).start({"v1": 50})
    assert not state.decided and not state.verdict().passed  # undecided: nothing verified yet
    state = state.observe({"v1": 40})
    assert state.decided and state.verdict().passed and state.n == 90


def test_sequential_truncation_falls_back_to_the_fixed_test() -> None:
    plan = stats.sequential_plan(NINETY, truncate_at=1.0)
    # exactly on the boundary between the hypotheses: neither test decides before max_n
    state = plan.start({"v1": int(plan.max_n * 0.875), "v2": plan.max_n - int(plan.max_n * 0.875)})
    assert state.truncated and state.decided
    verdict = state.verdict()
    assert "fixed-n" in verdict.reason
    assert verdict.passed == check_weights(NINETY, {"v1": state.counts[0], "v2": state.counts[1]}).passed


def test_simulate_sequential_validates_shares() -> None:
    plan = stats.sequential_plan(NINETY)
    with pytest.raises(ValueError, match="probabilities"):
        stats.simulate_sequential(plan, [0.5, 0.6], runs=10, look_every=10, rng=np.random.default_rng(0))


def test_a_convergence_batch_is_judged_without_computing_the_designs_sample_size() -> None:
    stats._required_n.cache_clear()
    state = stats.SequentialWeights({"v1": 70, "v2": 30}).observe({"v1": 141, "v2": 59})
    assert stats.batch_conforms({"v1": 70, "v2": 30}, {"v1": 141, "v2": 59})
    assert stats._required_n.cache_info().misses == 0  # 0.1-0.4 s of CPU per design, not needed here
    assert state.last is not None and state.last.passed and state.last.required_n == 0
    assert "power not assessed" in state.last.summary()  # no power claimed for a 200-request batch
    full = stats.check_weights({"v1": 70, "v2": 30}, {"v1": 141, "v2": 59}, alpha=0.01)
    assert full.passed == state.last.passed and full.p_value == state.last.p_value
    assert full.required_n > 200 and "UNDERPOWERED" in full.summary()
