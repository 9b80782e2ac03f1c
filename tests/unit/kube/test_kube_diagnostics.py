"""write_diagnostics over the fake cluster: one file per piece, and a file saying why for what fails."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

from harness.backends.kube.convergence import IstiodSync
from harness.backends.kube.diagnostics import write_diagnostics
from harness.backends.kube.discovery import Discovery
from harness.backends.kube.portforward import Forwards
from harness.errors import BackendError

from .fakes import FakeCluster


class LogsFail(FakeCluster):
    def pod_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        tail_lines: int | None = 400,
        since_seconds: int | None = None,
    ) -> str:
        if container == "istio-proxy":
            raise BackendError("container istio-proxy is waiting to start")
        return super().pod_log(namespace, pod, container, tail_lines, since_seconds)


def test_a_piece_that_cannot_be_read_leaves_a_file_saying_why(tmp_path: Path) -> None:
    api = LogsFail()
    http = httpx.Client(transport=api.transport())
    lock = threading.RLock()
    forwards = Forwards(lambda: api, http, lock=lock)
    discovery = Discovery(lambda: api, forwards, lock=lock)
    sync = IstiodSync(discovery, forwards, http, ready_timeout=5.0)
    try:
        written = write_diagnostics(
            tmp_path / "d", api, workloads=list, mesh_pods=discovery.mesh_pods, http=http, sync=sync
        )
    finally:
        forwards.close()
    files = {p.name: p.read_text() for p in written}
    gateway = "istio-system.istio-ingressgateway-7f9-xyz12"
    assert files[f"{gateway}.istio-proxy.log"] == (
        "unavailable: BackendError: container istio-proxy is waiting to start"
    )
    assert files[f"{gateway}.app.log"].startswith("log of ")
    assert (
        '"proxy": "istio-ingressgateway-7f9-xyz12.istio-system"'
        in files["istiod.istiod-5d4c-abcde.syncz.json"]
    )
    assert {"events.istio-system.txt", "events.meshproof-system.txt"} <= set(files)
    assert not any(
        name.endswith(".config_dump.txt") for name in files
    )  # no workloads: the mesh is not running


def test_not_connected_says_so(tmp_path: Path) -> None:
    api = FakeCluster()
    http = httpx.Client(transport=api.transport())
    lock = threading.RLock()
    forwards = Forwards(lambda: api, http, lock=lock)
    discovery = Discovery(lambda: api, forwards, lock=lock)
    written = write_diagnostics(
        tmp_path / "d",
        None,
        workloads=list,
        mesh_pods=discovery.mesh_pods,
        http=http,
        sync=IstiodSync(discovery, forwards, http, ready_timeout=5.0),
    )
    assert [(p.name, p.read_text()) for p in written] == [
        ("kube-backend.txt", "the backend is not connected to a cluster")
    ]
