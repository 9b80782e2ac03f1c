"""Any Istio object: apply or remove the objects of a YAML file, and put each back as it was."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.chaos import objects
from harness.chaos.context import Configuration, mesh
from harness.chaos.ledger import Entry, Ledger, Undo

__all__ = [
    "apply_resource",
    "remove_resource",
    "restore_resources",
]


def apply_resource(path: str, configuration: Configuration = None) -> dict[str, Any]:
    """Validate and apply the Istio objects in ``path``; each object's predecessor (or its
    absence) is remembered for :func:`restore_resources`."""
    objs = objects.file_objects(path)
    objects.validate(objs, configuration)
    ledger = Ledger.of(configuration)
    running = {objects.object_key(o): o for o in mesh(configuration).istio_objects()}
    for o in objs:
        key = objects.object_key(o)
        before = running.get(key)
        ledger.record(
            f"object:{key}", "object", {"object": key, "before": before and objects.applicable(before)}
        )
    seconds = objects.apply_bodies(objs, "apply", configuration)
    return {"applied": [objects.object_key(o) for o in objs], "propagation_s": seconds}


def remove_resource(path: str, configuration: Configuration = None) -> dict[str, Any]:
    """Delete the Istio objects named in ``path`` (those that run); restorable like apply_resource."""
    objs = objects.file_objects(path)
    ledger = Ledger.of(configuration)
    running = {objects.object_key(o): o for o in mesh(configuration).istio_objects()}
    present = [running[objects.object_key(o)] for o in objs if objects.object_key(o) in running]
    for o in present:
        key = objects.object_key(o)
        ledger.record(f"object:{key}", "object", {"object": key, "before": objects.applicable(o)})
    seconds = objects.delete_bodies(present, "remove", configuration) if present else 0.0
    return {"removed": [objects.object_key(o) for o in present], "propagation_s": seconds}


def restore_resources(path: str | None = None, configuration: Configuration = None) -> dict[str, Any]:
    """Put back every object changed by apply_resource/remove_resource (of ``path``, or all)."""
    keys = {objects.object_key(o) for o in objects.file_objects(path)} if path else None
    ledger = Ledger.of(configuration)
    entries = [
        e for e in ledger.entries() if e.kind == "object" and (keys is None or e.data["object"] in keys)
    ]
    restored = [restore_object(e.data, configuration) for e in entries]
    for e in entries:
        ledger.done(e.key)
    return {"restored": restored}


def restore_object(data: Mapping[str, Any], configuration: Configuration) -> str:
    key = str(data["object"])
    kind, _, ref = key.partition("/")
    current = objects.find_object(kind, ref, configuration)
    before = data.get("before")
    if before is None:
        if current is not None:
            objects.delete_bodies([current], "restore-delete", configuration)
            return f"deleted {key}"
        return f"{key} already absent"
    if current is not None and objects.comparable(current) == objects.comparable(before):
        return f"{key} already as before"
    body = dict(before)
    if current is not None:  # apply over the current version (kube: its resourceVersion)
        meta = dict(body.get("metadata") or {})
        rv = (current.get("metadata") or {}).get("resourceVersion")
        if rv:
            meta["resourceVersion"] = rv
        else:
            meta.pop("resourceVersion", None)
        body["metadata"] = meta
    else:
        body["metadata"] = {
            k: v for k, v in dict(body.get("metadata") or {}).items() if k != "resourceVersion"
        }
    objects.apply_bodies([body], "restore", configuration)
    return f"restored {key}"


def _undo_object(entry: Entry, configuration: Configuration) -> str:
    ledger = Ledger.of(configuration)
    what = restore_object(entry.data, configuration)
    ledger.done(entry.key)
    return what


#: the rollback's undo of each ledger kind this family writes (see :func:`harness.chaos.ledger.undo_all`)
UNDO: Mapping[str, Undo] = {"object": Undo(_undo_object)}
