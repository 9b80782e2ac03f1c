"""App faults made by the replica's own sidecar: any HTTP service, on every backend.

Such an app fault makes one replica's *inbound* Envoy abort and/or delay requests, with no help from
the app (the sample's ``/admin/fault`` is the other way, kept to compare against). Istio decides:

* the fault is an ``EnvoyFilter`` (:func:`envoy_filter`) whose ``workloadSelector`` is the one
  label that names the replica (:data:`harness.mesh.REPLICA_LABEL`) and whose patch MERGEs an
  abort/delay into the ``envoy.filters.http.fault`` filter istiod already puts into every inbound
  HTTP connection manager (``SIDECAR_INBOUND``); istiod decides which proxy it reaches and what
  the merged filter is;
* :func:`inject` applies it through the backend's ``apply`` (every proxy ACKed), then reads the
  victim's effective config (``/config_dump``): its inbound fault filter must now carry the abort/
  delay asked for, and no other proxy's may. Otherwise the filter is removed again and the fault
  fails with the evidence (:class:`~harness.errors.BackendError`, exit 1);
* :func:`inbound_counts` reads the counters of exactly that filter (``http.<prefix>.fault.*`` of the
  inbound connection managers named in the config dump): a chaos action proves with them that
  requests were faulted (:mod:`harness.chaos.actions`).

Bad input fails before anything changes (:class:`~harness.errors.UserError`, exit 2): the ingress
gateway, a workload without a sidecar (not in the mesh), a replica whose sidecar has no inbound
HTTP listener (no Service with an HTTP port selects it).

The backend brings the selector label: the local backend gives every replica's proxy the label at
start; the kube backend adds it to the pod first (a pod label change makes istiod re-read the
proxy's labels and push to it) and removes it after the filter is gone.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from harness import wait, yamlio
from harness.envoy import FaultCounts, admin_get, parse_fault_counts
from harness.errors import BackendError, UserError, WaitTimeout
from harness.mesh import REPLICA_LABEL, AppFault, Workload

if TYPE_CHECKING:
    import httpx

FAULT_FILTER = "envoy.filters.http.fault"
HCM = "envoy.filters.network.http_connection_manager"
HTTP_FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
#: label on the EnvoyFilter: meshproof made it (``meshproof status`` and the residue check find it)
OWNER_LABEL = "meshproof.dev/replica-fault"
MILLION = 1_000_000


class Mesh(Protocol):
    """What a replica fault needs of a backend (a subset of :class:`harness.backends.base.Backend`)."""

    def apply(self, paths: Sequence[Path]) -> float: ...

    def delete(self, paths: Sequence[Path]) -> float: ...

    def workloads(self) -> Sequence[Workload]: ...

    def istio_objects(self) -> list[dict[str, Any]]: ...


def filter_name(pod: str) -> str:
    """The EnvoyFilter's name for replica ``pod`` (a DNS label: at most 63 characters)."""
    name = f"meshproof-fault-{pod}"
    return name if len(name) <= 63 else name[:63].rstrip("-.")


def _parts_per_million(rate: float) -> int:
    return max(1, min(MILLION, round(rate * MILLION)))


def http_fault(fault: AppFault) -> dict[str, Any]:
    """The ``HTTPFault`` (Envoy's JSON) that makes the fault filter do ``fault``."""
    percentage = {"numerator": _parts_per_million(fault.rate), "denominator": "MILLION"}
    body: dict[str, Any] = {"@type": HTTP_FAULT_TYPE}
    if fault.status is not None:
        body["abort"] = {"http_status": int(fault.status), "percentage": percentage}
    if fault.delay_ms:
        body["delay"] = {"fixed_delay": f"{fault.delay_ms / 1000:.3f}s", "percentage": percentage}
    if len(body) == 1:
        raise UserError("a replica fault needs a status and/or a delay. Fix: give --status and/or --delay-ms")
    return body


def envoy_filter(w: Workload, fault: AppFault) -> dict[str, Any]:
    """The EnvoyFilter that makes replica ``w``'s inbound sidecar do ``fault`` (and no other proxy)."""
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {
            "name": filter_name(w.name),
            "namespace": w.namespace,
            "labels": {OWNER_LABEL: "true"},
        },
        "spec": {
            "workloadSelector": {"labels": {REPLICA_LABEL: w.name}},
            "configPatches": [
                {
                    "applyTo": "HTTP_FILTER",
                    "match": {
                        "context": "SIDECAR_INBOUND",
                        "listener": {
                            "filterChain": {"filter": {"name": HCM, "subFilter": {"name": FAULT_FILTER}}}
                        },
                    },
                    "patch": {
                        "operation": "MERGE",
                        "value": {"name": FAULT_FILTER, "typed_config": http_fault(fault)},
                    },
                }
            ],
        },
    }


# --------------------------------------------------------------------------- the effective config


@dataclass(frozen=True)
class InboundFault:
    """The fault filter of one inbound HTTP connection manager, as the proxy runs it."""

    listener: str
    stat_prefix: str
    abort_status: int | None
    delay_ms: int | None
    ppm: int | None  # the abort's (else the delay's) share, parts per million

    @property
    def active(self) -> bool:
        return self.abort_status is not None or self.delay_ms is not None

    def describe(self) -> str:
        if not self.active:
            return f"{self.listener}: no fault"
        what = [f"abort {self.abort_status}"] if self.abort_status is not None else []
        if self.delay_ms is not None:
            what.append(f"delay {self.delay_ms} ms")
        share = f" for {self.ppm / MILLION:.4%}" if self.ppm is not None else ""
        return f"{self.listener}: {' + '.join(what)}{share}"


def _ppm(percentage: Mapping[str, Any] | None) -> int | None:
    if percentage is None:
        return None
    n = int(percentage.get("numerator", 0))
    scale = {"HUNDRED": 10_000, "TEN_THOUSAND": 100, "MILLION": 1}[
        str(percentage.get("denominator", "HUNDRED"))
    ]
    return n * scale


def _duration_ms(value: str) -> int:
    m = re.fullmatch(r"([0-9.]+)s", value)
    if not m:
        raise BackendError(f"unreadable Envoy duration {value!r} in a fault filter")
    return round(float(m.group(1)) * 1000)


def parse_inbound_faults(listeners_dump: str) -> list[InboundFault]:
    """From ``/config_dump?resource=dynamic_listeners``: the fault filter of every inbound HTTP
    connection manager (traffic_direction INBOUND), configured or not."""
    out: list[InboundFault] = []
    for entry in json.loads(listeners_dump).get("configs", []):
        listener = (entry.get("active_state") or {}).get("listener") or {}
        if listener.get("traffic_direction") != "INBOUND":
            continue
        for chain in listener.get("filter_chains") or []:
            for f in chain.get("filters") or []:
                tc = f.get("typed_config") or {}
                if f.get("name") != HCM and tc.get("@type") != HCM_TYPE:
                    continue
                for hf in tc.get("http_filters") or []:
                    if hf.get("name") != FAULT_FILTER:
                        continue
                    cfg = hf.get("typed_config") or {}
                    abort, delay = cfg.get("abort"), cfg.get("delay")
                    out.append(
                        InboundFault(
                            listener=str(listener.get("name", "")),
                            stat_prefix=str(tc.get("stat_prefix", "")),
                            abort_status=int(abort["http_status"])
                            if abort and "http_status" in abort
                            else None,
                            delay_ms=_duration_ms(str(delay["fixed_delay"]))
                            if delay and "fixed_delay" in delay
                            else None,
                            ppm=_ppm((abort or delay or {}).get("percentage")) if (abort or delay) else None,
                        )
                    )
    return out


def inbound_faults(http: httpx.Client, w: Workload) -> list[InboundFault]:
    return parse_inbound_faults(
        admin_get(http, f"{w.proxy_admin_url}/config_dump", resource="dynamic_listeners")
    )


def matches(found: InboundFault, fault: AppFault) -> bool:
    """Whether the proxy runs exactly ``fault`` on this connection manager."""
    want_delay = fault.delay_ms or None
    return (
        found.abort_status == fault.status
        and found.delay_ms == want_delay
        and found.ppm == _parts_per_million(fault.rate)
    )


def inbound_counts(http: httpx.Client, w: Workload) -> FaultCounts:
    """The fault counters of ``w``'s inbound HTTP connection managers only (their stat prefixes
    come from the config dump): what its own sidecar aborted and delayed."""
    prefixes = {f.stat_prefix for f in inbound_faults(http, w) if f.stat_prefix}
    text = admin_get(
        http,
        f"{w.proxy_admin_url}/stats",
        filter=r"(\.fault\.(delays|aborts)_injected|\.downstream_rq_total)$",
    )
    mine = "\n".join(
        line for line in text.splitlines() if any(line.startswith(f"http.{p}.") for p in prefixes)
    )
    counts = parse_fault_counts(mine)
    if counts is None:
        raise BackendError(
            f"the sidecar of {w.ref} exposes no inbound fault counters (http.<prefix>.fault.*; "
            f"inbound prefixes {sorted(prefixes) or 'none'}). Fix: restart the mesh with this meshproof "
            "(harness/proxy_stats.py keeps them in every proxy)"
        )
    return counts


# --------------------------------------------------------------------------- inject / clear


def check_victim(http: httpx.Client, w: Workload) -> list[InboundFault]:
    """Bad input, before anything changes: the gateway, no sidecar, no inbound HTTP listener."""
    if w.role == "gateway":
        raise UserError(f"{w.ref} is the ingress gateway: a replica fault needs an app replica's sidecar")
    if not w.proxy_admin_url:
        raise UserError(
            f"{w.ref} is not in the mesh (no sidecar): a replica fault is made by the replica's own "
            "sidecar. Fix: inject the sidecar (istio-injection label) or name a meshed replica"
        )
    found = inbound_faults(http, w)
    if not found:
        raise UserError(
            f"{w.ref}: its sidecar has no inbound HTTP listener (no Service with an HTTP port selects "
            "it), so there is no request to abort or delay. Fix: name a replica of an HTTP service"
        )
    return found


def _with_file(bodies: Sequence[Mapping[str, Any]], act: Any) -> float:
    with tempfile.TemporaryDirectory(prefix="meshproof-fault-") as d:
        path = Path(d) / "replica-fault.yaml"
        path.write_text(yamlio.dump_all([dict(b) for b in bodies], sort_keys=False))
        return float(act([path]))


def present(mesh: Mesh, w: Workload) -> dict[str, Any] | None:
    """The replica fault's EnvoyFilter of ``w`` as the mesh runs it, or None."""
    name = filter_name(w.name)
    for obj in mesh.istio_objects():
        meta = obj.get("metadata") or {}
        if (
            obj.get("kind") == "EnvoyFilter"
            and meta.get("name") == name
            and meta.get("namespace") == w.namespace
        ):
            return obj
    return None


def active_anywhere(mesh: Mesh) -> list[str]:
    """``ns/name`` of every replica-fault EnvoyFilter the mesh runs (the residue check's view)."""
    return sorted(
        f"{(o.get('metadata') or {}).get('namespace')}/{(o.get('metadata') or {}).get('name')}"
        for o in mesh.istio_objects()
        if o.get("kind") == "EnvoyFilter" and ((o.get("metadata") or {}).get("labels") or {}).get(OWNER_LABEL)
    )


def inject(
    mesh: Mesh, http: httpx.Client, w: Workload, fault: AppFault, *, settle_s: float = 20.0
) -> dict[str, Any]:
    """Make ``w``'s inbound sidecar do ``fault``; prove it in the effective config of every proxy.

    ``w`` must already carry :data:`REPLICA_LABEL` (the backend's part). Returns the evidence."""
    check_victim(http, w)
    if w.labels.get(REPLICA_LABEL) != w.name:
        raise BackendError(f"{w.ref} does not carry the label {REPLICA_LABEL}={w.name} the fault selects on")
    body = envoy_filter(w, fault)
    seconds = _with_file([body], mesh.apply)
    found: list[InboundFault] = []

    def running() -> bool:
        # apply returned once every proxy ACKed; on Kubernetes the pod label's own push (istiod
        # re-reads the proxy's labels) may come after the filter's, so the victim is polled
        found[:] = inbound_faults(http, w)
        return any(matches(f, fault) for f in found)

    with contextlib.suppress(WaitTimeout):  # the evidence is what was last seen; reported below
        wait.until(running, what=f"the sidecar of {w.ref} to run the fault", timeout=settle_s, interval=0.2)
    problems: list[str] = []
    if not any(matches(f, fault) for f in found):
        problems.append(
            f"the sidecar of {w.ref} does not run the fault: {'; '.join(f.describe() for f in found)}"
        )
    others = [o for o in mesh.workloads() if o.ref != w.ref and o.proxy_admin_url and o.role != "gateway"]
    leaked = [
        f"{o.ref} ({f.describe()})" for o in others for f in inbound_faults(http, o) if matches(f, fault)
    ]
    if leaked:
        problems.append(f"other proxies run it too: {', '.join(leaked)}")
    if problems:
        _with_file([body], mesh.delete)
        raise BackendError(
            f"replica fault on {w.ref} did not take effect as asked (EnvoyFilter {w.namespace}/"
            f"{filter_name(w.name)} removed again): {' '.join(problems)}"
        )
    # No wait for the old filter chains' drain here: it is a timer (Istio's drainDuration, 45 s by
    # default), not the connections. Istio starts Envoy with --drain-strategy immediate, so a
    # connection on an old chain is closed after its next response; the chaos action proves the fault
    # on the victim's own counters. Waiting out the timer let a method run past the ejection the
    # fault caused (baseEjectionTime 30 s): the victim came back, still failing, and failed again.
    return {
        "pod": w.ref,
        "via": "sidecar",
        "old_chains_draining": draining(http, w),
        "envoy_filter": f"{w.namespace}/{filter_name(w.name)}",
        "selector": {REPLICA_LABEL: w.name},
        "propagation_s": round(seconds, 3),
        "sidecar": [f.describe() for f in found if matches(f, fault)],
        "scope": f"no other of {len(others)} sidecars runs it",
    }


DRAINING = "listener_manager.total_filter_chains_draining"


def draining(http: httpx.Client, w: Workload) -> int | None:
    """How many filter chains ``w``'s Envoy drains now (:data:`DRAINING`; None when not exposed)."""
    from harness.envoy import parse_gauge

    value = parse_gauge(
        admin_get(http, f"{w.proxy_admin_url}/stats", filter=f"^{re.escape(DRAINING)}$"), DRAINING
    )
    return None if value is None else int(value)


def wait_drained(http: httpx.Client, w: Workload, timeout: float = 90.0) -> float:
    """Wait until ``w``'s Envoy drains no filter chain (:data:`DRAINING` 0); returns seconds waited.

    Envoy updates a listener's filter chain in place: connections opened before keep the chain
    they started with until it has drained, so right after a change some requests still see the
    old fault filter (measured locally: a cleared delay still delayed one request on a kept-alive
    gateway connection). Once nothing drains, every request meets the new config."""
    import time

    t0 = time.monotonic()

    def drained() -> bool:
        return draining(http, w) == 0

    wait.until(
        drained,
        what=f"{w.ref}'s Envoy to finish draining its old filter chains ({DRAINING} 0)",
        timeout=timeout,
        interval=0.1,
    )
    return time.monotonic() - t0


def clear(mesh: Mesh, w: Workload, http: httpx.Client | None = None) -> bool:
    """Remove ``w``'s replica-fault EnvoyFilter (True) or do nothing when there is none (False).
    With ``http``, also wait until the victim's old filter chains have drained (:func:`wait_drained`)."""
    obj = present(mesh, w)
    if obj is None:
        return False
    meta = obj.get("metadata") or {}
    stub = {
        "apiVersion": obj.get("apiVersion"),
        "kind": "EnvoyFilter",
        "metadata": {"name": meta.get("name"), "namespace": meta.get("namespace")},
        "spec": obj.get("spec") or {},
    }
    _with_file([stub], mesh.delete)
    if http is not None:
        wait_drained(http, w)
    return True
