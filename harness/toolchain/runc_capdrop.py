"""``runc-capdrop``, the runc wrapper for hosts whose capability bounding set is not full (Go, stdlib only).

Its source is ``go/runc-capdrop``; the Docker engine (:mod:`harness.backends.kube.engine`) registers it as
dockerd's default runtime when the bounding set lacks ``CAP_SYS_RESOURCE``, and kind-runtime puts it in
front of the node's runc. Built in seconds, with the real runc's path as a link-time field.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness import proc
from harness.toolchain import gomod

SOURCE_DIR = gomod.GO_SOURCES / "runc-capdrop"


def build(dest: Path, *, real_runc: str, go: str = "") -> Path:
    """Build ``runc-capdrop`` into ``dest``, execing ``real_runc`` (stdlib Go, seconds)."""
    go = go or gomod.find_go(
        needed_for="building the runc capability wrapper", how_to_get="install Go (see README)"
    )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    ldflags = f"-s -w {gomod.version_ldflags([('main.realRunc', real_runc)])}"
    proc.run(
        gomod.build_argv(go, ".", tmp, ldflags=ldflags),
        cwd=SOURCE_DIR,
        env=dict(gomod.BUILD_ENV),
        timeout=600,
    )
    os.replace(tmp, dest)
    return dest
