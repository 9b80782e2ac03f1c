"""Jaeger, built from its pinned Go module into the cache: the local mesh runs it, the kind image holds it.

``github.com/jaegertracing/jaeger`` at :data:`harness.versions.JAEGER_VERSION` (the Jaeger v2
binary, ``cmd/jaeger``). ``go install module@version`` is refused for it (its go.mod has replace
directives), so, like istiod, it is built in a small wrapper module: ``go get -tool
.../cmd/jaeger@VERSION`` then ``go build``. The binary lands in ``<cache>/jaeger-<version>/bin/jaeger``
with an ``install.json`` stamp; a second install with the same pin is a no-op. The Go build cache is
shared with istiod's build. How the local mesh runs it: :mod:`harness.backends.local.jaeger`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import proc
from harness.cache import locked_install, sha256_file
from harness.errors import StateError, ToolMissing
from harness.toolchain import gomod
from harness.versions import JAEGER_MODULE, JAEGER_VERSION

SETUP_HINT = "run ./scripts/setup (or `meshproof install`)"
BUILD_TIMEOUT = 3600  # a cold build on a busy 2-core machine
Progress = Callable[[str], None]


@dataclass(frozen=True)
class JaegerInstalled:
    version: str
    module: str
    binary: str
    sha256: str


def install_dir(cache_dir: Path) -> Path:
    return cache_dir / f"jaeger-{JAEGER_VERSION}"


def load(cache_dir: Path) -> JaegerInstalled:
    """The installed Jaeger of the pinned version; StateError if it is not installed."""
    stamp = install_dir(cache_dir) / "install.json"
    if not stamp.is_file():
        raise StateError(f"Jaeger {JAEGER_VERSION} is not installed in {stamp.parent}. Fix: {SETUP_HINT}")
    inst = JaegerInstalled(**json.loads(stamp.read_text()))
    if inst.version != JAEGER_VERSION or inst.module != JAEGER_MODULE:
        raise StateError(f"{stamp} holds another Jaeger than the pinned {JAEGER_VERSION}. Fix: {SETUP_HINT}")
    if not Path(inst.binary).is_file():
        raise StateError(f"{inst.binary} is missing. Fix: {SETUP_HINT}")
    return inst


def install(cache_dir: Path, progress: Progress | None = None, *, force: bool = False) -> JaegerInstalled:
    """Build the pinned Jaeger into the cache (a no-op when it is there already). Concurrent
    installs wait on one lock; whoever comes second finds the stamp and returns."""
    say = progress or (lambda _msg: None)
    root = install_dir(cache_dir)
    return locked_install(
        root,
        what=f"Jaeger {JAEGER_VERSION}",
        current=lambda: load(cache_dir),
        build=lambda: _build(root, say),
        say=say,
        force=force,
    )


def module_dir() -> Path:
    """Jaeger's module in Go's module cache (its Dockerfile and sampling file; downloaded if needed)."""
    go = gomod.find_go(needed_for="fetching Jaeger's module")
    return gomod.download(JAEGER_MODULE, JAEGER_VERSION, go=go, needed_for="the jaeger image").dir


def _build(root: Path, say: Progress) -> JaegerInstalled:
    go = gomod.find_go(needed_for="building Jaeger")
    bin_dir, build = root / "bin", root / "build"
    bin_dir.mkdir(parents=True, exist_ok=True)
    if build.exists():
        shutil.rmtree(build)
    build.mkdir(parents=True)
    (build / "go.mod").write_text(gomod.wrapper_go_mod("meshproof.local/jaeger", gomod.DEFAULT_DIRECTIVE))
    env = dict(gomod.BUILD_ENV)
    tool = f"{JAEGER_MODULE}/cmd/jaeger"
    say(f"fetching {JAEGER_MODULE}@{JAEGER_VERSION} (Jaeger)")
    proc.run([go, "get", "-tool", f"{tool}@{JAEGER_VERSION}"], cwd=build, env=env, timeout=BUILD_TIMEOUT)
    say("building jaeger — minutes on a cold cache")
    binary = bin_dir / "jaeger"
    ldflags = gomod.version_ldflags([(f"{JAEGER_MODULE}/internal/version.latestVersion", JAEGER_VERSION)])
    proc.run(gomod.build_argv(go, tool, binary, ldflags=ldflags), cwd=build, env=env, timeout=BUILD_TIMEOUT)
    got = proc.run([binary, "version"], timeout=60, check=False)
    if JAEGER_VERSION not in got.stdout + got.stderr:
        raise ToolMissing(
            f"jaeger {JAEGER_VERSION}", "tracing in the embedded mesh", f"{binary} reports {got}"
        )
    inst = JaegerInstalled(JAEGER_VERSION, JAEGER_MODULE, str(binary), sha256_file(binary))
    (root / "install.json").write_text(json.dumps(asdict(inst), indent=2))
    shutil.rmtree(build, ignore_errors=True)
    say(f"installed Jaeger {JAEGER_VERSION} in {root}")
    return inst
