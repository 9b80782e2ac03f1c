"""Overflow oracle: effective circuit-breaker limits, Envoy's defaults, and shed bounds."""

from __future__ import annotations

from harness.istio.oracles.overflow import Limits


def test_unset_thresholds_take_envoys_defaults() -> None:
    assert Limits.from_cluster({}) == Limits(1024, 1024, 1024, 3)
    assert (
        Limits.from_cluster(
            {"circuit_breakers": {"thresholds": [{"priority": "HIGH", "max_connections": 1}]}}
        )
        == Limits()
    )


def test_istios_thresholds_are_read_as_envoy_runs_them() -> None:
    cluster = {
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": 1,
                    "max_pending_requests": {"value": 1},
                    "max_requests": 4294967295,
                    "max_retries": 4294967295,
                }
            ]
        }
    }
    lim = Limits.from_cluster(cluster)
    assert (lim.active, lim.pending, lim.in_flight) == (1, 1, 2)
    assert "1 active request(s)" in lim.describe()
    assert "max_requests unlimited" in lim.describe() and "unlimited retries" in lim.describe()


def test_shed_bounds() -> None:
    lim = Limits(max_connections=1, max_pending_requests=1, max_requests=1)
    assert lim.shed_bounds(total=4, concurrency=1, wall_s=1.2, hold_s=0.3) == (0, 0)
    assert lim.shed_bounds(total=4, concurrency=2, wall_s=1.2, hold_s=0.3) == (0, 0)
    # 48 requests at concurrency 16 in 0.9 s with 0.3 s holds: at most 1 x (3 + 1) served
    assert lim.shed_bounds(total=48, concurrency=16, wall_s=0.9, hold_s=0.3) == (44, 47)
    # a very slow batch lowers the lower bound, never below 1
    assert lim.shed_bounds(total=48, concurrency=16, wall_s=100, hold_s=0.3) == (1, 47)
    assert lim.max_served(0.9, 0.3) == 4
