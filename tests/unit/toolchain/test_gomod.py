"""The one Go-module helper: module download answers and failures, wrapper go.mod text, build argv."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from harness import proc
from harness.errors import CommandFailed, ToolMissing
from harness.toolchain import gomod


def runner(rc: int, out: str, err: str = "", raises: Exception | None = None) -> Any:
    calls: list[tuple[list[str], dict[str, Any]]] = []

    def run(argv: Sequence[str], **kw: Any) -> proc.Completed:
        calls.append(([str(a) for a in argv], kw))
        if raises is not None:
            raise raises
        return proc.Completed(tuple(str(a) for a in argv), rc, out, err)

    run.calls = calls  # type: ignore[attr-defined]
    return run


def test_download_answers_the_modules_directory_and_go_mod(tmp_path: Path) -> None:
    run = runner(0, json.dumps({"Dir": str(tmp_path / "m"), "GoMod": str(tmp_path / "m.mod")}))
    got = gomod.download("example.com/m", "v1.2.3", go="/go", needed_for="a test", run=run)
    assert (got.dir, got.go_mod, got.path, got.version) == (
        tmp_path / "m",
        tmp_path / "m.mod",
        "example.com/m",
        "v1.2.3",
    )
    ((argv, kw),) = run.calls
    assert argv == ["/go", "mod", "download", "-json", "example.com/m@v1.2.3"]
    assert kw["check"] is False and "cwd" not in kw
    run = runner(0, json.dumps({"Dir": "/d"}))
    got = gomod.download("example.com/m", "v1", go="/go", needed_for="a test", run=run, cwd=tmp_path)
    assert got.go_mod == Path("/d/go.mod") and run.calls[0][1]["cwd"] == tmp_path


@pytest.mark.parametrize(
    ("run", "tool", "note"),
    [
        (
            runner(1, json.dumps({"Error": "module lookup disabled by GOPROXY=off"})),
            "Go module",
            "GOPROXY=off",
        ),
        (runner(1, "", "go: not a module"), "Go module", "not a module"),
        (runner(0, "{}"), "Go module", "exit code 0"),
        (runner(0, "", raises=CommandFailed(["go"], -1, "", "timed out")), "Go module", "did not finish"),
        (runner(0, "", raises=ToolMissing("/go", "x", "y")), "go", None),
    ],
)
def test_every_download_failure_is_one_tool_missing_naming_the_module(
    run: Any, tool: str, note: str | None
) -> None:
    with pytest.raises(ToolMissing) as info:
        gomod.download("example.com/m", "v1", go="/go", needed_for="a test", how_to_get="the fix", run=run)
    assert info.value.tool.startswith(tool)
    assert "a test" in str(info.value) and "the fix" in str(info.value)
    if note is not None:
        assert any(note in n for n in info.value.__notes__)


def test_go_directive_and_wrapper_go_mod() -> None:
    assert gomod.go_directive("module x\n\ngo 1.25.0\n\nrequire y v1\n") == "1.25.0"
    assert gomod.go_directive("module x\n", "1.26.0") == "1.26.0"
    assert gomod.wrapper_go_mod("meshproof.local/j", "1.26") == "module meshproof.local/j\n\ngo 1.26\n"
    text = gomod.wrapper_go_mod(
        "meshproof.local/k", "1.25.0", ("k8s.io/kubernetes", "v1.37.2"), [("k8s.io/api", "v0.37.2")]
    )
    assert text == (
        "module meshproof.local/k\n\ngo 1.25.0\n\nrequire k8s.io/kubernetes v1.37.2\n\n"
        "replace k8s.io/api => k8s.io/api v0.37.2\n"
    )


def test_build_argv() -> None:
    assert gomod.build_argv("/go", ".", "/out/x") == ["/go", "build", "-trimpath", "-o", "/out/x", "."]
    assert gomod.build_argv("/go", "example.com/cmd/x", Path("/o"), tags="a,b", ldflags="-X m.v=1", chdir="/src") == [
        "/go", "-C", "/src", "build", "-trimpath", "-tags=a,b", "-ldflags", "-X m.v=1", "-o", "/o", "example.com/cmd/x"
    ]  # fmt: skip
    assert gomod.version_ldflags([("m.a", "1"), ("m.b", "2")]) == "-X m.a=1 -X m.b=2"


def test_find_go_names_the_fix() -> None:
    assert gomod.find_go(needed_for="x", which=lambda _t: "/usr/bin/go") == "/usr/bin/go"
    with pytest.raises(ToolMissing, match="install Go"):
        gomod.find_go(needed_for="building x", which=lambda _t: "")
