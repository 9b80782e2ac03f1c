"""What the kind node's binaries are built from: versions from kind's Dockerfile, Kubernetes' wrapper module and
ldflags, etcd's wrapper module, pause's compile line; adopting Kubernetes binaries built elsewhere."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from harness import proc
from harness.toolchain import nodeparts
from harness.toolchain.nodeparts import (
    KUBE_BINARIES,
    build_kubernetes,
    build_runtime,
    dockerfile_arg_defaults,
    go_install_argv,
    kube_build_argv,
    parts_dir,
    runtime_parts,
    staging_modules,
    staging_version,
    version_ldflags,
    wrapper_go_mod,
)

KIND_DOCKERFILE = """ARG BASE_IMAGE=debian:trixie-slim
FROM $BASE_IMAGE AS base
FROM go-build AS build-containerd
ARG TARGETARCH GO_VERSION
ARG CONTAINERD_VERSION="v2.3.4"
ARG BUILDTAGS="no_aufs no_zfs no_btrfs no_devmapper"
FROM go-build AS build-runc
ARG RUNC_VERSION="v1.4.3"
ARG CRICTL_VERSION="v1.36.0"
ARG CNI_PLUGINS_VERSION="v1.9.1"
"""

KUBERNETES_GO_MOD = """module k8s.io/kubernetes

go 1.26.0

require (
\tk8s.io/api v0.0.0
\tk8s.io/apimachinery v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apimachinery => ./staging/src/k8s.io/apimachinery
\tk8s.io/cri-api => ./staging/src/k8s.io/cri-api
)

replace github.com/other/thing => github.com/other/thing v1.2.3
"""


def test_dockerfile_arg_defaults() -> None:
    args = dockerfile_arg_defaults(KIND_DOCKERFILE)
    assert args["CONTAINERD_VERSION"] == "v2.3.4" and args["BASE_IMAGE"] == "debian:trixie-slim"
    assert "TARGETARCH" not in args  # an ARG without a default


def test_runtime_parts_follow_kinds_pins() -> None:
    containerd, runc, crictl, cni = runtime_parts(KIND_DOCKERFILE)
    assert containerd.targets() == [
        "github.com/containerd/containerd/v2/cmd/containerd@v2.3.4",
        "github.com/containerd/containerd/v2/cmd/ctr@v2.3.4",
        "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@v2.3.4",
    ]
    assert containerd.cgo and containerd.tags == ("no_aufs", "no_zfs", "no_btrfs", "no_devmapper")
    assert runc.targets() == ["github.com/opencontainers/runc@v1.4.3"] and runc.binaries() == ["runc"]
    assert runc.cgo and runc.tags == ("seccomp",)
    assert crictl.targets() == ["sigs.k8s.io/cri-tools/cmd/crictl@v1.36.0"] and not crictl.cgo
    assert cni.binaries() == ["host-local", "loopback", "ptp", "portmap"]
    assert go_install_argv("/go", runc) == [
        "env",
        "CGO_ENABLED=1",
        "/go",
        "install",
        "-trimpath",
        "-tags",
        "seccomp",
        "github.com/opencontainers/runc@v1.4.3",
    ]
    with pytest.raises(ValueError, match="RUNC_VERSION"):
        runtime_parts('ARG CONTAINERD_VERSION="v2"\n')


def test_the_wrapper_module_replaces_every_staging_module_by_its_published_version() -> None:
    assert staging_modules(KUBERNETES_GO_MOD) == ["k8s.io/api", "k8s.io/apimachinery", "k8s.io/cri-api"]
    assert staging_version("v1.37.2") == "v0.37.2"
    with pytest.raises(ValueError):
        staging_version("1.37")
    gomod = wrapper_go_mod(KUBERNETES_GO_MOD, "v1.37.2")
    assert gomod.startswith("module meshproof.local/k8s\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes v1.37.2\n")
    assert "replace k8s.io/cri-api => k8s.io/cri-api v0.37.2\n" in gomod
    assert "github.com/other/thing" not in gomod  # only the staging replaces


def test_version_ldflags_set_what_kubeadm_and_kind_parse() -> None:
    flags = version_ldflags("v1.37.2").split()
    assert flags[:2] == ["-s", "-w"]
    values = dict(f.split("=", 1) for f in flags[2:] if f != "-X")
    assert values["k8s.io/component-base/version.gitVersion"] == "v1.37.2"
    assert values["k8s.io/component-base/version.gitMinor"] == "37"
    assert values["k8s.io/client-go/pkg/version.gitVersion"] == "v1.37.2"
    argv = kube_build_argv("/go", "/out", "kubelet", "v1.37.2")
    assert argv[-3:] == ["-o", "/out/kubelet", "k8s.io/kubernetes/cmd/kubelet"]
    assert set(KUBE_BINARIES) >= {"kubeadm", "kubelet", "kube-apiserver", "kube-proxy"}


class Builder:
    """A runner that 'builds': go install writes each binary into GOBIN, go build writes -o."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], *, timeout: float = 600.0, check: bool = True) -> proc.Completed:
        args = [str(a) for a in argv]
        self.calls.append(args)
        if "install" in args:
            gobin = Path(next(a for a in args if a.startswith("GOBIN=")).split("=", 1)[1])
            for target in (a for a in args if "@" in a):
                path = target.split("@", 1)[0]
                (gobin / path.rsplit("/", 1)[-1]).write_text("bin")
        if "build" in args:
            Path(args[args.index("-o") + 1]).write_text("bin")
        return proc.Completed(tuple(args), 0, "", "")


def test_build_runtime_installs_every_part_once(tmp_path: Path) -> None:
    run = Builder()
    out = build_runtime(tmp_path, KIND_DOCKERFILE, go="/go", run=run, prefix=("nice", "-n", "19"))
    assert out == parts_dir(tmp_path) / "runtime" / "bin"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "containerd",
            "ctr",
            "containerd-shim-runc-v2",
            "runc",
            "crictl",
            "host-local",
            "loopback",
            "ptp",
            "portmap",
        ]
    )
    first = run.calls[0]
    assert first[:3] == ["env", f"GOBIN={out}", "CGO_ENABLED=1"] and first[3:6] == ["nice", "-n", "19"]
    n = len(run.calls)
    build_runtime(tmp_path, KIND_DOCKERFILE, go="/go", run=run)
    assert len(run.calls) == n  # current: nothing rebuilt
    build_runtime(tmp_path, KIND_DOCKERFILE.replace("v1.4.3", "v1.4.4"), go="/go", run=run)
    assert len(run.calls) == 2 * n  # a kind bump moves the pins: rebuilt


def test_build_kubernetes_in_the_wrapper_module(tmp_path: Path) -> None:
    run = Builder()
    out = build_kubernetes(tmp_path, KUBERNETES_GO_MOD, go="/go", version="v1.37.2", run=run)
    src = parts_dir(tmp_path, "v1.37.2") / "kubernetes" / "src"
    assert (src / "go.mod").read_text() == wrapper_go_mod(KUBERNETES_GO_MOD, "v1.37.2")
    get, *builds = run.calls
    assert get[-4:] == ["-C", str(src), "get", "k8s.io/kubernetes/cmd/kubelet@v1.37.2"]
    assert [b[-1] for b in builds] == [f"k8s.io/kubernetes/cmd/{b}" for b in KUBE_BINARIES]
    assert all(b[b.index("/go") + 1 : b.index("/go") + 4] == ["-C", str(src), "build"] for b in builds)
    assert sorted(p.name for p in out.iterdir()) == sorted(KUBE_BINARIES)
    calls = len(run.calls)
    build_kubernetes(tmp_path, KUBERNETES_GO_MOD, go="/go", version="v1.37.2", run=run)
    assert len(run.calls) == calls


@pytest.mark.parametrize(
    ("tag", "version"), [("3.7.0-0", "v3.7.0"), ("3.5.21-1", "v3.5.21"), ("v3.6.1", "v3.6.1")]
)
def test_etcd_module_version(tag: str, version: str) -> None:
    assert nodeparts.etcd_module_version(tag) == version


ETCD_GO_MOD = """module go.etcd.io/etcd/server/v3

go 1.26

toolchain go1.26.5

require go.uber.org/zap v1.27.0

replace (
\tgo.etcd.io/etcd/api/v3 => ../api
\tgo.etcd.io/etcd/client/pkg/v3 => ../client/pkg
)

replace go.etcd.io/etcd/pkg/v3 => ../pkg
replace example.com/fork => example.com/fork v1.0.0
"""


def test_wrapper_go_mod_replaces_relative_siblings_by_their_published_version() -> None:
    text = nodeparts.sibling_wrapper_go_mod(nodeparts.ETCD_MODULE, "v3.7.0", ETCD_GO_MOD)
    assert "require go.etcd.io/etcd/server/v3 v3.7.0\n" in text
    assert "go 1.26\n" in text
    for m in ("go.etcd.io/etcd/api/v3", "go.etcd.io/etcd/client/pkg/v3", "go.etcd.io/etcd/pkg/v3"):
        assert f"replace {m} => {m} v3.7.0\n" in text
    assert "example.com/fork" not in text  # a versioned replace is the module's own business


def test_pause_compile_line_is_the_makefiles() -> None:
    argv = nodeparts.pause_cc_argv("/usr/bin/gcc", Path("/m/pause.c"), Path("/o/pause"), "3.10.2", "v1.37.2")
    assert argv == ["/usr/bin/gcc", "-Os", "-Wall", "-Werror", "-static", "-DVERSION=v3.10.2-v1.37.2", "-o",
                    "/o/pause", "/m/pause.c"]  # fmt: skip


# ---- adopting Kubernetes binaries ----------------------------------------------------------------
KUBE_GO_MOD = "module k8s.io/kubernetes\n\ngo 1.26.0\n\nreplace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n\tk8s.io/kubelet => ./staging/src/k8s.io/kubelet\n)\n"  # noqa: E501


def version_m(
    binary: str, *, replaced: str = "k8s.io/api\tv0.37.2", cgo: str = "0", version: str = "v1.37.2"
) -> str:
    return (
        f"x: go1.26.8\n\tpath\tk8s.io/kubernetes/cmd/{binary}\n\tmod\tk8s.io/kubernetes\t{version}\th1:x=\n"
        f"\tdep\tk8s.io/api\tv0.0.0\n\t=>\t{replaced}\th1:y=\n\tbuild\t-trimpath=true\n\tbuild\tCGO_ENABLED={cgo}\n"
    )


def test_parse_go_version_m() -> None:
    info = nodeparts.parse_go_version_m(version_m("kubelet"))
    assert info.path == "k8s.io/kubernetes/cmd/kubelet"
    assert (info.module, info.module_version) == ("k8s.io/kubernetes", "v1.37.2")
    assert info.replaced == {"k8s.io/api": "k8s.io/api@v0.37.2"}
    assert info.settings["CGO_ENABLED"] == "0" and info.settings["-trimpath"] == "true"


def test_adoption_problems() -> None:
    staging = nodeparts.staging_modules(KUBE_GO_MOD)
    good = nodeparts.parse_go_version_m(version_m("kubelet"))
    assert nodeparts.adoption_problems("kubelet", good, staging) == []
    assert nodeparts.adoption_problems("kubeadm", good, staging) == [
        "main package 'k8s.io/kubernetes/cmd/kubelet', not 'k8s.io/kubernetes/cmd/kubeadm'"
    ]
    bad = nodeparts.parse_go_version_m(version_m("kubelet", replaced="k8s.io/api\tv0.36.0", cgo="1"))
    assert nodeparts.adoption_problems("kubelet", bad, staging) == [
        "k8s.io/api replaced by k8s.io/api@v0.36.0, not k8s.io/api@v0.37.2",
        "CGO_ENABLED=1, not 0",
    ]


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("Kubernetes v1.37.2\n", "v1.37.2"),
        ('{"clientVersion": {"gitVersion": "v1.37.2"}}', "v1.37.2"),
        ("", ""),
    ],
)
def test_reported_version(text: str, version: str) -> None:
    assert nodeparts.reported_version(text) == version


def fake_binaries(tmp_path: Path, version: str = "v1.37.2") -> tuple[Path, proc.Runner]:
    src = tmp_path / "spike"
    src.mkdir()
    for b in nodeparts.KUBE_BINARIES:
        (src / b).write_text(b)

    def run(argv: Sequence[str], *, timeout: float = 60, check: bool = True) -> proc.Completed:
        a = [str(x) for x in argv]
        if a[1:3] == ["version", "-m"]:
            return proc.Completed(tuple(a), 0, version_m(Path(a[3]).name, version=version), "")
        if Path(a[0]).name == "kubeadm":
            body = json.dumps(
                {"clientVersion": {"gitVersion": "v1.37.2", "buildDate": "2026-01-01T00:00:00Z"}}
            )
            return proc.Completed(tuple(a), 0, body, "")
        if Path(a[0]).name == "kubectl":
            return proc.Completed(tuple(a), 0, json.dumps({"clientVersion": {"gitVersion": "v1.37.2"}}), "")
        return proc.Completed(tuple(a), 0, "Kubernetes v1.37.2\n", "")

    return src, run


def test_adopted_binaries_make_build_kubernetes_a_no_op(tmp_path: Path) -> None:
    src, run = fake_binaries(tmp_path)
    cache = tmp_path / "cache"
    assert nodeparts.adopt_kubernetes(cache, src, KUBE_GO_MOD, go="go", run=run) == []
    out = nodeparts.parts_dir(cache) / "kubernetes"
    assert (out / "bin" / "kubelet").read_text() == "kubelet"
    assert "buildDate as built: 2026-01-01T00:00:00Z" in (out / "adopted-from").read_text()

    def no_build(argv: Sequence[str], *, timeout: float = 60, check: bool = True) -> proc.Completed:
        raise AssertionError(f"build_kubernetes ran {argv}")

    assert nodeparts.build_kubernetes(cache, KUBE_GO_MOD, go="go", run=no_build) == out / "bin"


@pytest.mark.negative
def test_binaries_of_another_version_are_not_adopted(tmp_path: Path) -> None:
    src, run = fake_binaries(tmp_path, version="v1.37.1")
    cache = tmp_path / "cache"
    problems = nodeparts.adopt_kubernetes(cache, src, KUBE_GO_MOD, go="go", run=run)
    assert problems and all("k8s.io/kubernetes@v1.37.1, not k8s.io/kubernetes@v1.37.2" in p for p in problems)
    assert not (nodeparts.parts_dir(cache) / "kubernetes" / "inputs").exists()
    (src / "kubelet").unlink()
    assert any(
        p.startswith("kubelet: missing in")
        for p in nodeparts.adopt_kubernetes(cache, src, KUBE_GO_MOD, go="go", run=run)
    )
