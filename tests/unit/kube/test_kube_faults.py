"""Faults over the fake cluster: kills and their replacements, istiod scaled away and back."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.backends.kube.api import ObjectRef
from harness.backends.kube.cluster import MeshRecord
from harness.backends.kube.convergence import IstiodSync
from harness.backends.kube.discovery import Discovery
from harness.backends.kube.faults import Faults
from harness.backends.kube.portforward import Forwards
from harness.errors import UserError
from harness.mesh import Workload, find_workload

from .fakes import FakeClock, FakeCluster

CLIENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "client", "namespace": "other"},
    "spec": {
        "replicas": 1,
        "template": {"metadata": {"labels": {"app": "client"}}, "spec": {"containers": [{"name": "client"}]}},
    },
}


class ScalingCluster(FakeCluster):
    """Server-side apply of a Deployment's replicas alone keeps the rest of it (the fake replaces)."""

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        spec = obj.get("spec") or {}
        if obj.get("kind") == "Deployment" and "template" not in spec:
            current = self.get(ObjectRef.of(obj)) or {}
            obj = {**current, "spec": {**current["spec"], **spec}}
        return super().apply(obj)


class Made:
    def __init__(self, tmp_path: Path) -> None:
        self.api = api = ScalingCluster()
        istiod = api.objects[("apps", "Deployment", "istio-system", "istiod")]
        istiod["spec"]["replicas"] = 2  # what a stop must remember
        istiod["spec"]["template"]["metadata"] = {"labels": {"app": "istiod"}}
        api.apply(CLIENT)
        lock = threading.RLock()
        http = httpx.Client(transport=api.transport())
        self.forwards = Forwards(lambda: api, http, lock=lock)
        self.discovery = Discovery(lambda: api, self.forwards, lock=lock)
        self.discovery.remember([CLIENT])
        self.record = MeshRecord(tmp_path / "backend.json")
        clock = FakeClock()
        sync = IstiodSync(self.discovery, self.forwards, http, ready_timeout=10.0, clock=clock)
        self.faults = Faults(
            self,  # type: ignore[arg-type]  # the mesh: only its workload() is used here
            lambda: api,
            http,
            discovery=self.discovery,
            forwards=self.forwards,
            sync=sync,
            record=self.record,
            lock=lock,
            ready_timeout=10.0,
            clock=clock,
        )

    def workload(self, ref: str) -> Workload:
        return find_workload(self.discovery.workloads(), ref)

    def istiod_pods(self) -> list[str]:
        return [
            k[3]
            for k in self.api.objects
            if k[1] == "Pod" and k[2] == "istio-system" and k[3].startswith("istiod-")
        ]


@pytest.fixture
def made(tmp_path: Path) -> Iterator[Made]:
    m = Made(tmp_path)
    yield m
    m.forwards.close()


def test_restart_of_a_replica_never_killed_kills_it_first_and_waits_for_the_replacement(made: Made) -> None:
    victim = made.workload("other/client")
    made.faults.restart(victim.ref)
    assert [r.name for r in made.api.deleted] == [victim.name]
    after = made.workload("other/client")
    assert after.name != victim.name and after.ready


def test_a_killed_replica_is_restarted_without_a_second_kill(made: Made) -> None:
    victim = made.faults.kill("other/client")
    made.faults.restart(victim.ref)
    assert [r.name for r in made.api.deleted] == [victim.name]


def test_the_gateway_is_never_killed(made: Made) -> None:
    with pytest.raises(UserError, match="killing the ingress gateway is not supported"):
        made.faults.kill("ingress")
    assert made.api.deleted == []


def test_the_control_plane_goes_and_comes_back_at_its_replica_count(made: Made) -> None:
    assert made.faults.control_plane_serving() == ["istiod pod istio-system/istiod-5d4c-abcde is ready"]
    made.faults.stop_control_plane()
    assert made.istiod_pods() == [] and made.faults.control_plane_serving() == []
    assert made.record.info["istiod_replicas"] == 2
    made.faults.start_control_plane()
    dep: dict[str, Any] = made.api.get(ObjectRef("apps/v1", "Deployment", "istio-system", "istiod")) or {}
    assert dep["spec"]["replicas"] == 2 and len(made.istiod_pods()) == 2
    assert len(made.faults.control_plane_serving()) == 2
