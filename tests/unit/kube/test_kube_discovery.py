"""Discovery over the fake cluster: which objects are the mesh's, pods as Workloads, forwards closed."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from harness.backends.kube.api import ObjectRef
from harness.backends.kube.discovery import ISTIOD_MONITORING_PORT, Discovery
from harness.backends.kube.portforward import Forwards
from harness.backends.kube.relay import RELAY_NAMESPACE

from .fakes import FakeCluster

INJECTED = {
    "apiVersion": "v1",
    "kind": "Namespace",
    "metadata": {"name": "sample", "labels": {"istio-injection": "enabled"}},
}


def deployment(ns: str, name: str, replicas: int = 1) -> dict[str, Any]:
    ports = [{"name": "http", "containerPort": 3000}, {"name": "admin", "containerPort": 3001}]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "ports": ports}]},
            },
        },
    }


WEB_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "sample"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 3000, "targetPort": "http"}]},
}


def made() -> tuple[FakeCluster, Forwards, Discovery]:
    api = FakeCluster()
    objs = [INJECTED, deployment("sample", "web", 2), deployment("sample", "client"), WEB_SERVICE]
    objs.append(deployment(RELAY_NAMESPACE, "sidecar-relay"))  # infrastructure: not under test
    for o in objs:
        if o["kind"] != "Deployment" or o["metadata"]["namespace"] != RELAY_NAMESPACE:
            api.apply(o)
    lock = threading.RLock()
    forwards = Forwards(lambda: api, httpx.Client(trust_env=False), lock=lock)
    discovery = Discovery(lambda: api, forwards, lock=lock)
    discovery.remember(objs)
    return api, forwards, discovery


def test_pods_become_workloads_by_role_and_infrastructure_is_left_out() -> None:
    _, forwards, discovery = made()
    try:
        ws = discovery.workloads()
        assert [(w.deployment, w.role) for w in ws] == [
            ("client", "client"),
            ("web", "app"),
            ("web", "app"),
            ("istio-ingressgateway", "gateway"),
        ]
        assert ws[1].sidecar_url and not ws[0].sidecar_url  # only an app gets the relay address
        assert discovery.expected_proxies() == {f"{w.name}.{w.namespace}" for w in ws}
        assert discovery.istiod_pods() == ["istiod-5d4c-abcde"]
    finally:
        forwards.close()


def test_a_forgotten_deployment_leaves_the_workloads_and_its_forwards_close() -> None:
    api, forwards, discovery = made()
    try:
        discovery.workloads()
        forwards.get("istio-system", "istiod-5d4c-abcde", ISTIOD_MONITORING_PORT)
        before = len(forwards)
        discovery.forget([ObjectRef("apps/v1", "Deployment", "sample", "client")])
        assert "client" not in {w.deployment for w in discovery.workloads()}
        assert api.get(ObjectRef("apps/v1", "Deployment", "sample", "client")) is not None  # only forgotten
        assert len(forwards) == before - 3  # the client's app, admin and Envoy admin; istiod's stays
    finally:
        forwards.close()
