"""``meshproof-sampler``, the traffic sampler's wire (Go, stdlib only).

Its source is ``go/sampler``; :class:`harness.traffic.client.Sampler` runs it as a subprocess that
sends each batch's requests and writes one record per response (the protocol is in its
``main.go``). Built into ``<cache>/bin/`` on first use or by ``meshproof install``, with a stamp of
its sources; the build takes seconds (Go's standard library only), a rebuild happens only when the
sources change.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from harness import proc
from harness.cache import locked_install
from harness.errors import CommandFailed, ToolMissing
from harness.settings import from_env
from harness.toolchain import gomod

SOURCE_DIR = gomod.GO_SOURCES / "sampler"
BINARY = "meshproof-sampler"
SETUP_HINT = "install Go (see README), then run ./scripts/setup (or `meshproof install`)"

Progress = Callable[[str], None]


def _source_digest() -> str:
    return gomod.source_digest(SOURCE_DIR, ("*.go", "go.mod"))


def _root(cache_dir: Path) -> Path:
    return cache_dir / "sampler"


def installed(cache_dir: Path) -> Path | None:
    """The built engine for these sources, or None."""
    root = _root(cache_dir)
    try:
        info = json.loads((root / "stamp.json").read_text())
    except (OSError, ValueError):
        return None
    binary = root / "bin" / BINARY
    if info.get("source_sha256") != _source_digest() or not binary.is_file():
        return None
    return binary


def ensure(cache_dir: Path | None = None, progress: Progress | None = None) -> Path:
    """The engine binary, built first if missing or stale (one build at a time per cache)."""
    cache = cache_dir if cache_dir is not None else from_env().cache_dir
    return locked_install(
        _root(cache),
        what=BINARY,
        current=lambda: installed(cache),
        build=lambda: _build(cache, progress or (lambda _m: None)),
        lock_name="build.lock",
    )


def _build(cache_dir: Path, say: Progress) -> Path:
    go = gomod.find_go(needed_for=f"building the traffic sampler ({BINARY})", how_to_get=SETUP_HINT)
    root = _root(cache_dir)
    binary = root / "bin" / BINARY
    binary.parent.mkdir(parents=True, exist_ok=True)
    say(f"building {BINARY} (the traffic sampler's HTTP client)")
    with tempfile.TemporaryDirectory(prefix="meshproof-sampler-", dir=binary.parent) as tmp:
        out = Path(tmp) / BINARY
        try:
            proc.run(
                gomod.build_argv(go, ".", out, ldflags="-s -w"),
                cwd=SOURCE_DIR,
                env=dict(gomod.BUILD_ENV),
                timeout=600,
            )
        except CommandFailed as exc:
            err = ToolMissing(BINARY, "sending the checks' traffic", SETUP_HINT)
            err.add_note(f"the Go build failed: {exc.stderr.strip()[-600:]}")
            raise err from exc
        os.replace(out, binary)
    (root / "stamp.json").write_text(json.dumps({"source_sha256": _source_digest()}, indent=2))
    say(f"built {binary}")
    return binary
