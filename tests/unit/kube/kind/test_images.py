"""The kind path's images: apt mirror lookup, the mode decision, the Debian base build and its cache."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from harness import proc
from harness.backends.kube.kind import images
from harness.backends.kube.kind.base import INPUTS_LABEL, PREFIX, image_ref, inputs_digest
from harness.backends.kube.kind.images import (
    ImageBuilder,
    apt_mirror,
    images_mode,
    kind_default_node_image,
)
from harness.errors import ToolMissing, UserError

from ..fakes import which_from

DEB822 = """Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_apt_mirror_reads_deb822_and_one_line_sources() -> None:
    assert apt_mirror({"debian.sources": DEB822}) == "http://mirror.example/debian"
    one_line = (
        "# comment\ndeb [arch=amd64 signed-by=/k.gpg] http://old.example/debian bookworm main contrib\n"
    )
    assert apt_mirror({"sources.list": one_line}) == "http://old.example/debian"
    # disabled files, other suites, source-only entries and disabled stanzas do not count
    assert apt_mirror({"debian.sources.disabled-by-farm": DEB822}) == ""
    assert apt_mirror({"debian.sources": DEB822}, "trixie") == ""
    assert apt_mirror({"sources.list": "deb-src http://x.example/debian bookworm main\n"}) == ""
    assert apt_mirror({"a.sources": "Enabled: no\n" + DEB822.split("\n\n")[0]}) == ""


def test_images_mode_says_why_and_never_assumes_the_internet() -> None:
    node = "kindest/node:v1.37.0@sha256:abc"
    local = images_mode("auto", official_node_image=node, official_present=False)
    assert local.mode == "local"
    assert "not in the engine" in local.why and "does not probe the internet" in local.why
    assert images_mode("auto", official_node_image=node, official_present=True).mode == "official"
    assert "no Docker engine" in images_mode("auto", official_node_image=node, official_present=None).why
    assert images_mode("official", official_node_image=node, official_present=False).mode == "official"
    assert images_mode("local", official_node_image=node, official_present=True).mode == "local"
    with pytest.raises(UserError, match="MESHPROOF_IMAGES"):
        images_mode("pull", official_node_image=node, official_present=None)


def test_kind_default_node_image_comes_from_kinds_module(tmp_path: Path) -> None:
    d = tmp_path / "pkg" / "apis" / "config" / "defaults"
    d.mkdir(parents=True)
    (d / "image.go").write_text('package defaults\n\nconst Image = "kindest/node:v1.37.0@sha256:a1ed"\n')
    assert kind_default_node_image(tmp_path) == "kindest/node:v1.37.0@sha256:a1ed"
    assert kind_default_node_image(tmp_path / "nope") == ""


class Engine:
    """A runner that plays `docker image inspect` / `docker import` and records every step."""

    def __init__(self, labels: dict[str, dict[str, str]] | None = None) -> None:
        self.images = dict(labels or {})
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], *, timeout: float = 600.0, check: bool = True) -> proc.Completed:
        args = [str(a) for a in argv]
        self.calls.append(args)
        if args[1:3] == ["image", "inspect"]:
            ref = args[-1]
            if ref in self.images:
                return proc.Completed(tuple(args), 0, json.dumps(self.images[ref]) + "\n", "")
            return proc.Completed(tuple(args), 1, "", f"Error: No such image: {ref}")
        if args[1:2] == ["import"]:
            label = next(a for a in args if a.startswith("LABEL "))
            key, _, value = label.removeprefix("LABEL ").partition("=")
            self.images[args[-1]] = {key: value}
        return proc.Completed(tuple(args), 0, "", "")


def builder(
    tmp_path: Path, engine: Engine, *, root: bool = True, tools: dict[str, str] | None = None
) -> ImageBuilder:
    return ImageBuilder(
        tmp_path / "cache",
        docker="/usr/bin/docker",
        run=engine,
        which=which_from(tools if tools is not None else {"debootstrap": "/usr/sbin/debootstrap"}),
        prefix=("nice", "-n", "19"),
        apt_sources={"debian.sources": DEB822},
        is_root=root,
    )


def test_debian_base_is_debootstrapped_tarred_and_imported_under_the_prefix(tmp_path: Path) -> None:
    engine = Engine()
    built = builder(tmp_path, engine).debian_base()
    assert built.built and built.ref == f"{PREFIX}/debian-base:bookworm" == image_ref(
        "debian-base", "bookworm"
    )
    steps = [c for c in engine.calls if c[1:3] != ["image", "inspect"]]
    deboot, tar, imp = steps
    assert deboot[:3] == ["nice", "-n", "19"]
    assert deboot[3:5] == ["/usr/sbin/debootstrap", "--variant=minbase"]
    assert deboot[5] == "bookworm" and deboot[7] == "http://mirror.example/debian"
    assert tar[3:] == [
        "tar",
        "-C",
        deboot[6],
        "--numeric-owner",
        "-cf",
        str(Path(deboot[6]).parent / "rootfs.tar"),
        ".",
    ]
    assert imp[:2] == ["/usr/bin/docker", "import"] and imp[-1] == built.ref
    assert f"LABEL {INPUTS_LABEL}={built.inputs}" in imp
    assert list((tmp_path / "cache" / "images").iterdir()) == []  # the build dir is gone


def test_a_current_cached_base_is_not_rebuilt_but_force_and_changed_inputs_rebuild(tmp_path: Path) -> None:
    current = inputs_digest(["debootstrap", "--variant=minbase", "bookworm"])
    engine = Engine({f"{PREFIX}/debian-base:bookworm": {INPUTS_LABEL: current}})
    b = builder(tmp_path, engine)
    assert b.debian_base().built is False
    assert all(c[1:3] == ["image", "inspect"] for c in engine.calls)
    assert b.debian_base(force=True).built is True
    stale = Engine({f"{PREFIX}/debian-base:bookworm": {INPUTS_LABEL: "older"}})
    assert builder(tmp_path, stale).debian_base().built is True


def test_debian_base_installs_a_missing_debootstrap_with_apt_get(tmp_path: Path) -> None:
    """As `meshproof docker install` does for docker.io: not a "Fix: apt-get install" stop."""
    engine = Engine()
    tools = {"apt-get": "/usr/bin/apt-get"}

    def run(argv: Sequence[str], *, timeout: float = 600.0, check: bool = True) -> proc.Completed:
        if list(argv)[-1] == "debootstrap":  # the package install puts the binary in place
            tools["debootstrap"] = "/usr/sbin/debootstrap"
        return engine(argv, timeout=timeout, check=check)

    b = builder(tmp_path, engine, tools=tools)
    b._run, b._which = run, tools.get
    assert b.debian_base().built
    apt = ["nice", "-n", "19", "/usr/bin/apt-get", "install", "-y", "--no-install-recommends", "debootstrap"]
    assert apt in engine.calls
    deboot = next(c for c in engine.calls if "/usr/sbin/debootstrap" in c)
    assert deboot[3:5] == ["/usr/sbin/debootstrap", "--variant=minbase"]


def test_debian_base_needs_debootstrap_root_and_a_mirror(tmp_path: Path) -> None:
    with pytest.raises(ToolMissing, match="no apt-get"):
        builder(tmp_path, Engine(), tools={}).debian_base()
    with pytest.raises(ToolMissing, match="root"):
        builder(tmp_path, Engine(), root=False).debian_base()
    b = builder(tmp_path, Engine())
    b._apt_sources = {}
    with pytest.raises(UserError, match="no apt source for Debian bookworm"):
        b.debian_base()


def test_build_refuses_planned_and_unknown_images_by_name(tmp_path: Path) -> None:
    b = builder(tmp_path, Engine())
    planned = [p.name for p in images.PLAN if p.built_by != "meshproof"]
    for name in planned[:1]:
        with pytest.raises(UserError, match=f"{name} cannot be built yet"):
            b.build([name])
    with pytest.raises(UserError, match="unknown image nope"):
        b.build(["nope"])
    assert [i.name for i in b.build(["debian-base"])] == ["debian-base"]


class BuildEngine(Engine):
    """Engine plus `buildx version` / `version` answers per CLI, and a build that tags its image."""

    def __init__(self, versions: dict[str, str], buildx: Sequence[str] = (), **kw: Any) -> None:
        super().__init__(**kw)
        self.versions, self.buildx = versions, set(buildx)
        self.contexts: list[list[str]] = []

    def __call__(self, argv: Sequence[str], *, timeout: float = 600.0, check: bool = True) -> proc.Completed:
        args = [str(a) for a in argv]
        if args[1:3] == ["buildx", "version"]:
            self.calls.append(args)
            return proc.Completed(tuple(args), 0 if args[0] in self.buildx else 1, "", "")
        if args[1:2] == ["version"]:
            self.calls.append(args)
            return proc.Completed(tuple(args), 0, self.versions.get(args[0], "") + "\n", "")
        if "build" in args:
            self.calls.append(args)
            ctx = Path(args[-1])
            self.contexts.append(sorted(p.name for p in ctx.iterdir()))
            label = args[args.index("--label") + 1]
            key, _, value = label.partition("=")
            self.images[args[args.index("-t") + 1]] = {key: value}
            return proc.Completed(tuple(args), 0, "", "")
        return super().__call__(argv, timeout=timeout, check=check)


def kind_module(tmp_path: Path) -> Path:
    base = tmp_path / "kind@v0.33.0" / "images" / "base"
    (base / "files" / "etc").mkdir(parents=True)
    (base / "Dockerfile").write_text("ARG BASE_IMAGE=debian:trixie-slim\nFROM $BASE_IMAGE AS base\n")
    (base / "files" / "etc" / "crictl.yaml").write_text("runtime-endpoint: x\n")
    for p in (base, base / "files", base / "files" / "etc", base / "Dockerfile"):
        p.chmod(0o555 if p.is_dir() else 0o444)  # like the module cache: read-only
    return tmp_path / "kind@v0.33.0"


def test_kind_base_builds_kinds_own_dockerfile_target_base_from_debian_base(tmp_path: Path) -> None:
    engine = BuildEngine({"/usr/local/bin/docker": "28.2.2", "/usr/bin/docker": "20.10.24+dfsg1"})
    engine.images[f"{PREFIX}/debian-base:bookworm"] = {
        INPUTS_LABEL: inputs_digest(["debootstrap", "--variant=minbase", "bookworm"])
    }
    b = ImageBuilder(
        tmp_path / "cache",
        docker="/usr/local/bin/docker",
        run=engine,
        which=which_from({"docker": "/usr/local/bin/docker"}),
        kind_module=kind_module(tmp_path),
    )
    built = b.kind_base()
    assert built.built and built.ref == f"{PREFIX}/kind-base:v0.33.0"
    (build,) = [c for c in engine.calls if "build" in c]
    # the 28 CLI has no buildx here: Debian's 20.10 CLI drives the engine's BuildKit
    assert build[:3] == ["env", "DOCKER_BUILDKIT=1", "/usr/bin/docker"]
    assert build[build.index("--target") + 1] == "base"
    assert f"BASE_IMAGE={PREFIX}/debian-base:bookworm" in build
    assert engine.contexts == [
        ["Dockerfile", "files"]
    ]  # kind's images/base, copied (writable) as the context
    assert not list((tmp_path / "cache" / "images").iterdir())
    assert b.kind_base().built is False  # current: cached


def test_buildkit_cli_prefers_buildx_and_names_what_it_tried(tmp_path: Path) -> None:
    engine = BuildEngine({"/usr/local/bin/docker": "28.2.2"}, buildx=["/usr/local/bin/docker"])
    b = ImageBuilder(tmp_path, docker="/usr/local/bin/docker", run=engine, which=which_from({}))
    assert b.buildkit_cli() == "/usr/local/bin/docker"
    none = BuildEngine({"/usr/local/bin/docker": "28.2.2", "/usr/bin/docker": "27.0.1"})
    b = ImageBuilder(tmp_path, docker="/usr/local/bin/docker", run=none, which=which_from({}))
    with pytest.raises(ToolMissing, match="BuildKit") as info:
        b.buildkit_cli()
    assert "/usr/local/bin/docker 28.2.2, /usr/bin/docker 27.0.1" in "\n".join(info.value.__notes__)


def test_kind_runtime_dockerfile_reuses_kinds_cri_base_step_and_wraps_runc() -> None:
    from harness.backends.kube.kind.images import dockerfile_instruction, runtime_dockerfile

    kind = (
        "# comment\nFROM base AS build\n"
        "RUN ctr oci spec \\\n        | jq 'del(.process.rlimits)' \\\n        > /etc/containerd/cri-base.json \\\n"
        "    && containerd --version\nCOPY x y\n"
    )
    step = dockerfile_instruction(kind, "RUN ctr oci spec")
    assert (
        step
        == "RUN ctr oci spec | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json && containerd --version"
    )
    with pytest.raises(ValueError, match="RUN nope"):
        dockerfile_instruction(kind, "RUN nope")
    text = runtime_dockerfile("meshproof.local/kind-base:v0.33.0", step)
    lines = text.splitlines()
    assert lines[0] == "FROM meshproof.local/kind-base:v0.33.0"
    # kind's containerd config runs /usr/local/sbin/runc: that is the wrapper, the real runc sits beside it
    assert (
        "COPY bin/runc /usr/local/sbin/runc.real" in lines
        and "COPY bin/runc-capdrop /usr/local/sbin/runc" in lines
    )
    assert step in lines and lines[-1] == 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]'


def test_runc_build_headers_are_installed_with_apt_or_named(tmp_path: Path) -> None:
    """Through the one apt helper `docker install` and the debootstrap install use, not its own apt-get."""
    headers = tmp_path / "seccomp.h"
    engine = Engine()

    def run(argv: Sequence[str], *, timeout: float = 600.0, check: bool = True) -> proc.Completed:
        if list(argv)[-1] == "libseccomp-dev":  # the package install puts the header in place
            headers.write_text("/* installed */")
        return engine(argv, timeout=timeout, check=check)

    b = builder(tmp_path, engine, tools={"apt-get": "/usr/bin/apt-get"})
    b._run = run
    b.ensure_build_headers(headers)
    assert engine.calls == [
        ["nice", "-n", "19", "/usr/bin/apt-get", "install", "-y", "--no-install-recommends", "libseccomp-dev"],
    ]  # fmt: skip
    headers.unlink()
    with pytest.raises(ToolMissing, match="apt-get install -y libseccomp-dev"):
        builder(tmp_path, Engine(), root=False, tools={"apt-get": "/usr/bin/apt-get"}).ensure_build_headers(
            headers
        )
    # apt-get ran but the header is still missing: named, not a compile error later
    with pytest.raises(ToolMissing, match="installed no libseccomp-dev"):
        builder(tmp_path, Engine(), tools={"apt-get": "/usr/bin/apt-get"}).ensure_build_headers(headers)
    headers.write_text("/* present */")
    quiet = Engine()
    builder(tmp_path, quiet, root=False).ensure_build_headers(headers)
    assert quiet.calls == []


def test_build_cached_skips_a_current_image_and_removes_its_context_even_when_the_build_fails(
    tmp_path: Path,
) -> None:
    engine = BuildEngine({"/usr/bin/docker": "20.10.24+dfsg1"})
    b = ImageBuilder(tmp_path / "cache", docker="/usr/bin/docker", run=engine, which=which_from({}))
    filled: list[Path] = []

    def fill(ctx: Path) -> None:
        ctx.mkdir()
        (ctx / "Dockerfile").write_text("FROM scratch\n")
        filled.append(ctx)

    ref = image_ref("kind-runtime", "t")
    kw: dict[str, Any] = {"force": False, "message": "building", "build_args": {"A": "1"}, "what": "x"}
    built = b._build_cached("kind-runtime", ref, "in-1", fill, **kw)
    assert built.built and built.inputs == "in-1" and engine.contexts == [["Dockerfile"]]
    assert "A=1" in engine.calls[-1] and "--target" not in engine.calls[-1]
    assert b._build_cached("kind-runtime", ref, "in-1", fill, **kw).built is False  # current: cached
    assert len(filled) == 1
    assert b._build_cached("kind-runtime", ref, "in-1", fill, **{**kw, "force": True}).built
    assert b._build_cached("kind-runtime", ref, "in-2", fill, **kw).built  # changed inputs rebuild

    def broken(ctx: Path) -> None:
        ctx.mkdir()
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        b._build_cached("kind-runtime", ref, "in-3", broken, **kw)
    assert not list((tmp_path / "cache" / "images").iterdir())  # no context directory left behind
