"""The data types every layer shares: a workload of the mesh, an app fault, a lifecycle state.

Imported by backends, traffic, envoy and the suites; imports nothing of the harness above errors.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from harness.errors import StateError, UserError

# A backend that forwards connections (the kube port-forward) answers one it accepted but could not
# carry to its target with HTTP 502 and this header (the reason). No target sends it, so a probe can
# tell "never reached" (an error of the check) from the target's own answer or refusal.
UNREACHED_HEADER = "x-meshproof-unreached"

#: A label that names one replica (its pod name): the selector of per-replica Istio objects (the local
#: mesh's Sidecars, an app fault's EnvoyFilter). The local backend gives it to every replica's
#: proxy at start (its node metadata labels); the kube backend adds it to a pod for an app fault
#: and removes it with the fault (Kubernetes gives a pod no label of its own).
REPLICA_LABEL = "meshproof.dev/replica"

#: How an app fault is made: ``sidecar``, by the replica's own inbound Envoy (an EnvoyFilter that
#: selects only that replica sets its fault filter's abort/delay: any HTTP service, no help from the
#: app); ``app``, by the sample app's ``/admin/fault`` endpoint (the sample only; a second way to
#: compare against).
APP_FAULT_VIAS = ("sidecar", "app")

#: the shortest workload certificate lifetime meshproof asks for: pilot-agent rotates at half the
#: lifetime, so 10 s means a CSR to istiod every 5 s from that one proxy
MIN_CERT_TTL_S = 10.0
_GO_DURATION = re.compile(r"^(?:(\d+)(h|m|s|ms))+$")
_GO_PART = re.compile(r"(\d+)(h|m|s|ms)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def cert_ttl_seconds(ttl: str) -> float:
    """Seconds of a workload certificate lifetime given as a Go duration (``30s``, ``1m30s``, what
    pilot-agent's ``SECRET_TTL`` takes); UserError naming the value and the fix otherwise."""
    text = str(ttl).strip()
    if not _GO_DURATION.match(text):
        raise UserError(
            f"certificate lifetime {ttl!r} is not a duration like 30s, 2m or 1h30m. Fix: give whole "
            "numbers with h, m, s or ms"
        )
    seconds = sum(int(n) * _UNIT_S[u] for n, u in _GO_PART.findall(text))
    if seconds < MIN_CERT_TTL_S:
        raise UserError(
            f"certificate lifetime {ttl} is shorter than {MIN_CERT_TTL_S:g} s (pilot-agent renews at half "
            "the lifetime). Fix: give at least 10s"
        )
    return seconds


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
class AppFault:
    """An app fault: one replica answers ``status`` and/or waits ``delay_ms`` for ``rate`` of the
    requests it serves, as if its app failed. Not a route fault, which a VirtualService injects
    for the callers of a route (``HTTPFaultInjection``, :mod:`harness.chaos.actions.routes`).

    ``via`` (see :data:`APP_FAULT_VIAS`) defaults to ``app`` so that callers written for the sample's
    admin endpoint keep their behaviour; ``meshproof fault`` and the chaos actions use ``sidecar``."""

    status: int | None = 503
    rate: float = 1.0
    delay_ms: int = 0
    via: str = "app"


def find_workload(workloads: Sequence[Workload], ref: str) -> Workload:
    """A workload by pod name, ``ns/pod``, ``ns/deployment`` (first replica) or ``ingress``."""
    candidates = [w for w in workloads if w.role == "gateway"] if ref == "ingress" else list(workloads)
    for w in candidates:
        if ref in ("ingress", w.name, w.ref, f"{w.namespace}/{w.deployment}"):
            return w
    names = ", ".join(w.ref for w in candidates)
    raise StateError(f"no workload {ref!r}. Fix: use one of: {names}, ingress, or NS/DEPLOYMENT")
