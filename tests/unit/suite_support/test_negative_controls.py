"""Every negative control records why it failed, and suites/README.md's table lists exactly them.

Walks the suites' source (no mesh): each ``@pytest.mark.negative`` test must reach
``evidence.require_failure`` (directly or through the suites' own helpers) with a ``because``
argument, which ``Evidence.require_failure`` requires and records in suites-report.json; the
README's negative-control table names every negative test and no other.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.report.records import Recorder
from harness.traffic.checks import CheckResult

ROOT = Path(__file__).resolve().parents[3]
SUITES = ROOT / "suites"


def _modules() -> dict[Path, ast.Module]:
    files = (
        sorted(SUITES.glob("test_*.py"))
        + sorted((SUITES / "_support").glob("*.py"))
        + [SUITES / "conftest.py"]
    )
    return {f: ast.parse(f.read_text(), str(f)) for f in files}


def _functions(modules: dict[Path, ast.Module]) -> dict[str, list[ast.FunctionDef]]:
    index: dict[str, list[ast.FunctionDef]] = {}
    for tree in modules.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                index.setdefault(node.name, []).append(node)
    return index


def _is_negative(fn: ast.FunctionDef) -> bool:
    return any(ast.unparse(d).startswith("pytest.mark.negative") for d in fn.decorator_list)


def negative_tests() -> Iterator[tuple[Path, ast.FunctionDef]]:
    for path, tree in _modules().items():
        if path.name.startswith("test_"):
            for node in tree.body:
                if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and _is_negative(node):
                    yield path, node


def _gives_reason(call: ast.Call) -> bool:
    for kw in call.keywords:
        if kw.arg == "because":
            return not (isinstance(kw.value, ast.Constant) and kw.value.value is None)
    return False


def reaches_reasoned_failure(fn: ast.FunctionDef, index: dict[str, list[ast.FunctionDef]]) -> bool:
    """Does ``fn`` (or a suites function it calls, transitively) call ``require_failure(..., because=...)``?"""
    seen: set[str] = set()
    todo = [fn]
    while todo:
        current = todo.pop()
        for node in ast.walk(current):
            if not isinstance(node, ast.Call):
                continue
            callee = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if callee == "require_failure" and _gives_reason(node):
                return True
            if callee in index and callee not in seen and callee != "require_failure":
                seen.add(callee)
                todo += index[callee]
    return False


def test_there_are_negative_controls_to_check() -> None:
    assert len(list(negative_tests())) >= 20


def test_every_negative_control_asserts_its_reason() -> None:
    index = _functions(_modules())
    missing = [
        f"{path.name}::{fn.name}" for path, fn in negative_tests() if not reaches_reasoned_failure(fn, index)
    ]
    assert not missing, (
        f"negative controls that record no reason (require_failure(..., because=...)): {missing}"
    )


def test_the_walker_catches_a_negative_control_without_reason() -> None:
    """The walker's own negative control: a test whose require_failure gives no reason is caught."""
    src = """
@pytest.mark.negative
def test_negative_x(evidence):
    helper(evidence)

def helper(evidence):
    evidence.require_failure(check, requests=1, confidence="c", wall_s=0.0)
"""
    tree = ast.parse(src)
    index = _functions({Path("x.py"): tree})
    (test,) = [n for n in tree.body if isinstance(n, ast.FunctionDef) and _is_negative(n)]
    assert not reaches_reasoned_failure(test, index)
    index["helper"] = [ast.parse(src.replace("wall_s=0.0)", "wall_s=0.0, because=why)")).body[1]]  # type: ignore[list-item]
    assert reaches_reasoned_failure(test, index)


def _readme_table_tests() -> set[str]:
    text = (SUITES / "README.md").read_text()
    section = text.split("## Negative controls", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return {m for row in rows for m in re.findall(r"`(test_\w+)`", row)}


def test_suites_readme_table_lists_exactly_the_negative_controls() -> None:
    in_code = {fn.name for _, fn in negative_tests()}
    in_readme = _readme_table_tests()
    assert in_code - in_readme == set(), (
        f"negative controls missing from suites/README.md's table: {sorted(in_code - in_readme)}"
    )
    assert in_readme - in_code == set(), (
        f"suites/README.md names tests that are no negative control: {sorted(in_readme - in_code)}"
    )


class _Config:
    def __init__(self) -> None:
        self.stash = pytest.Stash()


class _Item:
    nodeid = "suites/test_x.py::test_negative_x"

    def __init__(self) -> None:
        self.config = _Config()


def _item_with(*records: tuple[str, str]) -> _Item:
    """A test item whose session recorded checks with (expected, because)."""
    from suites.conftest import RECORDER

    item = _Item()
    recorder = Recorder()
    for expected, because in records:
        recorder.record(
            item.nodeid,
            CheckResult("c", expected == "PASS", ""),
            requests=1,
            confidence="c",
            wall_s=0.0,
            expect_pass=expected == "PASS",
            because=because,
        )
    item.config.stash[RECORDER] = recorder
    return item


def test_a_passed_negative_control_must_have_recorded_a_reasoned_failure() -> None:
    from suites.conftest import _negative_without_reason

    assert _negative_without_reason(_item_with(("FAIL", "the split is the running one"))) == ""  # type: ignore[arg-type]
    assert "without recording a failed check" in _negative_without_reason(_item_with(("PASS", "")))  # type: ignore[arg-type]
    assert "without its reason" in _negative_without_reason(_item_with(("FAIL", "")))  # type: ignore[arg-type]


def test_require_failure_refuses_a_negative_control_without_reason() -> None:
    from suites.conftest import Evidence

    evidence = Evidence(Recorder(), "suites/test_x.py::test_negative_x")
    with pytest.raises(TypeError, match="because"):
        evidence.require_failure(
            CheckResult("c", False, ""), requests=1, confidence="c", wall_s=0.0, because=None
        )  # type: ignore[arg-type]
