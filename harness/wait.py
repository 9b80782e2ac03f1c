"""Wait on a condition with a deadline. No sleeps as synchronisation anywhere else.

``until(check, ...)`` calls ``check`` until it returns a truthy value (returned) or the
deadline passes (raises :class:`~harness.errors.WaitTimeout` naming what was awaited and the
last value or exception seen). ``converge`` additionally requires several consecutive
successes, for checks whose single success can be luck (Istio's ``retry.Converge``).
The clock and sleep are injectable so tests run instantly. Every wait is recorded as a span of
wall time (:mod:`harness.timeline`: its ``what``, start and end), so a run can say where it waited.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from harness import timeline
from harness.errors import WaitTimeout

T = TypeVar("T")


class Clock:
    """now() and sleep(): subclass it to inject a fake clock so tests run without waiting."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


REAL_CLOCK = Clock()


def until(
    check: Callable[[], T | None],
    *,
    what: str,
    timeout: float,
    interval: float = 0.2,
    hint: str = "",
    clock: Clock = REAL_CLOCK,
    retry_on: tuple[type[BaseException], ...] = (),
    converge: int = 1,
    pace: float = 0.0,
) -> T:
    """Poll ``check`` until it returns a truthy value ``converge`` times in a row.

    Exceptions of the types in ``retry_on`` count as "not yet" and are reported as last seen.
    ``pace`` > 0 makes a costly check poll less often: between two checks the wait is at least
    ``pace`` times what the last check took (so checking takes at most ``1 / (1 + pace)`` of the
    waiting time, however slow the machine makes each check); ``interval`` stays the minimum.
    """
    if converge < 1:
        raise ValueError("converge must be >= 1")
    if pace < 0:
        raise ValueError("pace must be >= 0")
    with timeline.span("wait", what):
        return _until(check, what, timeout, interval, hint, clock, retry_on, converge, pace)


def _until(
    check: Callable[[], T | None],
    what: str,
    timeout: float,
    interval: float,
    hint: str,
    clock: Clock,
    retry_on: tuple[type[BaseException], ...],
    converge: int,
    pace: float,
) -> T:
    deadline = clock.now() + timeout
    last: object = "(not called yet)"
    streak = 0
    while True:
        started = clock.now()
        try:
            value = check()
        except retry_on as e:  # noqa: PERF203 - polling loop
            value, last = None, f"{type(e).__name__}: {e}"
        else:
            last = value
        if value:
            streak += 1
            if streak >= converge:
                return value
        else:
            streak = 0
        if clock.now() >= deadline:
            seen = f"{last!s} ({streak}/{converge} consecutive successes)" if converge > 1 else last
            raise WaitTimeout(what, timeout, seen, hint)
        pause = max(interval, pace * (clock.now() - started))
        clock.sleep(min(pause, max(0.0, deadline - clock.now())))
