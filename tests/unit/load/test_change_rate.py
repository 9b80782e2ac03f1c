"""The spawn rate a steady Locust run is resized with (harness.load.local.change_rate)."""

from __future__ import annotations

import pytest

from harness.load.local import change_rate


@pytest.mark.parametrize(
    ("users", "running", "rate", "expected"),
    [
        (0, 8, None, 8.0),  # a pause stops all 8 in one tick (was 1 per second: 7.2 s)
        (16, 48, 16.0, 48.0),  # fewer users: stopped at once, whatever the slice's spawn rate
        (16, 0, None, 16.0),  # more users: the default, users per second
        (48, 16, 100.0, 100.0),  # more users: the rate asked for
        (0, 0, None, 1.0),
    ],
)
def test_fewer_users_are_stopped_within_one_tick(
    users: int, running: int, rate: float | None, expected: float
) -> None:
    assert change_rate(users, running, rate) == expected
