"""What the kind node's binaries are built from: versions from kind's Dockerfile, Kubernetes' wrapper module and ldflags."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from harness import proc
from harness.backends.kube.nodeparts import (
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
