"""The local runner: Locust as a subprocess on this machine (:class:`LocustRun`), its report built
from the event logs, and the CPU of its process group read from /proc.

Locust is never imported here (``import locust`` monkey-patches the process with gevent); the
locustfile in ``loadtests/`` is the only importer. ::

    target = LoadTarget.from_mesh(mesh)                   # URLs of the running mesh, never fixed ports
    with LocustRun(LoadConfig(users=20), target, workdir=tmp) as run:
        run.phase("fault")                                # the previous phase ends here
        ...inject a fault...
        with run.phase("recovery"):                       # leaving the block starts "after recovery"
            ...
    report = run.report                                   # LoadReport: totals, per phase, per time bin
    report.phase("fault").by_status                       # {200: 1800, 503: 12}

Lifecycle: :meth:`LocustRun.start` spawns ``python -m locust --headless`` in its own process group
with PDEATHSIG (a SIGKILLed parent still takes it down; ``--processes`` workers die with their
master, see the locustfile), then waits (:func:`harness.wait.until`, no sleep) until Locust logs
that its users are spawned. :meth:`LocustRun.stop` creates the run's stop file, which the
locustfile's shape reads every tick (second): Locust then stops its users, writes its stats and
exits 0. After ``stop_timeout`` it gets SIGINT, then SIGKILL for the whole group; the report is
built once the process group is gone. Not SIGTERM: Locust 2.47 installs its SIGTERM handler only
after a headless run with a LoadTestShape has ended, so SIGTERM kills it without its stats; and
SIGINT can surface as a KeyboardInterrupt traceback inside a user greenlet (both measured). Locust's own failures raise :class:`~harness.errors.LoadError` with Locust's
message: an exit code other than 0 (2 = an unhandled greenlet error), or a traceback in its log.
Failed *requests* never do: Locust runs with ``--exit-code-on-error 0`` and the caller judges the
report (:func:`harness.traffic.checks.error_ratio_below`, :func:`~harness.traffic.checks.latency_at_least`).

The report is built from the per-request event logs the locustfile writes (start time, latency,
status, answering pod and version, x-request-id), so phase boundaries are exact to the request;
Locust's own totals (``--json-file``) are kept beside them as a cross-check.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import Self

from harness import proc, wait
from harness.errors import LoadError, ToolMissing, UserError, WaitTimeout
from harness.load.config import LOCUSTFILE, USER_CLASSES, LoadConfig, LoadTarget
from harness.load.report import LoadReport, PhaseMark, RequestRecord, build_report
from harness.load.run import (
    FIRST_PHASE,
    SPAWN_PHASE,
    PhaseClock,
    Progress,
    RunState,
    locust_message,
    wait_users_past,
)
from harness.ports import free_port

#: The locustfile's per-request event logs in a run's ``events`` directory (one per Locust process).
EVENT_FILES = "events-*.tsv"
_SPAWNED = re.compile(r"All users spawned|Spawning is complete")


def change_rate(users: int, running: int, rate: float | None) -> float:
    """The spawn rate :meth:`LocustRun.resize` sends for a change from ``running`` users to
    ``users``: ``rate`` (default: ``users`` per second) starts new users; Locust stops users at the
    spawn rate too (a pause of 8 users at 1 per second took 7.2 s), so a change to fewer users
    stops them all within one tick."""
    wanted = float(rate) if rate is not None else float(max(users, 1))
    return max(wanted, float(running)) if users < running else wanted


class LocustRun(PhaseClock):
    """Locust headless as a subprocess; a context manager. Reuse after stop is refused."""

    where = "on this machine"

    def __init__(
        self,
        config: LoadConfig,
        target: LoadTarget,
        *,
        workdir: Path,
        locustfile: Path = LOCUSTFILE,
        python: str = sys.executable,
        wall: Callable[[], float] = time.time,
    ) -> None:
        target.check(config.user_class)
        if not locustfile.is_file():
            raise UserError(f"locustfile {locustfile} does not exist. Fix: run from a meshproof checkout")
        self.config, self.target = config, target
        self.workdir = Path(workdir)
        self.locustfile = locustfile
        self._python = python
        self._wall = wall
        self._state = RunState.NEW
        self._popen: subprocess.Popen[bytes] | None = None
        self._pgid = 0
        self._phases: list[PhaseMark] = []
        self._init_records()
        self._offsets: dict[Path, int] = {}
        self._started_at = 0.0
        self._cpu_s = 0.0
        self._cpu_sampled_at = float("-inf")
        self._members: list[int] = []  # the group's pids as last found in /proc
        self._cpu_samples = 0
        self.run_id = f"mp-{uuid.uuid4().hex[:10]}"
        self.report: LoadReport | None = None
        # a steady run's users now (resize() changes them) and the control file's epoch
        self._running_users: tuple[int, float] = (config.users, config.rate)
        self._epoch = 0
        self.sink: Callable[[RequestRecord], None] | None = None  # also gets every record read

    # ---- paths
    @property
    def log_path(self) -> Path:
        return self.workdir / "locust.log"

    @property
    def events_dir(self) -> Path:
        return self.workdir / "events"

    @property
    def json_path(self) -> Path:
        return self.workdir / "locust.json"  # Locust appends ".json" to --json-file

    @property
    def stop_file(self) -> Path:
        return self.workdir / "stop"

    @property
    def control_path(self) -> Path:
        """The users and spawn rate a steady run follows (:meth:`resize`); Locust confirms each
        change in ``control.json.done``."""
        return self.workdir / "control.json"

    @property
    def users(self) -> int:
        """The users Locust runs now (a steady run's, as last confirmed)."""
        return self._running_users[0]

    @property
    def exited(self) -> bool:
        """Whether the Locust master has exited (a run with a duration ends by itself)."""
        return self._popen is not None and self._popen.poll() is not None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen is not None else None

    def argv(self, master_port: int = 0) -> list[str]:
        c, t = self.config, self.target
        argv = [
            self._python,
            "-m",
            "locust",
            "-f",
            str(self.locustfile),
            "--headless",
            "--users",
            str(c.users),
            "--spawn-rate",
            f"{c.rate:g}",
            "--exit-code-on-error",
            "0",
            "--only-summary",
            "--loglevel",
            "INFO",
            "--stop-timeout",
            "5",
            "--json-file",
            str(self.workdir / "locust"),
            "--mp-shape",
            c.shape,
            "--mp-duration",
            f"{c.duration_s:g}",
            "--mp-ingress",
            t.ingress_url,
            "--mp-call",
            t.call_url,
            "--mp-service",
            t.service_url,
            "--mp-path",
            c.path,
            "--mp-run-id",
            self.run_id,
            "--mp-events",
            str(self.events_dir),
            "--mp-stop-file",
            str(self.stop_file),
            "--mp-control",
            str(self.control_path),
        ]
        if c.headers:
            argv += ["--mp-header", json.dumps(dict(c.headers))]
        if c.processes > 1:
            port = str(master_port)
            argv += ["--processes", str(c.processes), "--master-bind-host", "127.0.0.1"]
            argv += ["--master-bind-port", port, "--master-host", "127.0.0.1", "--master-port", port]
        return argv + list(USER_CLASSES[c.user_class])

    # ---- lifecycle
    def start(self) -> Self:
        if self._state is not RunState.NEW:
            raise LoadError(f"this LocustRun is {self._state.value}; start a new one")
        if find_spec("locust") is None:
            raise ToolMissing("locust", "meshproof load", "run ./scripts/setup (locust is a dependency)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.events_dir.mkdir(exist_ok=True)
        # an earlier run in this workdir (one interrupted before its report, say) left its stop file,
        # which would end this run at once, and its event files, which this run's report would count
        self.stop_file.unlink(missing_ok=True)
        for stale in (self.control_path, self._done_path):
            stale.unlink(missing_ok=True)
        for old in self.events_dir.glob(EVENT_FILES):
            old.unlink()
        argv = self.argv(free_port() if self.config.processes > 1 else 0)
        (self.workdir / "argv.json").write_text(json.dumps(argv))
        self._started_at = self._wall()
        self._phases = [PhaseMark(SPAWN_PHASE, self._started_at)]
        self._popen = proc.spawn(
            argv,
            log_path=self.log_path,
            new_session=True,
            die_with_parent=True,
            env={"PYTHONUNBUFFERED": "1"},
        )
        self._pgid = self._popen.pid
        self._state = RunState.RUNNING
        try:
            wait.until(
                self._spawned,
                what=f"Locust to spawn {self.config.users} users (log {self.log_path})",
                timeout=self.config.spawn_timeout,
                interval=0.1,
                hint="the machine may be overloaded; see the log's last lines",
            )
        except BaseException as e:
            self._kill()
            self._state = RunState.STOPPED
            tail = proc.tail(self.log_path, 15)
            if tail:
                e.add_note(f"Locust log ({self.log_path}):\n{tail}")
            raise
        if self.current_phase == SPAWN_PHASE:
            self.phase(FIRST_PHASE)
        return self

    def _spawned(self) -> bool:
        assert self._popen is not None
        text = _read_text(self.log_path)
        if _SPAWNED.search(text):
            return True
        code = self._popen.poll()
        if code is not None:
            raise LoadError(f"Locust exited {code} before spawning its users:\n{locust_message(text)}")
        return False

    def resize(self, users: int, rate: float | None = None, *, timeout: float | None = None) -> None:
        """Run ``users`` users from now on (0 pauses the load), started ``rate`` per second, without
        restarting Locust: a steady run's shape reads :attr:`control_path` every tick (second)
        and Locust confirms the change once the users it stopped are gone (each finishes its
        request in flight) and the new ones are started. Returns after that confirmation."""
        if self._state is not RunState.RUNNING:
            raise LoadError(f"cannot resize a load that is {self._state.value}")
        if self.config.shape != "steady" or self.config.duration_s > 0 or self.config.processes > 1:
            # --processes: the master confirms a change before its workers have reported it
            # (Locust 2.47 logs "report waittime is expired, but not all reports received")
            raise LoadError("only a steady single-process run without a duration is resized")
        if users < 0:
            raise ValueError(f"users={users}: 0 or more")
        wanted = (users, change_rate(users, self._running_users[0], rate))
        if wanted == self._running_users:
            return
        self._epoch += 1
        epoch = self._epoch
        tmp = self.control_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"epoch": epoch, "users": wanted[0], "rate": wanted[1]}))
        os.replace(tmp, self.control_path)

        def confirmed() -> dict[str, object] | None:
            self._sample_cpu()
            try:
                done = json.loads(self._done_path.read_text())
            except (OSError, ValueError):
                done = None
            if isinstance(done, dict) and done.get("epoch") == epoch and done.get("users") == users:
                return done
            assert self._popen is not None
            code = self._popen.poll()
            if code is not None:
                text = _read_text(self.log_path)
                raise LoadError(
                    f"Locust exited {code} while changing to {users} users:\n{locust_message(text)}"
                )
            return None

        wait.until(
            confirmed,
            what=f"Locust to run {users} users (change {epoch}, {self.control_path})",
            timeout=timeout if timeout is not None else self.config.spawn_timeout,
            interval=0.05,
            hint="the machine may be overloaded; see the Locust log",
        )
        self._running_users = wanted

    def poll(self) -> None:
        """Read the event logs' new lines (each record to :attr:`sink` too) and sample the CPU."""
        self._read_events()
        self._sample_cpu()

    def cpu_seconds(self) -> float:
        """CPU seconds of the Locust processes so far (sampled now)."""
        self._sample_cpu(now=True)
        return self._cpu_s

    def problem(self) -> str:
        """Why this run can serve no more load ("" while it is sound): Locust exited, or it
        logged a traceback."""
        if self._popen is None or self._state is not RunState.RUNNING:
            return f"the load is {self._state.value}"
        text = _read_text(self.log_path)
        code = self._popen.poll()
        if code is not None:
            return f"Locust exited {code}:\n{locust_message(text)}"
        if "Traceback (most recent call last)" in text:
            return f"Locust logged a traceback ({self.log_path}):\n{locust_message(text)}"
        return ""

    @property
    def _done_path(self) -> Path:
        return self.control_path.with_name(self.control_path.name + ".done")

    def progress(self) -> Progress:
        """Figures so far (reads the new lines of the event logs)."""
        self._read_events()
        self._sample_cpu()
        return self._progress()

    def snapshot(self, *, settle_s: float = 1.0, timeout: float = 30.0) -> LoadReport:
        """The report so far, while the load keeps running: every phase up to now, the current one
        cut at this moment. Waits until each Locust user has logged a request that started
        ``settle_s`` after the last phase boundary: a user sends one request at a time, so every
        request of the closed phases is then logged, however slow it was (the event logs are
        flushed every 0.1 s: the locustfile's ``FLUSH_S``). A user that has logged nothing for
        ``QUIET_USER_S`` (stopped by a shape, or stuck) is not waited for."""
        if self._state is not RunState.RUNNING:
            if self.report is None:
                raise LoadError("snapshot() of a load that is not running")
            return self.report

        def newest() -> Mapping[str, float]:
            self._read_events()
            return self._newest_start

        wait_users_past(
            newest,
            self._phases[-1].start + settle_s,
            wall=self._wall,
            what=f"every Locust process to log requests started {settle_s:g} s after the phase boundary",
            timeout=timeout,
            interval=0.1,
        )
        return build_report(
            self.config,
            self.target,
            self._records,
            self._phases,
            started_at=self._started_at,
            ended_at=self._wall(),
            request_id_prefix=self.run_id,
            locust_cpu_s=self._cpu_s,
            workdir=self.workdir,
        )

    def wait(self, timeout: float) -> int:
        """Block until Locust exits on its own (a run with a duration); returns its exit code."""
        assert self._popen is not None
        popen = self._popen

        def done() -> bool:
            self._sample_cpu()
            return popen.poll() is not None

        wait.until(
            done,
            what=f"Locust to finish its {self.config.duration_s:g} s run",
            timeout=timeout,
            interval=0.1,
        )
        return int(popen.returncode)

    def stop(self) -> LoadReport:
        """Ask Locust to stop, wait for its process group to be gone to be gone, read the results; idempotent."""
        if self.report is not None:
            return self.report
        if self._popen is None:
            raise LoadError("LocustRun.stop() before start()")
        ended_at = self._wall()
        popen = self._popen
        finished_alone = popen.poll() is not None  # a run with a duration ended by itself
        if not finished_alone:
            self._sample_cpu(now=True)
            self.stop_file.touch()
            if not self._exits_within(self.config.stop_timeout):
                popen.send_signal(signal.SIGINT)
                self._exits_within(5.0)
        self._kill()
        # Requests sent until Locust stopped belong to the last phase.
        last = self._last_activity()
        ended_at = last if finished_alone and self._records else max(ended_at, last)
        self._state = RunState.STOPPED
        self._phases[-1] = PhaseMark(self._phases[-1].name, self._phases[-1].start, ended_at)
        self._read_events()
        text = _read_text(self.log_path)
        code = int(popen.returncode)
        if code != 0:
            raise LoadError(
                f"Locust exited {code} (2: an unhandled error in a user):\n{locust_message(text)}"
            )
        if "Traceback (most recent call last)" in text:
            raise LoadError(f"Locust logged a traceback ({self.log_path}):\n{locust_message(text)}")
        self.report = build_report(
            self.config,
            self.target,
            self._records,
            self._phases,
            started_at=self._started_at,
            ended_at=ended_at,
            request_id_prefix=self.run_id,
            locust_requests=_locust_total(self.json_path),
            locust_exit_code=code,
            locust_cpu_s=self._cpu_s,
            workdir=self.workdir,
        )
        (self.workdir / "report.json").write_text(json.dumps(self.report.to_json(), indent=2))
        return self.report

    def _abort(self) -> None:
        self._kill()
        self._state = RunState.STOPPED

    def _keep(self, rec: RequestRecord) -> None:
        super()._keep(rec)
        if self.sink is not None:
            self.sink(rec)

    # ---- internals
    def _kill(self) -> None:
        """SIGKILL whatever is left of the process group, and reap the master."""
        if self._pgid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._pgid, signal.SIGKILL)
        if self._popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._popen.wait(timeout=10)
        if self._pgid:
            pgid = self._pgid
            wait.until(
                lambda: not _group_alive(pgid),
                what=f"the Locust process group {pgid} to be gone",
                timeout=10,
                interval=0.05,
            )

    def _sample_cpu(self, *, now: bool = False) -> None:
        """CPU seconds of the live group (its processes vanish at exit: sample while it runs).
        At most once a second unless ``now`` (finding the group scans /proc)."""
        if not now and time.monotonic() - self._cpu_sampled_at < 1.0:
            return
        if self._pgid and self._popen is not None and self._popen.poll() is None:
            # Finding the group scans every process of the machine (hundreds on a shared one):
            # done every tenth sample; in between its pids are read directly (Locust forks its
            # processes at start, and a pid no longer in the group is not counted).
            if not self._members or self._cpu_samples % 10 == 0:
                self._members = proc.group_members(self._pgid)
            self._cpu_samples += 1
            self._cpu_s = max(self._cpu_s, _group_cpu_seconds(self._pgid, self._members))
            self._cpu_sampled_at = time.monotonic()

    def _exits_within(self, seconds: float) -> bool:
        popen = self._popen
        assert popen is not None
        try:
            wait.until(
                lambda: popen.poll() is not None, what="Locust to stop", timeout=seconds, interval=0.05
            )
        except WaitTimeout:
            return False
        return True

    def _read_events(self) -> None:
        for path in sorted(self.events_dir.glob(EVENT_FILES)):
            offset = self._offsets.get(path, 0)
            try:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
            except OSError:
                continue
            cut = data.rfind(b"\n") + 1  # only complete lines; the rest is read next time
            self._offsets[path] = offset + cut
            for line in data[:cut].decode(errors="replace").splitlines():
                rec = RequestRecord.parse(line)
                if rec is not None:
                    self._keep(rec)

    def _last_activity(self) -> float:
        self._read_events()
        if not self._records:
            return self._wall()
        return max(r.start + r.latency_ms / 1000 for r in self._records)


def event_records(events_dir: Path) -> Iterator[RequestRecord]:
    """Every request the event logs in ``events_dir`` hold, file by file (a line still being
    written is skipped): for a reader in another process than the run's, e.g. a chaos probe."""
    for path in sorted(events_dir.glob(EVENT_FILES)):
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            rec = RequestRecord.parse(line)
            if rec is not None:
                yield rec


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _locust_total(path: Path) -> int:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return -1
    return sum(int(e.get("num_requests", 0)) for e in entries if isinstance(e, dict))


def _group_alive(pgid: int) -> bool:
    return bool(proc.group_members(pgid))


def _group_cpu_seconds(pgid: int, pids: list[int] | None = None) -> float:
    """utime + stime of every live process in the group (Linux /proc), of ``pids`` (those still in
    the group) when given."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in proc.group_members(pgid) if pids is None else pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid:  # fields[2]: pgrp (a pid reused outside the group is not counted)
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / ticks
