"""wait.until with an injected fake clock: no test here sleeps."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest

from harness import timeline, wait
from harness.errors import WaitTimeout


class FakeClock(wait.Clock):
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


def sequence(values: Iterable[object]) -> Callable[[], object]:
    it = iter(values)

    def check() -> object:
        v = next(it)
        if isinstance(v, BaseException):
            raise v
        return v

    return check


def test_returns_the_first_truthy_value() -> None:
    clock = FakeClock()
    assert (
        wait.until(sequence([None, 0, "ready"]), what="x", timeout=10, interval=0.5, clock=clock) == "ready"
    )
    assert clock.sleeps == [0.5, 0.5]


def test_does_not_sleep_when_the_first_call_succeeds() -> None:
    clock = FakeClock()
    assert wait.until(lambda: 42, what="x", timeout=1, clock=clock) == 42
    assert clock.sleeps == []


def test_timeout_names_what_and_the_last_value_seen() -> None:
    clock = FakeClock()
    calls = iter(range(100))
    with pytest.raises(WaitTimeout) as info:
        wait.until(
            lambda: [] if next(calls) < 99 else None,
            what="2 proxies synced",
            timeout=1.0,
            interval=0.4,
            hint="check istiod",
            clock=clock,
        )
    e = info.value
    assert e.what == "2 proxies synced"
    assert e.timeout == 1.0
    assert e.last_seen == []
    assert e.hint == "check istiod"
    assert "waiting for 2 proxies synced" in str(e) and "Hint: check istiod" in str(e)


def test_never_sleeps_past_the_deadline() -> None:
    clock = FakeClock()
    with pytest.raises(WaitTimeout):
        wait.until(lambda: False, what="x", timeout=1.0, interval=0.4, clock=clock)
    assert clock.sleeps == pytest.approx([0.4, 0.4, 0.2])
    assert clock.t == pytest.approx(1.0)


def test_converge_needs_consecutive_successes() -> None:
    clock = FakeClock()
    check = sequence([True, True, False, True, True, "third"])
    assert wait.until(check, what="x", timeout=10, interval=0.1, converge=3, clock=clock) == "third"
    assert len(clock.sleeps) == 5


def test_converge_timeout_reports_the_streak() -> None:
    clock = FakeClock()
    with pytest.raises(WaitTimeout) as info:
        wait.until(
            sequence([True, False, True] + [False] * 100),
            what="split converged",
            timeout=0.25,
            interval=0.1,
            converge=2,
            clock=clock,
        )
    assert "(0/2 consecutive successes)" in str(info.value.last_seen)


def test_converge_must_be_positive() -> None:
    with pytest.raises(ValueError, match="converge"):
        wait.until(lambda: True, what="x", timeout=1, converge=0, clock=FakeClock())


def test_retry_on_treats_listed_exceptions_as_not_yet() -> None:
    clock = FakeClock()
    check = sequence([ConnectionError("refused"), ConnectionError("refused"), "up"])
    assert (
        wait.until(check, what="x", timeout=5, interval=1, retry_on=(ConnectionError,), clock=clock) == "up"
    )


def test_retry_on_exception_is_reported_as_last_seen() -> None:
    def check() -> None:
        raise ConnectionError("connection refused")

    with pytest.raises(WaitTimeout) as info:
        wait.until(
            check, what="istiod /ready", timeout=1, interval=0.5, retry_on=(OSError,), clock=FakeClock()
        )
    assert info.value.last_seen == "ConnectionError: connection refused"


def test_other_exceptions_propagate_at_once() -> None:
    clock = FakeClock()
    with pytest.raises(KeyError):
        wait.until(sequence([None, KeyError("k")]), what="x", timeout=5, retry_on=(OSError,), clock=clock)
    assert len(clock.sleeps) == 1


def test_the_real_clock_works_for_an_immediate_success() -> None:
    assert wait.until(lambda: "ok", what="x", timeout=0.1) == "ok"


def test_every_wait_is_recorded_as_a_span_with_its_what_also_when_it_times_out() -> None:
    timeline.take()  # what earlier tests recorded
    assert wait.until(sequence([None, "up"]), what="istiod /ready", timeout=5, clock=FakeClock()) == "up"
    with pytest.raises(WaitTimeout):
        wait.until(lambda: None, what="proxies ACKed", timeout=1, interval=0.5, clock=FakeClock())
    spans = timeline.take()
    assert [(s.kind, s.what) for s in spans] == [("wait", "istiod /ready"), ("wait", "proxies ACKed")]
    assert all(s.start <= s.end for s in spans)
    assert timeline.take() == []  # taken: the next test phase gets only its own


def test_pace_polls_a_costly_check_proportionally_less_often() -> None:
    clock = FakeClock()

    def slow(answers: list[object]) -> Callable[[], object]:
        def check() -> object:
            clock.t += 0.5  # each check costs half a second
            return answers.pop(0)

        return check

    assert (
        wait.until(slow([None, None, "ok"]), what="x", timeout=60, interval=0.1, pace=3, clock=clock) == "ok"
    )
    assert clock.sleeps == [1.5, 1.5]  # 3 x the check's 0.5 s, not the 0.1 s interval
    clock.sleeps.clear()
    assert wait.until(slow([None, "ok"]), what="x", timeout=60, interval=0.1, clock=clock) == "ok"
    assert clock.sleeps == [0.1]  # without pace: the interval
    with pytest.raises(WaitTimeout):  # the deadline still bounds every pause
        wait.until(slow([None] * 10), what="x", timeout=2, interval=0.1, pace=10, clock=clock)
    with pytest.raises(ValueError, match="pace"):
        wait.until(lambda: 1, what="x", timeout=1, pace=-1)
