"""The exception tree: exit codes, messages that name what failed and how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import (
    BackendError,
    CheckFailed,
    CommandFailed,
    ConfigError,
    ConfigProblem,
    HarnessError,
    MeshproofError,
    StateError,
    ToolMissing,
    UnsupportedFeature,
    UserError,
    WaitTimeout,
)


@pytest.mark.parametrize(
    ("cls", "parent", "exit_code"),
    [
        (UserError, MeshproofError, 2),
        (ConfigError, UserError, 2),
        (ToolMissing, UserError, 2),
        (UnsupportedFeature, UserError, 2),
        (StateError, UserError, 2),
        (HarnessError, MeshproofError, 1),
        (CommandFailed, HarnessError, 1),
        (WaitTimeout, HarnessError, 1),
        (BackendError, HarnessError, 1),
        (CheckFailed, HarnessError, 1),
    ],
)
def test_tree_and_exit_codes(cls: type[MeshproofError], parent: type[Exception], exit_code: int) -> None:
    assert issubclass(cls, parent)
    assert cls.exit_code == exit_code


def test_check_failed_is_an_assertion_error_so_pytest_reports_it_as_a_failure() -> None:
    assert issubclass(CheckFailed, AssertionError)


def test_config_problem_names_file_document_object_field_and_fix() -> None:
    p = ConfigProblem(
        "vs.yaml",
        2,
        "spec.http[0].route[1].weight",
        "weights sum to 90",
        "make them sum to 100",
        "VirtualService",
        "reviews",
    )
    assert str(p) == (
        "vs.yaml (document 2 VirtualService/reviews): field spec.http[0].route[1].weight: "
        "weights sum to 90. Fix: make them sum to 100"
    )


def test_config_problem_without_kind_or_path() -> None:
    assert str(ConfigProblem("a.yaml", 1, "", "not YAML", "fix the syntax")) == (
        "a.yaml (document 1): not YAML. Fix: fix the syntax"
    )


def test_file_level_problem_says_file_or_directory_not_document_0(tmp_path: Path) -> None:
    assert str(ConfigProblem("gone.yaml", 0, "", "no such file or directory", "pass a file")) == (
        "file gone.yaml: no such file or directory. Fix: pass a file"
    )
    assert str(ConfigProblem(str(tmp_path), 0, "", "holds no YAML", "pass one")) == (
        f"directory {tmp_path}: holds no YAML. Fix: pass one"
    )


def test_config_error_keeps_every_problem_one_per_line() -> None:
    problems = [
        ConfigProblem("a.yaml", 1, "", "bad one", "fix one"),
        ConfigProblem("b.yaml", 3, "x", "bad two", "fix two"),
    ]
    e = ConfigError(problems)
    assert e.problems == tuple(problems)
    assert str(e).splitlines() == [str(problems[0]), str(problems[1])]


def test_config_error_without_problems_still_has_a_message() -> None:
    assert str(ConfigError([])) == "invalid configuration"


def test_tool_missing_says_what_for_and_how_to_get_it() -> None:
    e = ToolMissing("kind", "the kind backend", "go install sigs.k8s.io/kind@latest")
    assert (e.tool, e.needed_for, e.how_to_get) == (
        "kind",
        "the kind backend",
        "go install sigs.k8s.io/kind@latest",
    )
    assert (
        str(e)
        == "kind is needed for the kind backend but was not found. Fix: go install sigs.k8s.io/kind@latest"
    )


def test_command_failed_carries_argv_code_and_the_stderr_tail() -> None:
    stderr = "\n".join(f"line {i}" for i in range(40))
    e = CommandFailed(["kubectl", "apply", "-f", "x.yaml"], 1, "out", stderr)
    assert e.argv == ["kubectl", "apply", "-f", "x.yaml"]
    assert (e.returncode, e.stdout, e.stderr) == (1, "out", stderr)
    msg = str(e)
    assert msg.startswith("kubectl exited 1: kubectl apply -f x.yaml")
    assert "line 39" in msg and "line 25" in msg
    assert "line 24" not in msg  # only the last 15 lines


def test_command_failed_falls_back_to_stdout_when_stderr_is_empty() -> None:
    assert "boom" in str(CommandFailed(["x"], 3, "boom\n", ""))
    assert str(CommandFailed(["x"], 3, "", "")) == "x exited 3: x"


def test_wait_timeout_names_what_last_seen_and_hint() -> None:
    e = WaitTimeout("proxies to ACK", 12.0, "2/3 synced", hint="see logs/istiod.log")
    assert (e.what, e.timeout, e.last_seen, e.hint) == (
        "proxies to ACK",
        12.0,
        "2/3 synced",
        "see logs/istiod.log",
    )
    assert str(e) == (
        "timed out after 12.0s waiting for proxies to ACK; last seen: 2/3 synced. Hint: see logs/istiod.log"
    )


def _wrap_socket_error() -> None:
    try:
        raise OSError("socket closed")
    except OSError as e:
        err = BackendError("control socket failed")
        err.add_note("logs: /tmp/x")
        raise err from e


def test_errors_chain_and_carry_notes() -> None:
    with pytest.raises(BackendError) as info:
        _wrap_socket_error()
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__notes__ == ["logs: /tmp/x"]
