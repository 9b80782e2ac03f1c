"""Unit tests for harness.traffic.checks: pure checks over hand-built SampleResults."""

from __future__ import annotations

import pytest

from harness.errors import CheckFailed, HarnessError
from harness.load.config import LoadConfig, LoadTarget
from harness.load.report import PhaseMark, build_report
from harness.traffic import stats
from harness.traffic.checks import (
    CheckResult,
    all_of,
    all_status,
    allowed,
    assert_check,
    error_ratio_below,
    latency_at_least,
    no_overload,
    overloaded_at_least,
    proportion_match,
    rbac_denied,
    status_is,
    weights_match,
)
from harness.traffic.client import RBAC_DENIED_BODY, Response, SampleResult
from tests.unit.load.records import rec as _rec

ENVOY_503 = "upstream connect error or disconnect/reset before headers. reset reason: overflow"


def ok(version: str = "v1", status: int = 200) -> Response:
    return Response(
        status, version=version, pod=f"microservice-1-{version}-0", latency_ms=2.0, server="envoy"
    )


def denied() -> Response:
    return Response(403, latency_ms=1.0, body_text=RBAC_DENIED_BODY, rbac_denied=True)


def envoy_503(overloaded: bool = False) -> Response:
    return Response(503, latency_ms=1.0, body_text=ENVOY_503, overloaded=overloaded)


def failed() -> Response:
    return Response(0, latency_ms=10.0, error="connection failed: ConnectError: refused")


def batch(*responses: Response) -> SampleResult:
    return SampleResult(
        responses=responses, source="sample/client", method="POST", path="/api/greet", wall_s=1.0
    )


def many(n: int, make: Response) -> list[Response]:
    return [make] * n


# --------------------------------------------------------------------------- CheckResult


def test_check_result_truthiness_str_and_frozen_evidence() -> None:
    evidence = {"a": 1}
    passed = CheckResult("x", True, "fine", evidence)
    evidence["a"] = 2
    assert passed
    assert passed.evidence["a"] == 1
    with pytest.raises(TypeError):
        passed.evidence["b"] = 3  # type: ignore[index]
    failed_check = CheckResult("y", False, "line one\nline two")
    assert not failed_check
    assert str(failed_check) == "FAIL y\n  line one\n  line two"
    assert passed.verdict == "PASS"


# --------------------------------------------------------------------------- status checks


def test_status_is_on_a_single_response() -> None:
    assert status_is(ok(), 200)
    check = status_is(envoy_503(), 200)
    assert not check
    assert check.name == "status_is(200)"
    assert "expected status 200, observed status 503" in check.detail
    assert "upstream connect error" in check.detail
    check = status_is(failed(), 200)
    assert "status 0 (connection failed: ConnectError: refused)" in check.detail


def test_status_is_on_a_batch_is_all_status() -> None:
    result = batch(ok(), ok())
    assert status_is(result, 200) == all_status(result, 200)


def test_all_status_passes_and_fails_with_table_and_examples() -> None:
    assert all_status(batch(*many(5, ok())), 200)
    check = all_status(batch(*many(7, ok()), *many(2, envoy_503()), failed()), 200)
    assert not check
    assert "expected every response to have status 200 (POST /api/greet from sample/client)" in check.detail
    assert "of 10 responses 3 did not" in check.detail
    lines = check.detail.splitlines()
    assert any(line.split()[:3] == ["200", "7", "70.0%"] for line in lines)
    assert any(line.startswith("0 (no response)") for line in lines)
    assert "e.g. status 503 x2: upstream connect error" in check.detail
    assert "e.g. status 0 x1: connection failed: ConnectError: refused" in check.detail
    assert check.evidence["status"] == {0: 1, 200: 7, 503: 2}
    assert check.evidence["errors"] == {"connection failed: ConnectError: refused": 1}
    assert check.evidence["total"] == 10


def test_empty_batch_fails_every_batch_check() -> None:
    empty = batch()
    for check in (all_status(empty, 200), rbac_denied(empty), allowed(empty), no_overload(empty)):
        assert not check, check.name
        assert "nothing was verified" in check.detail


def test_rbac_denied() -> None:
    assert rbac_denied(batch(*many(4, denied())))
    check = rbac_denied(batch(*many(3, denied()), ok(), Response(403, body_text="forbidden by ext_authz")))
    assert not check
    assert "3 were, 2 were not" in check.detail
    assert "1 were 403 with another body" in check.detail
    assert "e.g. status 403 x1: forbidden by ext_authz" in check.detail
    assert check.evidence["rbac_denied"] == 3


def test_allowed_requires_a_2xx_from_the_app() -> None:
    assert allowed(batch(ok("v1"), ok("v2"), ok("v1", status=201)))
    # A 200 without a version did not come from the app (e.g. a direct response).
    check = allowed(batch(ok(), denied(), envoy_503(), Response(200, body_text="direct")))
    assert not check
    assert "3 were not (1 denied by RBAC)" in check.detail
    assert f"e.g. status 403 x1: {RBAC_DENIED_BODY}" in check.detail


# --------------------------------------------------------------------------- circuit breaking


def test_overload_checks() -> None:
    calm = batch(*many(10, ok()))
    tripped = batch(*many(6, ok()), *many(4, envoy_503(overloaded=True)))
    assert no_overload(calm)
    check = no_overload(tripped)
    assert not check
    assert "4 did" in check.detail
    assert check.evidence["overloaded"] == 4
    assert overloaded_at_least(tripped, 4)
    check = overloaded_at_least(tripped, 5)
    assert not check
    assert "at least 5 responses to carry x-envoy-overloaded" in check.detail
    assert not overloaded_at_least(calm, 1)
    lines = check.detail.splitlines()
    assert lines[1].split() == ["status", "count", "share", "rbac", "overloaded"]
    assert any(line.split() == ["503", "4", "40.0%", "0", "4"] for line in lines)
    with pytest.raises(ValueError, match="k must be >= 1"):
        overloaded_at_least(calm, 0)


# --------------------------------------------------------------------------- statistics


def test_weights_match_passes_on_the_configured_split() -> None:
    check = weights_match(batch(*many(500, ok("v1")), *many(500, ok("v2"))), {"v1": 50, "v2": 50})
    assert check
    assert check.name == "weights_match(v1=50/v2=50)"
    verdict = check.evidence["verdict"]
    assert isinstance(verdict, stats.WeightVerdict)
    assert check.detail == verdict.table()
    assert check.evidence["versions"] == {"v1": 500, "v2": 500}
    assert check.evidence["excluded"] == 0


def test_weights_match_fails_with_the_observed_versus_expected_table() -> None:
    result = batch(*many(900, ok("v1")), *many(100, ok("v2")), *many(20, envoy_503()))
    check = weights_match(result, {"v1": 50, "v2": 50}, alpha=0.001, power=0.99, min_deviation=0.05)
    assert not check
    assert "verdict=FAIL" in check.detail
    assert "category" in check.detail
    assert "expected %" in check.detail
    assert (
        "note: 20 of 1020 responses were not counted (not a 200 from the app): status {200=1000, 503=20}"
        in (check.detail)
    )
    assert check.evidence["excluded"] == 20
    assert check.evidence["status"] == {200: 1000, 503: 20}


def test_weights_match_zero_weight_and_unexpected_versions() -> None:
    assert weights_match(batch(*many(100, ok("v1"))), {"v1": 100, "v2": 0})
    check = weights_match(batch(*many(99, ok("v1")), ok("v2")), {"v1": 100, "v2": 0})
    assert not check
    assert "zero-weight" in check.detail
    check = weights_match(batch(*many(99, ok("v1")), ok("v3")), {"v1": 100, "v2": 0})
    assert not check
    assert "not configured" in check.detail


def test_proportion_match() -> None:
    check = proportion_match(50, 100, 0.5, what="aborted")
    assert check
    assert check.name == "proportion_match(aborted=0.5)"
    assert check.detail.startswith("aborted: PASS binomial 50/100")
    check = proportion_match(90, 100, 0.5)
    assert not check
    assert "FAIL" in check.detail
    assert isinstance(check.evidence["verdict"], stats.ProportionVerdict)
    empty = proportion_match(0, 0, 0.5)
    assert not empty
    assert "nothing was verified" in empty.detail


# --------------------------------------------------------------------------- composition


def test_all_of_lists_each_failing_check() -> None:
    result = batch(*many(8, ok()), *many(2, envoy_503(overloaded=True)))
    combined = all_of(all_status(result, 200), no_overload(result), overloaded_at_least(result, 1))
    assert not combined
    assert combined.name == "all_of(all_status(200), no_overload, overloaded_at_least(1))"
    assert combined.detail.startswith("2 of 3 checks failed:")
    assert "- all_status(200):\n    expected every response" in combined.detail
    assert "- no_overload:\n" in combined.detail
    assert "- overloaded_at_least(1)" not in combined.detail
    assert combined.evidence["failed"] == ("all_status(200)", "no_overload")
    assert len(combined.evidence["checks"]) == 3  # type: ignore[arg-type]

    passing = all_of(allowed(batch(ok())), overloaded_at_least(result, 2))
    assert passing
    assert passing.detail == "all 2 checks passed: allowed, overloaded_at_least(2)"


def test_all_of_needs_a_check() -> None:
    with pytest.raises(ValueError, match="at least one check"):
        all_of()


def test_assert_check_raises_check_failed_with_the_detail() -> None:
    good = all_status(batch(ok()), 200)
    assert assert_check(good) is good
    bad = weights_match(batch(*many(90, ok("v1")), *many(10, ok("v2"))), {"v1": 50, "v2": 50})
    with pytest.raises(CheckFailed) as info:
        assert_check(bad)
    message = str(info.value)
    assert message.startswith("check weights_match(v1=50/v2=50) failed:\n")
    assert bad.detail in message
    assert isinstance(info.value, AssertionError)
    assert isinstance(info.value, HarnessError)


# ---- load phases (what a Locust run logged)


def test_error_ratio_below_is_one_sided_on_counts() -> None:
    t0 = 0.0

    def phase(n: int, k: int):  # type: ignore[no-untyped-def]
        recs = [_rec(t0 + i * 0.001, status=503 if i < k else 200) for i in range(n)]
        return build_report(
            LoadConfig(), LoadTarget("http://x"), recs, [PhaseMark("p", t0)], started_at=t0, ended_at=t0 + 1
        ).phase("p")

    assert error_ratio_below(phase(1000, 0), 0.0)
    assert error_ratio_below(phase(1000, 12), 0.01)  # 1.2% observed: not significantly above 1%
    assert not error_ratio_below(phase(1000, 40), 0.01)  # 4%: far above
    assert not error_ratio_below(phase(1000, 1), 0.0)  # any error breaks a zero bound
    assert not error_ratio_below(phase(0, 0), 0.5)  # no requests: no evidence


def test_latency_at_least() -> None:
    slow = [_rec(float(i), latency=210.0 + i) for i in range(10)]
    fast = [_rec(float(i), latency=5.0) for i in range(10)]
    assert latency_at_least(slow, 200)
    assert not latency_at_least(fast, 200)
    assert not latency_at_least([], 200)


def test_error_ratio_below_is_a_check_with_the_exact_one_sided_bound() -> None:
    """The lower bound is the one-sided Clopper-Pearson bound (beta quantile) at alpha, taken from
    the stats module's exact interval: the verdict and the reported figures are those numbers."""
    from scipy.stats import beta

    recs = [_rec(i * 0.001, status=503 if i < 12 else 200) for i in range(1000)]
    report = build_report(
        LoadConfig(), LoadTarget("http://x"), recs, [PhaseMark("p", 0.0)], started_at=0.0, ended_at=1.0
    )
    check = error_ratio_below(report.phase("p"), 0.01)
    assert (
        isinstance(check, CheckResult)
        and check.passed
        and check.identity == "error_ratio_below(0.01, phase p)"
    )
    lower = check.evidence["lower_bound"]
    assert lower == pytest.approx(float(beta.ppf(0.001, 12, 1000 - 12 + 1)), rel=1e-5)
    assert f"lower 99.9% confidence bound of the error ratio {lower:.4f} vs the allowed 0.01" in check.detail
    assert "12 of 1000 requests failed (1.20%)" in check.detail
