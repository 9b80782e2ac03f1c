"""App faults: make replicas answer an error status or slowly, prove it, and clear it again.

``fail_replicas`` (undo ``clear_replica_faults``) makes the chosen replicas fail as if their app
did: by each replica's own inbound sidecar (``via`` ``sidecar``, an EnvoyFilter selecting only that
replica, :mod:`harness.sidecar_fault`) or by the sample app's ``/admin/fault`` (``via`` ``app``).
Not to be confused with a route fault (:mod:`harness.chaos.actions.routes`), which a VirtualService
injects on the callers' side.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from harness.chaos.actions.common import NotYet, pods_of, prove
from harness.chaos.context import Configuration, mesh
from harness.chaos.ledger import Entry, Ledger, Undo
from harness.errors import BackendError, UserError
from harness.mesh import APP_FAULT_VIAS, AppFault

__all__ = [
    "clear_replica_faults",
    "fail_replicas",
]


def fail_replicas(
    pods: str | Sequence[str],
    status: int | None = 503,
    rate: float = 1.0,
    delay_ms: int = 0,
    via: str = "sidecar",
    proof_from: str = "ingress",
    proof_path: str = "/api/greet",
    proof_timeout_s: float = 30.0,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Make replicas answer ``status`` (and/or wait ``delay_ms``) for ``rate`` of requests, and prove
    it before the method goes on.

    ``via`` ``sidecar`` (default): each replica's own inbound Envoy, through an EnvoyFilter that
    selects only that replica (:mod:`harness.sidecar_fault`; any HTTP service). The effect is proven
    on the victim's own Envoy: its inbound fault counters (``aborts_injected`` for a status,
    ``delays_injected`` for a delay) must move within ``proof_timeout_s`` while requests go from
    ``proof_from`` to ``proof_path`` (batches of 10; with a running load they move sooner), or the
    action fails with the counters seen. ``via`` ``app``: the sample app's ``/admin/fault`` (a
    second way to compare against), proven by the app reporting the fault active."""
    if via not in APP_FAULT_VIAS:
        raise UserError(f"fail_replicas: via {via!r} is not one of {', '.join(APP_FAULT_VIAS)}")
    raw_status: Any = status  # Chaos Toolkit passes configuration values as given (None, "none", "503")
    status = None if raw_status in (None, "", "none") else int(raw_status)
    rate, delay_ms = float(rate), int(delay_ms or 0)
    if status is None and not delay_ms:
        raise UserError("fail_replicas: nothing to inject. Fix: set status and/or delay_ms")
    if not 0.0 < rate <= 1.0:
        raise UserError(f"fail_replicas: rate {rate:g} must be in (0, 1]")
    backend = mesh(configuration)
    workloads = [backend.workload(p) for p in pods_of(pods)]  # unknown pods fail before anything changes
    if via == "sidecar":  # bad victims (gateway, no sidecar, no inbound HTTP) fail before any change
        from harness import sidecar_fault
        from harness.chaos.context import admin_http

        with admin_http(configuration) as http:
            for w in workloads:
                sidecar_fault.check_victim(http, w)
    ledger = Ledger.of(configuration)
    app_fault = AppFault(status=status, rate=rate, delay_ms=delay_ms, via=via)
    evidence: list[dict[str, Any]] = []
    for w in workloads:
        # ledger kinds as earlier runs wrote them: replica-fault, made by the sidecar; app-fault, by the app
        kind = "replica-fault" if via == "sidecar" else "app-fault"
        ledger.record(f"{kind}:{w.ref}", kind, {"pod": w.ref, "via": via})
        if via == "sidecar":
            evidence.append(
                _proven_sidecar_fault(
                    backend, w, app_fault, proof_from, proof_path, float(proof_timeout_s), configuration
                )
            )
        else:
            backend.inject_fault(w.ref, app_fault)
            evidence.append(_proven_admin_fault(w, configuration))
    return {
        "pods": [w.ref for w in workloads],
        "status": status,
        "rate": rate,
        "delay_ms": delay_ms,
        "via": via,
        "evidence": evidence,
    }


def _proven_sidecar_fault(
    backend: Any,
    w: Any,
    app_fault: AppFault,
    source: str,
    path: str,
    timeout_s: float,
    configuration: Configuration,
) -> dict[str, Any]:
    from contextlib import nullcontext

    from harness import sidecar_fault
    from harness.chaos.context import admin_http
    from harness.traffic.client import Sampler

    with admin_http(configuration) as http:
        before = sidecar_fault.inbound_counts(http, w)
        injected = backend.inject_fault(w.ref, app_fault)
        counter = "aborts_injected" if app_fault.status is not None else "delays_injected"
        seen: dict[str, Any] = {}
        t0 = time.monotonic()
        # proof_from "": send nothing, wait for the traffic already flowing (a running load)
        sampling = Sampler(timeout=max(10.0, app_fault.delay_ms / 1000 + 5)) if source else nullcontext()
        with sampling as sampler:

            def moved() -> bool:
                d = sidecar_fault.inbound_counts(http, w) - before
                seen.update(aborts=d.aborts, delays=d.delays, requests=d.requests)
                if (d.aborts if app_fault.status is not None else d.delays) > 0:
                    return True
                if sampler is not None:
                    sampler.sample(backend, source=source, path=path, n=10, concurrency=2)
                raise NotYet(
                    f"{w.ref}'s inbound Envoy: {d.requests} requests, {d.aborts} aborts_injected, "
                    f"{d.delays} delays_injected since the fault"
                )

            prove(
                moved,
                what=f"the fault to take effect on {w.ref}'s own sidecar ({counter} moving)",
                timeout_s=timeout_s,
                failure=lambda: (
                    f"fail_replicas: the sidecar fault on {w.ref} did not take effect within "
                    f"{timeout_s:g} s: its inbound Envoy counted {seen.get('requests', 0)} requests, "
                    f"{seen.get('aborts', 0)} aborts_injected, {seen.get('delays', 0)} delays_injected "
                    f"({f'traffic from {source} to {path}' if source else 'the traffic already flowing'})"
                ),
            )
    return {**injected, "proof": {counter: seen, "proven_s": round(time.monotonic() - t0, 3)}}


def _proven_admin_fault(w: Any, configuration: Configuration) -> dict[str, Any]:
    import httpx

    from harness.chaos.context import admin_http

    with admin_http(configuration) as http:
        try:
            doc = http.get(f"{w.admin_url}/admin/fault").json()
        except (httpx.HTTPError, ValueError) as e:
            raise BackendError(f"fail_replicas: cannot read {w.ref}'s admin fault: {e}") from e
    if not doc.get("active"):
        raise BackendError(f"fail_replicas: {w.ref}'s app does not report the fault active: {doc}")
    return {"pod": w.ref, "via": "app", "proof": {"admin_fault": doc}}


def clear_replica_faults(pods: str | Sequence[str], configuration: Configuration = None) -> dict[str, Any]:
    """Remove every app fault of ``pods`` (sidecar EnvoyFilter and app admin fault alike)."""
    backend = mesh(configuration)
    ledger = Ledger.of(configuration)
    cleared = []
    for pod in pods_of(pods):
        ref = backend.workload(pod).ref
        backend.clear_fault(ref)
        ledger.done(f"replica-fault:{ref}")
        ledger.done(f"app-fault:{ref}")
        cleared.append(ref)
    return {"cleared": cleared}


def _undo_app_fault(entry: Entry, configuration: Configuration) -> str:
    clear_replica_faults(str(entry.data["pod"]), configuration)
    return f"fault on {entry.data['pod']} cleared"


#: the rollback's undo of each ledger kind this family writes (see :func:`harness.chaos.ledger.undo_all`)
UNDO: Mapping[str, Undo] = {"replica-fault": Undo(_undo_app_fault), "app-fault": Undo(_undo_app_fault)}
