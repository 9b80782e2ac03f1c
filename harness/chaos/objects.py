"""Istio objects as the chaos actions and the no-residue check see them.

An object's key (``Kind/namespace/name``), the running object of a kind and ref, the object as it
is compared (:func:`comparable`: without what the API server writes itself) and as it can be
applied back (:func:`applicable`), the fields where two versions differ, Istio's validation of
objects about to be applied, and applying or deleting bodies on the running mesh.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from harness.chaos.context import Configuration, chaos_dir, mesh
from harness.errors import UserError

#: Metadata the API server writes itself, whatever the object says: a correct restore cannot bring
#: it back, so the no-residue check and :func:`harness.chaos.actions.restore_object` do not compare
#: it (each with why).
#: Everything else of the object is compared: spec, labels, annotations, finalizers, owners, ...
SERVER_MANAGED_METADATA: Mapping[str, str] = {
    "resourceVersion": "bumped by the API server on every write, a restore included",
    "uid": "new when a removed object is created again",
    "creationTimestamp": "new when a removed object is created again",
    "generation": "incremented by the API server on every spec write, even one back to the same spec",
    "managedFields": "the API server's record of which manager wrote which field, and when",
    "selfLink": "derived from the object's path (deprecated; empty since Kubernetes 1.20)",
}
#: Annotations a client tool writes for its own bookkeeping, not configuration anyone reads.
TOOL_ANNOTATIONS: Mapping[str, str] = {
    "kubectl.kubernetes.io/last-applied-configuration": (
        "kubectl's copy of the last document it applied (its client-side apply bookkeeping); it "
        "holds the body as applied, so it differs after any restore that applied another body"
    ),
}
#: ``status`` is not compared either: istiod's status reporter writes it (observedGeneration,
#: validation messages), and on the local backend no object has one.

#: metadata the API server owns; dropped before an object is applied back (resourceVersion is kept)
_SERVER_FIELDS = tuple(k for k in SERVER_MANAGED_METADATA if k != "resourceVersion")


def object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('namespace') or 'default'}/{meta.get('name')}"


def comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` as the no-residue check compares it: without ``status``, the server-managed
    metadata and the tool annotations above (empty ``labels``/``annotations`` count as absent)."""
    body = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in dict(body.get("metadata") or {}).items() if k not in SERVER_MANAGED_METADATA}
    annotations = {k: v for k, v in dict(meta.get("annotations") or {}).items() if k not in TOOL_ANNOTATIONS}
    meta.pop("annotations", None)
    if annotations:
        meta["annotations"] = annotations
    if not meta.get("labels"):
        meta.pop("labels", None)
    body["metadata"] = meta
    return body


_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def field_changes(was: Any, now: Any, path: str = "") -> list[str]:
    """Where ``now`` differs from ``was``, one line per field: ``metadata.labels.team added ("x")``,
    ``spec.http[1].fault removed (was ...)``, ``metadata.annotations["a.io/b"]: "1" -> "2"``,
    ``spec.http: 1 item, was 2``."""
    if isinstance(was, Mapping) and isinstance(now, Mapping):
        out: list[str] = []
        for k in sorted(set(was) | set(now), key=str):
            p = f"{path}.{k}" if _PLAIN_KEY.match(str(k)) else f"{path}[{json.dumps(str(k))}]"
            p = p.lstrip(".")
            if k not in was:
                out.append(f"{p} added ({_short(now[k])})")
            elif k not in now:
                out.append(f"{p} removed (was {_short(was[k])})")
            elif was[k] != now[k]:
                out += field_changes(was[k], now[k], p)
        return out
    if isinstance(was, list) and isinstance(now, list) and len(was) == len(now):
        return [
            c
            for i, (a, b) in enumerate(zip(was, now, strict=True))
            for c in field_changes(a, b, f"{path}[{i}]")
        ]
    if isinstance(was, list) and isinstance(now, list):
        return [f"{path}: {len(now)} item{'s' * (len(now) != 1)}, was {len(was)}"]
    return [f"{path or '(object)'}: {_short(was)} -> {_short(now)}"] if was != now else []


def find_object(kind: str, ref: str, configuration: Configuration = None) -> dict[str, Any] | None:
    """The running Istio object ``kind`` named ``ns/name`` (None when absent)."""
    ns, _, name = ref.rpartition("/")
    key = f"{kind}/{ns or 'default'}/{name}"
    for obj in mesh(configuration).istio_objects():
        if object_key(obj) == key:
            return obj
    return None


def applicable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` as it can be applied back: server-owned fields dropped, ``resourceVersion`` kept
    (on Kubernetes it makes the apply fail instead of overwriting a concurrent edit)."""
    body = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in dict(body.get("metadata") or {}).items() if k not in _SERVER_FIELDS}
    body["metadata"] = meta
    return body


def apply_bodies(bodies: Sequence[Mapping[str, Any]], label: str, configuration: Configuration) -> float:
    """Apply ``bodies`` to the running mesh; returns the propagation seconds."""
    return _through_file(bodies, label, configuration, delete=False)


def delete_bodies(bodies: Sequence[Mapping[str, Any]], label: str, configuration: Configuration) -> float:
    """Delete ``bodies`` from the running mesh; returns the propagation seconds."""
    return _through_file(bodies, label, configuration, delete=True)


def _through_file(
    bodies: Sequence[Mapping[str, Any]], label: str, configuration: Configuration, *, delete: bool
) -> float:
    """The backend applies and deletes files: write ``bodies`` to one in the chaos dir, hand it over,
    remove it."""
    backend = mesh(configuration)
    path = chaos_dir(configuration) / "objects" / f"{time.time_ns()}-{label}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all([dict(b) for b in bodies], sort_keys=False))
    try:
        return backend.delete([path]) if delete else backend.apply([path])
    finally:
        path.unlink(missing_ok=True)


def validate(bodies: Sequence[Mapping[str, Any]], configuration: Configuration) -> None:
    """Istio's validation of objects about to be applied, in the context of what the mesh runs."""
    from harness.istio import Bundle, load_text, validate_documents

    running = Bundle(load_text(yaml.safe_dump_all(mesh(configuration).istio_objects()), "<running mesh>"))
    docs = load_text(yaml.safe_dump_all([dict(b) for b in bodies], sort_keys=False), "<chaos action>")
    validate_documents(docs, running)


def file_objects(path: str) -> list[dict[str, Any]]:
    from harness.istio import load_paths

    p = Path(path)
    if not p.is_file():
        raise UserError(f"no such file {path}. Fix: give the path of a YAML file (relative to the cwd)")
    return [dict(d.body) for d in load_paths([p])]
