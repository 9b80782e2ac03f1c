"""The two Cluster providers on their own, over fakes: ExistingCluster creates and deletes only what
meshproof made; KindCluster owns the engine, the node, and create/adopt/delete by its record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.backends.kube.api import KubeApi
from harness.backends.kube.cluster import Cluster, ExistingCluster, MeshRecord
from harness.backends.kube.engine import EngineMode
from harness.backends.kube.kind.cli import NodeOptions
from harness.backends.kube.kind.meshimages import ref_of
from harness.backends.kube.kindcluster import KindCluster
from harness.backends.kube.tools import ToolPaths
from harness.errors import BackendError, ToolMissing
from harness.settings import Settings
from harness.versions import DEFAULT_ISTIO

from .fakes import ALL_TOOLS, GOOD_REPLIES, FakeCluster, FakeEngine, FakeRunner, which_from

KIND_TOOLS = ToolPaths(
    "/usr/bin/docker", "/usr/bin/kind", "/opt/istio/bin/istioctl", "/usr/bin/kubectl", "1.31.0"
)
KIND_REPLIES = {
    **GOOD_REPLIES,
    "/opt/istio/bin/istioctl version": (0, "client version: 1.31.0\n", ""),
    "/usr/bin/kind get clusters": (0, "", "No kind clusters found.\n"),
    "/usr/bin/kind get kubeconfig": (0, "apiVersion: v1\nkind: Config\n", ""),
    "/usr/bin/docker port": (0, "127.0.0.1:41234\n", ""),
}
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "sample"}}
VS = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "web", "namespace": "sample"},
    "spec": {"hosts": ["web"]},
}


class Made:
    """A provider with its record, runner and progress messages."""

    def __init__(
        self,
        tmp_path: Path,
        cls: type[KindCluster] | type[ExistingCluster],
        *,
        replies: dict[str, tuple[int, str, str]] | None = None,
        which: dict[str, str] | None = None,
        engine: FakeEngine | None = None,
        **settings: Any,
    ) -> None:
        settings.setdefault("images", "official")
        self.settings = Settings(
            backend=cls.name,
            state_dir=tmp_path / "state",
            cache_dir=tmp_path / "cache",
            istio_version=DEFAULT_ISTIO,
            ready_timeout=10.0,
            **settings,
        )
        self.record = MeshRecord(self.settings.state_dir / "backend.json")
        self.run = FakeRunner(replies if replies is not None else KIND_REPLIES)
        self.said: list[str] = []
        self.engine = engine or FakeEngine()
        (tmp_path / "sample").mkdir(exist_ok=True)
        (tmp_path / "sample" / "Dockerfile").write_text("FROM scratch\n")
        self.cluster: Cluster = cls(
            self.settings,
            self.record,
            say=self.said.append,
            which=which_from(which if which is not None else ALL_TOOLS),
            run=self.run,
            sample_dir=tmp_path / "sample",
            engine=self.engine,
        )

    def saved(self) -> dict[str, Any]:
        return dict(json.loads(self.record.path.read_text()))


class Connects:
    """The ``connect`` a teardown gets: counts how often it was asked for the API."""

    def __init__(self, api: FakeCluster) -> None:
        self.api, self.calls = api, 0

    def __call__(self) -> KubeApi:
        self.calls += 1
        return self.api


def test_the_record_writes_the_whole_info_on_save_and_nothing_on_note(tmp_path: Path) -> None:
    record = MeshRecord(tmp_path / "state" / "backend.json")
    record.note(docker_engine="foreign")
    assert not record.path.exists()
    record.save(backend="kind", phase="starting")
    assert json.loads(record.path.read_text()) == {
        "backend": "kind",
        "docker_engine": "foreign",
        "phase": "starting",
    }
    assert not record.path.with_suffix(".tmp").exists()


# ---- ExistingCluster ----------------------------------------------------------------------------


def test_existing_needs_no_tools_and_records_the_context(tmp_path: Path) -> None:
    m = Made(tmp_path, ExistingCluster, which={}, kube_context="prod")
    assert isinstance(m.cluster, Cluster)
    assert m.cluster.failure_note() == ""
    m.cluster.prepare()
    assert m.cluster.preflight() == ToolPaths()
    assert m.cluster.provide(ToolPaths()) == ("", "prod")
    assert m.saved() == {
        "backend": "existing",
        "phase": "starting",
        "istio": m.cluster.release.label,  # type: ignore[attr-defined]
        "kubeconfig": "",
        "context": "prod",
        "created": [],
    }
    assert m.engine.events == [] and m.run.calls == []


def test_existing_records_only_objects_it_creates_and_deletes_only_those(tmp_path: Path) -> None:
    m = Made(tmp_path, ExistingCluster)
    m.cluster.provide(ToolPaths())
    api = FakeCluster()
    api.apply(NAMESPACE)  # the user's own namespace
    m.cluster.record_new(api, [NAMESPACE, VS])
    m.cluster.record_new(api, [VS])  # again (an apply of the same file): recorded once
    assert m.saved()["created"] == [["networking.istio.io/v1", "VirtualService", "sample", "web"]]
    api.apply(VS)
    connect = Connects(api)
    m.cluster.teardown(m.saved(), connect)
    assert [str(r) for r in api.deleted] == ["VirtualService/sample/web"] and connect.calls == 1
    assert m.said == ["deleting 1 objects this backend created"]


def test_existing_teardown_of_nothing_created_does_not_connect(tmp_path: Path) -> None:
    m = Made(tmp_path, ExistingCluster)
    connect = Connects(FakeCluster())
    m.cluster.teardown({"backend": "existing", "created": []}, connect)
    assert connect.calls == 0 and m.said == []


def test_existing_never_installs_istio_and_warns_about_another_minor(tmp_path: Path) -> None:
    m = Made(tmp_path, ExistingCluster)
    m.cluster.install_istio(FakeCluster(istio_version="1.30.1"), KIND_TOOLS, "", "")
    assert m.said[0] == f"warning: istiod runs Istio 1.30.1, meshproof pins {m.settings.istio_version}"
    with pytest.raises(ToolMissing, match="Istio"):
        m.cluster.install_istio(FakeCluster(istio=False), KIND_TOOLS, "", "")
    assert m.run.calls == []


NO_LOCAL_IMAGES = {**KIND_REPLIES, "/usr/bin/docker image inspect": (1, "", "Error: No such image")}


def test_existing_loads_the_sample_only_into_a_kind_context(tmp_path: Path) -> None:
    m = Made(tmp_path, ExistingCluster, replies=NO_LOCAL_IMAGES)
    m.cluster.load_sample(KIND_TOOLS, "prod")
    assert m.run.calls == [] and "is not a kind cluster" in m.said[-1]
    m.cluster.load_sample(ToolPaths(), "kind-foo")  # no docker, no kind here
    assert m.run.calls == []
    m.cluster.load_sample(KIND_TOOLS, "kind-foo")
    assert [c for c in m.run.calls if c[1:3] != ["image", "inspect"]] == [
        ["/usr/bin/docker", "build", "-t", "meshproof/microservice-1:dev", str(tmp_path / "sample")],
        ["/usr/bin/kind", "load", "docker-image", "meshproof/microservice-1:dev", "--name", "foo"],
    ]


def test_existing_loads_the_images_built_here_into_a_kind_context(tmp_path: Path) -> None:
    """`meshproof images build`'s sample and Locust are kind-loaded and stand for the manifests' image."""
    m = Made(tmp_path, ExistingCluster)  # docker image inspect answers: present
    m.cluster.load_sample(KIND_TOOLS, "kind-foo")
    loads = [c for c in m.run.calls if c[1:2] == ["load"]]
    assert [c[3] for c in loads] == sorted(ref_of(n) for n in ("locust", "sample"))
    assert m.cluster.locust_image == ref_of("locust")
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "sample"},
        "spec": {
            "template": {"spec": {"containers": [{"name": "web", "image": "meshproof/microservice-1:dev"}]}}
        },
    }
    (c,) = m.cluster.localized([dep])[0]["spec"]["template"]["spec"]["containers"]
    assert c["image"] == ref_of("sample") and c["imagePullPolicy"] == "Never"


def test_existing_takes_the_images_from_a_registry_the_user_names(tmp_path: Path) -> None:
    m = Made(tmp_path, ExistingCluster, image_registry="registry.example/team/")
    m.cluster.load_sample(KIND_TOOLS, "kind-foo")
    assert m.run.calls == []  # nothing built, nothing loaded
    assert m.cluster.locust_image == ref_of("locust").replace("meshproof.local", "registry.example/team")


def test_existing_leaves_the_control_plane_namespace_and_the_ingress_to_the_cluster(tmp_path: Path) -> None:
    m = Made(tmp_path, ExistingCluster)
    jaeger = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "jaeger", "namespace": "istio-system"},
    }
    assert m.cluster.localized([VS, jaeger]) == [VS]
    assert "not applying into istio-system" in m.said[-1] and "Service/jaeger" in m.said[-1]
    m.cluster.load_mesh_images(KIND_TOOLS)
    assert m.cluster.ingress_url({"ingress_port": 41234}) == "" and m.cluster.locust_image == ""
    assert m.run.calls == []


def test_existing_labels_its_namespaces_for_the_installed_revision(tmp_path: Path) -> None:
    m = Made(tmp_path, ExistingCluster)
    api = FakeCluster(revision="1-31", gateway_namespace="istio-ingress", tracing=False)
    m.cluster.install_istio(api, KIND_TOOLS, "", "kind-theirs")
    injected = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "sample", "labels": {"istio-injection": "enabled"}},
    }
    off = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "relay", "labels": {"istio-injection": "disabled"}},
    }
    out = m.cluster.localized([injected, off])
    assert out[0]["metadata"]["labels"] == {"istio.io/rev": "1-31"}
    assert out[1]["metadata"]["labels"] == {"istio-injection": "disabled"}
    info = json.loads(m.record.path.read_text())
    assert info["revision"] == "1-31" and info["discovered"]["gateways"] == [
        "istio-ingress/istio-ingressgateway-7f9-xyz12"
    ]
    assert "no tracing provider" in info["unavailable"]["tracing"]
    assert any(line.startswith("skipping the tracing suite: no tracing provider") for line in m.said)


# ---- KindCluster --------------------------------------------------------------------------------


def test_kind_notes_the_deletion_on_failure_unless_kept(tmp_path: Path) -> None:
    kind = Made(tmp_path, KindCluster).cluster
    assert isinstance(kind, Cluster) and "--keep-cluster" in kind.failure_note()
    assert Made(tmp_path, KindCluster, keep_cluster=True).cluster.failure_note() == ""


@pytest.mark.parametrize(("mode", "recorded"), [(EngineMode.ABSENT, "ours"), (EngineMode.FOREIGN, "foreign")])
def test_kind_records_an_engine_it_started_at_once(tmp_path: Path, mode: EngineMode, recorded: str) -> None:
    m = Made(tmp_path, KindCluster, engine=FakeEngine(mode))
    m.cluster.prepare()
    assert m.engine.events == ["start"] and m.said == ["Docker engine"]
    assert m.record.info["docker_engine"] == recorded
    assert m.record.path.exists() is (recorded == "ours")  # so that `down` stops it after any failure


def test_kind_creates_a_cluster_with_its_node_and_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = NodeOptions(image="meshproof.local/kind-node:x", own_cni=True)
    monkeypatch.setattr(KindCluster, "_node", lambda self, tools: node)
    m = Made(tmp_path, KindCluster)
    kubeconfig, context = m.cluster.provide(KIND_TOOLS)
    assert (kubeconfig, context) == (str(tmp_path / "state" / "kubeconfig"), "kind-meshproof")
    info = m.saved()
    assert info["created_cluster"] is True and info["ingress_port"] == 41234
    assert info["kind_cluster"] == "meshproof" and info["phase"] == "starting"
    assert m.cluster.ingress_url(info) == "http://127.0.0.1:41234"
    assert "meshproof.local/kind-node:x" in (tmp_path / "state" / "kind-config.yaml").read_text()


def test_kind_adopts_a_cluster_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_node(self: KindCluster, tools: ToolPaths) -> NodeOptions:
        raise AssertionError("an adopted cluster needs no node image")

    monkeypatch.setattr(KindCluster, "_node", no_node)
    m = Made(
        tmp_path, KindCluster, replies={**KIND_REPLIES, "/usr/bin/kind get clusters": (0, "meshproof\n", "")}
    )
    m.cluster.provide(KIND_TOOLS)
    assert m.saved()["created_cluster"] is False
    assert not any(a[1:3] == ["create", "cluster"] for a in m.run.calls)
    m.cluster.teardown(m.saved(), Connects(FakeCluster()))  # not meshproof's: kept
    assert not any(a[1:3] == ["delete", "cluster"] for a in m.run.calls)


@pytest.mark.parametrize("owned", [True, False])
def test_kind_teardown_from_another_process_follows_the_record(tmp_path: Path, owned: bool) -> None:
    m = Made(tmp_path, KindCluster)
    info = {
        "backend": "kind",
        "kind_cluster": "meshproof",
        "kubeconfig": "/s/kubeconfig",
        "created_cluster": owned,
    }
    connect = Connects(FakeCluster())
    m.cluster.teardown(info, connect)
    deletes = [a for a in m.run.calls if a[1:3] == ["delete", "cluster"]]
    if owned:
        assert deletes == [
            ["/usr/bin/kind", "delete", "cluster", "--name", "meshproof", "--kubeconfig", "/s/kubeconfig"]
        ]
    else:
        assert deletes == [] and m.said == [
            "kind cluster meshproof was not created by meshproof: left as it is"
        ]
    assert connect.calls == 0  # the cluster goes as a whole: no API needed


def test_kind_teardown_before_a_cluster_was_asked_for_does_nothing(tmp_path: Path) -> None:
    m = Made(tmp_path, KindCluster)
    m.cluster.teardown({"docker_engine": "foreign"}, Connects(FakeCluster()))
    assert m.run.calls == [] and m.engine.events == []


def test_kind_teardown_without_kind_names_it(tmp_path: Path) -> None:
    m = Made(tmp_path, KindCluster, which={})
    with pytest.raises(ToolMissing, match="kind"):
        m.cluster.teardown({"kind_cluster": "meshproof", "created_cluster": True}, Connects(FakeCluster()))


def test_kind_stops_only_its_own_idle_engine_after_the_cluster(tmp_path: Path) -> None:
    info = {"kind_cluster": "meshproof", "created_cluster": True, "docker_engine": "ours"}
    m = Made(tmp_path, KindCluster, engine=FakeEngine(EngineMode.OURS))
    m.cluster.teardown(info, Connects(FakeCluster()))
    assert m.engine.events == ["stop"] and m.run.calls[-1][1:3] == ["delete", "cluster"]
    busy = Made(tmp_path, KindCluster, engine=FakeEngine(EngineMode.OURS, others=["c0ffee"]))
    busy.cluster.teardown(info, Connects(FakeCluster()))
    assert busy.engine.events == [] and "1 other container(s)" in busy.said[-1]
    foreign = Made(tmp_path, KindCluster, engine=FakeEngine(EngineMode.FOREIGN))
    foreign.cluster.teardown({**info, "docker_engine": "foreign"}, Connects(FakeCluster()))
    assert foreign.engine.events == []


def test_kind_names_an_engine_that_would_not_stop(tmp_path: Path) -> None:
    class Stuck(FakeEngine):
        def stop(self) -> bool:
            raise BackendError("dockerd did not exit")

    m = Made(tmp_path, KindCluster, engine=Stuck(EngineMode.OURS))
    with pytest.raises(BackendError, match="^stopping the Docker engine: dockerd did not exit$"):
        m.cluster.teardown({"kind_cluster": "meshproof", "docker_engine": "ours"}, Connects(FakeCluster()))


def test_kind_with_official_images_loads_the_sample_and_keeps_the_manifests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(KindCluster, "_node", lambda self, tools: NodeOptions())
    m = Made(tmp_path, KindCluster)
    m.cluster.provide(KIND_TOOLS)
    before = len(m.run.calls)
    m.cluster.load_mesh_images(KIND_TOOLS)
    assert len(m.run.calls) == before  # the cluster pulls Istio's images
    m.cluster.load_sample(KIND_TOOLS, "kind-meshproof")
    assert m.run.calls[before:] == [
        ["/usr/bin/docker", "build", "-t", "meshproof/microservice-1:dev", str(tmp_path / "sample")],
        ["/usr/bin/kind", "load", "docker-image", "meshproof/microservice-1:dev", "--name", "meshproof"],
    ]
    objs = [VS]
    assert m.cluster.localized(objs) is objs and m.cluster.locust_image == ""
    m.cluster.record_new(FakeCluster(), objs)
    assert "created" not in m.saved()  # the whole cluster goes with `down`
