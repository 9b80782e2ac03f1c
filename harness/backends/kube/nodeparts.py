"""The binaries a kind node image is assembled from, built from Go modules (issue #11, step kind-node).

Two groups, both built with ``go install``/``go build`` into ``<cache>/kind-node-<k8s version>/bin``:

- **The runtime** kind's ``images/base/Dockerfile`` clones and builds with git: containerd (``containerd``,
  ``ctr``, ``containerd-shim-runc-v2``), runc (cgo, seccomp), crictl and four CNI plugins. Their versions are
  the ``ARG`` defaults of that Dockerfile (read from kind's module at run time, so a kind bump moves them);
  none of their go.mod files has replace directives, so ``go install module/cmd@version`` builds each.
- **Kubernetes** (kubeadm, kubelet, kubectl, kube-apiserver, kube-controller-manager, kube-scheduler,
  kube-proxy) from ``k8s.io/kubernetes``: its go.mod points the staging modules at ``./staging/...``, which
  a module download does not have, so a wrapper module requires it and replaces every staging module by
  its published ``v0.<minor>.<patch>``. kubeadm and kind parse the version, so the ``-ldflags -X`` fields of
  ``k8s.io/component-base/version`` (and client-go's copy) are set as Kubernetes' own build sets them.

What to build and with which flags, and the build calls (cached by an inputs stamp), live here; the node
image that uses them is still planned (see docs/KIND.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import proc
from harness.versions import KUBERNETES_VERSION

# ---- the runtime (versions from kind's Dockerfile) ---------------------------------------------

_ARG = re.compile(r'^\s*ARG\s+([A-Z0-9_]+)="?([^"\s]*)"?\s*$', re.MULTILINE)


def dockerfile_arg_defaults(text: str) -> dict[str, str]:
    """``ARG NAME="value"`` defaults of a Dockerfile (the last one wins; ARGs without a default are left out)."""
    return {name: value for name, value in _ARG.findall(text) if value}


@dataclass(frozen=True)
class GoPart:
    """One ``go install`` of packages of one module at one version."""

    module: str
    version: str
    packages: tuple[str, ...]  # package paths inside the module ("" = the module root)
    cgo: bool = False
    tags: tuple[str, ...] = ()

    def targets(self) -> list[str]:
        return [f"{self.module}{'/' + p if p else ''}@{self.version}" for p in self.packages]

    def binaries(self) -> list[str]:
        return [(p or self.module).rsplit("/", 1)[-1] for p in self.packages]


def runtime_parts(kind_dockerfile: str) -> list[GoPart]:
    """containerd, runc, crictl and the CNI plugins at the versions kind's base image pins."""
    args = dockerfile_arg_defaults(kind_dockerfile)
    need = ("CONTAINERD_VERSION", "RUNC_VERSION", "CRICTL_VERSION", "CNI_PLUGINS_VERSION")
    missing = [n for n in need if n not in args]
    if missing:
        raise ValueError(f"kind's Dockerfile has no default for {', '.join(missing)}")
    containerd_tags = tuple(args.get("BUILDTAGS", "no_aufs no_zfs no_btrfs no_devmapper").split())
    return [
        GoPart(
            "github.com/containerd/containerd/v2",
            args["CONTAINERD_VERSION"],
            ("cmd/containerd", "cmd/ctr", "cmd/containerd-shim-runc-v2"),
            cgo=True,
            tags=containerd_tags,
        ),
        GoPart("github.com/opencontainers/runc", args["RUNC_VERSION"], ("",), cgo=True, tags=("seccomp",)),
        GoPart("sigs.k8s.io/cri-tools", args["CRICTL_VERSION"], ("cmd/crictl",)),
        GoPart(
            "github.com/containernetworking/plugins",
            args["CNI_PLUGINS_VERSION"],
            ("plugins/ipam/host-local", "plugins/main/loopback", "plugins/main/ptp", "plugins/meta/portmap"),
        ),
    ]


def go_install_argv(go: str, part: GoPart) -> list[str]:
    """``env GOBIN=... CGO_ENABLED=... go install [-tags ...] targets`` (GOBIN is set by the caller's env)."""
    argv = ["env", f"CGO_ENABLED={1 if part.cgo else 0}", go, "install", "-trimpath"]
    if part.tags:
        argv += ["-tags", " ".join(part.tags)]
    return argv + part.targets()


# ---- Kubernetes --------------------------------------------------------------------------------
KUBERNETES_MODULE = "k8s.io/kubernetes"
KUBE_BINARIES = (
    "kubeadm",
    "kubelet",
    "kubectl",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
)
_STAGING = re.compile(r"^\s*(?:replace\s+)?(k8s\.io/[A-Za-z0-9._-]+)\s+=>\s+\./staging/", re.MULTILINE)
_GO = re.compile(r"^go\s+(\S+)\s*$", re.MULTILINE)


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The modules k8s.io/kubernetes' go.mod replaces by ./staging/... directories."""
    return sorted(set(_STAGING.findall(kubernetes_go_mod)))


def staging_version(kubernetes_version: str) -> str:
    """``v1.37.2`` -> ``v0.37.2``: the published version of every staging module of that release."""
    m = re.fullmatch(r"v1\.(\d+)\.(\d+)", kubernetes_version)
    if not m:
        raise ValueError(f"not a Kubernetes release version: {kubernetes_version!r} (want v1.MINOR.PATCH)")
    return f"v0.{m.group(1)}.{m.group(2)}"


def wrapper_go_mod(kubernetes_go_mod: str, version: str = KUBERNETES_VERSION) -> str:
    """go.mod of a module that builds Kubernetes' commands at ``version`` from published modules."""
    m = _GO.search(kubernetes_go_mod)
    go = m.group(1) if m else "1.26.0"
    staged = staging_version(version)
    lines = [f"module meshproof.local/k8s\n\ngo {go}\n\nrequire {KUBERNETES_MODULE} {version}\n"]
    lines += [f"replace {mod} => {mod} {staged}\n" for mod in staging_modules(kubernetes_go_mod)]
    return "".join(lines[:1]) + "\n" + "".join(lines[1:])


def version_ldflags(version: str = KUBERNETES_VERSION, commit: str = "0" * 40, build_date: str = "") -> str:
    """The ``-X`` flags Kubernetes' build sets (hack/lib/version.sh): kubeadm and kind parse gitVersion."""
    m = re.fullmatch(r"v(\d+)\.(\d+)\.\d+", version)
    if not m:
        raise ValueError(f"not a Kubernetes release version: {version!r}")
    fields = {
        "gitVersion": version,
        "gitMajor": m.group(1),
        "gitMinor": m.group(2),
        "gitCommit": commit,
        "gitTreeState": "clean",
        "buildDate": build_date or "1970-01-01T00:00:00Z",
    }
    flags = [
        f"-X {pkg}.{k}={v}"
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for k, v in fields.items()
    ]
    return " ".join(["-s", "-w", *flags])


def kube_build_argv(go: str, out_dir: str, binary: str, version: str = KUBERNETES_VERSION) -> list[str]:
    """``go build`` of one Kubernetes command inside the wrapper module."""
    return [
        "env",
        "CGO_ENABLED=0",
        "GOFLAGS=-mod=mod",
        go,
        "build",
        "-trimpath",
        "-ldflags",
        version_ldflags(version),
        "-o",
        f"{out_dir}/{binary}",
        f"{KUBERNETES_MODULE}/cmd/{binary}",
    ]


# ---- building (into <cache>/kind-node-<version>/) ------------------------------------------------
def parts_dir(cache_dir: Path, version: str = KUBERNETES_VERSION) -> Path:
    return cache_dir / f"kind-node-{version}"


Progress = Callable[[str], None]


def _stamp_ok(stamp: Path, inputs: str, binaries: Sequence[Path]) -> bool:
    try:
        return stamp.read_text() == inputs and all(b.is_file() for b in binaries)
    except OSError:
        return False


def build_runtime(
    cache_dir: Path,
    kind_dockerfile: str,
    *,
    go: str,
    run: proc.Runner = proc.run,
    prefix: Sequence[str] = (),
    say: Progress = lambda _m: None,
) -> Path:
    """containerd, runc, crictl and the CNI plugins into ``<parts>/runtime/bin`` (skipped when current)."""
    out = parts_dir(cache_dir) / "runtime"
    parts = runtime_parts(kind_dockerfile)
    binaries = [out / "bin" / b for p in parts for b in p.binaries()]
    inputs = "\n".join(t for p in parts for t in p.targets())
    if _stamp_ok(out / "inputs", inputs, binaries):
        return out / "bin"
    (out / "bin").mkdir(parents=True, exist_ok=True)
    for p in parts:
        say(f"building {', '.join(p.binaries())} ({p.module}@{p.version})")
        argv = go_install_argv(go, p)
        run([argv[0], f"GOBIN={out / 'bin'}", *argv[1:2], *prefix, *argv[2:]], timeout=3600)
    (out / "inputs").write_text(inputs)
    return out / "bin"


def build_kubernetes(
    cache_dir: Path,
    kubernetes_go_mod: str,
    *,
    go: str,
    version: str = KUBERNETES_VERSION,
    run: proc.Runner = proc.run,
    prefix: Sequence[str] = (),
    say: Progress = lambda _m: None,
) -> Path:
    """The Kubernetes commands of ``version`` into ``<parts>/kubernetes/bin`` (skipped when current).

    ``go -C`` runs each build inside the wrapper module (the runner takes no working directory);
    ``go mod download`` of the pinned module is the caller's (its go.mod text is the input here).
    """
    out = parts_dir(cache_dir, version) / "kubernetes"
    src, bin_dir = out / "src", out / "bin"
    binaries = [bin_dir / b for b in KUBE_BINARIES]
    gomod = wrapper_go_mod(kubernetes_go_mod, version)
    inputs = gomod + version_ldflags(version)
    if _stamp_ok(out / "inputs", inputs, binaries):
        return bin_dir
    src.mkdir(parents=True, exist_ok=True)
    bin_dir.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(gomod)
    say(f"resolving {KUBERNETES_MODULE}@{version} with its staging modules at {staging_version(version)}")
    run(["env", "GOFLAGS=-mod=mod", *prefix, go, "-C", str(src), "get", f"{KUBERNETES_MODULE}/cmd/kubelet@{version}"],
        timeout=3600)  # fmt: skip
    for b in KUBE_BINARIES:
        say(f"building {b} {version} (minutes each on a cold build cache)")
        argv = kube_build_argv(go, str(bin_dir), b, version)
        i = argv.index(go)
        run([*argv[:i], *prefix, go, "-C", str(src), *argv[i + 1 :]], timeout=5400)
    (out / "inputs").write_text(inputs)
    return bin_dir
