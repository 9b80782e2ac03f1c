"""Upgrade benchmark: build time of the second release, then upgrade-check in both modes.

Usage: .venv/bin/python bench/bench_upgrade.py [--cold-build] [--users 10] [--modes in-place,canary]
                                              [--no-suites]
  --cold-build  builds 1.30-dev into a temp meshproof cache with an empty Go build cache (the
                module cache is kept: downloads are not what this measures); minutes.
  --no-suites   the upgrade under load only (what each phase costs does not depend on the suites)
Prints one JSON document: build seconds, per mode the wall time and, for every phase, its
requests, failures, error-seconds, longest gap without a successful response and the fate of the
connections held across a proxy restart, and the report paths (docs/UPGRADES.md has the figures).
Never run from tests (no timed assertions there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FROM, TO = "1.30-dev", "1.31-dev"


def cold_build() -> dict[str, object]:
    root = Path(tempfile.mkdtemp(prefix="meshproof-bench-upgrade-"))
    env = dict(os.environ, GOCACHE=str(root / "gocache"), MESHPROOF_CACHE=str(root / "mp"))
    exe = Path(sys.executable).with_name("meshproof")
    t0 = time.monotonic()
    p = subprocess.run([str(exe), "install", "--istio", FROM], env=env, capture_output=True, text=True)
    took = time.monotonic() - t0
    shutil.rmtree(root, ignore_errors=True)
    return {"release": FROM, "cold_build_s": round(took, 1), "exit": p.returncode, "tail": p.stderr[-300:]}


def upgrade(mode: str, users: int, suites: bool = True) -> dict[str, object]:
    exe = Path(sys.executable).with_name("meshproof")
    state = Path(tempfile.mkdtemp(prefix="meshproof-bench-upgrade-state-"))
    argv = [str(exe), "upgrade-check", "--from", FROM, "--to", TO, "--mode", mode, "--users", str(users)]
    argv += [] if suites else ["--no-suites"]
    t0 = time.monotonic()
    p = subprocess.run([*argv, "--json", "--state", str(state)], capture_output=True, text=True)
    wall = time.monotonic() - t0
    try:
        doc = json.loads(p.stdout)
    except json.JSONDecodeError:
        return {"mode": mode, "exit": p.returncode, "error": (p.stdout + p.stderr)[-500:]}
    return {
        "mode": mode,
        "exit": p.returncode,
        "wall_s": round(wall, 1),
        "verdict": doc["verdict"],
        "reasons": doc["reasons"],
        "timings": doc["timings"],
        "totals": doc["totals"],
        "phases": [
            {k: ph[k] for k in ("phase", "wall_s", "requests", "failures", "error_seconds", "longest_gap_s")}
            | {"step_s": ph["detail"].get("step_s")}
            | {"held": {h["protocol"]: f"{h['fate']}: {h['evidence']}" for h in ph.get("held") or []}}
            for ph in doc["phases"]
        ],
        "config_diff": {k: len(v) if isinstance(v, list) else v for k, v in doc["config_diff"].items()},
        "report_dir": str(state / "upgrade"),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold-build", action="store_true")
    ap.add_argument("--users", type=int, default=10)
    ap.add_argument("--modes", default="in-place,canary")
    ap.add_argument("--no-suites", action="store_true")
    a = ap.parse_args()
    out: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()}
    }
    if a.cold_build:
        out["build"] = cold_build()
    out["commit"] = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    out["upgrades"] = [upgrade(m, a.users, not a.no_suites) for m in a.modes.split(",") if m]
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
