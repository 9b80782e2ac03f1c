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

- **The images kubeadm names**, their binaries: etcd (``go.etcd.io/etcd/server/v3`` at the version kubeadm
  names, in a wrapper module: etcd's go.mod replaces its sibling modules by ``../`` paths, each replaced here
  by its published copy at the same version), CoreDNS (``go install``) and pause (``build/pause/linux/pause.c``
  of ``k8s.io/kubernetes``, compiled static with gcc as its Makefile does), into ``<parts>/images/``.

What to build and with which flags, and the build calls (cached by an inputs stamp), live here; the node
image that holds them is assembled by :mod:`harness.backends.kube.kind.nodeimage` (see docs/KIND.md).
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import proc
from harness.toolchain import gomod
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
    staged = staging_version(version)
    return gomod.wrapper_go_mod(
        "meshproof.local/k8s",
        gomod.go_directive(kubernetes_go_mod, "1.26.0"),
        (KUBERNETES_MODULE, version),
        [(mod, staged) for mod in staging_modules(kubernetes_go_mod)],
    )


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
    flags = gomod.version_ldflags(
        [
            (f"{pkg}.{k}", v)
            for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
            for k, v in fields.items()
        ]
    )
    return f"-s -w {flags}"


def kube_build_argv(
    go: str,
    out_dir: str,
    binary: str,
    version: str = KUBERNETES_VERSION,
    *,
    src: str = "",
    prefix: Sequence[str] = (),
) -> list[str]:
    """``go build`` of one Kubernetes command inside the wrapper module (``go -C src``: the runner
    takes no working directory, nor an environment: ``env`` sets it)."""
    return [
        *gomod.env_argv(gomod.BUILD_ENV),
        *prefix,
        *gomod.build_argv(
            go,
            f"{KUBERNETES_MODULE}/cmd/{binary}",
            f"{out_dir}/{binary}",
            ldflags=version_ldflags(version),
            chdir=src,
        ),
    ]


# ---- building (into <cache>/kind-node-<version>/) ------------------------------------------------
def parts_dir(cache_dir: Path, version: str = KUBERNETES_VERSION) -> Path:
    return cache_dir / f"kind-node-{version}"


Progress = Callable[[str], None]


def _stamp_ok(stamp: Path, inputs: str, binaries: Sequence[Path]) -> bool:
    """Whether ``stamp`` says these ``inputs`` were built and every binary is there."""
    try:
        return stamp.read_text() == inputs and all(b.is_file() for b in binaries)
    except OSError:
        return False


def _module_dir(go: str, module: str, version: str, run: proc.Runner) -> Path:
    """A module's directory in Go's module cache (downloaded when missing)."""
    return gomod.download(
        module, version, go=go, needed_for="building the kind node's parts", run=run, timeout=1800
    ).dir


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
        run(kube_build_argv(go, str(bin_dir), b, version, src=str(src), prefix=prefix), timeout=5400)
    (out / "inputs").write_text(inputs)
    return bin_dir


def kubernetes_binaries(
    cache_dir: Path,
    *,
    go: str,
    version: str = KUBERNETES_VERSION,
    run: proc.Runner = proc.run,
    prefix: Sequence[str] = (),
    say: Progress = lambda _m: None,
) -> Path:
    """:func:`build_kubernetes`'s output for the pinned ``k8s.io/kubernetes``; binaries an earlier spike
    built in ``<cache>/k8s-<version>/bin`` are adopted first when they pass :func:`adopt_kubernetes`'s
    checks."""
    kubernetes_go_mod = (_module_dir(go, KUBERNETES_MODULE, version, run) / "go.mod").read_text()
    spike = cache_dir / f"k8s-{version}" / "bin"
    stamp = parts_dir(cache_dir, version) / "kubernetes" / "inputs"
    if spike.is_dir() and not stamp.is_file():
        problems = adopt_kubernetes(
            cache_dir, spike, kubernetes_go_mod, go=go, version=version, run=run, say=say
        )
        for p in problems:
            say(f"not adopting {spike}: {p}")
    return build_kubernetes(
        cache_dir, kubernetes_go_mod, go=go, version=version, run=run, prefix=prefix, say=say
    )


# ---- adopting binaries built elsewhere (the spike's ~/.cache/meshproof/k8s-<version>/bin) -------
@dataclass(frozen=True)
class GoBuildInfo:
    """What ``go version -m BINARY`` says a Go binary was built from."""

    path: str  # the main package
    module: str
    module_version: str
    replaced: dict[str, str]  # module -> the module@version that replaced it
    settings: dict[str, str]  # build settings (CGO_ENABLED, -trimpath, ...)


def parse_go_version_m(text: str) -> GoBuildInfo:
    """Parse ``go version -m`` output (tab-separated lines: path, mod, dep, =>, build)."""
    path = module = module_version = ""
    replaced: dict[str, str] = {}
    settings: dict[str, str] = {}
    last_dep = ""
    for line in text.splitlines():
        f = line.strip().split("\t")
        if f[0] == "path" and len(f) > 1:
            path = f[1]
        elif f[0] == "mod" and len(f) > 2:
            module, module_version = f[1], f[2]
        elif f[0] == "dep" and len(f) > 1:
            last_dep = f[1]
        elif f[0] == "=>" and len(f) > 2 and last_dep:
            replaced[last_dep] = f"{f[1]}@{f[2]}"
        elif f[0] == "build" and len(f) > 1:
            key, _, value = f[1].partition("=")
            settings[key] = value
    return GoBuildInfo(path, module, module_version, replaced, settings)


def adoption_problems(
    binary: str, info: GoBuildInfo, staging: Sequence[str], version: str = KUBERNETES_VERSION
) -> list[str]:
    """Why a binary is not what :func:`build_kubernetes` would build for ``version`` (empty: it is).

    Compared: the main package, k8s.io/kubernetes' version, every replacement (each must be a staging
    module replaced by itself at the published v0.x.y, and every staging module the binary uses must be
    replaced), CGO_ENABLED=0 and -trimpath. The ``-ldflags`` are not in the build info under -trimpath:
    the version fields are checked by running the binary (:func:`reported_version`).
    """
    want_path = f"{KUBERNETES_MODULE}/cmd/{binary}"
    staged = staging_version(version)
    out = []
    if info.path != want_path:
        out.append(f"main package {info.path!r}, not {want_path!r}")
    if (info.module, info.module_version) != (KUBERNETES_MODULE, version):
        out.append(f"module {info.module}@{info.module_version}, not {KUBERNETES_MODULE}@{version}")
    for mod, by in sorted(info.replaced.items()):
        if mod not in staging or by != f"{mod}@{staged}":
            out.append(f"{mod} replaced by {by}, not {mod}@{staged}")
    if info.settings.get("CGO_ENABLED") != "0":
        out.append(f"CGO_ENABLED={info.settings.get('CGO_ENABLED', '?')}, not 0")
    if info.settings.get("-trimpath") != "true":
        out.append("built without -trimpath")
    if not info.replaced:
        out.append("no staging module replaced (not built in the wrapper module)")
    return out


def version_argv(binary: str) -> list[str]:
    """The arguments that make a Kubernetes command print its version."""
    if binary == "kubeadm":
        return ["version", "-o", "json"]
    if binary == "kubectl":
        return ["version", "--client", "-o", "json"]
    return ["--version"]


def reported_version(text: str) -> str:
    """``v1.37.2`` from ``--version`` ("Kubernetes v1.37.2") or a ``version -o json`` text ("" if none)."""
    m = re.search(r'"gitVersion":\s*"([^"]+)"', text) or re.search(r"Kubernetes (v\S+)", text)
    return m.group(1) if m else ""


def adopt_kubernetes(
    cache_dir: Path,
    source_bin: Path,
    kubernetes_go_mod: str,
    *,
    go: str,
    version: str = KUBERNETES_VERSION,
    run: proc.Runner = proc.run,
    say: Progress = lambda _m: None,
) -> list[str]:
    """Take Kubernetes binaries built elsewhere as :func:`build_kubernetes`'s output, after checking them.

    Every binary of :data:`KUBE_BINARIES` must be in ``source_bin``, have the build info
    :func:`adoption_problems` expects and report ``version`` when run. Only then are they copied into
    ``<parts>/kubernetes/bin`` and the inputs stamp written (with ``adopted-from`` naming the source),
    so :func:`build_kubernetes` skips its build. Returns the problems found (nothing adopted unless empty).
    """
    staging = staging_modules(kubernetes_go_mod)
    problems: list[str] = []
    build_date = ""
    for b in KUBE_BINARIES:
        src = source_bin / b
        if not src.is_file():
            problems.append(f"{b}: missing in {source_bin}")
            continue
        info = parse_go_version_m(run([go, "version", "-m", str(src)], timeout=60).stdout)
        problems += [f"{b}: {p}" for p in adoption_problems(b, info, staging, version)]
        out = run([str(src), *version_argv(b)], timeout=60, check=False)
        seen = reported_version(out.stdout + out.stderr)
        if seen != version:
            problems.append(f"{b}: reports version {seen or '(none)'!r}, not {version}")
        m = re.search(r'"buildDate":\s*"([^"]*)"', out.stdout)
        build_date = m.group(1) if m else build_date
    if problems:
        return problems
    out_dir = parts_dir(cache_dir, version) / "kubernetes"
    (out_dir / "bin").mkdir(parents=True, exist_ok=True)
    (out_dir / "src").mkdir(parents=True, exist_ok=True)
    gomod = wrapper_go_mod(kubernetes_go_mod, version)
    (out_dir / "src" / "go.mod").write_text(gomod)
    for b in KUBE_BINARIES:
        say(f"adopting {source_bin / b}")
        shutil.copy2(source_bin / b, out_dir / "bin" / b)
    # the one -X field that may differ: the build date (not in the stamp's comparison of go.mod + flags)
    (out_dir / "adopted-from").write_text(f"{source_bin}\nbuildDate as built: {build_date or '?'}\n")
    (out_dir / "inputs").write_text(gomod + version_ldflags(version))
    return []


# ---- the binaries of the images kubeadm names (into <parts>/images/) -----------------------------------
ETCD_MODULE = "go.etcd.io/etcd/server/v3"
COREDNS_MODULE = "github.com/coredns/coredns"


def images_dir(cache_dir: Path, version: str = KUBERNETES_VERSION) -> Path:
    return parts_dir(cache_dir, version) / "images"


def etcd_module_version(tag: str) -> str:
    """``3.7.0-0`` (the image tag kubeadm names: version and image revision) -> ``v3.7.0``."""
    m = re.fullmatch(r"v?(\d+\.\d+\.\d+)(?:-\d+)?", tag)
    if not m:
        raise ValueError(f"not an etcd image tag: {tag!r}")
    return f"v{m.group(1)}"


_LOCAL_REPLACE = re.compile(r"^\s*(?:replace\s+)?(\S+)\s+=>\s+\.\.?/", re.MULTILINE)


def local_replaces(go_mod: str) -> list[str]:
    """Modules a go.mod replaces by relative directories (``=> ../api``)."""
    return sorted(set(_LOCAL_REPLACE.findall(go_mod)))


def sibling_wrapper_go_mod(module: str, version: str, module_go_mod: str) -> str:
    """go.mod of a module that builds ``module@version``, its ``../`` siblings at their published ``version``."""
    return gomod.wrapper_go_mod(
        f"meshproof.local/{module.split('/')[0]}",
        gomod.go_directive(module_go_mod),
        (module, version),
        [(r, version) for r in local_replaces(module_go_mod)],
    )


def pause_cc_argv(gcc: str, source: Path, out: Path, tag: str, kubernetes_version: str) -> list[str]:
    """build/pause/Makefile's compile line (``-Os -Wall -Werror -static -DVERSION=...``)."""
    return [gcc, "-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{tag}-{kubernetes_version}", "-o", str(out),
            str(source)]  # fmt: skip


def build_etcd(
    parts: Path, version: str, *, go: str, run: proc.Runner, prefix: Sequence[str] = (), say: Progress
) -> Path:
    """``etcd`` of ``go.etcd.io/etcd/server/v3@version`` into ``<parts>/etcd/bin`` (skipped when current)."""
    out = parts / "etcd"
    wrapper = sibling_wrapper_go_mod(
        ETCD_MODULE, version, (_module_dir(go, ETCD_MODULE, version, run) / "go.mod").read_text()
    )
    binary = out / "bin" / "etcd"
    if _stamp_ok(out / "inputs", wrapper, [binary]):
        return binary
    (out / "src").mkdir(parents=True, exist_ok=True)
    (out / "src" / "go.mod").write_text(wrapper)
    say(f"building etcd {version} ({ETCD_MODULE}, siblings at {version})")
    run(["env", "GOFLAGS=-mod=mod", *prefix, go, "-C", str(out / "src"), "get", f"{ETCD_MODULE}@{version}"],
        timeout=1800)  # fmt: skip
    build = gomod.build_argv(go, ETCD_MODULE, binary, chdir=out / "src")
    run([*gomod.env_argv(gomod.BUILD_ENV), *prefix, *build], timeout=3600)
    (out / "inputs").write_text(wrapper)
    return binary


def build_coredns(
    parts: Path, version: str, *, go: str, run: proc.Runner, prefix: Sequence[str] = (), say: Progress
) -> Path:
    """``coredns`` of ``github.com/coredns/coredns@version`` into ``<parts>/coredns/bin``."""
    out = parts / "coredns"
    part = GoPart(COREDNS_MODULE, version, ("",))
    binary = out / "bin" / "coredns"
    inputs = "\n".join(part.targets())
    if _stamp_ok(out / "inputs", inputs, [binary]):
        return binary
    (out / "bin").mkdir(parents=True, exist_ok=True)
    say(f"building coredns {version} ({COREDNS_MODULE})")
    argv = go_install_argv(go, part)
    run([argv[0], f"GOBIN={out / 'bin'}", argv[1], *prefix, *argv[2:]], timeout=3600)
    (out / "inputs").write_text(inputs)
    return binary


def build_pause(
    parts: Path,
    tag: str,
    *,
    go: str,
    gcc: str,
    run: proc.Runner,
    prefix: Sequence[str] = (),
    kubernetes_version: str = KUBERNETES_VERSION,
    say: Progress,
) -> Path:
    """pause from ``k8s.io/kubernetes@<version>``'s build/pause/linux/pause.c, static (needs libc6-dev)."""
    out = parts / "pause"
    source = _module_dir(go, KUBERNETES_MODULE, kubernetes_version, run) / "build/pause/linux/pause.c"
    binary = out / "bin" / "pause"
    argv = pause_cc_argv(gcc, source, binary, tag, kubernetes_version)
    inputs = " ".join(argv[1:-3]) + "\n" + hashlib.sha256(source.read_bytes()).hexdigest()
    if _stamp_ok(out / "inputs", inputs, [binary]):
        return binary
    (out / "bin").mkdir(parents=True, exist_ok=True)
    say(f"compiling pause {tag} (gcc -static)")
    run([*prefix, *argv], timeout=600)
    (out / "inputs").write_text(inputs)
    return binary
