"""Effective outlier oracle: Envoy's cluster as istiod generated it, Envoy's defaults filled in."""

from __future__ import annotations

import pytest

from harness.istio.oracles.outlier import EffectiveOutlier


def test_no_block_means_no_outlier_detection() -> None:
    assert EffectiveOutlier.from_cluster({"name": "c"}) is None


def test_the_designs_deprecated_consecutive_errors_gets_envoys_defaults() -> None:
    # What istiod generates for consecutiveErrors: 5, interval 5s, baseEjectionTime 30s, maxEjectionPercent 50:
    # the deprecated field is not translated, so consecutive_5xx is absent.
    od = EffectiveOutlier.from_cluster(
        {
            "outlier_detection": {
                "interval": "5s",
                "base_ejection_time": "30s",
                "max_ejection_percent": 50,
                "enforcing_success_rate": 0,
            }
        }
    )
    assert od is not None
    assert od.ejects_after_5xx == 5 and od.enforcing_consecutive_5xx == 100
    assert od.ejects_after_gateway_errors is None  # enforcing_consecutive_gateway_failure defaults to 0
    assert od.interval_s == 5 and od.base_ejection_time_s == 30 and od.max_ejection_percent == 50
    assert od.enforcing_success_rate == 0
    assert "eject after 5 consecutive 5xx" in od.describe() and "gateway errors: off" in od.describe()


def test_explicit_fields_and_wrappers() -> None:
    od = EffectiveOutlier.from_cluster(
        {
            "outlier_detection": {
                "consecutive_5xx": {"value": 3},
                "enforcing_consecutive_5xx": 0,
                "consecutive_gateway_failure": 2,
                "enforcing_consecutive_gateway_failure": 100,
                "interval": {"seconds": 1, "nanos": 500000000},
                "base_ejection_time": 3,
                "split_external_local_origin_errors": True,
            }
        }
    )
    assert od is not None
    assert od.ejects_after_5xx is None  # not enforced
    assert od.ejects_after_gateway_errors == 2
    assert od.interval_s == 1.5 and od.base_ejection_time_s == 3
    assert od.split_external_local_origin_errors
    assert "consecutive 5xx: off" in od.describe() and "after 2 consecutive gateway errors" in od.describe()


def test_zero_threshold_is_off() -> None:
    od = EffectiveOutlier.from_cluster({"outlier_detection": {"consecutive_5xx": 0}})
    assert od is not None and od.ejects_after_5xx is None


@pytest.mark.parametrize(
    ("hosts", "pct", "always", "cap"),
    [
        (4, 50, False, 2),
        (4, 10, False, 0),
        (4, 10, True, 1),
        (3, 50, False, 1),
        (4, 100, False, 4),
        (0, 50, True, 0),
    ],
)
def test_max_ejected(hosts: int, pct: int, always: bool, cap: int) -> None:
    assert EffectiveOutlier(max_ejection_percent=pct, always_eject_one_host=always).max_ejected(hosts) == cap


def test_readmission_time_grows_with_ejections_and_is_capped() -> None:
    od = EffectiveOutlier(base_ejection_time_s=30, max_ejection_time_s=300)
    assert od.readmitted_after_s() == 30
    assert od.readmitted_after_s(3) == 90
    assert od.readmitted_after_s(50) == 300
    assert EffectiveOutlier(base_ejection_time_s=400, max_ejection_time_s=300).readmitted_after_s(2) == 400


def test_every_field_is_read_from_its_envoy_name() -> None:
    block = {
        "consecutive_5xx": 1,
        "enforcing_consecutive_5xx": 2,
        "consecutive_gateway_failure": 3,
        "enforcing_consecutive_gateway_failure": 4,
        "interval": "5s",
        "base_ejection_time": "6s",
        "max_ejection_time": "7s",
        "max_ejection_percent": 8,
        "split_external_local_origin_errors": True,
        "consecutive_local_origin_failure": 9,
        "enforcing_consecutive_local_origin_failure": 10,
        "enforcing_success_rate": 11,
        "success_rate_minimum_hosts": 12,
        "success_rate_request_volume": 13,
        "enforcing_failure_percentage": 14,
        "always_eject_one_host": True,
    }
    assert EffectiveOutlier.from_cluster({"outlier_detection": block}) == EffectiveOutlier(
        1, 2, 3, 4, 5.0, 6.0, 7.0, 8, True, 9, 10, 11, 12, 13, 14, True
    )
