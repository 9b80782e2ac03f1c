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

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

# Re-exported: the shared types live in harness.mesh (suites import them from either place).
from harness.mesh import AppFault, State, Workload, find_workload

if TYPE_CHECKING:  # harness.load imports numpy: only where a load runs
    from harness.load.config import LoadConfig
    from harness.load.run import LoadRun

__all__ = ["AppFault", "Backend", "State", "Workload", "find_workload"]


@runtime_checkable
class Backend(Protocol):
    """A mesh under test. A context manager: ``with create(settings) as mesh: ...``."""

    name: str

    @property
    def traffic_api(self) -> str:
        """Which of the manifests' routes ``up`` applied: ``istio`` (VirtualServices) or
        ``gateway-api`` (HTTPRoutes); documents annotated ``meshproof.dev/traffic-api`` for the
        other are left out (:mod:`harness.istio.traffic_api`). A mesh attached to reports the one
        it was brought up with."""
        ...

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

    def with_workloads(self, paths: Sequence[Path], workdir: Path) -> AbstractContextManager[Backend]:
        """A mesh that also runs the objects of ``paths``, new workloads included (a Namespace,
        Service and Deployment), for the ``with`` block. Kubernetes: this mesh with them applied,
        deleted on exit. Local (workloads are fixed at start-up): a second mesh from this one's
        manifests plus ``paths``, its state in ``workdir``, torn down on exit."""
        ...

    def workloads(self) -> Sequence[Workload]:
        """Every replica, client and gateway, in a stable order."""
        ...

    def workload(self, ref: str) -> Workload:
        """One workload by pod name, ``ns/pod`` or ``ns/deployment`` (first replica); ``ingress``."""
        ...

    def inject_fault(self, pod: str, fault: AppFault) -> dict[str, Any]:
        """Make one replica abort and/or delay requests. ``fault.via`` ``sidecar``: the replica's own
        inbound Envoy, through an EnvoyFilter selecting only that replica, proven in the effective
        config of every proxy (any HTTP service; :mod:`harness.sidecar_fault`); ``app``: the sample
        app's ``/admin/fault``. Returns the evidence; UserError for a victim that cannot be faulted
        that way (gateway, no sidecar, no inbound HTTP listener, no admin endpoint)."""
        ...

    def clear_fault(self, pod: str) -> None:
        """Remove the replica's fault, whichever way it was made (a no-op when there is none)."""
        ...

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

    def trace_hint(self) -> str:
        """Where to look when the trace query API does not answer (a log file), or ""."""
        ...

    def load_runner(self, config: LoadConfig, *, workdir: Path) -> LoadRun:
        """A Locust run (not started) sending ``config``'s load into this mesh, writing into ``workdir``:
        local, Locust as a subprocess on this machine; kube, a Locust master and workers as
        Deployments inside the cluster."""
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

    def istio_objects(self) -> list[dict[str, Any]]:
        """Every Istio object the mesh runs now (kube: as stored, with ``metadata.resourceVersion``)."""
        ...

    def gateway_api_objects(self) -> list[dict[str, Any]]:
        """The Gateway API objects the mesh holds (GatewayClasses, Gateways, routes), each with the
        status Istio's controllers wrote (``status.conditions``; a route's ``status.parents``)."""
        ...

    def wait_synced(self, timeout: float) -> float:
        """Block until every proxy is connected and has ACKed what istiod sent; returns seconds waited."""
        ...

    def stop_control_plane(self) -> None:
        """Stop istiod (the data plane keeps running on its last config)."""
        ...

    def lost(self) -> str | None:
        """Why the mesh this instance brought up is gone (its supervisor exited, say); None while
        it runs, or where the backend cannot tell without asking the cluster. Cheap: polled."""
        ...

    def start_control_plane(self) -> None:
        """Start istiod again (idempotent); wait until every proxy has reconnected and ACKed."""
        ...

    def set_cert_ttl(self, pod: str, ttl: str) -> dict[str, Any]:
        """Make the sidecar of replica ``pod`` ask istiod's CA for workload certificates of lifetime
        ``ttl`` (a Go duration, pilot-agent's ``SECRET_TTL``); "" puts its default back. Local: the
        proxy is replaced without a gap by one with that environment. Returns what it measured."""
        ...

    def set_network_loss(self, pod: str, probability: float) -> dict[str, Any]:
        """Make the network of replica ``pod`` drop ``probability`` of the TCP packets arriving for
        it (0 removes the loss; :mod:`harness.netfault`). Local: an iptables rule in the host's
        namespace for exactly the replica's address; kind: in the pod's network namespace. Returns
        the rule; UserError where the backend cannot reach the pod's network (an existing cluster)."""
        ...

    def network_dropped(self, pod: str) -> int | None:
        """Packets the loss rule of replica ``pod`` has dropped so far (None: no rule)."""
        ...

    def control_plane_serving(self) -> list[str]:
        """What of the control plane still serves, one line each; empty once none of it does.
        Local: every istiod whose xDS port still accepts connections. Kubernetes: every ready istiod
        pod and every ready endpoint of the ``istiod`` Service. Chaos proves an outage with it."""
        ...
