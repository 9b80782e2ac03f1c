"""A kind cluster of meshproof's own node image on this machine: the node gets Ready and CoreDNS runs.

Runs only with ``--backend kind`` (``tox -e e2e-kind``). The node image is ``meshproof.local/kind-node``
(built when missing: hours on a cold cache, seconds when current). The cluster is created with the same
kind config the backend writes (``kind.NodeOptions``: that image, kind's default CNI off because the node
brings a ptp CNI config, ``failCgroupV1: false`` on a cgroup v1 host) and deleted at the end.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import proc, wait
from harness.backends.kube import engine as eng
from harness.backends.kube.kind import nodeimage
from harness.backends.kube.kind.cli import KindCli, host_cgroup_v1
from harness.backends.kube.kind.images import ImageBuilder
from harness.settings import from_env
from harness.toolchain.kind import install as install_kind

pytestmark = [pytest.mark.backend("kind"), pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[KindCli, str]]:
    """(the running cluster, kubectl) — created from the built node image, deleted afterwards."""
    cache = from_env().cache_dir
    eng.install_docker_io()
    with eng.DockerEngine(eng.EngineLayout.under(cache)):
        docker = proc.which("docker", needed_for="the kind path's tests")
        builder = ImageBuilder(cache, docker=docker, prefix=("nice", "-n", "19", "ionice", "-c3"))
        cgroup_v1 = host_cgroup_v1(Path("/proc/self/mounts").read_text())
        node = nodeimage.node_options(
            "local", cgroup_v1=cgroup_v1, build_node=lambda: builder.kind_node().ref
        )
        kind = str(install_kind(cache))
        with tempfile.TemporaryDirectory(prefix="meshproof-kind-cluster-") as tmp:
            c = KindCli(
                f"mp-t-{uuid.uuid4().hex[:6]}", Path(tmp), kind=kind, docker=docker, node=node,
                records=Path(tmp) / "records", run=_niced,
            )  # fmt: skip
            with c:
                kubectl = str(
                    cache / f"kind-node-{nodeimage.KUBERNETES_VERSION}" / "kubernetes" / "bin" / "kubectl"
                )
                yield c, kubectl


def _niced(argv: Any, *, timeout: float = 600.0, check: bool = True) -> proc.Completed:
    return proc.run(["nice", "-n", "19", "ionice", "-c3", *argv], timeout=timeout, check=check)


def kubectl_json(c: KindCli, kubectl: str, *args: str) -> dict[str, Any]:
    out = proc.run([kubectl, "--kubeconfig", str(c.kubeconfig), *args, "-o", "json"], timeout=60)
    return dict(json.loads(out.stdout))


def condition(obj: dict[str, Any], kind: str) -> str:
    return next((c["status"] for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), "")


def test_the_node_is_ready(cluster: tuple[KindCli, str]) -> None:
    c, kubectl = cluster

    def ready() -> str:
        nodes = kubectl_json(c, kubectl, "get", "nodes")["items"]
        return "True" if nodes and all(condition(n, "Ready") == "True" for n in nodes) else ""

    wait.until(ready, what=f"node of {c.name} Ready", timeout=300, interval=2.0)
    node = kubectl_json(c, kubectl, "get", "nodes")["items"][0]
    assert node["status"]["nodeInfo"]["kubeletVersion"] == nodeimage.KUBERNETES_VERSION


def test_coredns_runs_and_resolves(cluster: tuple[KindCli, str]) -> None:
    c, kubectl = cluster

    def coredns_ready() -> list[str]:
        pods = kubectl_json(c, kubectl, "get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-dns")["items"]
        return [p["metadata"]["name"] for p in pods if condition(p, "Ready") == "True"]

    names = wait.until(coredns_ready, what="CoreDNS pods Ready", timeout=300, interval=2.0)
    assert names
    # resolution through the kube-dns Service: kube-proxy's rules and the pod network carry it
    kc = [kubectl, "--kubeconfig", str(c.kubeconfig)]
    image = "registry.k8s.io/etcd:3.7.0-0"  # any Debian-based image the node has: getent is libc's
    proc.run([*kc, "run", "dns-probe", "--restart=Never", f"--image={image}", "--image-pull-policy=Never",
              "--command", "--", "getent", "hosts", "kubernetes.default.svc.cluster.local"], timeout=60)  # fmt: skip
    try:
        proc.run([*kc, "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/dns-probe", "--timeout=180s"],
                 timeout=200)  # fmt: skip
        out = proc.run([*kc, "logs", "dns-probe"], timeout=60).stdout
    finally:
        proc.run([*kc, "delete", "pod", "dns-probe", "--wait=false"], timeout=60, check=False)
    assert "10.96.0.1" in out.split(), out


@pytest.mark.negative
def test_without_the_nodes_cni_config_the_node_is_not_ready(cluster: tuple[KindCli, str]) -> None:
    """The node's readiness rests on the ptp CNI config the node image brings (kind's default CNI is off)."""
    c, kubectl = cluster
    docker = proc.which("docker")
    moved = "/root/cni-config-moved-by-test"
    proc.run([docker, "exec", c.node_container, "mv", nodeimage.CNI_CONFIG_PATH, moved], timeout=60)
    try:

        def not_ready() -> str:
            node = kubectl_json(c, kubectl, "get", "nodes")["items"][0]
            ready = next(x for x in node["status"]["conditions"] if x["type"] == "Ready")
            return ready["message"] if ready["status"] != "True" else ""

        message = wait.until(
            not_ready, what="node NotReady without its CNI config", timeout=180, interval=2.0
        )
        assert "cni" in message.lower() or "network" in message.lower(), message
    finally:
        # a new file (not a rename into the directory): containerd reloads its CNI config on create/write
        proc.run([docker, "exec", c.node_container, "sh", "-c", f"cp {moved} {nodeimage.CNI_CONFIG_PATH} && rm {moved}"],
                 timeout=60)  # fmt: skip

    def ready_again() -> bool:
        node = kubectl_json(c, kubectl, "get", "nodes")["items"][0]
        return condition(node, "Ready") == "True"

    wait.until(ready_again, what="node Ready again with its CNI config back", timeout=180, interval=2.0)
