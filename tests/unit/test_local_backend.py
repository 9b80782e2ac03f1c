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


def test_apply_adds_a_service_to_the_running_mesh_and_delete_takes_it_back(tmp_path: Path) -> None:
    """A new Service gets the next ClusterIP of the mesh's block and is stored in istiod's cluster;
    apply returns once istiod's registry lists it with an endpoint per pod it selects and every
    proxy ACKed; delete removes it. The manifests' own Services cannot change on a running mesh."""
    import httpx

    from harness import yamlio
    from harness.errors import StateError, UnsupportedFeature

    mesh = LocalBackend(from_env({}).with_overrides(backend="local", state_dir=tmp_path / "state"))
    lay = mesh.layout
    for d in (lay.kube, lay.config):
        d.mkdir(parents=True)
    lay.marker.write_text(json.dumps({"backend": "local", "pid": os.getpid(), "pgid": 0}))
    replica = {
        "pod": "web-v1-0",
        "namespace": "sample",
        "deployment": "web-v1",
        "labels": {"app": "web", "version": "v1", "meshproof.dev/replica": "web-v1-0"},
        "address": "127.7.1.1",
        "target_ports": [3000],
        "app_port": 3000,
        "admin_port": 3001,
        "ports": {"admin": 15000},
        "service_account": "web",
        "role": "app",
    }
    istiod = {"url": "http://istiod", "monitoring_url": "http://mon", "kube_api_url": "http://kube"}
    lay.plan.write_text(
        json.dumps(
            {"block": 7, "replicas": [replica], "gateway": None, "istiod": istiod, "istio": "1.31-dev"}
        )
    )
    own = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "sample"}}
    lay.kube.joinpath("Service.sample.web.yaml").write_text(
        yamlio.dump({**own, "spec": {"clusterIP": "127.7.5.1", "selector": {"app": "web"}}})
    )
    registry: set[str] = set()
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/sync":  # the launcher stores the kube dir's Services
            registry.clear()
            registry.update(
                f"{f.name.split('.')[2]}.sample.svc.cluster.local" for f in lay.kube.glob("Service.*")
            )
            return httpx.Response(
                200, json={"created": [], "updated": [], "deleted": [], "versions": {}, "errors": []}
            )
        if request.url.path == "/debug/registryz":
            return httpx.Response(200, json=[{"hostname": h} for h in sorted(registry)])
        if request.url.path == "/debug/endpointShardz":
            one = {"sample": {"Shards": {"Kubernetes/Kubernetes": [{"Address": "127.7.1.1"}]}}}
            return httpx.Response(200, json=dict.fromkeys(registry, one))
        acked = {"sent": "v1", "acked": "v1"}
        types = ("envoy.config.cluster.v3.Cluster", "envoy.config.listener.v3.Listener")
        return httpx.Response(
            200,
            json=[
                {"proxy": "web-v1-0.sample", "resources": {f"type.googleapis.com/{t}": acked for t in types}}
            ],
        )

    mesh._http_client = httpx.Client(transport=httpx.MockTransport(handler))  # noqa: SLF001
    mesh.attach()
    one = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web-a", "namespace": "sample"},
        "spec": {"selector": {"app": "web", "meshproof.dev/replica": "web-v1-0"}, "ports": [{"port": 3000}]},
    }
    f = tmp_path / "svc.yaml"
    f.write_text(yamlio.dump(one))
    mesh.apply([f])
    stored = yamlio.load(lay.kube.joinpath("Service.sample.web-a.yaml").read_text())
    assert stored["spec"]["clusterIP"] == "127.7.5.2"  # the next free address of the block
    assert "web-a.sample.svc.cluster.local" in registry and "/debug/endpointShardz" in calls
    assert mesh.apply([f]) == 0.0  # unchanged: nothing to do

    mine = tmp_path / "own.yaml"
    mine.write_text(yamlio.dump({**own, "spec": {"selector": {"app": "other"}, "ports": [{"port": 3000}]}}))
    with pytest.raises(UnsupportedFeature, match="Service sample/web is the manifests'"):
        mesh.apply([mine])
    with pytest.raises(StateError, match="not added by apply"):
        mesh.delete([mine])

    mesh.delete([f])
    assert not lay.kube.joinpath("Service.sample.web-a.yaml").exists()
    assert "web-a.sample.svc.cluster.local" not in registry
