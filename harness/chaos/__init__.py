"""Chaos Toolkit extension: game-day experiments on the same building blocks as the suites.

::

    actions   one module per family (routes, app_faults, replica_loss, resources, background_load,
              control_plane, certificates), each action next to its undo (rollback)
    objects   Istio objects as the actions and the no-residue check see them (key, compare, apply)
    probes    error ratio / latency over a window, ejections, authorization matrix, readiness,
              trace completeness; each returns evidence with a ``holds`` verdict
    control   the experiment-level control: preflight of references, no-residue verdict
    context   where an activity finds its mesh (state dir, backend, Envoy admin client)
    ledger    the changes an action made and has not yet undone; the rollback through each
              entry's own undo, which each action family registers next to its actions
    residue   baseline snapshot and the no-residue check: it compares, it undoes nothing
    load_window what the background load (Locust) saw in a probe's window
    runner    ``meshproof chaos run``: chaos run --rollback-strategy always, journal, summary

Activities are python providers, e.g.
``{type: python, module: harness.chaos.actions, func: fail_replicas, arguments: {pods: ...}}``;
``chaos discover`` finds them through ``__all__`` of ``harness.chaos.actions`` and
``harness.chaos.probes`` (re-exported here). The mesh is the one in the state dir named by the
configuration key ``meshproof_state`` (else ``MESHPROOF_STATE``), whichever backend runs it.
"""

from __future__ import annotations

from harness.chaos.actions import (
    apply_resource,
    clear_replica_faults,
    fail_replicas,
    inject_route_fault,
    kill_replica,
    remove_resource,
    remove_route_fault,
    restore_replica,
    restore_resources,
    rollback_all,
    start_control_plane,
    start_load,
    stop_control_plane,
    stop_load,
)
from harness.chaos.probes import (
    authorization_matrix,
    ejected_hosts,
    error_ratio,
    errors_settle,
    holds,
    latency_percentiles,
    mesh_ready,
    status_share,
    trace_completeness,
)

__all__ = [
    "apply_resource",
    "authorization_matrix",
    "clear_replica_faults",
    "ejected_hosts",
    "error_ratio",
    "errors_settle",
    "fail_replicas",
    "holds",
    "inject_route_fault",
    "kill_replica",
    "latency_percentiles",
    "mesh_ready",
    "remove_resource",
    "remove_route_fault",
    "restore_replica",
    "restore_resources",
    "rollback_all",
    "start_control_plane",
    "start_load",
    "status_share",
    "stop_control_plane",
    "stop_load",
    "trace_completeness",
]


def discover(discover_system: bool = True) -> dict[str, object]:
    """What ``chaos discover meshproof --no-install`` reports: our actions and probes."""
    from chaoslib.discovery.discover import discover_actions, discover_probes, initialize_discovery_result

    from harness.versions import MESHPROOF

    discovery: dict[str, object] = initialize_discovery_result("meshproof", MESHPROOF, "meshproof")
    discovery["activities"] = [
        *discover_actions("harness.chaos.actions"),
        *discover_probes("harness.chaos.probes"),
    ]
    return discovery
