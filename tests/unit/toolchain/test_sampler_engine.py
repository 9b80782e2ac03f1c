"""The sampler's engine build (harness/toolchain/sampler_engine.py): built once per source, rebuilt
when its sources change, and a clear error naming the fix when Go is missing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.errors import ToolMissing
from harness.toolchain import sampler_engine

GO = shutil.which("go")


@pytest.mark.skipif(GO is None, reason="go is needed to build the engine")
def test_built_once_then_found_by_its_stamp(tmp_path: Path) -> None:
    binary = sampler_engine.ensure(tmp_path)
    assert binary == tmp_path / "sampler" / "bin" / sampler_engine.BINARY and binary.is_file()
    built_at = binary.stat().st_mtime_ns
    assert sampler_engine.ensure(tmp_path).stat().st_mtime_ns == built_at  # no second build
    stamp = tmp_path / "sampler" / "stamp.json"
    stamp.write_text(json.dumps({"source_sha256": "an older source"}))
    assert sampler_engine.installed(tmp_path) is None  # stale: the next ensure() rebuilds


def test_missing_go_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ToolMissing) as e:
        sampler_engine.ensure(tmp_path)
    assert "go is needed for building the traffic sampler (meshproof-sampler)" in str(e.value)
    assert "Fix: install Go" in str(e.value)
