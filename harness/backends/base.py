"""The Backend protocol: what suites, the CLI and chaos actions may ask of a running mesh.

Suites never know which backend runs; they use only this protocol, the traffic sampler and
the tracing client. Every backend passes ``tests/compliance`` (one test run against each).

Addresses are URLs reachable from the harness process:
- ``ingress_url()``: the ingress gateway's HTTP port.
- ``Workload.app_url``: the app's own port, bypassing the workload's inbound sidecar (like
  ``kubectl exec`` into the pod): used to make a replica act as an in-mesh *client* via
  ``/api/call`` and to reach the app's admin API.
- ``Workload.sidecar_url``: the workload's inbound sidecar listener on the service port, from
  outside the mesh (plaintext): used to prove STRICT mTLS refuses it.
- ``Workload.proxy_admin_url``: Envoy admin of the workload's sidecar (config_dump, clusters, stats).
- ``service_url(...)``: the in-mesh URL a client workload uses to reach a service.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Self, runtime_checkable


class State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Workload:
    """One replica (pod) of a Deployment, or the ingress gateway."""

    name: str  # pod name, e.g. microservice-1-v1-0
    namespace: str
    deployment: str
    labels: Mapping[str, str]
    address: str  # the mesh endpoint address of the workload
    app_url: str  # app port, bypassing the inbound sidecar ("" for the gateway)
    admin_url: str  # the app's admin API (fault injection; "" for the gateway)
    sidecar_url: str  # inbound sidecar listener on the service port ("" if none)
    proxy_admin_url: str  # Envoy admin of this workload's proxy
    service_account: str = ""
    ready: bool = True
    role: str = "app"  # "app", "client" or "gateway"
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.labels.get("version", "")

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def spiffe_id(self) -> str:
        return f"spiffe://cluster.local/ns/{self.namespace}/sa/{self.service_account}"


@dataclass(frozen=True)
class Fault:
    status: int | None = 503
    rate: float = 1.0
    delay_ms: int = 0


@runtime_checkable
class Backend(Protocol):
    """A mesh under test. A context manager: ``with create(settings) as mesh: ...``."""

    name: str

    def up(self, *, detach: bool = False) -> Self:
        """Bring the mesh up and block until every proxy has ACKed the current config.

        Writes ``<state_dir>/backend.json`` (``{"backend": name, ...}``). With ``detach`` the mesh
        outlives this process until ``down()`` (from any process, via :meth:`attach`).
        """
        ...

    def attach(self) -> Self:
        """Connect to the mesh recorded in the state dir (brought up with ``detach``)."""
        ...

    def down(self) -> None:
        """Tear everything down that ``up`` started (idempotent)."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    def apply(self, paths: Sequence[Path]) -> float:
        """Apply Istio/Kubernetes YAML and wait until every proxy has ACKed it; returns seconds waited."""
        ...

    def delete(self, paths: Sequence[Path]) -> float:
        """Delete the objects named in the YAML files and wait for propagation."""
        ...

    def workloads(self) -> Sequence[Workload]:
        """Every replica, client and gateway, in a stable order."""
        ...

    def workload(self, ref: str) -> Workload:
        """One workload by pod name, ``ns/pod`` or ``ns/deployment`` (first replica); ``ingress``."""
        ...

    def inject_fault(self, pod: str, fault: Fault) -> None: ...

    def clear_fault(self, pod: str) -> None: ...

    def kill(self, pod: str) -> None:
        """Kill a replica's app process (its sidecar stays, like a crashed container)."""
        ...

    def restart(self, pod: str) -> None:
        """Start a killed replica again and wait until it is ready."""
        ...

    def ingress_url(self) -> str: ...

    def service_url(self, service: str, namespace: str, port: int) -> str:
        """The in-mesh URL of a service, as a client workload calls it."""
        ...

    def trace_query_url(self) -> str | None:
        """Base URL of the Jaeger query API, or None when tracing is not deployed."""
        ...

    def config_dir(self) -> Path | None:
        """Where the applied config lives (local backend), for diagnostics."""
        ...

    def ejections(self) -> Mapping[str, Mapping[str, list[str]]]:
        """Per calling proxy (``ns/pod``), per upstream cluster, the hosts outlier detection ejected."""
        ...

    def diagnostics(self, dest: Path) -> list[Path]:
        """Write config dumps, stats and logs of every proxy/process into ``dest``."""
        ...


def find_workload(workloads: Sequence[Workload], ref: str) -> Workload:
    """A workload by pod name, ``ns/pod``, ``ns/deployment`` (first replica) or ``ingress``."""
    from harness.errors import StateError

    candidates = [w for w in workloads if w.role == "gateway"] if ref == "ingress" else list(workloads)
    for w in candidates:
        if ref in ("ingress", w.name, w.ref, f"{w.namespace}/{w.deployment}"):
            return w
    names = ", ".join(w.ref for w in candidates)
    raise StateError(f"no workload {ref!r}. Fix: use one of: {names}, ingress, or NS/DEPLOYMENT")
