"""The kind node image's pure parts: kubeadm's image list, etcd's wrapper module, the CNI config, the
Dockerfiles; the kind config's node options; adopting Kubernetes binaries built elsewhere."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from harness import proc
from harness.backends.kube import nodeimage as ni
from harness.backends.kube import nodeparts
from harness.backends.kube.images import INPUTS_LABEL
from harness.backends.kube.kind import CGROUP_V1_PATCH, NodeOptions, host_cgroup_v1, kind_config
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


@pytest.mark.parametrize(
    ("tag", "version"), [("3.7.0-0", "v3.7.0"), ("3.5.21-1", "v3.5.21"), ("v3.6.1", "v3.6.1")]
)
def test_etcd_module_version(tag: str, version: str) -> None:
    assert ni.etcd_module_version(tag) == version


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
    text = ni.wrapper_go_mod(ni.ETCD_MODULE, "v3.7.0", ETCD_GO_MOD)
    assert "require go.etcd.io/etcd/server/v3 v3.7.0\n" in text
    assert "go 1.26\n" in text
    for m in ("go.etcd.io/etcd/api/v3", "go.etcd.io/etcd/client/pkg/v3", "go.etcd.io/etcd/pkg/v3"):
        assert f"replace {m} => {m} v3.7.0\n" in text
    assert "example.com/fork" not in text  # a versioned replace is the module's own business


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


def test_pause_compile_line_is_the_makefiles() -> None:
    argv = ni.pause_cc_argv("/usr/bin/gcc", Path("/m/pause.c"), Path("/o/pause"), "3.10.2", "v1.37.2")
    assert argv == ["/usr/bin/gcc", "-Os", "-Wall", "-Werror", "-static", "-DVERSION=v3.10.2-v1.37.2", "-o",
                    "/o/pause", "/m/pause.c"]  # fmt: skip


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
