"""LocalBackend's capabilities that need no running mesh: its load runner."""

from __future__ import annotations

import json
import os
from pathlib import Path

from harness.backends.local.backend import LocalBackend
from harness.load import LoadConfig, LocustRun
from harness.settings import from_env


def test_load_runner_is_locust_on_this_machine_to_the_mesh_ingress(tmp_path: Path) -> None:
    mesh = LocalBackend(from_env({}).with_overrides(backend="local", state_dir=tmp_path / "state"))
    mesh.layout.marker.parent.mkdir(parents=True, exist_ok=True)
    mesh.layout.marker.write_text(json.dumps({"backend": "local", "pid": os.getpid(), "pgid": 0}))
    gateway = {
        "pod": "gw-0",
        "namespace": "istio-system",
        "labels": {"istio": "ingressgateway"},
        "address": "127.0.0.1",
        "ports": {"admin": 15000},
        "service_account": "istio-ingressgateway",
        "port_map": {"80": 8080},
    }
    mesh.layout.plan.write_text(json.dumps({"replicas": [], "gateway": gateway, "proxies": {}}))
    mesh.attach()
    run = mesh.load_runner(LoadConfig(users=3), workdir=tmp_path / "load")
    assert isinstance(run, LocustRun) and not run.running and run.where == "on this machine"
    # no client workload in this mesh: ingress load only
    assert (run.target.ingress_url, run.target.call_url) == ("http://127.0.0.1:8080", "")
    assert run.workdir == tmp_path / "load" and not run.workdir.exists()  # nothing written before start
