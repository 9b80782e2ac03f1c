"""LocalBackend's capabilities that need no running mesh: its load runner."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

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


def test_traffic_api_is_the_running_meshs_and_its_second_mesh_runs_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = from_env({}).with_overrides(backend="local", state_dir=tmp_path / "state")
    mesh = LocalBackend(settings)
    assert mesh.traffic_api == "istio"  # not running: the settings'
    mesh.layout.marker.parent.mkdir(parents=True, exist_ok=True)
    mesh.layout.marker.write_text(json.dumps({"backend": "local", "pid": os.getpid(), "pgid": 0}))
    mesh.layout.plan.write_text(json.dumps({"replicas": [], "gateway": None, "traffic_api": "gateway-api"}))
    mesh.attach()
    assert mesh.traffic_api == "gateway-api"  # what `up` recorded in the plan, whatever the settings say

    started: list[str] = []

    def up(self: LocalBackend, *, detach: bool = False) -> LocalBackend:
        started.append(self.settings.traffic_api)
        self.detached = True  # nothing to take down
        return self

    monkeypatch.setattr(LocalBackend, "up", up)
    extra = tmp_path / "extra.yaml"
    extra.write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: extra}\n")
    with mesh.with_workloads([extra], tmp_path / "second"):
        pass
    assert started == ["gateway-api"]


def test_up_refuses_an_unknown_traffic_api_annotation_before_starting_anything(tmp_path: Path) -> None:
    from harness.errors import ConfigError
    from harness.mesh import State

    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "30-routes.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: r, namespace: sample, annotations: {meshproof.dev/traffic-api: isito}}\n"
        "spec: {hosts: [r]}\n"
    )
    mesh = LocalBackend(
        from_env({}).with_overrides(backend="local", state_dir=tmp_path / "state", manifests=manifests)
    )
    with pytest.raises(ConfigError, match=r"30-routes.yaml .*traffic-api\]: unknown traffic API 'isito'"):
        mesh.up()
    assert mesh.state is State.NEW and not mesh.layout.marker.exists()  # nothing was started
