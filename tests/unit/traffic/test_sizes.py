"""The precomputed sample sizes (harness.traffic.sizes) are what the exact search computes."""

from __future__ import annotations

import pytest

from harness.traffic import sizes, stats


@pytest.mark.parametrize("key", list(sizes.WEIGHTS), ids=str)
def test_every_weights_entry_is_the_computed_size(key: tuple[tuple[float, ...], float, float, float]) -> None:
    assert sizes.WEIGHTS[key] == stats._compute_required_n(*key)


@pytest.mark.parametrize("key", list(sizes.PROPORTIONS), ids=str)
def test_every_proportion_entry_is_the_computed_size(key: tuple[float, float, float, float]) -> None:
    assert sizes.PROPORTIONS[key] == stats._compute_proportion_n(*key)


def test_the_suites_designs_are_looked_up_not_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    stats._required_n.cache_clear()
    stats._proportion_n.cache_clear()

    def computed(*args: object) -> int:
        raise AssertionError(f"computed {args}")

    monkeypatch.setattr(stats, "_compute_required_n", computed)
    monkeypatch.setattr(stats, "_compute_proportion_n", computed)
    assert stats.sample_size_for_weights({"v1": 90, "v2": 10}) == 1358
    assert stats.sequential_plan({"v1": 80, "v2": 10, "v3": 10}).fixed_n == 2432
    assert stats.sequential_proportion_plan(0.3).fixed_n == 2786
    stats._required_n.cache_clear()
    stats._proportion_n.cache_clear()


def test_a_design_not_listed_is_computed() -> None:
    stats._required_n.cache_clear()
    assert stats.sample_size_for_weights({"v1": 90, "v2": 10}, alpha=0.002) == stats._compute_required_n(
        (0.9, 0.1), 0.002, 0.99, 0.05
    )
