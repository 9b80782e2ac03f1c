"""Offline stand-ins for the kube backend's collaborators: a runner, a `which`, a clock, a Docker
engine, and a tiny cluster.

FakeCluster implements harness.backends.kube.api.KubeApi over dicts. It plays the parts of the
API server (resourceVersions, server-side apply), the Deployment controller (pods appear, ready,
with an istio-proxy sidecar in injected namespaces) and istiod (its debug endpoints, served by
`istiod_transport` through an httpx.MockTransport).
"""

from __future__ import annotations

import copy
import json
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from harness import proc
from harness.backends.kube.api import Channel, ObjectRef
from harness.backends.kube.engine import EngineMode, EngineStatus
from harness.errors import BackendError, CommandFailed


class FakeRunner:
    """Records argv; answers from `replies` (first key that is a prefix of the argv, joined by spaces)."""

    def __init__(self, replies: Mapping[str, tuple[int, str, str]] | None = None) -> None:
        self.replies = dict(replies or {})
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], *, timeout: float = 600.0, check: bool = True) -> proc.Completed:
        args = [str(a) for a in argv]
        self.calls.append(args)
        line = " ".join(args)
        rc, out, err = 0, "", ""
        for key, reply in self.replies.items():
            if line.startswith(key):
                rc, out, err = reply
                break
        if check and rc != 0:
            raise CommandFailed(args, rc, out, err)
        return proc.Completed(tuple(args), rc, out, err)


def which_from(found: Mapping[str, str]) -> Callable[[str], str]:
    return lambda tool: found.get(tool, "")


ALL_TOOLS = {
    "docker": "/usr/bin/docker",
    "kind": "/usr/bin/kind",
    "istioctl": "/opt/istio/bin/istioctl",
    "kubectl": "/usr/bin/kubectl",
}
GOOD_REPLIES = {
    "/usr/bin/docker info": (0, "27.3.1\n", ""),
    "/usr/bin/docker version": (0, "27.3.1\n", ""),
    "/usr/bin/kind version": (0, "kind v0.27.0 go1.23.6 linux/amd64\n", ""),
    "/opt/istio/bin/istioctl version": (0, "client version: 1.30.1\n", ""),
    "/usr/bin/kubectl version": (0, "Client Version: v1.33.1\nKustomize Version: v5.6.0\n", ""),
}


class FakeClock:
    """wait.until's clock: sleeping advances time instantly."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class FakeEngine:
    """The Docker engine as the backend sees it: foreign (already running) or started by meshproof."""

    def __init__(self, mode: EngineMode = EngineMode.FOREIGN, others: Sequence[str] = ()) -> None:
        self.mode, self.others = mode, list(others)
        self.started = False
        self.events: list[str] = []

    def start(self) -> FakeEngine:
        self.events.append("start")
        if self.mode is EngineMode.ABSENT:
            self.mode, self.started = EngineMode.OURS, True
        return self

    def stop(self) -> bool:
        self.events.append("stop")
        self.mode, self.started = EngineMode.ABSENT, False
        return True

    def status(self) -> EngineStatus:
        return EngineStatus(self.mode)

    def containers(self) -> list[str]:
        return list(self.others)


def _key(ref: ObjectRef) -> tuple[str, str, str, str]:
    return (ref.api_version.rpartition("/")[0], ref.kind, ref.namespace, ref.name)


class FakeCluster:
    """A KubeApi over dicts (see the module docstring)."""

    def __init__(
        self,
        *,
        istio: bool = True,
        gateway: bool = True,
        reachable: bool = True,
        istio_version: str = "1.30.1",
        revision: str = "",  # istiod's istio.io/rev label ("": the default revision)
        gateway_namespace: str = "istio-system",
        tracing: bool = True,  # the mesh config defines the tracing provider "jaeger"
        gateway_api: bool = False,  # the Gateway API CRDs are installed (else applying them adds them)
    ) -> None:
        self.istio_version = istio_version
        self.revision = revision
        self.objects: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.rv = 100
        self.reachable = reachable
        self.istio_writes = 0  # what istiod's config-event and push counters follow
        self.deleted: list[ObjectRef] = []
        self.opened: list[tuple[str, str, int]] = []
        # Pod ports that answer HTTP through open_port: port -> (status, body); what each request
        # carried is recorded in `served` as (namespace, pod, port, raw request bytes).
        self.http_ports: dict[int, tuple[int, bytes]] = {}
        self.served: list[tuple[str, str, int, bytes]] = []
        self.closed = False
        self.kinds = {
            ("v1", k) for k in ("Namespace", "Pod", "Service", "ServiceAccount", "ConfigMap", "Event")
        }
        self.kinds.add(("apps/v1", "Deployment"))
        self.kinds.add(("apiextensions.k8s.io/v1", "CustomResourceDefinition"))
        if gateway_api:
            for k in ("GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute"):
                self.kinds.add(("gateway.networking.k8s.io/v1", k))
        if istio:
            for k in ("VirtualService", "DestinationRule", "Gateway"):
                self.kinds.add(("networking.istio.io/v1", k))
            for k in ("AuthorizationPolicy", "PeerAuthentication"):
                self.kinds.add(("security.istio.io/v1", k))
            self.kinds.add(("telemetry.istio.io/v1", "Telemetry"))
            self._put(self._istiod())
            mesh = (
                "extensionProviders:\n- name: jaeger\n  opentelemetry: {port: 4317}\n" if tracing else "{}\n"
            )
            self._put(
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": f"istio-{revision}" if revision else "istio",
                        "namespace": "istio-system",
                    },
                    "data": {"mesh": mesh},
                }
            )
            self._put(
                {
                    "apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "MutatingWebhookConfiguration",
                    "metadata": {
                        "name": f"istio-sidecar-injector-{revision}"
                        if revision
                        else "istio-sidecar-injector",
                        "labels": {"istio.io/rev": revision or "default"},
                    },
                    "webhooks": [{"name": "rev.namespace.sidecar-injector.istio.io"}],
                }
            )
            self._pod(
                "istio-system", "istiod-5d4c-abcde", {"app": "istiod"}, sidecar=False, owner="istiod-5d4c"
            )
        if gateway:
            self._pod(
                gateway_namespace,
                "istio-ingressgateway-7f9-xyz12",
                {"app": "istio-ingressgateway", "istio": "ingressgateway"},
                sidecar=True,
                owner="istio-ingressgateway-7f9",
            )

    # ---- helpers ------------------------------------------------------------------------------
    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _put(self, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = self._next_rv()
        self.objects[_key(ObjectRef.of(obj))] = obj
        return obj

    def _istiod(self) -> dict[str, Any]:
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "istiod",
                "namespace": "istio-system",
                "labels": {"app": "istiod", **({"istio.io/rev": self.revision} if self.revision else {})},
                "generation": 1,
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "istiod"}},
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "discovery",
                                "image": f"docker.io/istio/pilot:{self.istio_version}-distroless",
                            }
                        ]
                    }
                },
            },
            "status": {
                "observedGeneration": 1,
                "replicas": 1,
                "updatedReplicas": 1,
                "readyReplicas": 1,
                "availableReplicas": 1,
            },
        }

    def _pod(
        self,
        ns: str,
        name: str,
        labels: dict[str, str],
        *,
        sidecar: bool,
        owner: str,
        ports: Sequence[dict[str, Any]] = (),
        sa: str = "default",
        container: str = "app",
    ) -> None:
        pth = owner.rpartition("-")[2]
        containers: list[dict[str, Any]] = [{"name": container, "ports": list(ports)}]
        if sidecar:
            containers.append(
                {"name": "istio-proxy", "ports": [{"name": "http-envoy-prom", "containerPort": 15090}]}
            )
        self._put(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "labels": {**labels, "pod-template-hash": pth},
                    "ownerReferences": [{"kind": "ReplicaSet", "name": owner}],
                },
                "spec": {"containers": containers, "serviceAccountName": sa, "nodeName": "node-1"},
                "status": {
                    "phase": "Running",
                    "podIP": f"10.244.0.{len(self.objects) + 10}",
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
        )

    def _injected(self, ns: str) -> bool:
        nsobj = self.objects.get(("", "Namespace", "", ns))
        labels = (nsobj or {}).get("metadata", {}).get("labels") or {}
        if self.revision:  # a revision's injector selects istio.io/rev (without istio-injection)
            return labels.get("istio.io/rev") == self.revision and "istio-injection" not in labels
        return labels.get("istio-injection") == "enabled"

    def _roll_out(self, dep: dict[str, Any]) -> None:
        """The Deployment controller: replace the pods, mark the rollout complete."""
        meta, spec = dep["metadata"], dep["spec"]
        ns, name = meta["namespace"], meta["name"]
        for k in [
            k
            for k, o in self.objects.items()
            if k[1] == "Pod"
            and k[2] == ns
            and (o["metadata"].get("ownerReferences") or [{}])[0].get("name", "").startswith(name + "-")
        ]:
            del self.objects[k]
        tmpl = spec["template"]
        labels = dict(tmpl["metadata"]["labels"])
        c = tmpl["spec"]["containers"][0]
        owner = f"{name}-6f7d8"
        for i in range(int(spec.get("replicas", 1))):
            self._pod(
                ns,
                f"{owner}-{i:05d}",
                labels,
                sidecar=self._injected(ns),
                owner=owner,
                ports=c.get("ports") or [],
                sa=tmpl["spec"].get("serviceAccountName", "default"),
                container=c["name"],
            )
        n = int(spec.get("replicas", 1))
        meta["generation"] = int(meta.get("generation") or 0) + 1
        dep["status"] = {
            "observedGeneration": meta["generation"],
            "replicas": n,
            "updatedReplicas": n,
            "readyReplicas": n,
            "availableReplicas": n,
        }

    # ---- KubeApi ------------------------------------------------------------------------------
    def server_version(self) -> str:
        if not self.reachable:
            raise BackendError("cannot reach the Kubernetes API: connection refused")
        return "v1.33.1"

    def has_kind(self, api_version: str, kind: str) -> bool:
        return (api_version, kind) in self.kinds

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        obj = self.objects.get(_key(ref))
        return copy.deepcopy(obj) if obj else None

    def list(
        self, api_version: str, kind: str, namespace: str = "", label_selector: str = ""
    ) -> list[dict[str, Any]]:
        want = dict(p.split("=", 1) for p in label_selector.split(",") if "=" in p)
        present = [p for p in label_selector.split(",") if p and "=" not in p]  # `key`: the label exists
        out = []
        for (_g, k, ns, _n), o in sorted(self.objects.items()):
            labels = o["metadata"].get("labels") or {}
            if (
                k == kind
                and (not namespace or ns == namespace)
                and all(labels.get(a) == b for a, b in want.items())
                and all(key in labels for key in present)
            ):
                out.append(copy.deepcopy(o))
        return out

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        ref = ObjectRef.of(obj)
        if (ref.api_version, ref.kind) not in self.kinds:
            raise BackendError(f"the cluster does not serve {ref.kind} ({ref.api_version})")
        old = self.objects.get(_key(ref))
        new = copy.deepcopy(dict(obj))
        if old is not None and {k: v for k, v in old.items() if k not in ("metadata", "status")} == {
            k: v for k, v in new.items() if k not in ("metadata", "status")
        }:
            return copy.deepcopy(old)  # no change: same resourceVersion, like the API server
        if ref.group.endswith("istio.io"):
            self.istio_writes += 1
        if ref.kind == "CustomResourceDefinition":  # served at once (the fake has no Established lag)
            spec = new.get("spec") or {}
            for v in spec.get("versions") or []:
                if v.get("served"):
                    self.kinds.add((f"{spec['group']}/{v['name']}", spec["names"]["kind"]))
        if ref.kind == "Deployment":
            new["metadata"]["generation"] = int((old or {}).get("metadata", {}).get("generation") or 0)
            self._roll_out(new)
        return copy.deepcopy(self._put(new))

    def delete(self, ref: ObjectRef, *, grace_seconds: int | None = None) -> bool:
        if _key(ref) not in self.objects:
            return False
        del self.objects[_key(ref)]
        self.deleted.append(ref)
        if ref.group.endswith("istio.io"):
            self.istio_writes += 1
        if ref.kind == "Pod":  # the controller replaces a deleted replica
            owner = ref.name.rpartition("-")[0]
            for dep in [
                o
                for o in self.objects.values()
                if o["kind"] == "Deployment"
                and owner.startswith(o["metadata"]["name"] + "-")
                and o["metadata"]["namespace"] == ref.namespace
            ]:
                tmpl = dep["spec"]["template"]
                c = tmpl["spec"]["containers"][0]
                self._pod(
                    ref.namespace,
                    f"{owner}-r{self.rv}",
                    dict(tmpl["metadata"]["labels"]),
                    sidecar=self._injected(ref.namespace),
                    owner=owner,
                    ports=c.get("ports") or [],
                    sa=tmpl["spec"].get("serviceAccountName", "default"),
                    container=c["name"],
                )
        return True

    def pod_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        tail_lines: int | None = 400,
        since_seconds: int | None = None,
    ) -> str:
        return f"log of {namespace}/{pod}/{container}\n"

    def open_port(self, namespace: str, pod: str, port: int) -> Channel:
        self.opened.append((namespace, pod, port))
        a, b = socket.socketpair()
        if port not in self.http_ports:
            b.close()  # nothing listens on this port in this fake: the stream closes at once
            return a
        status, body = self.http_ports[port]
        threading.Thread(
            target=self._answer, args=(b, namespace, pod, port, status, body), daemon=True
        ).start()
        return a

    def _answer(
        self, conn: socket.socket, namespace: str, pod: str, port: int, status: int, body: bytes
    ) -> None:
        """One HTTP/1.1 exchange: read the head and Content-Length body, record it, answer."""
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            while len(rest) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                rest += chunk
            self.served.append((namespace, pod, port, head + b"\r\n\r\n" + rest))
            conn.sendall(
                b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (status, len(body), body)
            )

    def close(self) -> None:
        self.closed = True

    # ---- istiod, as an httpx transport ---------------------------------------------------------
    def proxies(self) -> list[str]:
        return [
            f"{o['metadata']['name']}.{o['metadata']['namespace']}"
            for o in self.objects.values()
            if o["kind"] == "Pod" and any(c["name"] == "istio-proxy" for c in o["spec"]["containers"])
        ]

    def configz(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(o) for k, o in self.objects.items() if k[0].endswith("istio.io")]

    def metrics(self) -> str:
        return (
            "# TYPE pilot_inbound_updates_total counter\n"
            f'pilot_inbound_updates_total{{type="config"}} {self.istio_writes}\n'
            f'pilot_inbound_updates_total{{type="eds"}} 7\n'
            f"pilot_debounce_time_count {self.istio_writes}\n"
        )

    def transport(
        self, extra: Callable[[httpx.Request], httpx.Response | None] | None = None
    ) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            if extra is not None:
                r = extra(request)
                if r is not None:
                    return r
            path = request.url.path
            if path == "/debug/syncz":
                n = f"2026-11-25T17:00:00Z/{self.istio_writes}" + "0" * 36
                resources = {"type.googleapis.com/envoy.config.cluster.v3.Cluster": {"sent": n, "acked": n}}
                return httpx.Response(
                    200, json=[{"proxy": p, "resources": resources} for p in self.proxies()]
                )
            if path == "/debug/configz":
                return httpx.Response(200, json=self.configz())
            if path == "/metrics":
                return httpx.Response(200, text=self.metrics())
            if path == "/admin/fault":
                return httpx.Response(200, json={"active": request.method == "POST"})
            return httpx.Response(404, text=json.dumps({"path": path}))

        return httpx.MockTransport(handle)
