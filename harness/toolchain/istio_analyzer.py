"""``meshproof-analyze``: Istio's validation and analyzers as one binary, built from the pinned module.

The program (``go/analyze/main.go``) runs what ``istioctl analyze --use-kube=false`` runs; what it
is asked and how its answers map back to the user's files is :mod:`harness.istio.analyzer`. It is
built from the same ``istio.io/istio`` module version as the embedded mesh's istiod (see
docs/BENCHMARKS.md for why this binary and not istioctl), into ``<cache>/istio-<label>/bin/``, on
first use or by ``meshproof install``, with a stamp of the module version and of its sources.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness import proc
from harness.cache import locked_install
from harness.errors import CommandFailed, ToolMissing
from harness.toolchain import gomod, istio
from harness.versions import ISTIO_RELEASES, IstioRelease

SOURCE_DIR = gomod.GO_SOURCES / "analyze"
BINARY = "meshproof-analyze"
SETUP_HINT = "run ./scripts/setup (or `meshproof install`)"

Progress = Callable[[str], None]


def _source_digest() -> str:
    return gomod.source_digest(SOURCE_DIR)


def binary_path(cache_dir: Path, istio_version: str) -> Path:
    return cache_dir / f"istio-{istio_version}" / "bin" / BINARY


def _stamp(cache_dir: Path, istio_version: str) -> Path:
    return cache_dir / f"istio-{istio_version}" / "analyze.json"


def installed(cache_dir: Path, istio_version: str) -> Path | None:
    """The built analyzer for this release and these sources, or None."""
    rel = ISTIO_RELEASES[istio_version]
    binary, stamp = binary_path(cache_dir, istio_version), _stamp(cache_dir, istio_version)
    try:
        info = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    if info.get("module_version") != rel.module_version or info.get("source_sha256") != _source_digest():
        return None
    return binary if binary.is_file() else None


def ensure(cache_dir: Path, istio_version: str, progress: Progress | None = None) -> Path:
    """The analyzer binary, built first if missing or stale (one build at a time per cache)."""
    return locked_install(
        cache_dir / f"istio-{istio_version}",
        what=f"{BINARY} (Istio {istio_version})",
        current=lambda: installed(cache_dir, istio_version),
        build=lambda: _build(
            cache_dir, istio_version, ISTIO_RELEASES[istio_version], progress or (lambda _m: None)
        ),
        lock_name="analyze.lock",
    )


def _build(cache_dir: Path, istio_version: str, rel: IstioRelease, say: Progress) -> Path:
    go = gomod.find_go(needed_for="building Istio's analyzer (meshproof-analyze)", how_to_get=SETUP_HINT)
    env = istio.build_env(rel)
    binary = binary_path(cache_dir, istio_version)
    binary.parent.mkdir(parents=True, exist_ok=True)
    say(f"building {BINARY} (Istio {rel.label} validation and analyzers) — minutes on a cold cache")
    with tempfile.TemporaryDirectory(prefix="meshproof-analyze-") as tmp:
        build = Path(tmp)
        for src in SOURCE_DIR.glob("*.go"):
            shutil.copy(src, build / src.name)
        (build / "go.mod").write_text(istio.go_mod(rel, "meshproof.local/analyze", gomod.DEFAULT_DIRECTIVE))
        try:
            proc.run([go, "mod", "tidy"], cwd=build, env=env, timeout=1800)
            out = build / BINARY
            proc.run(gomod.build_argv(go, ".", out, tags=istio.BUILD_TAGS), cwd=build, env=env, timeout=3600)
        except CommandFailed as exc:
            err = ToolMissing(BINARY, "validating configuration with Istio's own code", SETUP_HINT)
            err.add_note(f"the Go build failed: {exc.stderr.strip()[-600:]}")
            raise err from exc
        tmp_bin = binary.with_suffix(".tmp")
        shutil.copy(out, tmp_bin)
        os.chmod(tmp_bin, 0o755)
        os.replace(tmp_bin, binary)
    _stamp(cache_dir, istio_version).write_text(
        json.dumps({"module_version": rel.module_version, "source_sha256": _source_digest()}, indent=2)
    )
    say(f"built {binary}")
    return binary
