"""kind itself, built from its Go module into the cache (``go install sigs.k8s.io/kind@VERSION``).

A kind on PATH is used when it is the pinned version; otherwise the cached build is (built first
when missing: about a minute and a quarter on a cold module cache). :func:`kind_which` wraps a
``which`` so the kube backend and ``doctor`` find the cached kind without a PATH change.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from harness import proc
from harness.errors import CommandFailed, MeshproofError, ToolMissing
from harness.toolchain import gomod
from harness.versions import KIND_MODULE, KIND_VERSION, parse_version

GO_HINT = "install Go (see README), or put kind {v} on PATH"


def kind_dir(cache_dir: Path, version: str = KIND_VERSION) -> Path:
    return cache_dir / f"kind-{version}"


def kind_binary(cache_dir: Path, version: str = KIND_VERSION) -> Path:
    return kind_dir(cache_dir, version) / "bin" / "kind"


def kind_version(path: str, run: proc.Runner = proc.run) -> str:
    """``v0.33.0`` from ``kind version`` ("" when it does not run)."""
    try:
        out = run([path, "version"], timeout=30, check=False)
    except MeshproofError:
        return ""
    v = parse_version(out.stdout)
    return f"v{v}" if v and out.returncode == 0 else ""


def installed(cache_dir: Path, version: str = KIND_VERSION, run: proc.Runner = proc.run) -> Path | None:
    b = kind_binary(cache_dir, version)
    return b if b.is_file() and kind_version(str(b), run) == version else None


def install(
    cache_dir: Path,
    version: str = KIND_VERSION,
    *,
    run: proc.Runner | None = None,
    which: proc.Which = proc.which,
    prefix: Sequence[str] = (),
    say: Callable[[str], None] = lambda _m: None,
) -> Path:
    """The cached kind binary of ``version``, built with ``go install`` when missing."""
    runner = run or proc.run
    found = installed(cache_dir, version, runner)
    if found is not None:
        return found
    go = which("go")
    if not go:
        raise ToolMissing("go", f"building kind {version}", GO_HINT.format(v=version))
    target = kind_binary(cache_dir, version)
    target.parent.mkdir(parents=True, exist_ok=True)
    say(f"building kind {version} (go install {KIND_MODULE}@{version})")
    # GOBIN through env(1): the runner protocol carries no environment
    argv = [
        "env",
        f"GOBIN={target.parent}",
        "CGO_ENABLED=0",
        *prefix,
        go,
        "install",
        f"{KIND_MODULE}@{version}",
    ]
    try:
        runner(argv, timeout=1800)
    except CommandFailed as e:
        err = ToolMissing(f"kind {version}", "creating the kind cluster", GO_HINT.format(v=version))
        err.add_note(f"`go install {KIND_MODULE}@{version}` failed: {e.stderr.strip()[-600:]}")
        raise err from e
    if not target.is_file() or not os.access(target, os.X_OK):
        raise ToolMissing(f"kind {version}", "creating the kind cluster", GO_HINT.format(v=version))
    return target


def module_dir(
    version: str = KIND_VERSION, *, run: proc.Runner = proc.run, which: proc.Which = proc.which
) -> Path:
    """kind's module source in the Go module cache (downloaded when missing): its base-image files,
    Dockerfile and default node image are read from there at run time."""
    hint = GO_HINT.format(v=version)
    go = gomod.find_go(needed_for=f"reading kind {version}'s module", how_to_get=hint, which=which)
    return gomod.download(
        KIND_MODULE, version, go=go, needed_for="building the kind images", how_to_get=hint, run=run
    ).dir


def cached_module_dir(
    version: str = KIND_VERSION, *, run: proc.Runner = proc.run, which: proc.Which = proc.which
) -> Path | None:
    """kind's module when Go's module cache already holds it (None otherwise; never downloads)."""
    go = which("go")
    return gomod.cached_dir(KIND_MODULE, version, go=go, run=run) if go else None


def kind_which(cache_dir: Path, which: proc.Which, version: str = KIND_VERSION) -> proc.Which:
    """``which`` that answers "kind" with the cached build when there is one (PATH otherwise)."""

    def lookup(tool: str) -> str:
        if tool == "kind":
            b = kind_binary(cache_dir, version)
            if b.is_file():
                return str(b)
        return which(tool)

    return lookup
