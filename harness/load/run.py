"""The run protocol both Locust runners share: :class:`LoadRun` (what callers use), phases on the
harness's clock (:class:`PhaseClock`), live :class:`Progress`, and :func:`users_past` (when a
snapshot may cut a phase). The runners: :class:`harness.load.local.LocustRun` (a subprocess on
this machine) and the in-cluster one of the kube backend."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from harness import wait
from harness.errors import LoadError
from harness.load.config import LoadConfig, LoadTarget
from harness.load.report import LoadReport, PhaseMark, RequestRecord

#: Phase of the requests sent before Locust reported its users spawned.
SPAWN_PHASE = "spawn"
#: Phase between "users spawned" and the first :meth:`LocustRun.phase` call.
FIRST_PHASE = "load"
#: A user that has logged no request for this long (a shape stopped it, or it is stuck) is not
#: waited for by :meth:`LocustRun.snapshot`.
QUIET_USER_S = 5.0


class RunState(enum.Enum):
    """Where a run is in its lifecycle: a run is started once and never reused."""

    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Progress:
    """Live figures while Locust runs (from the event logs read so far)."""

    elapsed_s: float
    requests: int
    failures: int
    rps: float  # over the last few seconds
    phase: str

    @classmethod
    def of(
        cls, records: Sequence[RequestRecord], failures: int, *, started_at: float, now: float, phase: str
    ) -> Progress:
        """The figures of ``records`` (in the order read) at ``now``: rps over the last 3 s."""
        recent = [r for r in records[-5000:] if r.start >= now - 3.0]
        return cls(now - started_at, len(records), failures, len(recent) / 3.0, phase)


def users_past(newest: Mapping[str, float], cut: float, *, now: float) -> int | None:
    """How many Locust users (``newest``: each user's newest request start) logged a request started
    at or after ``cut``; None until every user has, or has been quiet for ``QUIET_USER_S`` (a user
    sends one request at a time: the requests before ``cut`` are then all logged)."""
    quiet_since = now - QUIET_USER_S
    if newest and all(t >= cut or t < quiet_since for t in newest.values()):
        return None
    return sum(t >= cut for t in newest.values())


def wait_users_past(
    read: Callable[[], Mapping[str, float]],
    cut: float,
    *,
    wall: Callable[[], float],
    what: str,
    timeout: float,
    interval: float,
) -> None:
    """Wait until :func:`users_past` says every user is past ``cut``; ``read`` takes in the records
    logged since the last look (it may raise on a failed run) and returns each user's newest start."""
    wait.until(
        lambda: users_past(read(), cut, now=wall()) is None,
        what=what,
        timeout=timeout,
        interval=interval,
        hint="is the load still running? see the Locust log",
    )


class _Phased(Protocol):
    """What a phase needs of its run (LocustRun, or the in-cluster KubeLocustRun)."""

    @property
    def current_phase(self) -> str: ...

    @property
    def running(self) -> bool: ...

    def phase(self, name: str) -> _Phase: ...


class _Phase:
    """Returned by :meth:`LocustRun.phase`; as a context manager, leaving it starts ``after <name>``."""

    def __init__(self, run: _Phased, name: str) -> None:
        self._run, self.name = run, name

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._run.current_phase == self.name and self._run.running:
            self._run.phase(f"after {self.name}")


class PhaseClock:
    """Phases on the harness's clock and the request records read so far, shared by both runners
    (:class:`LocustRun`, and :class:`~harness.backends.kube.load_runner.KubeLocustRun` inside a
    cluster): a subclass sets ``_phases``, ``_state``, ``_wall`` and ``_started_at``, hands every
    record it reads to :meth:`_keep`, and implements ``start``, ``stop`` and ``_abort`` (the context
    manager's exit on Ctrl-C)."""

    _phases: list[PhaseMark]
    _state: RunState
    _wall: Callable[[], float]
    _started_at: float
    _records: list[RequestRecord]
    _failures: int
    _newest_start: dict[str, float]  # per Locust user: the latest request start read
    what = "Locust"  # in notes: what failed to stop

    def _init_records(self) -> None:
        self._records, self._failures, self._newest_start = [], 0, {}

    def _keep(self, rec: RequestRecord) -> None:
        """One request read from Locust's logs: counted, and its user's newest start remembered."""
        self._records.append(rec)
        self._failures += rec.failed
        key = rec.request_id.rsplit("-", 1)[0]  # <run id>-[<host>.]<pid>.<user>: one Locust user
        if rec.start > self._newest_start.get(key, 0.0):
            self._newest_start[key] = rec.start

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> LoadReport:
        raise NotImplementedError

    def _abort(self) -> None:
        """Ctrl-C or SystemExit in the run's block: end the run at once, without a report."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()  # start() cleans up a half-started run before re-raising

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and not isinstance(exc, Exception):  # Ctrl-C, SystemExit: just clean up
            self._abort()
            return
        try:
            self.stop()
        except Exception as e:
            if exc is None:
                raise
            exc.add_note(f"and stopping {self.what} failed too: {e}")

    def _progress(self) -> Progress:
        """The figures of the records read so far, now."""
        return Progress.of(
            self._records,
            self._failures,
            started_at=self._started_at,
            now=self._wall(),
            phase=self.current_phase,
        )

    @property
    def running(self) -> bool:
        return self._state is RunState.RUNNING

    @property
    def current_phase(self) -> str:
        return self._phases[-1].name if self._phases else ""

    def phase(self, name: str) -> _Phase:
        """End the current phase and start ``name`` now (names must be unique within a run)."""
        if not name or name in {p.name for p in self._phases}:
            raise ValueError(
                f"phase name {name!r} is empty or already used: {[p.name for p in self._phases]}"
            )
        if self._state is not RunState.RUNNING:
            raise LoadError(f"cannot start phase {name!r}: the load is {self._state.value}")
        now = self._wall()
        last = self._phases[-1]
        self._phases[-1] = PhaseMark(last.name, last.start, now)
        self._phases.append(PhaseMark(name, now))
        return _Phase(self, name)


class LoadRun(Protocol):
    """What :class:`LocustRun` (a local subprocess) and the in-cluster
    :class:`~harness.backends.kube.load_runner.KubeLocustRun` share: the API callers use."""

    config: LoadConfig
    target: LoadTarget
    run_id: str
    workdir: Path
    report: LoadReport | None
    where: str  # where Locust runs, for people: "on this machine", "in the cluster"

    @property
    def running(self) -> bool: ...

    @property
    def exited(self) -> bool: ...

    @property
    def current_phase(self) -> str: ...

    def start(self) -> Self: ...

    def phase(self, name: str) -> _Phase: ...

    def progress(self) -> Progress: ...

    def snapshot(self, *, settle_s: float = 1.0, timeout: float = 30.0) -> LoadReport: ...

    def wait(self, timeout: float) -> int: ...

    def stop(self) -> LoadReport: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def locust_message(log: str, lines: int = 15) -> str:
    """The part of Locust's log that explains a failure: from the last traceback, else the tail."""
    at = log.rfind("Traceback (most recent call last)")
    text = log[at:] if at >= 0 else log
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"
