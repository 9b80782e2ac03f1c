"""Cold install time of the embedded mesh: empty Go module and build caches, empty meshproof cache.

Usage: .venv/bin/python bench/bench_install.py   (downloads the Istio module graph; minutes)
Prints one JSON line. Never run from tests.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="meshproof-bench-install-"))
    env = dict(os.environ)
    env.update(
        GOMODCACHE=str(root / "gomod"), GOCACHE=str(root / "gocache"), MESHPROOF_CACHE=str(root / "mp")
    )
    exe = Path(sys.executable).with_name("meshproof")
    t0 = time.monotonic()
    p = subprocess.run([str(exe), "install"], env=env, capture_output=True, text=True)
    cold = time.monotonic() - t0
    t1 = time.monotonic()
    subprocess.run([str(exe), "install"], env=env, capture_output=True, text=True)
    warm = time.monotonic() - t1
    subprocess.run(["go", "clean", "-modcache"], env=env, capture_output=True)
    shutil.rmtree(root, ignore_errors=True)
    print(
        json.dumps(
            {
                "cold_install_s": round(cold, 1),
                "warm_install_s": round(warm, 2),
                "exit": p.returncode,
                "tail": p.stderr[-300:] if p.returncode else "",
            }
        )
    )
    return p.returncode


if __name__ == "__main__":
    sys.exit(main())
