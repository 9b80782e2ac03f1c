"""proc: argv lists, merged env, captured output, timeouts, missing tools, spawned logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import proc
from harness.errors import CommandFailed, ToolMissing

PY = sys.executable


def test_run_captures_output() -> None:
    done = proc.run([PY, "-c", "import sys; print('out'); print('err', file=sys.stderr)"])
    assert done.returncode == 0
    assert done.stdout == "out\n"
    assert done.stderr == "err\n"
    assert done.argv == (PY, "-c", "import sys; print('out'); print('err', file=sys.stderr)")


def test_run_accepts_paths_and_input(tmp_path: Path) -> None:
    script = tmp_path / "echo.py"
    script.write_text("import sys; sys.stdout.write(sys.stdin.read().upper())")
    assert proc.run([PY, script], input="hello").stdout == "HELLO"


def test_run_uses_cwd(tmp_path: Path) -> None:
    assert proc.run([PY, "-c", "import os; print(os.getcwd())"], cwd=tmp_path).stdout.strip() == str(tmp_path)


def test_non_zero_exit_raises_with_argv_code_and_tails() -> None:
    code = "import sys; print('some output'); print('it broke', file=sys.stderr); sys.exit(3)"
    with pytest.raises(CommandFailed) as info:
        proc.run([PY, "-c", code])
    e = info.value
    assert e.argv == [PY, "-c", code]
    assert e.returncode == 3
    assert e.stdout == "some output\n"
    assert "it broke" in e.stderr
    assert "exited 3" in str(e) and "it broke" in str(e)


def test_check_false_returns_the_failure() -> None:
    done = proc.run([PY, "-c", "import sys; sys.exit(4)"], check=False)
    assert done.returncode == 4


def test_timeout_raises_command_failed() -> None:
    with pytest.raises(CommandFailed) as info:
        proc.run([PY, "-c", "import time; print('started', flush=True); time.sleep(30)"], timeout=0.5)
    assert info.value.returncode == -1
    assert "timed out after" in info.value.stderr


def test_missing_tool_raises_tool_missing() -> None:
    with pytest.raises(ToolMissing) as info:
        proc.run(["meshproof-no-such-tool-xyz", "--version"])
    assert info.value.tool == "meshproof-no-such-tool-xyz"
    assert "Fix:" in str(info.value)


def test_env_is_merged_not_wiped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHPROOF_TEST_INHERITED", "kept")
    code = "import os; print(os.environ.get('MESHPROOF_TEST_INHERITED'), os.environ.get('EXTRA'), bool(os.environ.get('PATH')))"
    done = proc.run([PY, "-c", code], env={"EXTRA": "added"})
    assert done.stdout.split() == ["kept", "added", "True"]


def test_env_override_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHPROOF_TEST_VAR", "old")
    out = proc.run(
        [PY, "-c", "import os; print(os.environ['MESHPROOF_TEST_VAR'])"], env={"MESHPROOF_TEST_VAR": "new"}
    )
    assert out.stdout.strip() == "new"
    assert os.environ["MESHPROOF_TEST_VAR"] == "old"  # our own environment is untouched


def test_spawn_writes_stdout_and_stderr_to_the_log_and_appends(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "child.log"
    code = "import sys; print('to stdout', flush=True); print('to stderr', file=sys.stderr, flush=True)"
    for _ in range(2):
        p = proc.spawn([PY, "-c", code], log_path=log)
        assert p.wait(timeout=30) == 0
    text = log.read_text()
    assert text.count("to stdout") == 2
    assert text.count("to stderr") == 2


def test_spawn_passes_env(tmp_path: Path) -> None:
    log = tmp_path / "env.log"
    p = proc.spawn(
        [PY, "-c", "import os; print(os.environ['X_SPAWNED'])"], log_path=log, env={"X_SPAWNED": "yes"}
    )
    assert p.wait(timeout=30) == 0
    assert log.read_text().strip() == "yes"


def test_spawn_missing_tool(tmp_path: Path) -> None:
    with pytest.raises(ToolMissing):
        proc.spawn(["meshproof-no-such-tool-xyz"], log_path=tmp_path / "x.log")


def test_which_finds_tools_on_path_and_in_extra_dirs(tmp_path: Path) -> None:
    assert proc.which("sh")
    tool = tmp_path / "mytool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert proc.which("mytool", extra_dirs=[tmp_path]) == str(tool)
    assert proc.which("meshproof-no-such-tool-xyz") == ""
    with pytest.raises(ToolMissing, match="needed for the test.*Fix: get it"):
        proc.which("meshproof-no-such-tool-xyz", needed_for="the test", how_to_get="get it")


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("\n".join(f"l{i}" for i in range(50)))
    assert proc.tail(log, 3) == "l47\nl48\nl49"
    assert proc.tail(tmp_path / "absent.log") == ""


def test_pid_alive_tells_a_live_process_from_a_reaped_one() -> None:
    assert proc.pid_alive(os.getpid())
    assert proc.pid_alive(1)  # exists even where we may not signal it
    child = subprocess.Popen(["true"])
    child.wait()
    assert not proc.pid_alive(child.pid)
