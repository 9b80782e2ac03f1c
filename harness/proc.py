"""The one place that runs subprocesses.

Always argv lists (never ``shell=True``), always the inherited environment plus overrides
(never a wiped one), always a timeout for one-shot commands. A non-zero exit raises
:class:`~harness.errors.CommandFailed` carrying argv, exit code and the output tails.
Long-running processes are started with :func:`spawn`, their output going to a log file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from harness.errors import CommandFailed, ToolMissing


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    """What callers that take an injectable runner need of :func:`run` (fakes implement this)."""

    def __call__(self, argv: Sequence[str], *, timeout: float = ..., check: bool = ...) -> Completed: ...


Which = Callable[[str], str]  # tool name -> absolute path, or "" when absent (like :func:`which`)


def merged_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if overrides:
        env.update(overrides)
    return env


def which(tool: str, *, needed_for: str = "", how_to_get: str = "", extra_dirs: Sequence[Path] = ()) -> str:
    """Absolute path of ``tool`` on PATH (or in ``extra_dirs``); ToolMissing when ``needed_for`` is given."""
    for d in extra_dirs:
        cand = Path(d) / tool
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which(tool)
    if found:
        return found
    if needed_for:
        raise ToolMissing(tool, needed_for, how_to_get or f"install {tool} and put it on PATH")
    return ""


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    timeout: float = 600.0,
    check: bool = True,
    input: str | None = None,
) -> Completed:
    args = [os.fspath(a) for a in argv]
    try:
        p = subprocess.run(
            args,
            env=merged_env(env),
            cwd=cwd,
            timeout=timeout,
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError as e:
        raise ToolMissing(args[0], " ".join(args[:3]), f"install {args[0]} and put it on PATH") from e
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise CommandFailed(args, -1, out, err + f"\n(timed out after {timeout:.0f}s)") from e
    done = Completed(tuple(args), p.returncode, p.stdout, p.stderr)
    if check and p.returncode != 0:
        raise CommandFailed(args, p.returncode, p.stdout, p.stderr)
    return done


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    new_session: bool = False,
    die_with_parent: bool = False,
    stdin_pipe: bool = False,
    nice: int = 0,
) -> subprocess.Popen[bytes]:
    """Start a long-running process whose stdout and stderr go to ``log_path`` (appended).

    ``nice`` lowers the child's CPU priority (background work that must not slow the mesh).

    ``stdin_pipe`` gives the caller the child's stdin (``popen.stdin``) to feed it work; closing
    it is the child's signal to finish.

    ``die_with_parent`` makes the kernel SIGKILL the child when the spawning thread's process dies
    (Linux PR_SET_PDEATHSIG), so not even a SIGKILLed parent can leak it. Spawn such children from
    the main thread only: the signal follows the thread that forked.
    """
    args = [os.fspath(a) for a in argv]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        try:
            return subprocess.Popen(
                args,
                env=merged_env(env),
                cwd=cwd,
                stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=new_session,
                preexec_fn=_preexec(die_with_parent=die_with_parent, nice=nice),  # noqa: PLW1509
            )
        except FileNotFoundError as e:
            raise ToolMissing(args[0], "starting the mesh", "run ./scripts/setup") from e


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0; one we may not signal still exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid`` (Linux /proc)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields[2]: pgrp; state Z: a zombie
            pids.append(int(d.name))
    return pids


def tail(path: Path, lines: int = 20) -> str:
    """Last ``lines`` lines of a log file ('' if absent), for error notes."""
    try:
        data = path.read_bytes()[-16384:].decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _preexec(*, die_with_parent: bool, nice: int) -> Callable[[], None] | None:
    if not die_with_parent and not nice:
        return None

    def child() -> None:  # runs in the child between fork and exec
        if nice:
            os.nice(nice)
        if die_with_parent:
            _die_with_parent()

    return child


def _die_with_parent() -> None:  # runs in the child between fork and exec
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def set_parent_death_signal(sig: int) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, sig)
