"""KubeBackend end to end over fakes: a dict-backed cluster, an httpx.MockTransport istiod, a fake runner."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from harness.backends.base import AppFault, Backend, State
from harness.backends.kube.api import ObjectRef
from harness.backends.kube.backend import KubeBackend
from harness.backends.kube.engine import EngineMode
from harness.backends.kube.kind import meshimages
from harness.backends.kube.kind.cli import CGROUP_V1_PATCH, NodeOptions
from harness.backends.kube.kindcluster import KindCluster
from harness.backends.kube.load_runner import KubeLocustRun
from harness.backends.kube.pods import (
    container_ports,
    deployment_of,
    format_events,
    has_sidecar,
    service_target_port,
)
from harness.backends.kube.relay import RELAY_NAMESPACE
from harness.envoy import parse_ejected
from harness.errors import BackendError, ConfigError, StateError, ToolMissing, UserError, WaitTimeout
from harness.istio.crds import CrdEntry, CrdIndex
from harness.load import LoadConfig
from harness.mesh import UNREACHED_HEADER
from harness.settings import Settings
from harness.versions import DEFAULT_ISTIO, IstioRelease

from .fakes import ALL_TOOLS, GOOD_REPLIES, FakeClock, FakeCluster, FakeEngine, FakeRunner, which_from

MANIFESTS = """
apiVersion: v1
kind: Namespace
metadata: {name: sample, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: sample}
spec:
  selector: {app: web}
  ports: [{name: http, port: 3000, targetPort: http}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: sample}
spec:
  replicas: 2
  selector: {matchLabels: {app: web, version: v1}}
  template:
    metadata: {labels: {app: web, version: v1}}
    spec:
      serviceAccountName: web
      containers:
      - name: web
        image: meshproof/microservice-1:dev
        ports: [{name: http, containerPort: 3000}, {name: admin, containerPort: 3001}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: other}
spec:
  replicas: 1
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      serviceAccountName: client
      containers:
      - name: client
        image: meshproof/microservice-1:dev
        ports: [{name: http, containerPort: 3000}, {name: admin, containerPort: 3001}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: sample}
spec:
  hosts: [web]
  http: [{route: [{destination: {host: web}}]}]
"""

VS_EDIT = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: sample}
spec:
  hosts: [web]
  http: [{route: [{destination: {host: web, subset: v1}}]}]
"""

DR = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: sample}
spec: {host: web}
"""


@pytest.fixture
def manifests(tmp_path: Path) -> Path:
    d = tmp_path / "manifests"
    d.mkdir()
    (d / "10-sample.yaml").write_text(MANIFESTS)
    return d


def settings(tmp_path: Path, manifests: Path, backend: str = "existing", **kw: Any) -> Settings:
    kw.setdefault("cache_dir", tmp_path / "cache")  # never the machine's cache (its kind, its dockerd record)
    kw.setdefault(
        "images", "official"
    )  # istioctl from PATH; test_kind_flow_with_local_images has the other mode
    return Settings(
        backend=backend,
        state_dir=tmp_path / "state",
        manifests=manifests,
        istio_version=DEFAULT_ISTIO,
        ready_timeout=10.0,
        **kw,
    )


def make(
    tmp_path: Path,
    manifests: Path,
    api: FakeCluster,
    backend: str = "existing",
    run: FakeRunner | None = None,
    which: dict[str, str] | None = None,
    http: httpx.Client | None = None,
    engine: FakeEngine | None = None,
    **kw: Any,
) -> tuple[KubeBackend, list[tuple[str | None, str | None]]]:
    connects: list[tuple[str | None, str | None]] = []

    def factory(kubeconfig: str | None, context: str | None) -> FakeCluster:
        connects.append((kubeconfig, context))
        return api

    sample_dir = tmp_path / "sample-service"
    sample_dir.mkdir(exist_ok=True)
    (sample_dir / "Dockerfile").write_text("FROM scratch\n")
    b = KubeBackend(
        settings(tmp_path, manifests, backend, **kw),
        which=which_from(which or {}),
        run=run or FakeRunner(),
        api_factory=factory,
        http=http or httpx.Client(transport=api.transport()),
        sample_dir=sample_dir,
        clock=FakeClock(),
        engine=engine or FakeEngine(),
        gateway_api_crds=fake_gateway_api_crds(tmp_path / "crds"),
    )
    return b, connects


GATEWAY_API_MODULE = "sigs.k8s.io/gateway-api@v1.6.0"


def fake_gateway_api_crds(where: Path) -> Callable[[IstioRelease], CrdIndex]:
    """A Gateway API module with two standard-channel CRDs (Gateway, HTTPRoute) and an
    experimental one (TCPRoute), as harness.istio.crds indexes them."""
    entries = []
    for channel, kind, plural in (
        ("standard", "Gateway", "gateways"),
        ("standard", "HTTPRoute", "httproutes"),
        ("experimental", "TCPRoute", "tcproutes"),
    ):
        group = "gateway.networking.k8s.io"
        crd = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {
                "group": group,
                "names": {"kind": kind, "plural": plural},
                "scope": "Namespaced",
                "versions": [{"name": "v1" if channel == "standard" else "v1alpha2", "served": True}],
            },
        }
        path = where / channel / f"{plural}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(crd))
        entries.append(CrdEntry(group, kind, ("v1",), {}, True, channel, str(path)))
    return lambda release: CrdIndex(GATEWAY_API_MODULE, tuple(entries))


@pytest.fixture
def running(tmp_path: Path, manifests: Path) -> Iterator[tuple[KubeBackend, FakeCluster]]:
    api = FakeCluster()
    b, _ = make(tmp_path, manifests, api)
    with b.up():
        yield b, api


# ---- pure helpers -----------------------------------------------------------------------------

POD = {
    "metadata": {
        "name": "web-6f7d8-00001",
        "namespace": "sample",
        "labels": {"app": "web", "pod-template-hash": "6f7d8"},
        "ownerReferences": [{"kind": "ReplicaSet", "name": "web-6f7d8"}],
    },
    "spec": {
        "containers": [
            {"name": "web", "ports": [{"name": "http", "containerPort": 3000}, {"containerPort": 9090}]},
            {"name": "istio-proxy", "ports": [{"name": "http-envoy-prom", "containerPort": 15090}]},
        ]
    },
}


def test_pod_helpers() -> None:
    assert deployment_of(POD) == "web"
    assert deployment_of({"metadata": {"name": "bare"}}) == "bare"
    assert has_sidecar(POD)
    native = {
        "spec": {"initContainers": [{"name": "istio-proxy", "restartPolicy": "Always"}], "containers": []}
    }
    assert has_sidecar(native)
    assert container_ports(POD) == {"http": 3000, "9090": 9090}


def test_service_target_port_resolves_names_and_namespaces() -> None:
    svc = {
        "metadata": {"name": "web", "namespace": "sample"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    assert service_target_port([svc], POD) == 3000
    elsewhere = {**svc, "metadata": {"name": "web", "namespace": "other"}}
    assert service_target_port([elsewhere], POD) == 0
    numeric = {**svc, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
    assert service_target_port([numeric], POD) == 80


def test_ejected_hosts_and_events() -> None:
    text = (
        "outbound|3000||web.sample.svc.cluster.local::10.0.0.1:3000::health_flags::/failed_outlier_check\n"
        "outbound|3000||web.sample.svc.cluster.local::10.0.0.2:3000::health_flags::healthy\n"
    )
    assert parse_ejected(text) == {"outbound|3000||web.sample.svc.cluster.local": ["10.0.0.1:3000"]}
    ev = [
        {
            "lastTimestamp": "2026-11-25T17:00:02Z",
            "type": "Warning",
            "reason": "BackOff",
            "count": 3,
            "involvedObject": {"kind": "Pod", "name": "web-1"},
            "message": "Back-off pulling image",
        }
    ]
    assert format_events(ev) == "2026-11-25T17:00:02Z Warning Pod/web-1 BackOff x3: Back-off pulling image\n"


# ---- lifecycle --------------------------------------------------------------------------------


def test_is_a_backend(tmp_path: Path, manifests: Path) -> None:
    b, _ = make(tmp_path, manifests, FakeCluster())
    assert isinstance(b, Backend)
    assert b.name == "existing"


def test_preflight_failure_leaves_nothing_behind(tmp_path: Path, manifests: Path) -> None:
    b, connects = make(tmp_path, manifests, FakeCluster(), backend="kind")
    with pytest.raises(ToolMissing) as info:
        b.up()
    assert info.value.tool == "docker"
    assert connects == [] and not b.marker.exists() and b.state is State.STOPPED


def test_unreachable_cluster_is_a_tool_missing(tmp_path: Path, manifests: Path) -> None:
    b, _ = make(tmp_path, manifests, FakeCluster(reachable=False), kube_context="prod")
    with pytest.raises(ToolMissing) as info:
        b.up()
    assert info.value.tool == "a reachable Kubernetes cluster (context 'prod')"
    assert "kubectl cluster-info --context prod" in info.value.how_to_get
    assert not b.marker.exists()


def test_existing_cluster_without_istio(tmp_path: Path, manifests: Path) -> None:
    api = FakeCluster(istio=False)
    b, _ = make(tmp_path, manifests, api)
    with pytest.raises(ToolMissing, match="Istio"):
        b.up()
    assert not [k for k in api.objects if k[1] == "Namespace"]  # nothing applied


def test_up_on_existing_then_down_removes_only_what_it_created(tmp_path: Path, manifests: Path) -> None:
    api = FakeCluster()
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}})  # the user's own
    b, connects = make(tmp_path, manifests, api)
    messages: list[str] = []
    b.progress = messages.append
    with b.up():
        assert b.state is State.RUNNING
        assert connects == [(None, None)]
        info = json.loads(b.marker.read_text())
        assert info["backend"] == "existing" and info["phase"] == "running" and info["tracing"] is True
        created = {tuple(k) for k in info["created"]}
        assert ("v1", "Namespace", "", "sample") in created and (
            "v1",
            "Namespace",
            "",
            "other",
        ) not in created
        assert ("apps/v1", "Deployment", RELAY_NAMESPACE, "sidecar-relay") in created
        assert any("not a kind cluster" in m for m in messages)
        assert any("warning: istiod runs Istio 1.30.1" in m for m in messages)
    deleted = {str(r) for r in api.deleted}
    assert {"Namespace/sample", "VirtualService/sample/web", f"Namespace/{RELAY_NAMESPACE}"} <= deleted
    assert "Namespace/other" not in deleted
    assert not b.marker.exists() and b.state is State.STOPPED and api.closed


def test_existing_with_a_revision_creates_only_its_own_and_down_deletes_only_that(
    tmp_path: Path, manifests: Path
) -> None:
    """The SRE's cluster: revision 1-31, the gateway in istio-ingress, no tracing provider. meshproof's
    namespaces get istio.io/rev=1-31; nothing lands in istio-system; down deletes exactly what up created."""
    (manifests / "40-jaeger.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: jaeger-query, namespace: istio-system}\nspec: {}\n"
    )
    api = FakeCluster(revision="1-31", gateway_namespace="istio-ingress", tracing=False)
    before = {k: json.dumps(v, sort_keys=True) for k, v in api.objects.items()}
    b, _ = make(tmp_path, manifests, api, kube_context="kind-theirs")
    with b.up():
        labels = api.objects[("", "Namespace", "", "sample")]["metadata"]["labels"]
        assert labels.get("istio.io/rev") == "1-31" and "istio-injection" not in labels
        template = api.objects[("apps", "Deployment", "sample", "web")]["spec"]["template"]
        assert "proxyStatsMatcher" in template["metadata"]["annotations"]["proxy.istio.io/config"]
        assert not [k for k in api.objects if k[2] == "istio-system" and k not in before]
        assert b.trace_query_url() is None and "no tracing provider" in b.unavailable()["tracing"]
        created = {tuple(k) for k in json.loads(b.marker.read_text())["created"]}
        new = {k for k in api.objects if k not in before and k[1] != "Pod"}
        assert {(k[1], k[2], k[3]) for k in new} == {(k[1], k[2], k[3]) for k in created}
    # every object of the cluster as it was, nothing of meshproof's left (the fake does not cascade a
    # namespace's deletion to its pods, as the API server does)
    after = {k: json.dumps(v, sort_keys=True) for k, v in api.objects.items() if k[1] != "Pod" or k in before}
    assert after == before


def test_existing_with_a_revision_that_is_not_installed_creates_nothing(
    tmp_path: Path, manifests: Path
) -> None:
    api = FakeCluster(revision="1-31")
    before = dict(api.objects)
    b, _ = make(tmp_path, manifests, api, istio_revision="1-30")
    with pytest.raises(UserError, match="'1-30' is not installed"):
        b.up()
    assert api.objects.keys() == before.keys() and api.deleted == [] and not b.marker.exists()


def test_existing_runs_its_own_gateway_and_leaves_the_clusters_alone(tmp_path: Path, manifests: Path) -> None:
    """Seen on a plain kind cluster with istioctl by hand (revision 1-31, gateway in istio-ingress): the
    cluster's gateway 0/1 Ready, and its Envoy keeping only the user's statistics. meshproof names it
    and runs a gateway of its own (injected by the revision's gateway template), which its Gateways
    select; the cluster's gateway pod is not selected by any of them and is left as it was."""
    from harness.backends.kube import own_gateway

    (manifests / "35-gateway.yaml").write_text(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: sample}\n"
        "spec: {selector: {istio: ingressgateway}, servers: [{port: {number: 80, name: http, protocol: HTTP}, "
        "hosts: ['*']}]}\n"
    )
    api = FakeCluster(revision="1-31", gateway_namespace="istio-ingress", tracing=False)
    theirs = ("", "Pod", "istio-ingress", "istio-ingressgateway-7f9-xyz12")
    api.objects[theirs]["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    before = json.dumps(api.objects[theirs], sort_keys=True)
    b, _ = make(tmp_path, manifests, api, kube_context="kind-theirs")
    messages: list[str] = []
    b.progress = messages.append
    with b.up():
        said = next(m for m in messages if m.startswith("Istio revision 1-31"))
        assert "own ingress gateway in meshproof-ingress" in said
        assert "not Ready: istio-ingress/istio-ingressgateway-7f9-xyz12" in said
        ns = api.objects[("", "Namespace", "", own_gateway.NAMESPACE)]["metadata"]["labels"]
        assert ns.get("istio.io/rev") == "1-31"
        dep = api.objects[("apps", "Deployment", own_gateway.NAMESPACE, "istio-ingressgateway")]
        template = dep["spec"]["template"]["metadata"]
        assert template["annotations"]["inject.istio.io/templates"] == "gateway"
        assert "proxyStatsMatcher" in template["annotations"]["proxy.istio.io/config"]
        gateways = [o for k, o in api.objects.items() if k[1] == "Gateway"]
        assert gateways and all(
            g["spec"]["selector"] == {"istio": "ingressgateway", "meshproof.dev/ingress": "true"}
            for g in gateways
        )
        assert [w.namespace for w in b.workloads() if w.role == "gateway"] == [own_gateway.NAMESPACE]
        assert "meshproof-ingress" in b.ingress_url() or b.ingress_url().startswith("http://127.0.0.1:")
    assert json.dumps(api.objects[theirs], sort_keys=True) == before
    assert ("apps", "Deployment", own_gateway.NAMESPACE, "istio-ingressgateway") not in api.objects


class TerminatingNamespaces(FakeCluster):
    """An API server where a deleted Namespace stays readable (Terminating) for a few reads."""

    def __init__(self, reads: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.reads, self.terminating = reads, {}  # type: ignore[var-annotated]

    def delete(self, ref: ObjectRef, *, grace_seconds: int | None = None) -> bool:
        obj = self.objects.get((ref.api_version.rpartition("/")[0], ref.kind, ref.namespace, ref.name))
        if ref.kind == "Namespace" and obj is not None:
            self.terminating[ref.name] = [self.reads, obj]
        return super().delete(ref, grace_seconds=grace_seconds)

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        left = self.terminating.get(ref.name) if ref.kind == "Namespace" else None
        if left and left[0] > 0:
            left[0] -= 1
            return dict(left[1])
        return super().get(ref)


def test_down_on_existing_returns_once_its_namespaces_are_gone(tmp_path: Path, manifests: Path) -> None:
    """Seen on the hand-installed kind cluster: `down` returned with meshproof's namespaces still
    Terminating, so a listing right after it differed from the one before `up`."""
    api = TerminatingNamespaces(reads=3, revision="1-31", tracing=False)
    b, _ = make(tmp_path, manifests, api)
    b.up()
    namespaces = [k[3] for k in api.objects if k[1] == "Namespace"]
    b.down()
    assert api.terminating and all(left == 0 for left, _ in api.terminating.values())
    assert all(api.get(ObjectRef("v1", "Namespace", "", n)) is None for n in namespaces)


def test_existing_without_gateway_api_crds_names_that_for_the_suites_to_skip(
    tmp_path: Path, manifests: Path
) -> None:
    """Seen on the hand-installed cluster (Istio's install brings no Gateway API CRDs): the Gateway API
    suite's 8 tests failed ("the cluster does not serve HTTPRoute"); unavailable() now names why, so
    the suite skips with that reason, as the tracing suite does without a provider."""
    b, _ = make(tmp_path, manifests, FakeCluster(revision="1-31", tracing=False))
    with b.up():
        why = b.unavailable()
        assert (
            "the cluster serves no" in why["gateway-api"] and "CRDs are not installed" in why["gateway-api"]
        )
        assert "no tracing provider" in why["tracing"]


def test_up_refuses_a_recorded_mesh(tmp_path: Path, manifests: Path) -> None:
    b, _ = make(tmp_path, manifests, FakeCluster())
    b.marker.parent.mkdir(parents=True)
    b.marker.write_text('{"backend": "existing", "phase": "running"}')
    with pytest.raises(StateError, match="meshproof down"):
        b.up()


def test_workloads(running: tuple[KubeBackend, FakeCluster]) -> None:
    b, _ = running
    ws = b.workloads()
    assert [(w.namespace, w.deployment, w.role) for w in ws] == [
        ("other", "client", "client"),
        ("sample", "web", "app"),
        ("sample", "web", "app"),
        ("meshproof-ingress", "istio-ingressgateway", "gateway"),  # existing: meshproof's own gateway
    ]
    web = ws[1]
    assert web.version == "v1" and web.service_account == "web" and web.address.startswith("10.244.")
    for url in (web.app_url, web.admin_url, web.sidecar_url, web.proxy_admin_url):
        assert url.startswith("http://127.0.0.1:")
    assert len({web.app_url, web.admin_url, web.sidecar_url, web.proxy_admin_url}) == 4
    assert ws[0].sidecar_url == ""  # a client: no Service selects it
    gw = ws[-1]
    assert gw.app_url == "" and gw.proxy_admin_url.startswith("http://127.0.0.1:")
    assert b.workloads()[1].app_url == web.app_url  # forwards are reused
    assert b.workload("sample/web") == web and b.workload(web.name) == web and b.workload("ingress") == gw
    with pytest.raises(StateError, match="no workload 'nope'"):
        b.workload("nope")
    assert b.service_url("web", "sample", 3000) == "http://web.sample.svc.cluster.local:3000"
    assert b.trace_query_url() is None  # the fake runs no Jaeger pod
    assert b.config_dir() is None


def test_sidecar_url_goes_through_the_relay(running: tuple[KubeBackend, FakeCluster]) -> None:
    b, api = running
    web = b.workload("sample/web")
    # The fake relay stream closes at once: the connection never reached the sidecar, and the
    # forward says so instead of closing (which would look like STRICT mTLS refusing plaintext).
    r = httpx.get(web.sidecar_url + "/", timeout=5)
    assert r.status_code == 502 and web.ref.split("/")[1] in r.headers[UNREACHED_HEADER]
    assert api.opened[-1][0] == RELAY_NAMESPACE and api.opened[-1][2] == 15999


def test_faults_go_to_the_admin_port(tmp_path: Path, manifests: Path) -> None:
    """The fault request travels through the port-forward to the chosen pod's admin port (3001),
    carrying the fault as JSON; clearing it sends DELETE to the same place."""
    api = FakeCluster()
    api.http_ports[3001] = (200, b'{"active": true}')
    real = httpx.Client(timeout=5, trust_env=False)

    def through_the_forward(request: httpx.Request) -> httpx.Response | None:
        if not request.url.path.startswith("/admin/"):
            return None  # istiod's endpoints: the fake transport answers
        r = real.send(
            httpx.Request(request.method, request.url, headers=request.headers, content=request.content)
        )
        return httpx.Response(r.status_code, content=r.content, headers=r.headers)

    b, _ = make(tmp_path, manifests, api, http=httpx.Client(transport=api.transport(through_the_forward)))
    with b.up(), real:
        web = b.workload("sample/web")
        other = next(w for w in b.workloads() if w.deployment == "web" and w.name != web.name)
        b.inject_fault("sample/web", AppFault(status=503, rate=0.5, delay_ms=20))
        b.clear_fault("sample/web")
    (ns, pod, port, posted), (_, pod2, port2, deleted) = api.served
    assert (ns, pod, port) == ("sample", web.name, 3001) and (pod2, port2) == (web.name, 3001)
    assert other.name not in (pod, pod2)
    head, _, body = posted.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /admin/fault HTTP/1.1")
    assert json.loads(body) == {"status": 503, "rate": 0.5, "delay_ms": 20}
    assert deleted.startswith(b"DELETE /admin/fault HTTP/1.1")


def test_clearing_a_fault_needs_no_app_fault_hook(tmp_path: Path, manifests: Path) -> None:
    """An app without /admin/fault (the sample with ADMIN_FAULT=false answers 404) has no app fault to
    clear: clearing the replica's fault succeeds; any other failure of the app still raises."""
    api = FakeCluster()
    answer = {"status": 404}

    def no_fault_hook(request: httpx.Request) -> httpx.Response | None:
        if request.url.path != "/admin/fault":
            return None
        return httpx.Response(answer["status"], json={"error": "not found", "path": "/admin/fault"})

    b, _ = make(tmp_path, manifests, api, http=httpx.Client(transport=api.transport(no_fault_hook)))
    with b.up():
        b.clear_fault("sample/web")
        answer["status"] = 500
        with pytest.raises(BackendError, match="clearing the fault on sample/web"):
            b.clear_fault("sample/web")


def test_apply_and_delete_wait_for_propagation(
    running: tuple[KubeBackend, FakeCluster], tmp_path: Path
) -> None:
    b, api = running
    (tmp_path / "vs.yaml").write_text(VS_EDIT)
    (tmp_path / "dr.yaml").write_text(DR)
    writes = api.istio_writes
    assert b.apply([tmp_path / "vs.yaml", tmp_path / "dr.yaml"]) >= 0
    assert api.istio_writes == writes + 2
    assert b.apply([tmp_path / "vs.yaml"]) == 0.0  # unchanged: nothing to wait for
    b.delete([tmp_path / "dr.yaml"])
    assert ("networking.istio.io", "DestinationRule", "sample", "web") not in api.objects
    with pytest.raises(StateError, match="not applied"):
        b.delete([tmp_path / "dr.yaml"])


def test_with_workloads_applies_for_the_block_and_deletes_after_a_failure(
    running: tuple[KubeBackend, FakeCluster], tmp_path: Path
) -> None:
    """A cluster adds objects while it runs: with_workloads is this mesh with them applied, and
    they are deleted when the block ends, also when it fails."""
    b, api = running
    (tmp_path / "dr.yaml").write_text(DR)
    key = ("networking.istio.io", "DestinationRule", "sample", "web")
    seen = []
    with (  # noqa: PT012 - the failure must happen inside the block
        pytest.raises(RuntimeError, match="the block failed"),
        b.with_workloads([tmp_path / "dr.yaml"], tmp_path / "work") as mesh,
    ):
        seen.append((mesh is b, key in api.objects))
        raise RuntimeError("the block failed")
    assert seen == [(True, True)]
    assert key not in api.objects


def test_wait_synced_gives_up_after_its_own_timeout(tmp_path: Path, manifests: Path) -> None:
    """A proxy istiod sent config that it never ACKs: wait_synced(3) raises after about 3 s of the
    backend's clock, not after the cluster's readiness timeout (it ignored its argument before)."""
    api = FakeCluster()
    stuck = {"on": False}

    def unacked(request: httpx.Request) -> httpx.Response | None:
        if not stuck["on"] or request.url.path != "/debug/syncz":
            return None
        resources = {"type.googleapis.com/envoy.config.cluster.v3.Cluster": {"sent": "v2", "acked": "v1"}}
        return httpx.Response(200, json=[{"proxy": p, "resources": resources} for p in api.proxies()])

    b, _ = make(tmp_path, manifests, api, http=httpx.Client(transport=api.transport(unacked)))
    with b.up():
        assert b.wait_synced(timeout=3) >= 0.0  # synced: returns
        stuck["on"] = True
        clock = b._clock  # noqa: SLF001 - the fake clock make() injected
        start = clock.now()
        with pytest.raises(WaitTimeout):
            b.wait_synced(timeout=3)
        assert clock.now() - start <= 4 < b.settings.ready_timeout
        stuck["on"] = False


def test_load_runner_is_locust_inside_the_cluster(
    running: tuple[KubeBackend, FakeCluster], tmp_path: Path, manifests: Path
) -> None:
    """Backend.load_runner on kind/existing: Locust's master and workers inside the cluster, in the
    pinned official image unless MESHPROOF_LOCUST_IMAGE names another (kind's own build: see
    test_kind_flow_with_local_images)."""
    b, api = running
    run = b.load_runner(LoadConfig(), workdir=tmp_path / "load")
    assert isinstance(run, KubeLocustRun) and run.api is api and run.where == "in the cluster"
    assert _images(run.objects) == {"locustio/locust:2.47.0"}
    # existing: through meshproof's own gateway's Service
    assert run.target.ingress_url == "http://istio-ingressgateway.meshproof-ingress.svc.cluster.local:80"
    (tmp_path / "own").mkdir()
    own, _ = make(tmp_path / "own", manifests, FakeCluster(), locust_image="mine/locust:1")
    with own.up():
        assert _images(own.load_runner(LoadConfig(), workdir=tmp_path / "own-load").objects) == {
            "mine/locust:1"
        }


def _images(objects: list[dict[str, Any]]) -> set[str]:
    return {
        c["image"]
        for o in objects
        if o["kind"] == "Deployment"
        for c in o["spec"]["template"]["spec"]["containers"]
    }


def test_kill_and_restart(running: tuple[KubeBackend, FakeCluster]) -> None:
    b, _ = running
    victim = b.workload("sample/web")
    b.kill(victim.ref)
    names = [w.name for w in b.workloads() if w.deployment == "web"]
    assert victim.name not in names and len(names) == 2
    b.restart(victim.ref)
    assert victim.name not in [w.name for w in b.workloads()]


def test_diagnostics(running: tuple[KubeBackend, FakeCluster], tmp_path: Path) -> None:
    b, _ = running
    files = {p.name for p in b.diagnostics(tmp_path / "diag")}
    web = b.workload("sample/web")
    assert f"sample.{web.name}.config_dump.txt" in files
    assert f"sample.{web.name}.web.log" in files
    assert "istiod.istiod-5d4c-abcde.syncz.json" in files
    assert "events.sample.txt" in files


def test_attach_to_a_detached_mesh(tmp_path: Path, manifests: Path) -> None:
    api = FakeCluster()
    b, _ = make(tmp_path, manifests, api)
    b.up(detach=True)
    b.__exit__(None, None, None)  # detached: the mesh stays
    assert b.marker.exists()
    other, connects = make(tmp_path, manifests, api)
    with other.attach():
        assert connects == [(None, None)]
        assert len(other.workloads()) == 4
    assert other.marker.exists()  # attached means detached: leaving the block keeps the mesh
    assert not other._forwards  # ... but closes this process's port-forwards
    other.down()
    assert not other.marker.exists() and api.deleted


def test_attach_refuses_another_kube_context_than_the_mesh_runs_on(tmp_path: Path, manifests: Path) -> None:
    api = FakeCluster()
    b, connects = make(tmp_path, manifests, api, kube_context="ctx-a")
    b.up(detach=True)
    b.__exit__(None, None, None)
    assert connects == [(None, "ctx-a")]
    same, _ = make(tmp_path, manifests, api, kube_context="ctx-a")
    with same.attach():
        pass
    other, connects = make(tmp_path, manifests, api, kube_context="ctx-b")
    with pytest.raises(StateError, match="runs on kubeconfig context 'ctx-a', not 'ctx-b'"):
        other.attach()
    assert connects == []
    same.down()


def test_kind_flow(tmp_path: Path, manifests: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    node = NodeOptions(image="meshproof.local/kind-node:v1.37.2", own_cni=True, cgroup_v1=True)
    monkeypatch.setattr(KindCluster, "_node", lambda self, tools: node)
    api = FakeCluster(istio_version="1.29.0")  # a different Istio: install the pinned one
    replies = {
        **GOOD_REPLIES,
        "/opt/istio/bin/istioctl version": (0, "client version: 1.31.0\n", ""),
        "/usr/bin/kind get clusters": (0, "", "No kind clusters found.\n"),
        "/usr/bin/kind get kubeconfig": (0, "apiVersion: v1\nkind: Config\n", ""),
        "/usr/bin/docker port": (0, "127.0.0.1:41234\n", ""),
    }
    run = FakeRunner(replies)
    b, connects = make(tmp_path, manifests, api, backend="kind", run=run, which=ALL_TOOLS)
    with b.up():
        state = tmp_path / "state"
        assert connects == [(str(state / "kubeconfig"), "kind-meshproof")]
        assert b.ingress_url() == "http://127.0.0.1:41234"
        verbs = [" ".join(a[:3]) for a in run.calls]
        assert "/usr/bin/kind create cluster" in verbs
        cfg = yaml.safe_load((state / "kind-config.yaml").read_text())
        assert cfg["nodes"][0]["image"] == node.image
        assert cfg["networking"] == {"disableDefaultCNI": True, "podSubnet": node.pod_subnet}
        assert cfg["kubeadmConfigPatches"] == [CGROUP_V1_PATCH]
        assert (tmp_path / "cache" / "kind-clusters" / "meshproof").is_file()  # created by meshproof
        install = next(a for a in run.calls if a[1:2] == ["install"])
        assert install[:5] == [
            "/opt/istio/bin/istioctl",
            "install",
            "--skip-confirmation",
            "--set",
            "profile=default",
        ]
        assert install[install.index("--context") + 1] == "kind-meshproof"
        assert (state / "istio-operator.yaml").is_file()
        assert [
            "/usr/bin/docker",
            "build",
            "-t",
            "meshproof/microservice-1:dev",
            str(tmp_path / "sample-service"),
        ] in run.calls
        assert [
            "/usr/bin/kind",
            "load",
            "docker-image",
            "meshproof/microservice-1:dev",
            "--name",
            "meshproof",
        ] in run.calls
        assert verbs.index("/usr/bin/kind create cluster") < verbs.index(
            "/opt/istio/bin/istioctl install --skip-confirmation"
        )
        # the standard channel's Gateway API CRDs are applied (never the experimental ones)
        crds = {k[3] for k in api.objects if k[1] == "CustomResourceDefinition"}
        assert crds == {"gateways.gateway.networking.k8s.io", "httproutes.gateway.networking.k8s.io"}
    assert run.calls[-1][:3] == ["/usr/bin/kind", "delete", "cluster"]
    assert not b.marker.exists()
    assert not (tmp_path / "cache" / "kind-clusters" / "meshproof").exists()


@pytest.mark.parametrize("owned", [True, False])
def test_down_deletes_an_adopted_kind_cluster_only_if_meshproof_created_it(
    tmp_path: Path, manifests: Path, owned: bool
) -> None:
    api = FakeCluster(istio_version="1.31.0")
    replies = {
        **GOOD_REPLIES,
        "/opt/istio/bin/istioctl version": (0, "client version: 1.31.0\n", ""),
        "/usr/bin/kind get clusters": (0, "meshproof\n", ""),
        "/usr/bin/kind get kubeconfig": (0, "apiVersion: v1\nkind: Config\n", ""),
        "/usr/bin/docker port": (0, "127.0.0.1:41234\n", ""),
    }
    record = tmp_path / "cache" / "kind-clusters" / "meshproof"
    if owned:  # an earlier `up --keep-cluster` created it
        record.parent.mkdir(parents=True)
        record.write_text("kind-meshproof\n")
    run = FakeRunner(replies)
    b, _ = make(tmp_path, manifests, api, backend="kind", run=run, which=ALL_TOOLS)
    with b.up():
        assert not any(a[1:3] == ["create", "cluster"] for a in run.calls)
    deleted = any(a[1:3] == ["delete", "cluster"] for a in run.calls)
    assert deleted is owned
    assert not record.exists()


def test_kind_flow_with_local_images(
    tmp_path: Path, manifests: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MESHPROOF_IMAGES=local: istioctl built from the pin (none on PATH), Istio installed with the local
    images' hub/tag and pull policy Never, the mesh images loaded into kind, the manifests' sample and
    Jaeger images pointed at them."""
    from types import SimpleNamespace

    from harness.backends.kube import kindcluster

    built = str(tmp_path / "cache" / "istio-1.31-dev" / "cluster" / "bin" / "istioctl")
    ensured: list[str] = []

    def ensure(cache_dir: Path, label: str, **_kw: Any) -> SimpleNamespace:
        ensured.append(label)
        return SimpleNamespace(istioctl=built)

    monkeypatch.setattr(kindcluster.istio_cluster, "ensure", ensure)
    monkeypatch.setattr(KindCluster, "_node", lambda self, tools: NodeOptions("meshproof.local/kind-node:x"))
    api = FakeCluster(istio_version="1.29.0")
    run = FakeRunner(KIND_REPLIES)
    no_istioctl = {k: v for k, v in ALL_TOOLS.items() if k != "istioctl"}
    b, _ = make(tmp_path, manifests, api, backend="kind", run=run, which=no_istioctl, images="local")
    with b.up():
        install = next(a for a in run.calls if a[1:2] == ["install"])
        assert install[0] == built and ensured == [DEFAULT_ISTIO]
        overlay = yaml.safe_load((tmp_path / "state" / "istio-operator.yaml").read_text())["spec"]
        assert (overlay["hub"], overlay["tag"]) == ("meshproof.local", DEFAULT_ISTIO)
        assert overlay["values"]["global"]["imagePullPolicy"] == "Never"
        loaded = [a[3] for a in run.calls if a[1:3] == ["load", "docker-image"]]
        assert loaded == [
            f"meshproof.local/pilot:{DEFAULT_ISTIO}",
            f"meshproof.local/proxyv2:{DEFAULT_ISTIO}",
            "meshproof.local/jaeger:v1.76.0",
            "meshproof.local/sample:dev",
            f"meshproof.local/locust:{meshimages.locust_version()}",
        ]
        assert not any(a[1:2] == ["build"] for a in run.calls)  # the official-mode sample build is not run
        first_load = next(i for i, a in enumerate(run.calls) if a[1:3] == ["load", "docker-image"])
        assert first_load < run.calls.index(install)  # pull policy Never: the images are in before istioctl
        images = [
            c.get("image")
            for o in api.objects.values()
            if o.get("kind") == "Deployment"
            for c in o["spec"]["template"]["spec"]["containers"]
        ]
        assert images and "meshproof/microservice-1:dev" not in images
        locust = b.load_runner(LoadConfig(), workdir=tmp_path / "load")  # the Locust image built here
        assert _images(locust.objects) == {f"meshproof.local/locust:{meshimages.locust_version()}"}


def test_kind_keep_cluster(tmp_path: Path, manifests: Path) -> None:
    api = FakeCluster(istio_version="1.31.0")  # already installed: no istioctl install
    replies = {
        **GOOD_REPLIES,
        "/opt/istio/bin/istioctl version": (0, "client version: 1.31.0\n", ""),
        "/usr/bin/kind get clusters": (0, "meshproof\n", ""),
        "/usr/bin/kind get kubeconfig": (0, "apiVersion: v1\nkind: Config\n", ""),
        "/usr/bin/docker port": (0, "127.0.0.1:41234\n", ""),
    }
    run = FakeRunner(replies)
    b, _ = make(tmp_path, manifests, api, backend="kind", run=run, which=ALL_TOOLS, keep_cluster=True)
    with b.up():
        pass
    assert not any(a[1:2] == ["install"] for a in run.calls)
    assert not any(a[1:3] in (["create", "cluster"], ["delete", "cluster"]) for a in run.calls)


KIND_REPLIES = {
    **GOOD_REPLIES,
    "/opt/istio/bin/istioctl version": (0, "client version: 1.31.0\n", ""),
    "/usr/bin/kind get clusters": (0, "", "No kind clusters found.\n"),
    "/usr/bin/kind get kubeconfig": (0, "apiVersion: v1\nkind: Config\n", ""),
    "/usr/bin/docker port": (0, "127.0.0.1:41234\n", ""),
}


def test_kind_starts_an_engine_when_none_runs_and_down_stops_it(tmp_path: Path, manifests: Path) -> None:
    engine = FakeEngine(EngineMode.ABSENT)
    b, _ = make(
        tmp_path,
        manifests,
        FakeCluster(istio_version="1.31.0"),
        "kind",
        FakeRunner(KIND_REPLIES),
        ALL_TOOLS,
        engine=engine,
    )
    with b.up():
        assert json.loads(b.marker.read_text())["docker_engine"] == "ours"
        assert engine.events == ["start"]
    assert engine.events == ["start", "stop"]  # after the cluster was deleted


def test_kind_never_stops_a_foreign_engine(tmp_path: Path, manifests: Path) -> None:
    engine = FakeEngine(EngineMode.FOREIGN)
    b, _ = make(
        tmp_path,
        manifests,
        FakeCluster(istio_version="1.31.0"),
        "kind",
        FakeRunner(KIND_REPLIES),
        ALL_TOOLS,
        engine=engine,
    )
    with b.up():
        assert json.loads(b.marker.read_text())["docker_engine"] == "foreign"
    assert engine.events == ["start"]


def test_kind_keeps_its_engine_for_other_containers_and_for_keep_cluster(
    tmp_path: Path, manifests: Path
) -> None:
    busy = FakeEngine(EngineMode.ABSENT, others=["c0ffee"])
    messages: list[str] = []
    b, _ = make(
        tmp_path,
        manifests,
        FakeCluster(istio_version="1.31.0"),
        "kind",
        FakeRunner(KIND_REPLIES),
        ALL_TOOLS,
        engine=busy,
    )
    b.progress = messages.append
    with b.up():
        pass
    assert busy.events == ["start"]
    assert any("1 other container(s)" in m for m in messages)
    (tmp_path / "k").mkdir()
    kept = FakeEngine(EngineMode.ABSENT)
    b, _ = make(
        tmp_path / "k",
        manifests,
        FakeCluster(istio_version="1.31.0"),
        "kind",
        FakeRunner(KIND_REPLIES),
        ALL_TOOLS,
        engine=kept,
        keep_cluster=True,
    )
    with b.up():
        pass
    assert kept.events == ["start"]


def test_existing_never_touches_docker(tmp_path: Path, manifests: Path) -> None:
    engine = FakeEngine(EngineMode.ABSENT)
    b, _ = make(tmp_path, manifests, FakeCluster(istio_version="1.31.0"), engine=engine)
    with b.up():
        pass
    assert engine.events == []


def test_istio_objects_come_from_the_cluster_with_resource_versions(
    running: tuple[KubeBackend, FakeCluster],
) -> None:
    b, _ = running
    objects = {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]): o for o in b.istio_objects()}
    assert ("VirtualService", "sample", "web") in objects
    assert objects[("VirtualService", "sample", "web")]["metadata"]["resourceVersion"]
    assert all(o["apiVersion"].rpartition("/")[0].endswith("istio.io") for o in objects.values())


def test_control_plane_serving_names_ready_istiod_pods_and_endpoints(
    running: tuple[KubeBackend, FakeCluster],
) -> None:
    b, api = running
    assert b.control_plane_serving() == ["istiod pod istio-system/istiod-5d4c-abcde is ready"]
    slice_key = ("discovery.k8s.io", "EndpointSlice", "istio-system", "istiod-x1")
    api.objects[slice_key] = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "istiod-x1",
            "namespace": "istio-system",
            "labels": {"kubernetes.io/service-name": "istiod"},
        },
        "endpoints": [
            {"addresses": ["10.0.0.9"], "conditions": {"ready": True}},
            {"addresses": ["10.0.0.8"], "conditions": {"ready": False}},
        ],
    }
    assert b.control_plane_serving()[1:] == ["Service istio-system/istiod has a ready endpoint 10.0.0.9"]
    # istiod scaled away: its pod not ready any more, its Service without a ready endpoint
    pod = api.objects[("", "Pod", "istio-system", "istiod-5d4c-abcde")]
    pod["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
    api.objects[slice_key]["endpoints"] = []
    assert b.control_plane_serving() == []


GATEWAY_API_DOCS = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: sample, annotations: {meshproof.dev/traffic-api: gateway-api}}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 3000}]
  rules: [{backendRefs: [{name: web, port: 3000}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: sample}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
"""


def _with_gateway_api(manifests: Path) -> Path:
    (manifests / "35-gateway-api.yaml").write_text(GATEWAY_API_DOCS)
    return manifests


def _gateway_api_objects(api: FakeCluster) -> set[str]:
    return {f"{k[1]}/{k[3]}" for k in api.objects if k[0].startswith("gateway.networking.k8s.io")}


def test_kind_applies_the_gateway_api_crds_before_the_manifests_gateway_api_objects(
    tmp_path: Path, manifests: Path
) -> None:
    api = FakeCluster(istio_version="1.31.0")  # installed: no istioctl install
    run = FakeRunner(KIND_REPLIES)
    messages: list[str] = []
    b, _ = make(
        tmp_path,
        _with_gateway_api(manifests),
        api,
        backend="kind",
        run=run,
        which=ALL_TOOLS,
        traffic_api="gateway-api",
    )
    b.progress = messages.append
    with b.up():
        assert _gateway_api_objects(api) == {"HTTPRoute/web", "Gateway/web"}
        assert any(
            f"applying the Gateway API CRDs ({GATEWAY_API_MODULE}, standard channel: 2)" in m
            for m in messages
        )
        assert b.traffic_api == "gateway-api"
        assert json.loads(b.marker.read_text())["traffic_api"] == "gateway-api"


def test_istio_mode_leaves_out_the_documents_annotated_for_gateway_api(
    tmp_path: Path, manifests: Path
) -> None:
    api = FakeCluster(gateway_api=True)
    b, _ = make(tmp_path, _with_gateway_api(manifests), api)
    with b.up():
        assert _gateway_api_objects(api) == {"Gateway/web"}  # the HTTPRoute is the gateway-api mode's
        assert b.traffic_api == "istio"
        assert not [k for k in api.objects if k[1] == "CustomResourceDefinition"]  # never installed here


def test_existing_without_the_gateway_api_skips_its_documents_saying_why(
    tmp_path: Path, manifests: Path
) -> None:
    api = FakeCluster()
    messages: list[str] = []
    b, _ = make(tmp_path, _with_gateway_api(manifests), api)
    b.progress = messages.append
    with b.up():
        assert not _gateway_api_objects(api)
        assert not [k for k in api.objects if k[1] == "CustomResourceDefinition"]  # never installed
        skipped = [m for m in messages if m.startswith("skipping the manifests' Gateway API objects")]
        assert len(skipped) == 1
        assert "Gateway sample/web" in skipped[0] and "Gateway API CRDs are not installed" in skipped[0]
        # a later process attached to the mesh sees the same objects (and says nothing)
        again, _ = make(tmp_path, manifests, api)
        again.progress = messages.append
        again.attach()
        assert [m for m in messages if m.startswith("skipping the manifests'")] == skipped


def test_existing_without_the_gateway_api_refuses_gateway_api_mode_before_creating_anything(
    tmp_path: Path, manifests: Path
) -> None:
    api = FakeCluster()
    before = set(api.objects)
    b, _ = make(tmp_path, _with_gateway_api(manifests), api, traffic_api="gateway-api")
    with pytest.raises(UserError) as info:
        b.up()
    message = str(info.value)
    assert info.value.exit_code == 2
    assert "--traffic-api gateway-api needs the Gateway API" in message
    assert GATEWAY_API_MODULE in message and "ref=v1.6.0" in message and "--traffic-api istio" in message
    assert set(api.objects) == before


def test_an_unknown_traffic_api_annotation_exits_2_before_the_cluster_is_touched(
    tmp_path: Path, manifests: Path
) -> None:
    (manifests / "35-gateway-api.yaml").write_text(
        GATEWAY_API_DOCS.replace("traffic-api: gateway-api", "traffic-api: gw")
    )
    api = FakeCluster()
    before = set(api.objects)
    b, connects = make(tmp_path, manifests, api)
    with pytest.raises(ConfigError, match=r"35-gateway-api.yaml .*unknown traffic API 'gw'"):
        b.up()
    assert connects == [] and set(api.objects) == before
