"""Load shapes as pure functions: how many users run ``t`` seconds into a run of ``duration`` seconds.

No locust import here: the locustfile's ``MeshproofShape`` and the harness's unit tests both use it.
"""

from __future__ import annotations

import math

SHAPES = ("steady", "ramp", "spike", "step")


def users_at(shape: str, users: int, duration: float, t: float) -> int:
    """Users of ``shape`` at time ``t``: steady holds ``users``; ramp climbs linearly to ``users``
    over ``duration``; spike runs a quarter, all of them in the middle third, a quarter again;
    step climbs in four equal steps. Without a duration every shape holds ``users``."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}: use one of {', '.join(SHAPES)}")
    if shape == "steady" or duration <= 0:
        return users
    frac = min(max(t / duration, 0.0), 1.0)
    if shape == "ramp":
        return max(1, math.ceil(users * frac))
    low = max(1, users // 4)
    if shape == "spike":
        return users if 1 / 3 <= frac < 2 / 3 else low
    return max(1, math.ceil(users * min(4, math.floor(frac * 4) + 1) / 4))  # step
