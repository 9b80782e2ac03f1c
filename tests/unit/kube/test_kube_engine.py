"""The Docker engine for the kind path: capability check, dockerd argv, ownership, install decisions.

Everything offline: a fake /proc tree, a fake runner answering ``docker version``, a fake spawn,
and a recording ``kill``. The point of most tests is what must NOT happen to a dockerd meshproof
did not start.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from harness import proc
from harness.backends.kube.engine import (
    RUNTIME_NAME,
    DockerEngine,
    EngineLayout,
    EngineMode,
    EngineRecord,
    ProcTable,
    apt_install,
    bounding_set,
    dockerd_argv,
    install_docker_io,
    is_recorded_process,
    lacks_capability,
    needs_cap_wrapper,
)
from harness.errors import BackendError, CommandFailed, ToolMissing

from .fakes import FakeRunner, which_from

# The bounding set of the VM this was written on (bit 24, CAP_SYS_RESOURCE, missing) and a full one.
LACKING = "Name:\tpython3\nCapInh:\t0000000000000000\nCapBnd:\t000001fffeffffff\nCapAmb:\t0000000000000000\n"
FULL = "Name:\tpython3\nCapBnd:\t000001ffffffffff\n"
TOOLS = {"docker": "/usr/bin/docker", "dockerd": "/usr/sbin/dockerd", "apt-get": "/usr/bin/apt-get"}


def test_bounding_set_and_the_cap_sys_resource_check() -> None:
    assert bounding_set(LACKING) == 0x1FFFEFFFFFF
    assert lacks_capability(LACKING, 24) and needs_cap_wrapper(LACKING)
    assert not lacks_capability(LACKING, 21)  # CAP_SYS_ADMIN is there
    assert not needs_cap_wrapper(FULL)
    with pytest.raises(ValueError, match="CapBnd"):
        bounding_set("Name:\tx\n")


def test_dockerd_argv_registers_the_wrapper_only_when_given(tmp_path: Path) -> None:
    lay = EngineLayout(tmp_path / "docker")
    plain = dockerd_argv("/usr/sbin/dockerd", lay, wrapper=None)
    assert plain == [
        "/usr/sbin/dockerd",
        "--data-root",
        str(lay.data_root),
        "--exec-root",
        str(lay.exec_root),
        "--pidfile",
        str(lay.pidfile),
        "--host",
        "unix:///var/run/docker.sock",
    ]
    wrapped = dockerd_argv("/usr/sbin/dockerd", lay, wrapper=Path("/w/runc-capdrop"))
    assert wrapped[: len(plain)] == plain
    assert wrapped[len(plain) :] == [
        "--add-runtime",
        f"{RUNTIME_NAME}=/w/runc-capdrop",
        "--default-runtime",
        RUNTIME_NAME,
    ]


class FakeProc:
    """A /proc tree in a temp dir: add processes with a command line and start time."""

    def __init__(self, root: Path, status: str = LACKING) -> None:
        self.root = root
        (root / "self").mkdir(parents=True)
        (root / "self" / "status").write_text(status)

    def add(self, pid: int, argv: Sequence[str], ticks: int, state: str = "S") -> None:
        d = self.root / str(pid)
        d.mkdir(parents=True, exist_ok=True)
        comm = Path(argv[0]).name[:15]
        # 20 fields after the state: field 22 overall (start time) is the 20th after ")"
        rest = [state] + ["0"] * 18 + [str(ticks), "0"]
        (d / "stat").write_text(f"{pid} ({comm}) {' '.join(rest)}\n")
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        (d / "comm").write_text(comm + "\n")

    def remove(self, pid: int) -> None:
        for f in (self.root / str(pid)).iterdir():
            f.unlink()
        (self.root / str(pid)).rmdir()


def test_proc_table_reads_start_ticks_past_a_command_name_with_spaces(tmp_path: Path) -> None:
    fp = FakeProc(tmp_path / "proc")
    fp.add(42, ["/usr/sbin/dockerd", "--data-root", "/d"], ticks=777)
    (tmp_path / "proc" / "42" / "stat").write_text("42 (odd) name) S " + " ".join(["0"] * 18) + " 777 0\n")
    table = ProcTable(tmp_path / "proc")
    assert table.start_ticks(42) == 777
    assert table.start_ticks(43) is None
    assert table.cmdline(42) == ["/usr/sbin/dockerd", "--data-root", "/d"]
    assert table.pids_named("dockerd") == [42]
    fp.add(43, ["/usr/sbin/dockerd"], ticks=1, state="Z")  # exited, never reaped (PID 1 here does not reap)
    assert table.pids_named("dockerd") == [42] and table.is_zombie(43) and not table.is_zombie(42)


def _record(lay: EngineLayout, pid: int = 100, ticks: int = 5000) -> EngineRecord:
    return EngineRecord(pid, ticks, str(lay.data_root), lay.host, "", str(lay.log), 0.0)


def test_a_reused_pid_or_another_dockerd_is_not_the_recorded_process(tmp_path: Path) -> None:
    lay = EngineLayout(tmp_path / "docker")
    fp = FakeProc(tmp_path / "proc")
    table = ProcTable(fp.root)
    rec = _record(lay)
    fp.add(100, dockerd_argv("/usr/sbin/dockerd", lay, wrapper=None), ticks=5000)
    assert is_recorded_process(rec, table)
    fp.add(100, dockerd_argv("/usr/sbin/dockerd", lay, wrapper=None), ticks=9999)  # PID reused
    assert not is_recorded_process(rec, table)
    fp.add(100, ["/usr/sbin/dockerd", "--data-root", "/var/lib/docker"], ticks=5000)  # the system's
    assert not is_recorded_process(rec, table)


class Spawned:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


class Harness:
    """A DockerEngine wired to fakes: the engine 'answers' once `answering` is set."""

    def __init__(self, tmp_path: Path, *, status: str = LACKING, answering: bool = False) -> None:
        self.lay = EngineLayout(tmp_path / "docker")
        self.lay.root.mkdir(parents=True)
        self.proc = FakeProc(tmp_path / "proc", status)
        self.answering = answering
        self.spawned: list[list[str]] = []
        self.killed: list[tuple[int, int]] = []
        self.built: list[Path] = []
        self.runner = FakeRunner()

        def run(argv: Sequence[str], *, timeout: float = 600.0, check: bool = True) -> proc.Completed:
            self.runner.calls.append([str(a) for a in argv])
            if self.answering:
                return proc.Completed(tuple(argv), 0, "20.10.24+dfsg1\n", "")
            return proc.Completed(tuple(argv), 1, "", "Cannot connect to the Docker daemon")

        def spawn(argv: Sequence[str], **kw: Any) -> Spawned:
            self.spawned.append(list(argv))
            self.proc.add(4242, [a for a in argv if a not in ("nice", "-n", "19")], ticks=31337)
            self.answering = True
            return Spawned(4242)

        def kill(pid: int, sig: int) -> None:
            self.killed.append((pid, sig))
            self.proc.remove(pid)
            self.answering = False

        def build(dest: Path) -> Path:
            self.built.append(dest)
            return dest

        self.engine = DockerEngine(
            self.lay,
            run=run,
            which=which_from(TOOLS),
            procs=ProcTable(self.proc.root),
            spawn=spawn,  # type: ignore[arg-type]
            build_wrapper=build,
            prefix=("nice", "-n", "19"),
            kill=kill,
        )


def test_a_foreign_engine_is_used_and_never_stopped(tmp_path: Path) -> None:
    h = Harness(tmp_path, answering=True)
    h.proc.add(77, ["/usr/sbin/dockerd", "-H", "fd://"], ticks=10)
    with h.engine as e:
        assert e.status().mode is EngineMode.FOREIGN
        assert e.status().server_version == "20.10.24+dfsg1"
    assert h.spawned == [] and h.killed == []
    assert h.engine.stop() is False  # `down` on a fresh handle: no record, nothing signalled
    assert h.killed == [] and not h.lay.record.exists()


def test_no_second_dockerd_beside_a_foreign_one_that_does_not_answer(tmp_path: Path) -> None:
    h = Harness(tmp_path, answering=False)
    h.proc.add(77, ["/usr/sbin/dockerd", "-H", "fd://"], ticks=10)
    with pytest.raises(BackendError, match=r"dockerd is running \(pid 77\).*does not start a second"):
        h.engine.start()
    assert h.spawned == [] and h.killed == []


def test_start_spawns_dockerd_with_the_wrapper_when_cap_sys_resource_is_missing(tmp_path: Path) -> None:
    h = Harness(tmp_path, status=LACKING)
    h.engine.start()
    (argv,) = h.spawned
    assert argv[:3] == ["nice", "-n", "19"]
    assert argv[3:] == dockerd_argv("/usr/sbin/dockerd", h.lay, wrapper=h.lay.wrapper)
    assert h.built == [h.lay.wrapper]
    rec = EngineRecord.from_json(h.lay.record.read_text())
    assert (rec.pid, rec.start_ticks, rec.wrapper) == (4242, 31337, str(h.lay.wrapper))
    assert h.engine.status().mode is EngineMode.OURS
    # a later `down` (a fresh handle) stops exactly that process, and forgets it
    later = DockerEngine(
        h.lay, run=h.engine._run, which=which_from(TOOLS), procs=ProcTable(h.proc.root), kill=h.engine._kill
    )
    assert later.stop() is True
    assert h.killed == [(4242, signal.SIGTERM)]
    assert not h.lay.record.exists()


def test_start_runs_plain_runc_with_a_full_bounding_set(tmp_path: Path) -> None:
    h = Harness(tmp_path, status=FULL)
    with h.engine:
        (argv,) = h.spawned
        assert "--add-runtime" not in argv and "--default-runtime" not in argv
        assert h.built == []
    assert h.killed == [(4242, signal.SIGTERM)]  # started by this handle: stopped on leaving


def test_stop_forgets_a_stale_record_without_signalling(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.lay.record.write_text(_record(h.lay, pid=100, ticks=5000).to_json())
    h.proc.add(100, dockerd_argv("/usr/sbin/dockerd", h.lay, wrapper=None), ticks=6000)  # PID reused
    assert h.engine.stop() is False
    assert h.killed == [] and not h.lay.record.exists()


def test_start_fails_with_the_log_when_dockerd_exits(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.lay.log.write_text("failed to start daemon: error initializing graphdriver\n")

    def dying(argv: Sequence[str], **kw: Any) -> Spawned:
        h.proc.add(4242, list(argv), ticks=1)
        s = Spawned(4242)
        s.returncode = 1
        return s

    h.engine._spawn = dying  # type: ignore[assignment]
    with pytest.raises(BackendError, match="dockerd exited with 1") as info:
        h.engine.start()
    assert "graphdriver" in "\n".join(info.value.__notes__)


def test_a_garbled_record_is_a_state_error(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.lay.record.write_text("{}")
    with pytest.raises(Exception, match="is not a dockerd record"):
        h.engine.stop()


def test_install_is_skipped_when_dockerd_exists() -> None:
    run = FakeRunner()
    assert install_docker_io(run=run, which=which_from(TOOLS), is_root=True) is False
    assert run.calls == []


def test_install_needs_root() -> None:
    with pytest.raises(ToolMissing, match="apt-get install -y docker.io"):
        install_docker_io(run=FakeRunner(), which=which_from({}), is_root=False)


def test_install_updates_the_package_lists_once_when_apt_does_not_know_docker_io() -> None:
    found: dict[str, str] = {"apt-get": "/usr/bin/apt-get"}
    calls: list[list[str]] = []

    def run(argv: Sequence[str], *, timeout: float = 600.0, check: bool = True) -> proc.Completed:
        calls.append(list(argv))
        if argv[-1] == "docker.io" and len(calls) == 1:
            raise CommandFailed(list(argv), 100, "", "E: Unable to locate package docker.io")
        if argv[-1] == "docker.io":
            found["dockerd"] = "/usr/sbin/dockerd"
        return proc.Completed(tuple(argv), 0, "", "")

    assert install_docker_io(run=run, which=lambda t: found.get(t, ""), is_root=True) is True
    assert [c[1:] for c in calls] == [
        ["install", "-y", "--no-install-recommends", "docker.io"],
        ["update"],
        ["install", "-y", "--no-install-recommends", "docker.io"],
    ]


def test_apt_install_takes_several_packages_and_a_presence_test_other_than_which(tmp_path: Path) -> None:
    """The one apt helper: gcc's pair of packages, a header file rather than a command."""
    header = tmp_path / "x.h"
    calls: list[list[str]] = []

    def run(argv: Sequence[str], *, timeout: float = 600.0, check: bool = True) -> proc.Completed:
        calls.append(list(argv))
        header.write_text("")
        return proc.Completed(tuple(argv), 0, "", "")

    found = {"apt-get": "/usr/bin/apt-get"}
    assert apt_install("gcc libc6-dev", "x.h", "t", "h", run=run, which=found.get, is_root=True,
                       installed=header.is_file) is True  # fmt: skip
    assert calls == [["/usr/bin/apt-get", "install", "-y", "--no-install-recommends", "gcc", "libc6-dev"]]
    assert apt_install("gcc libc6-dev", "x.h", "t", "h", run=run, which=found.get, is_root=True,
                       installed=header.is_file) is False  # fmt: skip
    assert len(calls) == 1


def test_doctor_reports_owner_wrapper_and_images_mode(tmp_path: Path) -> None:
    from harness.backends.kube.doctor import kind_path

    h = Harness(tmp_path, status=LACKING)
    h.engine.start()
    mod = tmp_path / "kind-mod" / "pkg" / "apis" / "config" / "defaults"
    mod.mkdir(parents=True)
    (mod / "image.go").write_text('const Image = "kindest/node:v1.37.0@sha256:x"\n')

    def entries(setting: str) -> dict[str, Any]:
        got = kind_path(
            tmp_path,
            setting,
            run=h.engine._run,
            which=which_from(TOOLS),
            procs=ProcTable(h.proc.root),
            kind_module_dir=tmp_path / "kind-mod",
        )
        return {e.name: e for e in got}

    e = entries("auto")
    assert e["docker engine owner"].version == "ours" and e["docker engine owner"].found
    wrapper = e["runc capability wrapper"]
    assert wrapper.found and wrapper.path == str(h.lay.wrapper) and "CAP_SYS_RESOURCE" in wrapper.needed_for
    images = e["images"]
    # the fake engine answers every inspect with labels: the official node image counts as present
    assert images.version == "official" and "kindest/node:v1.37.0@sha256:x" in images.needed_for
    assert entries("local")["images"].version == "local" and not entries("local")["images"].found
    # local images: the istioctl of the pin is what counts (optional until built: `up` builds it)
    pinned = entries("local")["istioctl (1.31-dev, from the pin)"]
    assert not pinned.found and pinned.optional and "images build --istio 1.31-dev" in pinned.how_to_get
    assert "istioctl (1.31-dev, from the pin)" not in entries("official")
    h.engine.stop()
    gone = entries("auto")
    assert gone["docker engine owner"].version == "absent" and not gone["runc capability wrapper"].found
    assert "no Docker engine answers" in gone["images"].needed_for
