"""kind config generation and the KindCli lifecycle, with an injected runner."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.backends.kube.kind.cli import (
    INGRESS_NODE_PORT,
    KindCli,
    KindState,
    cluster_names,
    kind_config,
    parse_docker_port,
    render_kind_config,
)
from harness.errors import BackendError, CommandFailed

from ..fakes import FakeRunner

KUBECONFIG = "apiVersion: v1\nkind: Config\nclusters: []\n"


def test_kind_config_maps_the_ingress_node_port_to_loopback() -> None:
    cfg = kind_config(41234)
    assert cfg["kind"] == "Cluster" and cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    (node,) = cfg["nodes"]
    assert node["role"] == "control-plane"
    assert node["extraPortMappings"] == [
        {
            "containerPort": INGRESS_NODE_PORT,
            "hostPort": 41234,
            "listenAddress": "127.0.0.1",
            "protocol": "TCP",
        }
    ]


def test_render_kind_config_is_yaml_of_the_same() -> None:
    assert yaml.safe_load(render_kind_config(5000, node_port=30999)) == kind_config(5000, node_port=30999)


def test_kind_config_rejects_bad_ports() -> None:
    with pytest.raises(ValueError):
        kind_config(0)


@pytest.mark.parametrize(
    ("text", "port"),
    [("127.0.0.1:41234\n", 41234), ("0.0.0.0:8080\n[::]:8080\n", 8080), ("", None), ("garbage", None)],
)
def test_parse_docker_port(text: str, port: int | None) -> None:
    assert parse_docker_port(text) == port


def test_cluster_names_ignores_the_none_found_message() -> None:
    assert cluster_names("meshproof\nother\n") == ["meshproof", "other"]
    assert cluster_names("No kind clusters found.\n") == []


def _cluster(tmp_path: Path, run: FakeRunner, keep: bool = False) -> KindCli:
    return KindCli(
        "meshproof",
        tmp_path / "state",
        kind="/bin/kind",
        docker="/bin/docker",
        keep=keep,
        run=run,
        pick_port=lambda: 41234,
    )


def test_creates_when_absent_then_deletes_on_stop(tmp_path: Path) -> None:
    run = FakeRunner(
        {
            "/bin/kind get clusters": (0, "", "No kind clusters found.\n"),
            "/bin/kind get kubeconfig": (0, KUBECONFIG, ""),
            "/bin/docker port": (0, "127.0.0.1:41234\n", ""),
        }
    )
    c = _cluster(tmp_path, run)
    with c:
        assert c.created and c.state is KindState.RUNNING
        assert c.context == "kind-meshproof"
        assert c.ingress_port == 41234
        assert c.kubeconfig.read_text() == KUBECONFIG
        assert yaml.safe_load(c.config_path.read_text()) == kind_config(41234)
        assert run.calls[1] == [
            "/bin/kind",
            "create",
            "cluster",
            "--name",
            "meshproof",
            "--config",
            str(c.config_path),
            "--kubeconfig",
            str(c.kubeconfig),
            "--wait",
            "180s",
        ]
        assert ["/bin/docker", "port", "meshproof-control-plane", f"{INGRESS_NODE_PORT}/tcp"] in run.calls
    assert run.calls[-1] == [
        "/bin/kind",
        "delete",
        "cluster",
        "--name",
        "meshproof",
        "--kubeconfig",
        str(c.kubeconfig),
    ]
    assert c.state is KindState.STOPPED
    c.stop()  # idempotent
    assert sum(1 for a in run.calls if a[1:3] == ["delete", "cluster"]) == 1


def test_adopts_an_existing_cluster_and_keeps_it(tmp_path: Path) -> None:
    run = FakeRunner(
        {
            "/bin/kind get clusters": (0, "meshproof\n", ""),
            "/bin/kind get kubeconfig": (0, KUBECONFIG, ""),
            "/bin/docker port": (1, "", "no public port"),
        }
    )
    with _cluster(tmp_path, run, keep=True) as c:
        assert not c.created
        assert c.ingress_port is None
    assert not any(a[1:3] == ["create", "cluster"] for a in run.calls)
    assert not any(a[1:3] == ["delete", "cluster"] for a in run.calls)


def test_failed_create_is_reported_and_not_deleted_twice(tmp_path: Path) -> None:
    run = FakeRunner(
        {
            "/bin/kind get clusters": (0, "", ""),
            "/bin/kind create cluster": (1, "", "ERROR: failed to create cluster: port is already allocated"),
        }
    )
    c = _cluster(tmp_path, run)
    with pytest.raises(CommandFailed) as info:
        c.__enter__()
    assert "already allocated" in str(info.value)
    assert any("kind delete cluster --name meshproof" in n for n in info.value.__notes__)
    assert c.state is KindState.STOPPED
    assert not any(a[1:3] == ["delete", "cluster"] for a in run.calls)


def test_refuses_reuse(tmp_path: Path) -> None:
    run = FakeRunner(
        {"/bin/kind get clusters": (0, "meshproof\n", ""), "/bin/kind get kubeconfig": (0, KUBECONFIG, "")}
    )
    c = _cluster(tmp_path, run, keep=True)
    with c:
        pass
    with pytest.raises(BackendError):
        c.start()


def test_load_image_argv(tmp_path: Path) -> None:
    run = FakeRunner()
    c = _cluster(tmp_path, run)
    c.load_image("meshproof/microservice-1:dev")
    assert run.calls == [
        ["/bin/kind", "load", "docker-image", "meshproof/microservice-1:dev", "--name", "meshproof"]
    ]


def test_images_plan_names_the_kind_config_of_this_host_and_the_istio_images(tmp_path: Path) -> None:
    """`images plan --json`'s kind_config is the backend's own kind_config (no published port), for a
    person's own `kind create cluster`; istio names the hub/tag of the local pilot/proxyv2."""
    from harness.backends.kube.kind.base import PREFIX
    from harness.backends.kube.kind.cli import NodeOptions
    from harness.backends.kube.kind.images import plan_ref
    from harness.cli.kind import host_cluster
    from harness.settings import Settings

    plan = host_cluster(Settings(cache_dir=tmp_path))
    cfg = plan["kind_config"]
    assert cfg["nodes"] == [{"role": "control-plane", "image": plan_ref("kind-node")}]
    assert cfg["networking"]["disableDefaultCNI"] is True
    node = NodeOptions(image=plan_ref("kind-node"), own_cni=True, cgroup_v1="kubeadmConfigPatches" in cfg)
    assert cfg == kind_config(None, node=node)
    assert plan["istio"]["hub"] == PREFIX and f"{PREFIX}/pilot:{plan['istio']['tag']}" == plan_ref("pilot")


def test_images_plan_names_the_istio_values_the_local_proxy_needs(tmp_path: Path) -> None:
    """A hand install with the local images needs istiod's upstream-Envoy settings (found on a plain kind
    cluster with istioctl by hand: without them every proxy rejected its clusters, 'Didn't find a
    registered implementation for istio.metadata_exchange'): the plan names exactly the values
    `up --backend kind` installs with."""
    from harness.backends.kube.istio_install import LocalImages, operator_overlay
    from harness.cli.kind import host_cluster
    from harness.settings import Settings

    istio = host_cluster(Settings(cache_dir=tmp_path))["istio"]
    kind_values = operator_overlay(local_images=LocalImages(istio["hub"], istio["tag"]))["spec"]["values"]
    assert {k: v for k, v in istio["values"].items() if k != "global"} == {
        k: v for k, v in kind_values.items() if k != "global"
    }
    # a hand install's injected gateway (image: auto, no tag: Kubernetes defaults the policy to Always)
    # stayed in ImagePullBackOff on the loaded proxyv2 until the chart was given a pull policy
    assert istio["values"]["global"] == {"imagePullPolicy": "IfNotPresent"}
    assert istio["values"]["pilot"]["env"] == {
        "PILOT_ENABLE_METADATA_EXCHANGE": "false",
        "PILOT_ENABLE_ALPN_FILTER": "false",
    }
    assert istio["values"]["telemetry"] == {"enabled": False}
    assert "upstream Envoy" in istio["why"]
