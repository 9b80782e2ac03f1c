"""kind built from its module into the cache (go install), found there before PATH; its module's directory."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from harness import proc
from harness.errors import ToolMissing
from harness.toolchain import kind as kind_build
from tests.unit.kube.fakes import FakeRunner, which_from


def test_kind_is_go_installed_into_the_cache_once(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    target = kind_build.kind_binary(cache)

    def run(argv: Sequence[str], *, timeout: float = 600.0, check: bool = True) -> proc.Completed:
        args = [str(a) for a in argv]
        calls.append(args)
        if args[-1] == "version":
            return proc.Completed(tuple(args), 0, "kind v0.33.0 go1.26.8 linux/amd64\n", "")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("#!/bin/sh\n")
        target.chmod(0o755)
        return proc.Completed(tuple(args), 0, "", "")

    calls: list[list[str]] = []
    assert kind_build.install(cache, run=run, which=which_from({"go": "/usr/local/go/bin/go"})) == target
    (install,) = [c for c in calls if c[-1] != "version"]
    assert install == [
        "env",
        f"GOBIN={target.parent}",
        "CGO_ENABLED=0",
        "/usr/local/go/bin/go",
        "install",
        "sigs.k8s.io/kind@v0.33.0",
    ]
    calls.clear()
    assert kind_build.install(cache, run=run, which=which_from({})) == target  # cached: no go needed
    assert all(c[-1] == "version" for c in calls)
    found = kind_build.kind_which(cache, which_from({"docker": "/usr/bin/docker"}))
    assert found("kind") == str(target) and found("docker") == "/usr/bin/docker"


def test_kind_build_without_go_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ToolMissing, match="install Go"):
        kind_build.install(tmp_path, run=FakeRunner(), which=which_from({}))


def test_kind_module_dir_comes_from_go_mod_download(tmp_path: Path) -> None:
    out = json.dumps({"Path": "sigs.k8s.io/kind", "Version": "v0.33.0", "Dir": str(tmp_path / "kind")})
    run = FakeRunner({"/go mod download -json sigs.k8s.io/kind@v0.33.0": (0, out, "")})
    assert kind_build.module_dir(run=run, which=which_from({"go": "/go"})) == tmp_path / "kind"
    with pytest.raises(ToolMissing, match="go"):
        kind_build.module_dir(run=run, which=which_from({}))
