"""Fidelity of the local backend: the Envoy configuration istiod generates for every proxy of the
local mesh against the same manifests on a kind cluster, difference by difference.

Usage:
  .venv/bin/python bench/fidelity.py [--traffic-api istio|gateway-api|both] [--out DIR]
        [--local-state DIR] [--kind-state DIR] [--skip-kind]
  .venv/bin/python bench/fidelity.py --compare-only DIR     (the dumps an earlier run saved in DIR)

For each traffic API, each backend's mesh is brought up (``meshproof up --detach``; or the running
one of ``--local-state`` / ``--kind-state`` is used), every proxy's full ``/config_dump`` is read
through the backend's own admin access (``Workload.proxy_admin_url``: the local proxies' admin
ports, the kind pods' port-forwards) and saved under ``DIR/<backend>-<api>/``, and the mesh is
taken down again (kind: ``down --keep-cluster``, then ``kind delete cluster``, so that the command
can run in a kind slot; set ``MESHPROOF_KIND_CLUSTER``).

The comparison (:mod:`harness.upgrade.backenddiff`) pairs the proxies by role (one replica of each
Deployment, the ingress gateway), normalises what differs by construction (addresses, ports, node
ids, UIDs, versions, timestamps, certificates) and lists every remaining difference grouped by
Envoy resource type (bootstrap, listeners, clusters, routes, secrets), in ``DIR/fidelity.json``
and on stdout. docs/FIDELITY.md explains each one. Never run from tests (minutes, a kind cluster).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from harness import httpclient
from harness.backends import attach
from harness.envoy import admin_get
from harness.settings import from_env
from harness.toolchain.kind import kind_binary
from harness.upgrade import backenddiff, configdiff

REPO = Path(__file__).resolve().parents[1]
MESHPROOF = str(Path(sys.executable).with_name("meshproof"))


def collect(state: Path, dest: Path) -> dict[str, Any]:
    """Every proxy's ``/config_dump`` (EDS left out) of the mesh recorded in ``state``, into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    settings = from_env().with_overrides(state_dir=state)
    t0 = time.monotonic()
    proxies = []
    with attach(settings) as mesh, httpclient.client(timeout=30) as http:
        mesh.wait_synced(120)
        for w in mesh.workloads():
            if not w.proxy_admin_url:
                continue
            text = admin_get(http, f"{w.proxy_admin_url}/config_dump")
            name = f"{w.namespace}__{w.name}.json"
            (dest / name).write_text(text)
            proxies.append(
                {
                    "ref": w.ref,
                    "namespace": w.namespace,
                    "deployment": w.deployment,
                    "version": w.version,
                    "role": w.role,
                    "address": w.address,
                    "file": name,
                }
            )
        meta = {"backend": mesh.name, "traffic_api": mesh.traffic_api, "proxies": proxies}
    meta["collect_s"] = round(time.monotonic() - t0, 1)
    (dest / "proxies.json").write_text(json.dumps(meta, indent=1))
    return meta


def _meshproof(*argv: str, env: dict[str, str]) -> float:
    t0 = time.monotonic()
    p = subprocess.run([MESHPROOF, *argv], env=env, cwd=REPO, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"meshproof {' '.join(argv)} exited {p.returncode}:\n{p.stderr[-2000:]}")
    return round(time.monotonic() - t0, 1)


def run_backend(backend: str, api: str, dest: Path, state: str | None) -> dict[str, Any]:
    """Bring ``backend`` up with ``api`` (unless ``state`` names a running mesh), collect, take it down."""
    if state:
        return collect(Path(state), dest) | {"up_s": None}
    env = dict(os.environ, MESHPROOF_TRAFFIC_API=api)
    tmp = Path(tempfile.mkdtemp(prefix=f"fidelity-{backend}-"))
    timings: dict[str, Any] = {}
    try:
        timings["up_s"] = _meshproof("up", "--detach", "--backend", backend, "--state", str(tmp), env=env)
        meta = collect(tmp, dest)
    finally:
        if backend == "kind":
            timings["down_s"] = _meshproof("down", "--keep-cluster", "--state", str(tmp), env=env)
            cluster = env.get("MESHPROOF_KIND_CLUSTER", "meshproof")
            kind = kind_binary(from_env().cache_dir)
            subprocess.run([str(kind), "delete", "cluster", "--name", cluster], check=False)
        else:
            timings["down_s"] = _meshproof("down", "--state", str(tmp), env=env)
        shutil.rmtree(tmp, ignore_errors=True)
    return meta | timings


REASONS = Path(__file__).with_name("fidelity_reasons.yaml")


def reasons() -> list[configdiff.Allowance]:
    entries = yaml.safe_load(REASONS.read_text()) or []
    return [
        configdiff.Allowance(
            resource=str(e["resource"]),
            reason=str(e["reason"]),
            path=str(e.get("path", "*")),
            change=str(e.get("change", "*")),
        )
        for e in entries
    ]


def compare(out: Path, apis: list[str]) -> dict[str, Any]:
    """Per traffic API: every difference (grouped by Envoy resource type) and, by the reviewed
    reasons of fidelity_reasons.yaml, how many each reason explains and which none does."""
    doc: dict[str, Any] = {}
    table = reasons()
    for api in apis:
        local, kind = out / f"local-{api}", out / f"kind-{api}"
        if not (local / "proxies.json").is_file() or not (kind / "proxies.json").is_file():
            continue
        comparison = backenddiff.compare_dirs(local, kind)
        explained, unexplained = configdiff.classify(comparison.differences, table)
        per_reason: dict[str, int] = {}
        for d in explained:
            for r in d.allowed_by.split("; "):
                per_reason[r] = per_reason.get(r, 0) + 1
        doc[api] = comparison.as_json() | {
            "explained": dict(sorted(per_reason.items())),
            "unexplained": [
                f"{d.proxy} {d.resource} {d.change}: " + "; ".join(p.path for p in d.paths[:5])
                for d in unexplained
            ],  # fmt: skip
        }
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traffic-api", default="istio", choices=["istio", "gateway-api", "both"])
    ap.add_argument("--out", default="")
    ap.add_argument("--local-state")
    ap.add_argument("--kind-state")
    ap.add_argument("--skip-kind", action="store_true", help="collect the local side only")
    ap.add_argument("--skip-local", action="store_true", help="collect the kind side only")
    ap.add_argument("--compare-only", metavar="DIR", help="compare the dumps saved in DIR")
    a = ap.parse_args()
    apis = ["istio", "gateway-api"] if a.traffic_api == "both" else [a.traffic_api]
    if a.compare_only:
        out = Path(a.compare_only)
        runs: dict[str, Any] = {}
    else:
        out = Path(a.out or tempfile.mkdtemp(prefix="fidelity-"))
        runs = {}
        for api in apis:
            for backend, state, skip in (
                ("local", a.local_state, a.skip_local),
                ("kind", a.kind_state, a.skip_kind),
            ):
                if skip:
                    continue
                meta = run_backend(backend, api, out / f"{backend}-{api}", state)
                runs[f"{backend}-{api}"] = {k: v for k, v in meta.items() if k != "proxies"} | {
                    "proxies": len(meta["proxies"])
                }
                print(f"{backend} {api}: {runs[f'{backend}-{api}']}", file=sys.stderr)
    doc = {"dumps": str(out), "runs": runs, "comparisons": compare(out, apis)}
    (out / "fidelity.json").write_text(json.dumps(doc, indent=1))
    for api, cmp in doc["comparisons"].items():
        print(backenddiff.render(api, cmp), file=sys.stderr)
        print(f"  explained: {cmp['explained']}", file=sys.stderr)
        for line in cmp["unexplained"] or ["(none)"]:
            print(f"  unexplained: {line}", file=sys.stderr)
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
