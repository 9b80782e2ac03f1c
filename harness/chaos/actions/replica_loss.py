"""Replica loss: kill a replica's app (process or pod) and bring it back."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from harness.chaos.context import Configuration, mesh
from harness.chaos.ledger import Entry, Ledger, Undo
from harness.errors import UserError

__all__ = [
    "kill_replica",
    "restore_replica",
]


def kill_replica(pod: str, configuration: Configuration = None) -> dict[str, Any]:
    """Kill a replica's app (local: the supervisor kills the process; kube: the pod is deleted)."""
    backend = mesh(configuration)
    w = backend.workload(pod)
    if w.role == "gateway":
        raise UserError(f"kill_replica: {w.ref} is the ingress gateway. Fix: name an app replica")
    Ledger.of(configuration).record(f"kill:{w.ref}", "kill", {"pod": w.ref, "deployment": w.deployment})
    backend.kill(w.ref)
    return {"killed": w.ref}


def restore_replica(pod: str, configuration: Configuration = None) -> dict[str, Any]:
    """Bring a killed replica back and wait until it is ready (no-op if it was not killed)."""
    backend = mesh(configuration)
    ledger = Ledger.of(configuration)
    ref = backend.workload(pod).ref if "/" not in pod else pod
    key = f"kill:{ref}"
    if ledger.get(key) is None:
        return {"pod": ref, "restored": False, "note": "not killed"}
    t0 = time.monotonic()
    backend.restart(ref)
    ledger.done(key)
    return {"pod": ref, "restored": True, "seconds": round(time.monotonic() - t0, 3)}


def _undo_kill(entry: Entry, configuration: Configuration) -> str:
    restore_replica(str(entry.data["pod"]), configuration)
    return f"{entry.data['pod']} restarted"


#: the rollback's undo of each ledger kind this family writes (see :func:`harness.chaos.ledger.undo_all`)
UNDO: Mapping[str, Undo] = {"kill": Undo(_undo_kill)}
