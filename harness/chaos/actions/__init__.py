"""Chaos Toolkit actions over the Backend protocol, each paired with the action that undoes it.

Use them as python providers (``module: harness.chaos.actions``). Every function takes the
experiment's ``configuration`` (Chaos Toolkit injects it) to find the mesh (see
:mod:`harness.chaos.context`), records what it changes in the ledger *before* changing it,
and its undo removes the record *after* undoing. Undoing what was never done is a no-op, so
every undo is safe as a rollback whatever point the run reached. Each family lives in its own
module, the action next to its undo:

==========================  ===========================  ============================================
action                      undo (rollback)              what it changes
==========================  ===========================  ============================================
``routes``
inject_route_fault          remove_route_fault           one named http route of a VirtualService
set_route_policy            restore_route_policy         retries/timeout of one named http route
``app_faults``
fail_replicas               clear_replica_faults         an app fault by a replica's sidecar (or app)
``certificates``
shorten_cert_lifetime       restore_cert_lifetime        a replica's workload certificate lifetime
``replica_loss``
kill_replica                restore_replica              a replica's app process / pod
``network``
drop_packets                restore_network              a replica's network drops packets (iptables)
delay_network               (refuses: needs netem)       a replica's network delays packets
``resources``
apply_resource              restore_resources            any Istio objects (from a YAML file)
remove_resource             restore_resources            deletes Istio objects (from a YAML file)
``background_load``
start_load                  stop_load                    a background load generator process
``control_plane``
stop_control_plane          start_control_plane          istiod
(here)
(any)                       rollback_all                 everything the ledger still holds
==========================  ===========================  ============================================
"""

from __future__ import annotations

from typing import Any

from harness.chaos import ledger
from harness.chaos.actions import (
    app_faults,
    background_load,
    certificates,
    control_plane,
    network,
    replica_loss,
    resources,
    routes,
)
from harness.chaos.actions.app_faults import clear_replica_faults, fail_replicas
from harness.chaos.actions.background_load import start_load, stop_load
from harness.chaos.actions.certificates import restore_cert_lifetime, shorten_cert_lifetime
from harness.chaos.actions.control_plane import start_control_plane, stop_control_plane
from harness.chaos.actions.network import delay_network, drop_packets, restore_network
from harness.chaos.actions.replica_loss import kill_replica, restore_replica
from harness.chaos.actions.resources import apply_resource, remove_resource, restore_resources
from harness.chaos.actions.routes import (
    inject_route_fault,
    remove_route_fault,
    restore_route_policy,
    set_route_policy,
)
from harness.chaos.context import Configuration
from harness.errors import BackendError

__all__ = [
    "apply_resource",
    "clear_replica_faults",
    "delay_network",
    "drop_packets",
    "fail_replicas",
    "inject_route_fault",
    "kill_replica",
    "remove_resource",
    "remove_route_fault",
    "restore_replica",
    "restore_network",
    "restore_resources",
    "restore_route_policy",
    "rollback_all",
    "restore_cert_lifetime",
    "set_route_policy",
    "shorten_cert_lifetime",
    "start_control_plane",
    "start_load",
    "stop_control_plane",
    "stop_load",
]


#: Every ledger kind an action writes, with the undo its family registered for it.
UNDO = ledger.registry(
    routes.UNDO,
    app_faults.UNDO,
    certificates.UNDO,
    replica_loss.UNDO,
    network.UNDO,
    resources.UNDO,
    background_load.UNDO,
    control_plane.UNDO,
)


def undo_all(configuration: Configuration = None) -> tuple[list[str], list[str]]:
    """Undo every ledger entry through its own family's undo, newest first, a stopped control plane
    first (nothing applies without it): the last line of defence after an interrupted or killed run.

    Returns (what was undone, what failed). Not an activity (not in ``__all__``): the meshproof
    control and ``meshproof chaos run`` call it; experiments use :func:`rollback_all`."""
    return ledger.undo_all(configuration, UNDO)


def rollback_all(configuration: Configuration = None) -> dict[str, Any]:
    """Undo everything the ledger still holds, newest first (a catch-all rollback)."""
    undone, failed = undo_all(configuration)
    if failed:
        raise BackendError("could not undo: " + "; ".join(failed))
    return {"undone": undone}
