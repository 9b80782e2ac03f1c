"""Cold-install cost of Istio's validation: meshproof-analyze vs istioctl, both from the pinned module.

Both options are built after meshproof-istiod in one fresh Go build cache (the module cache is
the machine's, so downloads of modules istiod already needs are not counted; modules only
istioctl needs are downloaded inside the istioctl step and counted there). What a fresh machine
pays on top of the istiod build it does anyway is the incremental time of each step:

    1. meshproof-istiod (the local backend's launcher)          cold build cache
    2. meshproof-analyze (harness/toolchain/go/analyze)         incremental over 1
    3. istioctl (istio.io/istio/istioctl/cmd/istioctl)          incremental over 1 (fresh copy)

Then one validation of manifests/ with each binary (wall time per call).
Usage: .venv/bin/python bench/bench_validator.py   (minutes; prints one JSON line). Never run
from tests. The machine is shared: compare the steps of one run, not runs.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.istio import analyzer  # noqa: E402
from harness.istio.loader import load_paths  # noqa: E402
from harness.toolchain import istio_analyzer, istio_local  # noqa: E402
from harness.versions import DEFAULT_ISTIO, ISTIO_RELEASES  # noqa: E402

TAGS = "vtprotobuf,disable_pgv"


def _go(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    t0 = time.monotonic()
    p = subprocess.run(["go", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"go {' '.join(args)} failed in {cwd}: {p.stderr[-800:]}")
    return time.monotonic() - t0


def _module(dirpath: Path, name: str, version: str, sources: list[Path]) -> None:
    dirpath.mkdir(parents=True)
    for src in sources:
        shutil.copy(src, dirpath / src.name)
    (dirpath / "go.mod").write_text(f"module {name}\n\ngo 1.26\n\nrequire istio.io/istio {version}\n")


def main() -> int:
    rel = ISTIO_RELEASES[DEFAULT_ISTIO]
    root = Path(tempfile.mkdtemp(prefix="meshproof-bench-validator-"))
    env = dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=mod", GOCACHE=str(root / "gocache"))
    out: dict[str, object] = {"istio": rel.label, "module": rel.module_version}
    try:
        istiod = root / "istiod"
        _module(
            istiod,
            "meshproof.local/istiod",
            rel.module_version,
            [istio_local.LAUNCHER_SRC],
        )
        _go(["mod", "tidy"], istiod, env)
        out["istiod_cold_s"] = round(
            _go(["build", "-trimpath", f"-tags={TAGS}", "-o", "bin", "."], istiod, env), 1
        )
        shutil.copytree(root / "gocache", root / "gocache-istioctl")

        ana = root / "analyze"
        _module(
            ana, "meshproof.local/analyze", rel.module_version, sorted(istio_analyzer.SOURCE_DIR.glob("*.go"))
        )
        t_tidy = _go(["mod", "tidy"], ana, env)
        t_build = _go(["build", "-trimpath", f"-tags={TAGS}", "-o", "bin", "."], ana, env)
        out["analyze_incremental_s"] = round(t_tidy + t_build, 1)
        out["analyze_mb"] = round((ana / "bin").stat().st_size / 2**20, 1)

        ctl = root / "istioctl"
        env_ctl = dict(env, GOCACHE=str(root / "gocache-istioctl"))
        _module(ctl, "meshproof.local/istioctl", rel.module_version, [])
        (ctl / "tools.go").write_text(
            '//go:build tools\n\npackage tools\n\nimport _ "istio.io/istio/istioctl/cmd/istioctl"\n'
        )
        t_tidy = _go(["mod", "tidy"], ctl, env_ctl)
        t_build = _go(
            ["build", "-trimpath", f"-tags={TAGS}", "-o", "bin", "istio.io/istio/istioctl/cmd/istioctl"],
            ctl,
            env_ctl,
        )
        out["istioctl_incremental_s"] = round(t_tidy + t_build, 1)
        out["istioctl_mb"] = round((ctl / "bin").stat().st_size / 2**20, 1)

        docs = load_paths([ROOT / "manifests"])
        request = json.dumps(analyzer.request_for(docs, ()))
        t0 = time.monotonic()
        subprocess.run([ana / "bin"], input=request, capture_output=True, text=True, check=True)
        out["analyze_call_s"] = round(time.monotonic() - t0, 2)
        t0 = time.monotonic()
        subprocess.run(
            [ctl / "bin", "analyze", "--use-kube=false", "-o", "json", "-A", str(ROOT / "manifests")],
            capture_output=True,
            text=True,
        )
        out["istioctl_analyze_call_s"] = round(time.monotonic() - t0, 2)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(root)], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
