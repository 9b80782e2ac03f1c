"""ClusterApi's error paths with the real kubernetes client, offline (a kubeconfig naming a closed port)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from harness.backends.kube.api import ClusterApi, ObjectRef, kube_contexts
from harness.errors import BackendError, ToolMissing, UserError


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kubeconfig(tmp_path: Path, server: str = "") -> Path:
    server = server or f"http://127.0.0.1:{closed_port()}"
    path = tmp_path / "kubeconfig"
    path.write_text(f"""
apiVersion: v1
kind: Config
clusters:
- name: dead
  cluster: {{server: "{server}"}}
contexts:
- name: dead
  context: {{cluster: dead, user: me}}
- name: other
  context: {{cluster: dead, user: me}}
current-context: dead
users:
- name: me
  user: {{token: abc}}
""")
    return path


def test_object_ref() -> None:
    ref = ObjectRef.of(
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "sample"},
        }
    )
    assert ref.group == "networking.istio.io" and str(ref) == "VirtualService/sample/web"
    ns = ObjectRef.of({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sample"}})
    assert ns.group == "" and str(ns) == "Namespace/sample"


def test_kube_contexts(tmp_path: Path) -> None:
    assert kube_contexts(str(kubeconfig(tmp_path))) == (["dead", "other"], "dead")
    with pytest.raises(ToolMissing, match="kubeconfig"):
        kube_contexts(str(tmp_path / "absent"))


def test_unknown_context_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="context 'prod' does not exist.*dead, other"):
        ClusterApi(kubeconfig(tmp_path), "prod")


def test_unreachable_api_is_a_backend_error(tmp_path: Path) -> None:
    api = ClusterApi(kubeconfig(tmp_path), None)
    assert api.context == "dead"
    try:
        with pytest.raises(BackendError, match="cannot reach the Kubernetes API of context 'dead'"):
            api.server_version()
    finally:
        api.close()


# ---- the real client against a minimal fake API server ----------------------------------------

RESOURCES = {
    "/api/v1": [("namespaces", "Namespace", False), ("pods", "Pod", True)],
    "/apis/networking.istio.io/v1": [("virtualservices", "VirtualService", True)],
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


class FakeApiServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.store: dict[str, dict[str, Any]] = {}
        self.requests: list[
            tuple[str, str, dict[str, list[str]], str]
        ] = []  # method, path, query, content-type
        self.rv = 0


class Handler(BaseHTTPRequestHandler):
    server: FakeApiServer

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str) -> None:
        url = urlparse(self.path)
        self.server.requests.append(
            (method, url.path, parse_qs(url.query), self.headers.get("Content-Type", ""))
        )
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if url.path.rstrip("/") == "/version":  # the typed client asks for /version/
            return self._send(
                200,
                {
                    k: "v1.33.1" if k == "gitVersion" else "x"
                    for k in (
                        "major",
                        "minor",
                        "gitVersion",
                        "gitCommit",
                        "gitTreeState",
                        "buildDate",
                        "goVersion",
                        "compiler",
                        "platform",
                    )
                },
            )
        if url.path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
        if url.path == "/apis":
            return self._send(
                200,
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [
                        {
                            "name": "networking.istio.io",
                            "versions": [{"groupVersion": "networking.istio.io/v1", "version": "v1"}],
                            "preferredVersion": {"groupVersion": "networking.istio.io/v1", "version": "v1"},
                        }
                    ],
                },
            )
        if url.path in RESOURCES:
            gv = url.path.removeprefix("/api/").removeprefix("/apis/")
            return self._send(
                200,
                {
                    "kind": "APIResourceList",
                    "groupVersion": gv,
                    "resources": [
                        {"name": n, "singularName": "", "namespaced": ns, "kind": k, "verbs": VERBS}
                        for n, k, ns in RESOURCES[url.path]
                    ],
                },
            )
        if method == "PATCH":
            obj = json.loads(body)
            self.server.rv += 1
            obj["metadata"]["resourceVersion"] = str(self.server.rv)
            self.server.store[url.path] = obj
            return self._send(200, obj)
        if method == "DELETE":
            if self.server.store.pop(url.path, None) is None:
                return self._send(404, {"kind": "Status", "code": 404, "message": "not found"})
            return self._send(200, {"kind": "Status", "status": "Success"})
        if url.path in self.server.store:
            return self._send(200, self.server.store[url.path])
        if url.path.endswith("/pods"):
            return self._send(
                200,
                {
                    "kind": "PodList",
                    "apiVersion": "v1",
                    "metadata": {},
                    "items": [
                        {"metadata": {"name": "web-1", "namespace": "sample", "labels": {"app": "web"}}}
                    ],
                },
            )
        return self._send(
            404, {"kind": "Status", "code": 404, "reason": "NotFound", "message": f"{url.path} not found"}
        )

    def do_GET(self) -> None:
        self._route("GET")

    def do_PATCH(self) -> None:
        self._route("PATCH")

    def do_DELETE(self) -> None:
        self._route("DELETE")


@pytest.fixture
def apiserver(tmp_path: Path) -> Iterator[tuple[FakeApiServer, ClusterApi]]:
    srv = FakeApiServer()
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    cfg = kubeconfig(tmp_path, f"http://127.0.0.1:{srv.server_address[1]}")
    api = ClusterApi(cfg, "dead", discovery_cache=tmp_path / "discovery.json")
    yield srv, api
    api.close()
    srv.shutdown()
    srv.server_close()


def test_server_side_apply_get_list_delete(apiserver: tuple[FakeApiServer, ClusterApi]) -> None:
    srv, api = apiserver
    assert api.server_version() == "v1.33.1"
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "web", "namespace": "sample"},
        "spec": {"hosts": ["web"]},
    }
    ref = ObjectRef.of(vs)
    assert api.get(ref) is None
    live = api.apply(vs)
    assert live["metadata"]["resourceVersion"] == "1" and live["spec"] == {"hosts": ["web"]}
    method, path, query, ctype = srv.requests[-1]
    assert (method, path) == ("PATCH", "/apis/networking.istio.io/v1/namespaces/sample/virtualservices/web")
    assert query["fieldManager"] == ["meshproof"] and query["force"][0].lower() == "true"
    assert ctype == "application/apply-patch+yaml"
    assert api.get(ref) == live
    assert api.has_kind("networking.istio.io/v1", "VirtualService")
    assert not api.has_kind("security.istio.io/v1", "AuthorizationPolicy")
    pods = api.list("v1", "Pod", "sample", "app=web")
    assert [p["metadata"]["name"] for p in pods] == ["web-1"]
    assert srv.requests[-1][2]["labelSelector"] == ["app=web"]
    assert api.delete(ref, grace_seconds=0)
    assert srv.requests[-1][2]["gracePeriodSeconds"] == ["0"]
    assert not api.delete(ref)


def test_apply_of_an_unserved_kind_names_it(apiserver: tuple[FakeApiServer, ClusterApi]) -> None:
    _, api = apiserver
    with pytest.raises(BackendError, match="does not serve AuthorizationPolicy"):
        api.apply(
            {
                "apiVersion": "security.istio.io/v1",
                "kind": "AuthorizationPolicy",
                "metadata": {"name": "x", "namespace": "sample"},
            }
        )
