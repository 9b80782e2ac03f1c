"""KindCli: one named kind cluster through the kind command, created with the ingress NodePort mapped
to a 127.0.0.1 host port.

The cluster's kubeconfig goes to ``<state_dir>/kubeconfig`` (``kind create --kubeconfig``), so the
user's own kubeconfig and current context are never touched. An existing cluster of the same name
is adopted (that is how ``--keep-cluster`` reruns are fast); ``stop()`` deletes the cluster unless
``keep`` is set.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import yaml

from harness import proc
from harness.errors import BackendError, CommandFailed, ToolMissing
from harness.ports import free_port

KIND_API_VERSION = "kind.x-k8s.io/v1alpha4"
INGRESS_NODE_PORT = 30080  # the ingress gateway's HTTP NodePort (see istio_install.operator_overlay)


class KindState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


# kubelet 1.35+ refuses to start on a cgroup v1 host unless told otherwise (a KubeletConfiguration field)
CGROUP_V1_PATCH = "kind: KubeletConfiguration\nfailCgroupV1: false\n"


@dataclass(frozen=True)
class NodeOptions:
    """How the node differs from stock kind: its image, and what this host needs.

    ``own_cni``: the node image brings its CNI config (meshproof's node image: no kindnetd), so kind's
    default CNI is disabled and the pod subnet pinned to the one that config serves.
    ``cgroup_v1``: the host runs cgroup v1, so kubelet gets ``failCgroupV1: false``.
    """

    image: str = ""
    own_cni: bool = False
    pod_subnet: str = "10.244.0.0/16"
    cgroup_v1: bool = False


def host_cgroup_v1(mounts: str) -> bool:
    """Whether ``/sys/fs/cgroup`` is a cgroup v1 hierarchy (from a ``/proc/self/mounts`` text)."""
    for line in mounts.splitlines():
        f = line.split()
        if len(f) > 2 and f[1] == "/sys/fs/cgroup":
            return f[2] != "cgroup2"
    return False


def kind_config(
    host_port: int | None,
    *,
    node_port: int = INGRESS_NODE_PORT,
    listen_address: str = "127.0.0.1",
    node: NodeOptions = NodeOptions(),
) -> dict[str, Any]:
    """A one-node cluster whose ``node_port`` is published on ``listen_address:host_port`` (None:
    nothing published, the config a person's own ``kind create cluster`` needs on this host)."""
    control_plane: dict[str, Any] = {"role": "control-plane"}
    if host_port is not None:
        if not 0 < host_port < 65536:
            raise ValueError(f"host port {host_port} is out of range")
        control_plane["extraPortMappings"] = [
            {
                "containerPort": node_port,
                "hostPort": host_port,
                "listenAddress": listen_address,
                "protocol": "TCP",
            }
        ]
    if node.image:
        control_plane["image"] = node.image
    cfg: dict[str, Any] = {"kind": "Cluster", "apiVersion": KIND_API_VERSION, "nodes": [control_plane]}
    if node.own_cni:
        cfg["networking"] = {"disableDefaultCNI": True, "podSubnet": node.pod_subnet}
    if node.cgroup_v1:
        cfg["kubeadmConfigPatches"] = [CGROUP_V1_PATCH]
    return cfg


def render_kind_config(host_port: int, **kw: Any) -> str:
    return yaml.safe_dump(kind_config(host_port, **kw), sort_keys=False)


def parse_docker_port(text: str) -> int | None:
    """Host port from ``docker port`` output (``127.0.0.1:41234`` / ``[::]:41234`` lines)."""
    for line in text.splitlines():
        _, sep, port = line.strip().rpartition(":")
        if sep and port.isdigit():
            return int(port)
    return None


def cluster_names(text: str) -> list[str]:
    """Names from ``kind get clusters`` (which says "No kind clusters found." on stderr when none)."""
    return [line.strip() for line in text.splitlines() if line.strip() and " " not in line.strip()]


class KindCli:
    """``with KindCli(...) as c:`` creates (or adopts) the cluster; leaving deletes it unless ``keep``."""

    def __init__(
        self,
        name: str,
        state_dir: Path,
        *,
        kind: str,
        docker: str,
        keep: bool = False,
        run: proc.Runner = proc.run,
        pick_port: Any = free_port,
        create_timeout: float = 600.0,
        node: NodeOptions = NodeOptions(),
        records: Path | None = None,
    ) -> None:
        self.name = name
        self.state_dir = state_dir
        self.kind, self.docker = kind, docker
        self.keep = keep
        self._run = run
        self._pick_port = pick_port
        self._create_timeout = create_timeout
        self.kubeconfig = state_dir / "kubeconfig"
        self.config_path = state_dir / "kind-config.yaml"
        self.node = node
        # <records>/<name> exists while a cluster of that name is one meshproof created (kept with
        # --keep-cluster and adopted later, it is still deleted by a later `down`; a cluster someone
        # else created never is)
        self.record = records / name if records is not None else None
        self.created = False
        self.ingress_port: int | None = None
        self.state = KindState.NEW

    @property
    def context(self) -> str:
        return f"kind-{self.name}"

    @property
    def node_container(self) -> str:
        return f"{self.name}-control-plane"

    # ---- argv ---------------------------------------------------------------------------------
    def create_argv(self) -> list[str]:
        return [
            self.kind,
            "create",
            "cluster",
            "--name",
            self.name,
            "--config",
            str(self.config_path),
            "--kubeconfig",
            str(self.kubeconfig),
            "--wait",
            "180s",
        ]

    def delete_argv(self) -> list[str]:
        return [self.kind, "delete", "cluster", "--name", self.name, "--kubeconfig", str(self.kubeconfig)]

    def load_argv(self, image: str) -> list[str]:
        return [self.kind, "load", "docker-image", image, "--name", self.name]

    # ---- lifecycle ----------------------------------------------------------------------------
    def exists(self) -> bool:
        out = self._run([self.kind, "get", "clusters"], timeout=60)
        return self.name in cluster_names(out.stdout)

    def start(self) -> Self:
        if self.state is not KindState.NEW:
            raise BackendError(f"kind cluster {self.name!r} handle is {self.state.value}; create a new one")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.exists():
            self.created = False
        else:
            host_port = int(self._pick_port())
            self.config_path.write_text(render_kind_config(host_port, node=self.node))
            try:
                self._run(self.create_argv(), timeout=self._create_timeout)
            except CommandFailed as e:
                e.add_note(
                    f"kind could not create cluster {self.name!r} (config {self.config_path}). If a half-made "
                    f"cluster is left, remove it with `kind delete cluster --name {self.name}`"
                )
                raise
            self.created = True
            if self.record is not None:
                self.record.parent.mkdir(parents=True, exist_ok=True)
                self.record.write_text(f"{self.context}\n")
        self.state = KindState.RUNNING
        # Adopted clusters were created by an earlier run: write their kubeconfig here too.
        out = self._run([self.kind, "get", "kubeconfig", "--name", self.name], timeout=60)
        self.kubeconfig.write_text(out.stdout)
        self.kubeconfig.chmod(0o600)
        self.ingress_port = self._published_port()
        return self

    def _published_port(self) -> int | None:
        try:
            out = self._run(
                [self.docker, "port", self.node_container, f"{INGRESS_NODE_PORT}/tcp"],
                timeout=30,
                check=False,
            )
        except ToolMissing:
            return None
        return parse_docker_port(out.stdout) if out.returncode == 0 else None

    def load_image(self, image: str) -> None:
        self._run(self.load_argv(image), timeout=600)

    def stop(self) -> None:
        if self.state is KindState.STOPPED:
            return
        was_running = self.state is KindState.RUNNING
        self.state = KindState.STOPPED
        if was_running and not self.keep and self.owned:
            self._run(self.delete_argv(), timeout=300)
            if self.record is not None:
                self.record.unlink(missing_ok=True)

    @property
    def owned(self) -> bool:
        """Whether meshproof created this cluster (in this run, or in an earlier one that kept it)."""
        return self.created or (self.record is not None and self.record.is_file())

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
