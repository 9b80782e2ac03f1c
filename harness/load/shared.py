"""One Locust for consecutive tests (the local backend): :class:`SharedLocust` keeps a steady
:class:`~harness.load.local.LocustRun` running across the ``under_load`` tests of a module, and each
test gets a :class:`LoadSlice`, the :class:`~harness.load.run.LoadRun` it uses as if it were its own.

A slice is a window of the shared run on the harness's clock: it starts when the test's load
starts (phase ``spawn``: Locust resized to the test's users, or started) and ends when the test's
load stops. Its records are the requests that *started* inside that window (the rule a phase
already follows), its phases are its own (names unique within the slice), and its snapshots wait
only for the users seen in it; so the verdict of a test counts no request of another test's
phases, whatever the other test did. ::

    shared = SharedLocust(workdir)  # nothing runs yet
    with shared.slice(LoadConfig(users=8), target, workdir=a) as load:  # Locust starts: 8 users
        load.phase("split")
    with shared.slice(LoadConfig(users=48), target, workdir=b) as load:  # the same Locust, 48 users
        ...
    shared.close()  # Locust stops

Between slices the users keep running (the next test's load is ready at once) until something
needs quiet: :meth:`SharedLocust.pause` (0 users), called for a test that sets its scenario up
before its load starts, for a test without load, and by a per-test (non-steady) run. A slice ending
waits, as a snapshot does, until every user has logged a request started after its end: its
report is then complete. A run in doubt (Locust exited or logged a traceback, a slice could not
settle, or the next slice needs other targets, headers or processes) is never handed on: the next
slice starts a new Locust.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Protocol, Self

from harness.errors import LoadError
from harness.load.config import LoadConfig, LoadTarget
from harness.load.report import LoadReport, PhaseMark, RequestRecord, build_report
from harness.load.run import FIRST_PHASE, SPAWN_PHASE, PhaseClock, Progress, RunState, wait_users_past


class SharableRun(Protocol):
    """What a shared run needs of :class:`~harness.load.local.LocustRun`."""

    run_id: str
    report: LoadReport | None
    sink: Callable[[RequestRecord], None] | None

    @property
    def running(self) -> bool: ...

    @property
    def exited(self) -> bool: ...

    @property
    def users(self) -> int: ...

    def start(self) -> Self: ...

    def resize(self, users: int, rate: float | None = None, *, timeout: float | None = None) -> None: ...

    def poll(self) -> None: ...

    def cpu_seconds(self) -> float: ...

    def problem(self) -> str: ...

    def phase(self, name: str) -> object: ...

    def stop(self) -> LoadReport: ...

    def _abort(self) -> None: ...


#: Makes the Locust run a slice needs: (its config, the target, the run's workdir).
RunFactory = Callable[[LoadConfig, LoadTarget, Path], SharableRun]


def _local_run(config: LoadConfig, target: LoadTarget, workdir: Path) -> SharableRun:
    from harness.load.local import LocustRun

    return LocustRun(config, target, workdir=workdir)


#: How long a slice's end waits for every user to log a request started after it (as a snapshot does).
SETTLE_TIMEOUT_S = 30.0


class SharedLocust:
    """A steady Locust run that the tests of a module share, one :class:`LoadSlice` at a time."""

    def __init__(
        self, workdir: Path, *, make: RunFactory = _local_run, wall: Callable[[], float] = time.time
    ) -> None:
        self.workdir = Path(workdir)
        self._make, self._wall = make, wall
        self._run: SharableRun | None = None
        self._key: LoadConfig | None = None
        self._target: LoadTarget | None = None
        self._active: LoadSlice | None = None
        self.starts = 0  # Locust processes started
        self.slices = 0  # slices opened
        self.notes: list[str] = []  # what ended a run early (for the module's report)

    @staticmethod
    def shares(config: LoadConfig) -> bool:
        """Whether a test's load can be a slice: a steady single-process run without a duration
        (a shape or a duration follows the run's own clock, and a ``--processes`` master confirms
        a change of users before its workers have made it: such a test keeps a run of its own)."""
        return config.shape == "steady" and config.duration_s <= 0 and config.processes == 1

    def slice(self, config: LoadConfig, target: LoadTarget, *, workdir: Path) -> LoadSlice:
        """A test's load (not started: ``start()`` or ``with``)."""
        if not self.shares(config):
            raise ValueError(f"a {config.shape!r} load with a duration cannot share a run")
        return LoadSlice(self, config, target, workdir=workdir, wall=self._wall)

    @property
    def running_users(self) -> int:
        """Users the shared Locust runs now (0: paused, or no Locust)."""
        return self._run.users if self._run is not None and self._run.running else 0

    def pause(self) -> None:
        """No load until the next slice starts (0 users; returns once Locust confirms)."""
        if self._active is not None:
            self._active.stop()
        run = self._run
        if run is None or not run.running or run.users == 0:
            return
        try:
            run.resize(0)
        except BaseException:
            self._discard("pausing it failed")
            raise

    def close(self) -> LoadReport | None:
        """Stop the shared Locust (the module's tests are done); its whole report (every slice,
        and the time between them) is in its workdir."""
        if self._active is not None:
            with contextlib.suppress(Exception):  # its error was the test's
                self._active.stop()
        run, self._run = self._run, None
        if run is None:
            return None
        run.sink = None
        if not run.running:
            return run.report
        return run.stop()

    def abort(self) -> None:
        """Ctrl-C: kill the shared Locust at once."""
        run, self._run, self._active = self._run, None, None
        if run is not None:
            run._abort()

    # ---- for LoadSlice
    def _open(self, sl: LoadSlice) -> SharableRun:
        """Make ``sl`` the slice the load serves: the running Locust resized to its users, else a
        new Locust (none yet, another configuration, or the last one in doubt)."""
        if self._active is not None and self._active is not sl:
            stale = self._active  # its test's teardown never ended it: end it now, apart from sl
            with contextlib.suppress(Exception):
                stale.stop()
            self._active = None
        key = replace(sl.config, users=1, spawn_rate=None)
        run = self._run
        if run is not None:
            why = (
                "the next test's load has another configuration"
                if (key, sl.target) != (self._key, self._target)
                else run.problem()
            )
            if why:
                self._retire(why)
                run = None
        self.slices += 1
        if run is None:
            self.starts += 1
            run = self._make(sl.config, sl.target, self.workdir / f"run-{self.starts}")
            run.sink = sl._take
            self._run, self._key, self._target = run, key, sl.target
            try:
                run.start()
            except BaseException:
                self._run = None
                raise
        else:
            run.sink = sl._take
            with contextlib.suppress(Exception):  # a mark for the module's chart only
                run.phase(f"slice {self.slices}")
            try:
                run.resize(sl.config.users, sl.config.rate)
            except BaseException:
                self._discard("resizing it failed")
                raise
        self._active = sl
        return run

    def _close(self, sl: LoadSlice, ended_at: float) -> None:
        """``sl`` has ended at ``ended_at``: wait until every user it saw has logged a request
        started after that (its records are then complete), and leave the users running."""
        run = self._run
        if self._active is sl:
            self._active = None
        if run is None or sl._run is not run:
            return  # its run was discarded already (its error has been raised)
        try:

            def newest() -> Mapping[str, float]:
                run.poll()
                if why := run.problem():
                    raise LoadError(why)
                return sl._newest_start

            wait_users_past(
                newest,
                ended_at,
                wall=self._wall,
                what="every Locust user to log a request started after the test's load ended",
                timeout=SETTLE_TIMEOUT_S,
                interval=0.05,
            )
        except BaseException:
            run.sink = None
            self._discard("a test's load did not end cleanly")
            raise
        run.sink = None
        with contextlib.suppress(Exception):
            run.phase(f"after slice {self.slices}")

    def _discard(self, why: str) -> None:
        """A run in doubt: killed at once, never handed to the next slice."""
        run, self._run = self._run, None
        if run is not None:
            self.notes.append(f"{run.run_id}: {why}")
            run.sink = None
            run._abort()

    def _retire(self, why: str) -> None:
        """Stop the run (its report kept in its workdir) before another one starts."""
        run, self._run = self._run, None
        if run is None:
            return
        self.notes.append(f"{run.run_id}: {why}")
        run.sink = None
        try:
            run.stop()
        except Exception as e:  # a failed run's own error belonged to the slice that saw it
            self.notes.append(f"{run.run_id}: stopping it failed: {e}")
            with contextlib.suppress(Exception):
                run._abort()


class LoadSlice(PhaseClock):
    """One test's load on a :class:`SharedLocust`: a :class:`~harness.load.run.LoadRun` whose
    phases, records, snapshots and report hold only the requests started inside its window."""

    where = "on this machine (one Locust shared by the module's tests)"

    def __init__(
        self,
        shared: SharedLocust,
        config: LoadConfig,
        target: LoadTarget,
        *,
        workdir: Path,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config, self.target, self.workdir = config, target, Path(workdir)
        self._shared, self._wall = shared, wall
        self._state = RunState.NEW
        self._phases: list[PhaseMark] = []
        self._init_records()
        self._started_at = 0.0
        self._ended_at = math.inf
        self._track_from = math.inf  # requests started from here on say which users are active
        self._run: SharableRun | None = None
        self._cpu_at_start = 0.0
        self._cpu_s = 0.0
        self.run_id = ""
        self.report: LoadReport | None = None

    @property
    def exited(self) -> bool:
        return self._run is not None and self._run.exited

    def start(self) -> Self:
        if self._state is not RunState.NEW:
            raise LoadError(f"this load slice is {self._state.value}; start a new one")
        self._started_at = self._wall()
        self._phases = [PhaseMark(SPAWN_PHASE, self._started_at)]
        self._state = RunState.RUNNING
        try:
            self._run = self._shared._open(self)
        except BaseException:
            self._state = RunState.STOPPED
            raise
        self.run_id = self._run.run_id
        self._cpu_at_start = self._run.cpu_seconds()
        # Locust runs this slice's users now (the ones it stopped are gone): from here on, each
        # user's newest request says whether it has moved past a boundary (users_past)
        self._track_from = self._wall()
        if self.current_phase == SPAWN_PHASE:
            self.phase(FIRST_PHASE)
        return self

    def _take(self, rec: RequestRecord) -> None:
        """Every record the shared run reads while this slice is open: kept if it started inside
        the slice's window, never otherwise (another test's request, or one sent between tests)."""
        if rec.start < self._started_at:
            return
        if rec.start >= self._ended_at:  # not this slice's, but its user has moved past the end
            key = rec.request_id.rsplit("-", 1)[0]
            if rec.start >= self._track_from and rec.start > self._newest_start.get(key, 0.0):
                self._newest_start[key] = rec.start
            return
        if rec.start >= self._track_from:
            self._keep(rec)
        else:  # sent while Locust changed its users: counted, but says nothing of a user's progress
            self._records.append(rec)
            self._failures += rec.failed

    def progress(self) -> Progress:
        if self._run is not None and self._state is RunState.RUNNING:
            self._run.poll()
        return self._progress()

    def snapshot(self, *, settle_s: float = 1.0, timeout: float = 30.0) -> LoadReport:
        """As :meth:`harness.load.local.LocustRun.snapshot`, over this slice's records and users."""
        if self._state is not RunState.RUNNING or self._run is None:
            if self.report is None:
                raise LoadError("snapshot() of a load that is not running")
            return self.report
        run = self._run

        def newest() -> Mapping[str, float]:
            run.poll()
            return self._newest_start

        wait_users_past(
            newest,
            self._phases[-1].start + settle_s,
            wall=self._wall,
            what=f"every Locust process to log requests started {settle_s:g} s after the phase boundary",
            timeout=timeout,
            interval=0.1,
        )
        return self._build(self._wall())

    def wait(self, timeout: float) -> int:
        raise LoadError("a shared load is steady and never ends by itself: stop() ends the test's slice")

    def stop(self) -> LoadReport:
        """End the slice now: wait until its records are complete, build its report (the users
        keep running for the next test); idempotent."""
        if self.report is not None:
            return self.report
        if self._state is RunState.NEW:
            raise LoadError("LoadSlice.stop() before start()")
        if self._state is RunState.STOPPED:
            raise LoadError("this test's load failed before its report (see the error it raised)")
        ended = self._wall()
        self._ended_at = ended
        if any(r.start >= ended for r in self._records):  # read before the end, started at it
            self._records = [r for r in self._records if r.start < ended]
            self._failures = sum(r.failed for r in self._records)
        last = self._phases[-1]
        self._phases[-1] = PhaseMark(last.name, last.start, ended)
        self._state = RunState.STOPPED
        assert self._run is not None
        run = self._run
        self._shared._close(self, ended)
        with contextlib.suppress(Exception):
            self._cpu_s = max(0.0, run.cpu_seconds() - self._cpu_at_start)
        self.report = self._build(ended)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "report.json").write_text(json.dumps(self.report.to_json(), indent=2))
        return self.report

    def _abort(self) -> None:
        self._state = RunState.STOPPED
        self._shared.abort()

    def _build(self, ended_at: float) -> LoadReport:
        return build_report(
            self.config,
            self.target,
            self._records,
            self._phases,
            started_at=self._started_at,
            ended_at=ended_at,
            request_id_prefix=self.run_id,
            locust_requests=-1,  # Locust's own totals cover the whole shared run, not one slice
            locust_exit_code=0,
            locust_cpu_s=self._cpu_s,
            workdir=self.workdir,
        )
