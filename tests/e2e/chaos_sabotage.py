"""Test-only Chaos Toolkit rollback that is sabotaged: the negative control of the no-residue check.

:func:`restore_resources_skipping_undo` is :func:`harness.chaos.actions.restore_resources` with
the undo left out: it drops the ledger entries of the objects in ``path`` as if they had been
restored, and restores nothing. After ``apply_resource`` of a relabelled copy of a running object
(its spec unchanged), the labels and annotations it added stay behind; nothing in the ledger says
so any more, so only the no-residue check can see it. Experiments name it as
``{type: python, module: tests.e2e.chaos_sabotage, func: restore_resources_skipping_undo}``
(Chaos Toolkit runs with the repository root on its path).
"""

from __future__ import annotations

from typing import Any

from harness.chaos.context import Configuration
from harness.chaos.ledger import Ledger
from harness.chaos.objects import file_objects, object_key


def restore_resources_skipping_undo(path: str, configuration: Configuration = None) -> dict[str, Any]:
    """A broken rollback: marks every change of ``path`` undone, undoes none of them."""
    keys = {f"object:{object_key(o)}" for o in file_objects(path)}
    ledger = Ledger.of(configuration)
    dropped = [e.key for e in ledger.entries() if e.key in keys]
    for key in dropped:
        ledger.done(key)
    return {"restored": [], "ledger_entries_dropped": dropped}
