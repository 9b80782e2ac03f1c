# Over 500 lines: one engine lifecycle (install, runc wrapper, start, ownership record, stop) and its checks.
"""The Docker engine the kind path runs on: installed, started when none runs, stopped only if ours.

What it does, in order (``meshproof docker start``, and ``up --backend kind`` through it):

1. **Install** Debian's ``docker.io`` with apt-get when no ``dockerd`` is installed (root only;
   otherwise one error naming the command to run).
2. **Use a running engine as it is.** When ``docker info`` already answers, that engine is
   *foreign*: meshproof uses it and never stops, restarts or reconfigures it.
3. **Otherwise start one**: ``dockerd`` with its own data-root, exec-root, pidfile and log under
   ``<cache>/docker/`` (the data-root is the image cache, kept across runs), listening on the
   default socket so that ``docker`` and ``kind`` find it without settings. Its PID, the PID's
   start time and the data-root are recorded in ``engine.json``.
4. **The capability wrapper** (``runc-capdrop``, :mod:`harness.toolchain.runc_capdrop`) is built and registered as dockerd's default
   runtime only when the host's capability bounding set lacks ``CAP_SYS_RESOURCE``: runc then
   fails every privileged container ("unable to apply caps: operation not permitted"), and kind's
   nodes are privileged. With a full bounding set dockerd runs runc as shipped.
5. **Stop** only the dockerd of the record, and only while the recorded PID is still that process
   (same start time, same data-root on its command line). A dockerd that meshproof did not start
   is never signalled; a second dockerd is never started beside a foreign one.

Everything runs through injectable collaborators (runner, ``which``, the ``/proc`` root, the
status text) so the decisions are testable offline.
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, Self

from harness import proc, wait
from harness.errors import BackendError, CommandFailed, MeshproofError, StateError, ToolMissing
from harness.toolchain import runc_capdrop

CAP_SYS_RESOURCE = 24
RUNTIME_NAME = "capdrop"  # dockerd's name for the wrapper runtime
WRAPPER_BINARY = "runc-capdrop"
DEFAULT_HOST = "unix:///var/run/docker.sock"
DEBIAN_PACKAGE = "docker.io"
INSTALL_HINT = f"run `apt-get install -y {DEBIAN_PACKAGE}` as root (or install Docker Engine and start it)"


# ---- capabilities ------------------------------------------------------------------------------
def bounding_set(status_text: str) -> int:
    """The ``CapBnd`` mask from a ``/proc/<pid>/status`` text."""
    for line in status_text.splitlines():
        if line.startswith("CapBnd:"):
            return int(line.split(":", 1)[1].strip(), 16)
    raise ValueError("no CapBnd line in the process status")


def lacks_capability(status_text: str, bit: int = CAP_SYS_RESOURCE) -> bool:
    """Whether the bounding set in ``status_text`` lacks capability ``bit``."""
    return not bounding_set(status_text) >> bit & 1


def needs_cap_wrapper(status_text: str) -> bool:
    """The wrapper is needed exactly when CAP_SYS_RESOURCE is outside the bounding set."""
    return lacks_capability(status_text, CAP_SYS_RESOURCE)


# ---- layout and argv ---------------------------------------------------------------------------
@dataclass(frozen=True)
class EngineLayout:
    """Where a dockerd started by meshproof keeps its files (all under ``root``)."""

    root: Path  # <cache>/docker
    host: str = DEFAULT_HOST

    @classmethod
    def under(cls, cache_dir: Path) -> EngineLayout:
        return cls(cache_dir / "docker")

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def exec_root(self) -> Path:
        return self.root / "exec"

    @property
    def pidfile(self) -> Path:
        return self.root / "dockerd.pid"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    @property
    def record(self) -> Path:
        return self.root / "engine.json"

    @property
    def wrapper(self) -> Path:
        return self.root / "bin" / WRAPPER_BINARY


def dockerd_argv(dockerd: str, layout: EngineLayout, *, wrapper: Path | None) -> list[str]:
    """dockerd's command line: own data-root, exec-root and pidfile; the wrapper as default runtime."""
    argv = [
        dockerd,
        "--data-root",
        str(layout.data_root),
        "--exec-root",
        str(layout.exec_root),
        "--pidfile",
        str(layout.pidfile),
        "--host",
        layout.host,
    ]
    if wrapper is not None:
        argv += ["--add-runtime", f"{RUNTIME_NAME}={wrapper}", "--default-runtime", RUNTIME_NAME]
    return argv


# ---- the ownership record ----------------------------------------------------------------------
@dataclass(frozen=True)
class EngineRecord:
    """The dockerd meshproof started: enough to recognise it (and nothing else) later."""

    pid: int
    start_ticks: int  # field 22 of /proc/<pid>/stat: tells a reused PID apart
    data_root: str
    host: str
    wrapper: str  # "" when runc runs unwrapped
    log: str
    started_at: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> EngineRecord:
        raw = json.loads(text)
        return cls(**{k: raw[k] for k in cls.__dataclass_fields__})


class ProcTable:
    """Reads of ``/proc`` (a directory argument, so tests can hand in a fake tree)."""

    def __init__(self, root: Path = Path("/proc")) -> None:
        self.root = root

    def start_ticks(self, pid: int) -> int | None:
        try:
            stat = (self.root / str(pid) / "stat").read_text()
        except OSError:
            return None
        # the command name (field 2) is in parentheses and may hold spaces: split after the last ")"
        fields = stat.rsplit(")", 1)[1].split()
        return int(fields[19])  # field 22 overall

    def cmdline(self, pid: int) -> list[str]:
        try:
            raw = (self.root / str(pid) / "cmdline").read_bytes()
        except OSError:
            return []
        return [a.decode(errors="replace") for a in raw.split(b"\0") if a]

    def pids_named(self, name: str) -> list[int]:
        out = []
        for entry in self.root.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm == name and not self.is_zombie(int(entry.name)):
                out.append(int(entry.name))
        return sorted(out)

    def is_zombie(self, pid: int) -> bool:
        """Exited but not reaped (or gone). PID 1 here does not reap orphans: a stopped dockerd can
        linger as a zombie, which is no engine."""
        try:
            stat = (self.root / str(pid) / "stat").read_text()
        except OSError:
            return True
        return stat.rsplit(")", 1)[1].split()[0] == "Z"

    def status_text(self, pid: int | str = "self") -> str:
        return (self.root / str(pid) / "status").read_text()


def is_recorded_process(rec: EngineRecord, procs: ProcTable) -> bool:
    """Whether the record's PID is still the dockerd it names (not a reused PID, not another dockerd)."""
    if procs.start_ticks(rec.pid) != rec.start_ticks:
        return False
    argv = procs.cmdline(rec.pid)
    return bool(argv) and "--data-root" in argv and rec.data_root in argv


class EngineMode(enum.Enum):
    ABSENT = "absent"  # no engine answers
    FOREIGN = "foreign"  # an engine meshproof did not start answers: used, never touched
    OURS = "ours"  # the dockerd of the record answers


@dataclass(frozen=True)
class EngineStatus:
    mode: EngineMode
    server_version: str = ""
    pid: int | None = None
    wrapper: str = ""
    detail: str = ""

    def as_json(self) -> dict[str, object]:
        d = asdict(self)
        d["mode"] = self.mode.value
        return d


Progress = Callable[[str], None]


class Engine(Protocol):
    """What the kube backend needs of :class:`DockerEngine` (tests hand in a fake)."""

    started: bool

    def start(self) -> Any: ...
    def stop(self) -> bool: ...
    def status(self) -> EngineStatus: ...
    def containers(self) -> list[str]: ...


class DockerEngine:
    """``with DockerEngine(layout) as e:`` makes sure an engine answers; leaving stops it only if ours
    was started by this handle (``stop()`` on a fresh handle stops the recorded one: ``down``)."""

    def __init__(
        self,
        layout: EngineLayout,
        *,
        run: proc.Runner = proc.run,
        which: proc.Which = proc.which,
        procs: ProcTable | None = None,
        spawn: Callable[..., subprocess.Popen[bytes]] = proc.spawn,
        build_wrapper: Callable[[Path], Path] | None = None,
        prefix: Sequence[str] = (),
        say: Progress = lambda _m: None,
        start_timeout: float = 120.0,
        stop_timeout: float = 60.0,
        clock: wait.Clock = wait.REAL_CLOCK,
        kill: Callable[[int, int], None] = os.kill,
    ) -> None:
        self.layout = layout
        self._run, self._which = run, which
        self._procs = procs or ProcTable()
        self._spawn = spawn
        self._build_wrapper = build_wrapper or build_cap_wrapper
        self._prefix = list(prefix)  # e.g. ("nice", "-n", "19", "ionice", "-c3")
        self._say = say
        self._start_timeout, self._stop_timeout = start_timeout, stop_timeout
        self._clock = clock
        self._kill = kill
        self._child: subprocess.Popen[bytes] | None = None
        self.started = False  # by this handle

    # ---- facts -----------------------------------------------------------------------------------
    def docker_cli(self) -> str:
        return self._which("docker")

    def server_version(self) -> str:
        """The answering engine's version, or "" when none answers."""
        docker = self.docker_cli()
        if not docker:
            return ""
        try:
            out = self._run(
                [docker, "--host", self.layout.host, "version", "--format", "{{.Server.Version}}"],
                timeout=30,
                check=False,
            )
        except MeshproofError:
            return ""
        version = out.stdout.strip()
        return version if out.returncode == 0 and version and "error" not in version.lower() else ""

    def containers(self) -> list[str]:
        """IDs of every container in the answering engine (running or not)."""
        out = self._run([self.docker_cli(), "--host", self.layout.host, "ps", "-aq"], timeout=60)
        return out.stdout.split()

    def record(self) -> EngineRecord | None:
        try:
            return EngineRecord.from_json(self.layout.record.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as e:
            raise StateError(
                f"{self.layout.record} is not a dockerd record ({e}). Fix: if no dockerd started by "
                f"meshproof runs, delete the file"
            ) from e

    def _live_record(self) -> EngineRecord | None:
        rec = self.record()
        return rec if rec is not None and is_recorded_process(rec, self._procs) else None

    def status(self) -> EngineStatus:
        version = self.server_version()
        rec = self._live_record()
        if rec is not None:
            return EngineStatus(
                EngineMode.OURS,
                version,
                rec.pid,
                rec.wrapper,
                "started by meshproof" if version else "started by meshproof, not answering (yet)",
            )
        if version:
            return EngineStatus(
                EngineMode.FOREIGN,
                version,
                detail=f"an engine meshproof did not start answers on {self.layout.host}",
            )
        others = self._procs.pids_named("dockerd")
        detail = f"dockerd process(es) {others} run but do not answer" if others else "no dockerd runs"
        return EngineStatus(EngineMode.ABSENT, detail=detail)

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Self:
        st = self.status()
        if st.mode is EngineMode.FOREIGN:
            self._say(f"using the running Docker engine {st.server_version} (not started by meshproof)")
            return self
        if st.mode is EngineMode.OURS:
            self._say(f"using the Docker engine meshproof started earlier (pid {st.pid})")
            self._await_ready(st.pid or 0)
            return self
        others = self._procs.pids_named("dockerd")
        if others:
            raise BackendError(
                f"dockerd is running (pid {', '.join(map(str, others))}) but does not answer on "
                f"{self.layout.host}; meshproof does not start a second one beside it. Fix: make that "
                "engine answer (check its log and socket), or stop it"
            )
        dockerd = self._which("dockerd")
        if not dockerd:
            raise ToolMissing("dockerd", "the kind cluster's nodes", INSTALL_HINT)
        if not self.docker_cli():
            raise ToolMissing("docker", "talking to the Docker engine", INSTALL_HINT)
        wrapper = None
        if needs_cap_wrapper(self._procs.status_text()):
            wrapper = self._build_wrapper(self.layout.wrapper)
            self._say(f"the capability bounding set lacks CAP_SYS_RESOURCE: runc runs through {wrapper}")
        for d in (self.layout.data_root, self.layout.exec_root):
            d.mkdir(parents=True, exist_ok=True)
        argv = [*self._prefix, *dockerd_argv(dockerd, self.layout, wrapper=wrapper)]
        self._say(f"starting dockerd (log {self.layout.log})")
        self._child = self._spawn(argv, log_path=self.layout.log, new_session=True)
        pid = self._child.pid
        ticks = wait.until(
            lambda: self._procs.start_ticks(pid),
            what=f"dockerd (pid {pid}) to appear in /proc",
            timeout=10,
            clock=self._clock,
        )
        rec = EngineRecord(
            pid,
            ticks,
            str(self.layout.data_root),
            self.layout.host,
            str(wrapper or ""),
            str(self.layout.log),
            time.time(),
        )
        self.layout.record.write_text(rec.to_json())
        self.started = True
        try:
            self._await_ready(pid)
        except BaseException:
            self.stop()
            raise
        return self

    def _await_ready(self, pid: int) -> str:
        def ready() -> str:
            if self._child is not None and self._child.poll() is not None:
                err = BackendError(f"dockerd exited with {self._child.returncode} while starting")
                err.add_note(f"{self.layout.log}:\n{proc.tail(self.layout.log)}")
                raise err
            return self.server_version()

        return wait.until(
            ready,
            what=f"dockerd (pid {pid}) to answer on {self.layout.host}",
            timeout=self._start_timeout,
            interval=0.5,
            hint=f"see {self.layout.log}",
            clock=self._clock,
        )

    def stop(self) -> bool:
        """Stop the recorded dockerd if it is still the recorded process; True if one was stopped.

        A foreign engine, a stale record (dockerd gone, PID reused) or no record: nothing is signalled.
        """
        rec = self.record()
        if rec is None:
            return False
        if not is_recorded_process(rec, self._procs):
            self.layout.record.unlink(missing_ok=True)
            return False
        self._say(f"stopping dockerd (pid {rec.pid}) that meshproof started")
        self._kill(rec.pid, signal.SIGTERM)
        try:
            wait.until(
                lambda: self._gone(rec),
                what=f"dockerd (pid {rec.pid}) to exit after SIGTERM",
                timeout=self._stop_timeout,
                interval=0.5,
                clock=self._clock,
            )
        except MeshproofError:
            with contextlib.suppress(ProcessLookupError):
                self._kill(rec.pid, signal.SIGKILL)
            wait.until(
                lambda: self._gone(rec),
                what=f"dockerd (pid {rec.pid}) to exit after SIGKILL",
                timeout=10,
                clock=self._clock,
            )
        self.layout.record.unlink(missing_ok=True)
        self.started = False
        return True

    def _gone(self, rec: EngineRecord) -> bool:
        if self._child is not None and self._child.pid == rec.pid:
            self._child.poll()  # reap our own child, or it stays a zombie in /proc
        return not is_recorded_process(rec, self._procs) or self._procs.is_zombie(rec.pid)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            if self.started:
                self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.stop()


# ---- install -----------------------------------------------------------------------------------
def install_docker_io(
    *,
    run: proc.Runner = proc.run,
    which: proc.Which = proc.which,
    is_root: bool | None = None,
    prefix: Sequence[str] = (),
    say: Progress = lambda _m: None,
) -> bool:
    """Install Debian's docker.io (dockerd, containerd, runc, the docker CLI) unless dockerd exists.

    Returns True when it installed. The package's own service start is left to the system's
    policy (a policy-rc.d that forbids it is respected); an engine started that way is foreign.
    """
    return apt_install(
        DEBIAN_PACKAGE,
        "dockerd",
        "the kind cluster's nodes",
        INSTALL_HINT,
        run=run,
        which=which,
        is_root=is_root,
        prefix=prefix,
        say=say,
    )


def apt_install(
    package: str,
    binary: str,
    needed_for: str,
    hint: str,
    *,
    run: proc.Runner = proc.run,
    which: proc.Which = proc.which,
    is_root: bool | None = None,
    prefix: Sequence[str] = (),
    say: Progress = lambda _m: None,
    installed: Callable[[], bool] | None = None,
) -> bool:
    """Install Debian's ``package`` (as root, apt-get; ``apt-get update`` once if the lists do not
    name it) unless ``binary`` is found. True when it installed; ToolMissing (with ``hint``) when it
    cannot: not root, no apt-get, or the package brought no ``binary``.

    ``package`` may name several packages (``"gcc libc6-dev"``). ``installed`` replaces the
    ``which(binary)`` test where what is needed is not a command (a header file); ``binary`` then
    only names it in the error."""
    present = installed if installed is not None else (lambda: bool(which(binary)))
    if present():
        return False
    if not (os.geteuid() == 0 if is_root is None else is_root):
        raise ToolMissing(binary, needed_for, hint)
    apt = which("apt-get")
    if not apt:
        raise ToolMissing(
            binary, needed_for, f"install {package} for your distribution (this machine has no apt-get)"
        )
    argv = [*prefix, apt, "install", "-y", "--no-install-recommends", *package.split()]
    say(f"installing Debian's {package} (apt-get)")
    try:
        run(argv, timeout=1800)
    except CommandFailed as e:
        if "Unable to locate package" not in e.stderr + e.stdout:
            raise
        say(f"apt-get update (the package lists do not name {package} yet)")
        run([*prefix, apt, "update"], timeout=900)
        run(argv, timeout=1800)
    if not present():
        raise ToolMissing(binary, needed_for, f"{package} installed no {binary}; " + hint)
    return True


def build_cap_wrapper(dest: Path, *, real_runc: str = "", go: str = "") -> Path:
    """Build ``runc-capdrop`` (:mod:`harness.toolchain.runc_capdrop`) into ``dest``, execing the real
    runc found now."""
    real_runc = real_runc or proc.which("runc", needed_for="running containers", how_to_get=INSTALL_HINT)
    return runc_capdrop.build(dest, real_runc=real_runc, go=go)
