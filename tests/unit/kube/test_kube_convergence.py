"""IstiodSync over the fake cluster's istiod: baselines per replica, the wait and what it last saw."""

from __future__ import annotations

import threading

import httpx
import pytest

from harness.backends.kube.convergence import IstiodSync
from harness.backends.kube.discovery import Discovery
from harness.backends.kube.portforward import Forwards
from harness.errors import WaitTimeout

from .fakes import FakeClock, FakeCluster


def made(api: FakeCluster, http: httpx.Client) -> tuple[Forwards, IstiodSync]:
    lock = threading.RLock()
    forwards = Forwards(lambda: api, http, lock=lock)
    sync = IstiodSync(
        Discovery(lambda: api, forwards, lock=lock), forwards, http, ready_timeout=5.0, clock=FakeClock()
    )
    return forwards, sync


def test_a_replica_whose_metrics_fail_has_no_baseline() -> None:
    api = FakeCluster()
    failing = {"on": False}

    def metrics(request: httpx.Request) -> httpx.Response | None:
        return httpx.Response(503) if failing["on"] and request.url.path == "/metrics" else None

    forwards, sync = made(api, httpx.Client(transport=api.transport(metrics)))
    try:
        assert set(sync.push_counters()) == {"istiod-5d4c-abcde"}
        failing["on"] = True
        assert sync.push_counters() == {}
    finally:
        forwards.close()


def test_the_wait_names_what_it_last_saw() -> None:
    api = FakeCluster()

    def unacked(request: httpx.Request) -> httpx.Response | None:
        if request.url.path != "/debug/syncz":
            return None
        resources = {"type.googleapis.com/envoy.config.cluster.v3.Cluster": {"sent": "v2", "acked": "v1"}}
        return httpx.Response(200, json=[{"proxy": p, "resources": resources} for p in api.proxies()])

    forwards, sync = made(api, httpx.Client(transport=api.transport(unacked)))
    try:
        with pytest.raises(WaitTimeout) as info:
            sync.wait_converged((), None, timeout=2)
        assert any(n.startswith("last seen: ") for n in info.value.__notes__)
    finally:
        forwards.close()
    forwards, sync = made(api, httpx.Client(transport=api.transport()))
    try:
        assert sync.wait_converged((), None) < 5.0  # in sync: returns before its timeout
    finally:
        forwards.close()
