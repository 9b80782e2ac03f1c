"""meshproof test compiles the checkout's packages where Python writes no bytecode itself."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli.testrun import bytecode_env, compile_checkout


def _package(tmp_path: Path) -> Path:
    pkg = tmp_path / "src" / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("X = 1\n")
    (pkg / "mod.py").write_text("Y = 2\n")
    return pkg


def _pyc(source: Path) -> Path:
    return Path(importlib.util.cache_from_source(str(source)))


def test_without_bytecode_the_checkout_is_compiled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = _package(tmp_path)
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.setattr(sys, "pycache_prefix", None)
    assert compile_checkout([pkg])
    assert _pyc(pkg / "mod.py").is_file() and _pyc(pkg / "__init__.py").is_file()
    assert _pyc(pkg / "mod.py").parent == pkg / "__pycache__"  # where every process looks


def test_nothing_is_compiled_where_bytecode_is_written_or_goes_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = _package(tmp_path)
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    assert not compile_checkout([pkg])
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.setattr(sys, "pycache_prefix", str(tmp_path / "theirs"))
    assert not compile_checkout([pkg])
    assert not (pkg / "__pycache__").exists() and not (tmp_path / "theirs").exists()


def test_a_compiled_checkout_runs_pytest_with_bytecode_written() -> None:
    """pytest caches its rewritten modules only where Python writes bytecode."""
    assert bytecode_env(False) == {}
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **bytecode_env(True)}
    out = subprocess.run(
        [sys.executable, "-c", "import sys; print(sys.dont_write_bytecode)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"
