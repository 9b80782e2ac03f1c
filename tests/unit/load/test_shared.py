"""SharedLocust and LoadSlice with a fake Locust run (no process): one run serves consecutive
tests, each test's slice holds only the requests started inside it, and a test that fails, times
out, is interrupted or loses its Locust mid-phase leaves the next test's slice clean."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Self

import pytest

from harness.errors import LoadError, WaitTimeout
from harness.load import LoadConfig, LoadTarget, RequestRecord
from harness.load.shared import LoadSlice, SharedLocust

TARGET = LoadTarget(ingress_url="http://127.0.0.1:9")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakeRun:
    """A steady Locust run: every poll, each live user logs one request started now, named after
    the test the run is labelled with (``label``); ``late`` records are logged at the next poll."""

    ids = itertools.count(1)

    def __init__(self, config: LoadConfig, clock: Clock, log: list[tuple[str, object]]) -> None:
        self.run_id = f"fake{next(self.ids)}"
        self.config, self.clock, self.log = config, clock, log
        self.report = None
        self.sink = None
        self.label = ""
        self.late: list[RequestRecord] = []
        self.dead = ""
        self._running = False
        self._user_ids = itertools.count(1)
        self._live: list[int] = []
        self._n = itertools.count(1)

    @property
    def running(self) -> bool:
        return self._running

    @property
    def exited(self) -> bool:
        return bool(self.dead)

    @property
    def users(self) -> int:
        return len(self._live)

    def start(self) -> Self:
        self._running = True
        self._live = [next(self._user_ids) for _ in range(self.config.users)]
        self.log.append(("start", self.config.users))
        return self

    def resize(self, users: int, rate: float | None = None, *, timeout: float | None = None) -> None:
        if self.dead:
            raise LoadError(self.dead)
        while len(self._live) > users:  # a stopped user's last request: logged later
            self.late.append(self.record(self._live.pop(), self.clock.t, self.label))
        while len(self._live) < users:
            self._live.append(next(self._user_ids))
        self.log.append(("resize", users))
        self.clock.t += 0.2  # Locust confirms the change a moment later

    def record(self, user: int, start: float, name: str) -> RequestRecord:
        return RequestRecord(start, 5.0, 200, name, "p1", "v1", f"{self.run_id}-1.{user}-{next(self._n)}")

    def poll(self) -> None:
        batch, self.late = self.late, []
        if not self.dead:
            batch += [self.record(u, self.clock.t, self.label) for u in self._live]
        for r in batch:
            if self.sink is not None:
                self.sink(r)

    def cpu_seconds(self) -> float:
        return 0.0

    def problem(self) -> str:
        return self.dead if self._running else "stopped"

    def phase(self, name: str) -> object:
        return None

    def stop(self) -> None:
        self._running = False
        self.log.append(("stop", self.run_id))

    def _abort(self) -> None:
        self._running = False
        self.log.append(("abort", self.run_id))


@pytest.fixture
def env(tmp_path: Path) -> tuple[SharedLocust, Clock, list[tuple[str, object]], list[FakeRun]]:
    clock, log, runs = Clock(), [], []

    def make(config: LoadConfig, target: LoadTarget, workdir: Path) -> FakeRun:
        run = FakeRun(config, clock, log)
        runs.append(run)
        return run

    return SharedLocust(tmp_path / "shared", make=make, wall=clock), clock, log, runs  # type: ignore[arg-type]


def _slice(shared: SharedLocust, tmp_path: Path, name: str, users: int = 3, **kw: object) -> LoadSlice:
    return shared.slice(LoadConfig(users=users, **kw), TARGET, workdir=tmp_path / name)  # type: ignore[arg-type]


def _phase_of_load(load: LoadSlice, run: FakeRun, clock: Clock, name: str, polls: int = 3) -> None:
    """Phase ``name`` with ``polls`` rounds of requests, one second apart."""
    load.phase(name)
    for _ in range(polls):
        clock.t += 1
        load.progress()
    clock.t += 1
    load.phase(f"after {name}")


def test_one_run_serves_consecutive_tests_each_with_its_own_records(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shared, clock, log, runs = env
    with _slice(shared, tmp_path, "a", users=3) as a:
        run = runs[0]
        run.label = "A"
        _phase_of_load(a, run, clock, "split")
        snap = a.snapshot(settle_s=0.0)
        assert {r.name for r in snap.in_phase("split")} == {"A"}
        assert len(snap.in_phase("split")) == 9  # 3 users x 3 rounds
    clock.t += 1
    run.label = "between"  # sent while no test's load is open: nobody's
    run.poll()
    clock.t += 1
    with _slice(shared, tmp_path, "b", users=5) as b:
        run.label = "B"
        run.late.append(run.record(1, a.report.started_at + 2.5, "A"))  # A's request, logged late  # type: ignore[union-attr]
        _phase_of_load(b, run, clock, "split")  # the same phase name as A's: B's own phases
        snap = b.snapshot(settle_s=0.0)
        assert len(snap.in_phase("split")) == 15
    assert log == [("start", 3), ("resize", 5)]  # one Locust, resized, not restarted
    assert shared.starts == 1 and shared.slices == 2
    for load, name in ((a, "A"), (b, "B")):
        report = load.report
        assert report is not None and {r.name for r in report.records} == {name}
        assert report.requests == sum(p.requests for p in report.phases)  # none after its end
    assert [p.name for p in b.report.phases] == ["spawn", "load", "split", "after split"]  # type: ignore[union-attr]
    assert b.report.started_at > a.report.started_at + a.report.duration_s  # type: ignore[union-attr]
    assert (tmp_path / "b" / "report.json").is_file()
    shared.close()
    assert log[-1] == ("stop", run.run_id)


def test_fewer_users_next_test_does_not_wait_for_the_stopped_ones(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Users Locust stopped at the change (their last request logged during the next test) are
    not the next test's: its snapshots never wait for them."""
    shared, clock, _, runs = env
    with _slice(shared, tmp_path, "a", users=4) as a:
        _phase_of_load(a, runs[0], clock, "x")
    clock.t += 0.5
    with _slice(shared, tmp_path, "b", users=2) as b:  # users 3 and 4 stop, each logs one more request
        b.phase("y")
        clock.t += 0.5
        b.progress()
        clock.t += 0.5
        b.phase("after y")
        clock.t += 0.5
        snap = b.snapshot(settle_s=0.0, timeout=1.0)  # users 3 and 4 would keep this waiting
        assert {r.request_id.rsplit("-", 1)[0].rsplit(".", 1)[1] for r in snap.in_phase("y")} == {"1", "2"}
        assert snap.phase("spawn").requests == 2  # the stopped users' last requests: counted there


@pytest.mark.parametrize(
    "failure",
    [AssertionError("verdict failed"), WaitTimeout("320 load requests in phase fault 1", 120.0, "17")],
)
def test_a_test_that_fails_mid_phase_leaves_the_next_test_clean(env, tmp_path: Path, failure) -> None:  # type: ignore[no-untyped-def]
    shared, clock, log, runs = env
    a = _slice(shared, tmp_path, "a", users=3)

    def failing_test() -> None:
        with a:
            runs[0].label = "A"
            a.phase("fault 1")
            clock.t += 1
            a.progress()
            raise failure  # mid-phase: "fault 1" never closed by the test

    with pytest.raises(type(failure)):
        failing_test()
    run = runs[0]
    assert a.report is not None and not a.running  # its slice ended at the failure
    run.late.append(run.record(2, clock.t - 0.5, "A"))  # its last request, logged after it ended
    clock.t += 1
    with _slice(shared, tmp_path, "b", users=3) as b:
        run.label = "B"
        _phase_of_load(b, run, clock, "fault 1")  # the failed test's phase name is free again
        assert {r.name for r in b.snapshot(settle_s=0.0).in_phase("fault 1")} == {"B"}
    assert {r.name for r in b.report.records} == {"B"}  # type: ignore[union-attr]
    assert shared.starts == 1  # the same Locust went on serving


def test_a_test_whose_locust_dies_mid_phase_hands_the_next_test_a_new_one(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shared, clock, log, runs = env
    a = _slice(shared, tmp_path, "a")

    def losing_its_locust() -> None:
        with a:
            a.phase("x")
            clock.t += 1
            a.progress()
            runs[0].dead = "Locust exited 2: boom"

    with pytest.raises(LoadError, match="exited 2"):
        losing_its_locust()
    assert a.report is None  # its error is the test's
    assert ("abort", runs[0].run_id) in log
    with _slice(shared, tmp_path, "b") as b:
        runs[1].label = "B"
        _phase_of_load(b, runs[1], clock, "x")
    assert shared.starts == 2 and b.run_id == runs[1].run_id
    assert {r.name for r in b.report.records} == {"B"}  # type: ignore[union-attr]


def test_an_interrupted_test_kills_the_shared_locust(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shared, clock, log, runs = env
    with pytest.raises(KeyboardInterrupt), _slice(shared, tmp_path, "a"):
        raise KeyboardInterrupt
    assert log[-1] == ("abort", runs[0].run_id) and not runs[0].running
    assert shared.close() is None


def test_a_slice_left_open_is_ended_by_the_next(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shared, clock, _, runs = env
    a = _slice(shared, tmp_path, "a").start()
    runs[0].label = "A"
    a.phase("x")  # its teardown never ran
    clock.t += 1
    with _slice(shared, tmp_path, "b") as b:
        runs[0].label = "B"
        _phase_of_load(b, runs[0], clock, "x")
    assert not a.running and {r.name for r in b.report.records} == {"B"}  # type: ignore[union-attr]


def test_pause_another_configuration_and_unshareable_loads(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    shared, clock, log, runs = env
    with _slice(shared, tmp_path, "a", users=8):
        pass
    shared.pause()  # a test without load, or one that starts its load itself
    assert shared.running_users == 0
    with _slice(shared, tmp_path, "b", users=8):
        pass
    with _slice(shared, tmp_path, "c", users=8, headers={"Host": "x"}):  # other requests: a new Locust
        pass
    assert log == [("start", 8), ("resize", 0), ("resize", 8), ("stop", runs[0].run_id), ("start", 8)]
    assert not SharedLocust.shares(LoadConfig(users=8, shape="ramp", duration_s=10))
    assert not SharedLocust.shares(LoadConfig(users=8, processes=2))
    with pytest.raises(ValueError):
        _slice(shared, tmp_path, "d", shape="ramp", duration_s=10)
    with pytest.raises(LoadError, match="steady"):
        _slice(shared, tmp_path, "e").wait(1)
