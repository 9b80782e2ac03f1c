"""The kind node image's pure parts: kubeadm's image list, the CNI config, the Dockerfiles; the kind
config's node options; the assembly's steps."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from harness import proc
from harness.backends.kube.kind import nodeimage as ni
from harness.backends.kube.kind.base import INPUTS_LABEL
from harness.backends.kube.kind.cli import CGROUP_V1_PATCH, NodeOptions, host_cgroup_v1, kind_config
from harness.errors import BackendError

LISTING = """registry.k8s.io/kube-apiserver:v1.37.2
registry.k8s.io/kube-controller-manager:v1.37.2
registry.k8s.io/kube-scheduler:v1.37.2
registry.k8s.io/kube-proxy:v1.37.2
registry.k8s.io/coredns/coredns:v1.14.6
registry.k8s.io/pause:3.10.2
registry.k8s.io/etcd:3.7.0-0
"""


def test_kubeadm_images_by_short_name() -> None:
    got = ni.kubeadm_images(LISTING)
    assert got["coredns"] == "registry.k8s.io/coredns/coredns:v1.14.6"
    assert got["etcd"] == "registry.k8s.io/etcd:3.7.0-0"
    assert set(got) == {*ni.CONTROL_PLANE, "kube-proxy", "coredns", "pause", "etcd"}


def test_kubeadm_images_names_what_is_missing() -> None:
    with pytest.raises(ValueError, match="names no etcd"):
        ni.kubeadm_images(LISTING.replace("registry.k8s.io/etcd:3.7.0-0", ""))


def test_split_ref_needs_a_tag() -> None:
    assert ni.split_ref("localhost:5000/x:1") == ("localhost:5000/x", "1")
    with pytest.raises(ValueError):
        ni.split_ref("localhost:5000/x")


def test_sandbox_image_from_kinds_containerd_config() -> None:
    cfg = '[plugins."io.containerd.grpc.v1.cri"]\n  # use fixed sandbox image\n  sandbox_image = "registry.k8s.io/pause:3.10"\n'
    assert ni.sandbox_image(cfg) == "registry.k8s.io/pause:3.10"
    assert ni.sandbox_image("version = 2\n") == ""


def test_pause_is_tagged_for_kubeadm_and_for_containerds_sandbox() -> None:
    imgs = {i.key: i for i in ni.component_images(ni.kubeadm_images(LISTING), "registry.k8s.io/pause:3.10")}
    assert imgs["pause"].names == ("registry.k8s.io/pause:3.10.2", "registry.k8s.io/pause:3.10")
    assert imgs["pause"].local == "meshproof.local/k8s/pause:3.10.2"
    assert imgs["etcd"].names == ("registry.k8s.io/etcd:3.7.0-0",)
    same = {i.key: i for i in ni.component_images(ni.kubeadm_images(LISTING), "registry.k8s.io/pause:3.10.2")}
    assert same["pause"].names == ("registry.k8s.io/pause:3.10.2",)


def test_cni_conflist_uses_the_plugins_kind_runtime_ships() -> None:
    conf = json.loads(ni.cni_conflist("10.9.0.0/16"))
    types = [p["type"] for p in conf["plugins"]]
    assert types == ["ptp", "portmap"]
    ptp = conf["plugins"][0]
    assert ptp["ipam"]["type"] == "host-local" and ptp["ipMasq"] is True
    assert ptp["ipam"]["ranges"] == [[{"subnet": "10.9.0.0/16"}]]


def test_dockerfiles() -> None:
    d = ni.binary_dockerfile(
        "meshproof.local/debian-base:bookworm", "kube-proxy", packages=("iptables", "conntrack")
    )
    assert d.splitlines()[0] == "FROM meshproof.local/debian-base:bookworm"
    assert "apt-get install -y --no-install-recommends iptables conntrack" in d
    assert 'ENTRYPOINT ["/usr/local/bin/kube-proxy"]' in d
    assert 'ENTRYPOINT ["/coredns"]' in ni.binary_dockerfile("b", "coredns", dest="")
    p = ni.pause_dockerfile()
    assert p.startswith("FROM scratch\n") and "USER 65535:65535" in p


def test_node_options_local_builds_the_node_official_does_not() -> None:
    built: list[str] = []

    def build() -> str:
        built.append("x")
        return "meshproof.local/kind-node:v1.37.2"

    local = ni.node_options("local", cgroup_v1=True, build_node=build)
    assert local == NodeOptions("meshproof.local/kind-node:v1.37.2", True, ni.POD_SUBNET, True)
    assert ni.node_options("official", cgroup_v1=False, build_node=build) == NodeOptions()
    assert built == ["x"]


# ---- the kind config ------------------------------------------------------------------------------
def test_kind_config_stock_has_no_node_changes() -> None:
    cfg = kind_config(41234)
    assert "networking" not in cfg and "kubeadmConfigPatches" not in cfg and "image" not in cfg["nodes"][0]


def test_kind_config_with_the_local_node_on_cgroup_v1() -> None:
    cfg = kind_config(
        41234, node=NodeOptions("img:1", own_cni=True, pod_subnet="10.9.0.0/16", cgroup_v1=True)
    )
    assert cfg["nodes"][0]["image"] == "img:1"
    assert cfg["networking"] == {"disableDefaultCNI": True, "podSubnet": "10.9.0.0/16"}
    assert cfg["kubeadmConfigPatches"] == [CGROUP_V1_PATCH]
    assert "failCgroupV1: false" in CGROUP_V1_PATCH and "kind: KubeletConfiguration" in CGROUP_V1_PATCH


def test_host_cgroup_v1_from_mounts() -> None:
    v1 = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n"
    v2 = "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"
    assert host_cgroup_v1(v1) is True
    assert host_cgroup_v1(v2) is False
    assert host_cgroup_v1("") is False


# ---- the assembly's steps, with a recording runner ---------------------------------------------------
class _Builder:
    def __init__(self, work: Path) -> None:
        self.work, self.docker = work, "/usr/bin/docker"

    def current(self, ref: str, inputs: str) -> bool:
        return False

    def buildkit_cli(self) -> str:
        return self.docker

    def debian_base(self) -> Any:
        raise AssertionError("not used by assemble")

    def kind_runtime(self) -> Any:
        raise AssertionError("not used by assemble")


def _assembly(tmp_path: Path, listed: str) -> tuple[ni.NodeImageBuild, list[list[str]]]:
    calls: list[list[str]] = []

    def run(argv: Sequence[str], *, timeout: float = 60, check: bool = True) -> proc.Completed:
        a = [str(x) for x in argv]
        calls.append(a)
        out = listed if a[-1].startswith("ctr --namespace=k8s.io images list") else ""
        return proc.Completed(tuple(a), 0, out, "")

    tools = ni.Tools(run, lambda _t: "", lambda _m: None, (), tmp_path / "kind")
    (tmp_path / "work").mkdir()
    return ni.NodeImageBuild(_Builder(tmp_path / "work"), tools), calls


IMAGES = ni.component_images(ni.kubeadm_images(LISTING), "registry.k8s.io/pause:3.10")
ALL_NAMES = "\n".join(n for i in IMAGES for n in i.names) + "\n"


def test_assembly_imports_tags_commits_and_removes_its_container(tmp_path: Path) -> None:
    b, calls = _assembly(tmp_path, ALL_NAMES)
    b.assemble(
        "meshproof.local/kind-node:v1.37.2", "meshproof.local/kind-runtime:v0.33.0", Path("/k"), IMAGES, "abc"
    )
    name = calls[0][calls[0].index("--name") + 1]
    assert calls[0][:2] == ["/usr/bin/docker", "run"] and "--entrypoint=sleep" in calls[0]
    assert calls[0][-2:] == ["meshproof.local/kind-runtime:v0.33.0", "infinity"]
    copied = [c[3] for c in calls if c[1] == "cp" and c[2].startswith("/k/")]
    assert copied == [f"{name}:/usr/bin/{b}" for b in ("kubeadm", "kubelet", "kubectl")]
    scripts = [c[-1] for c in calls if c[1] == "exec" and c[3:5] == ["bash", "-c"]]
    assert any("printf %s v1.37.2 > /kind/version" in s for s in scripts)
    assert any("images import" in s and "--no-unpack" in s for s in scripts)
    assert (
        "ctr --namespace=k8s.io images tag --force meshproof.local/k8s/pause:3.10.2 registry.k8s.io/pause:3.10"
        in scripts
    )
    assert any(c[1] == "cp" and c[3] == f"{name}:{ni.CNI_CONFIG_PATH}" for c in calls)
    commit = next(c for c in calls if c[1] == "commit")
    assert 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]' in commit
    assert f"LABEL {INPUTS_LABEL}=abc" in commit and commit[-2:] == [
        name,
        "meshproof.local/kind-node:v1.37.2",
    ]
    stop = next(i for i, c in enumerate(calls) if c[-1] == ni.STOP_CONTAINERD)
    assert stop < calls.index(commit)  # containerd stopped (its database flushed) before the commit
    assert calls[-1] == ["/usr/bin/docker", "rm", "-f", "-v", name]


@pytest.mark.negative
def test_assembly_refuses_to_commit_when_an_image_is_missing_in_the_node(tmp_path: Path) -> None:
    b, calls = _assembly(tmp_path, ALL_NAMES.replace("registry.k8s.io/pause:3.10\n", ""))
    with pytest.raises(BackendError, match=r"lacks registry.k8s.io/pause:3.10 after the import"):
        b.assemble("meshproof.local/kind-node:v1.37.2", "rt", Path("/k"), IMAGES, "abc")
    assert not any(c[1] == "commit" for c in calls)
    assert calls[-1][1:4] == ["rm", "-f", "-v"]  # the build container is removed anyway
