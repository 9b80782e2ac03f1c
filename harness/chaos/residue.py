"""The no-residue check: after an experiment the mesh is as it was before, or the run failed.

:func:`snapshot` records, before the method runs, every Istio object (spec, labels,
annotations, the rest of its metadata except what the API server writes itself) and the replicas
per deployment. :func:`check` compares afterwards and also requires that no replica has an
active admin fault, every replica is up and ready, every proxy has ACKed the current config and
the chaos ledger is empty. (Undoing what the ledger still holds is the rollback's job:
:func:`harness.chaos.actions.undo_all`.)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from harness import wait
from harness.chaos.context import Configuration, admin_http, chaos_dir, mesh
from harness.chaos.ledger import Ledger
from harness.chaos.objects import comparable, field_changes, object_key
from harness.errors import MeshproofError

BASELINE = "baseline.json"
#: how long the check waits for ejections to end: the manifests eject for 30 s (+ a 5 s sweep)
EJECTION_WAIT_S = 90.0


def _objects(configuration: Configuration) -> dict[str, Any]:
    """Every Istio object as compared: spec, labels, annotations and the rest of its metadata,
    except what the API server writes itself (see :func:`harness.chaos.objects.comparable`)."""
    return {object_key(o): comparable(o) for o in mesh(configuration).istio_objects()}


#: how many changed fields of one object a problem line names
_FIELDS_NAMED = 4


def _changed(key: str, was: Any, now: Any) -> str:
    changes = field_changes(was, now)
    more = f" (+{len(changes) - _FIELDS_NAMED} more)" if len(changes) > _FIELDS_NAMED else ""
    return f"Istio object changed: {key}: {'; '.join(changes[:_FIELDS_NAMED])}{more}"


def snapshot(configuration: Configuration = None) -> dict[str, Any]:
    """The pre-experiment state, also written to ``<state>/chaos/baseline.json``."""
    backend = mesh(configuration)
    doc = {
        "objects": _objects(configuration),
        "replicas": dict(Counter(f"{w.namespace}/{w.deployment}" for w in backend.workloads())),
        "ejected": sorted(_ejected(configuration)),
    }
    (chaos_dir(configuration) / BASELINE).write_text(json.dumps(doc, indent=1, sort_keys=True))
    return doc


def _ejected(configuration: Configuration) -> set[str]:
    """``"caller -> host"`` for every host a proxy's outlier detection has ejected now."""
    return {
        f"{proxy} -> {host}"
        for proxy, clusters in mesh(configuration).ejections().items()
        for hosts in clusters.values()
        for host in hosts
    }


def baseline(configuration: Configuration = None) -> dict[str, Any] | None:
    try:
        doc = json.loads((chaos_dir(configuration) / BASELINE).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


@dataclass(frozen=True)
class Residue:
    """What the no-residue check found; ``clean`` when nothing."""

    problems: tuple[str, ...] = ()
    checked: tuple[str, ...] = field(default=())

    @property
    def clean(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {"clean": self.clean, "problems": list(self.problems), "checked": list(self.checked)}


def check(configuration: Configuration = None, *, before: Mapping[str, Any] | None = None) -> Residue:
    """Compare the mesh with the baseline (``before`` or the one in the state dir)."""
    before = before if before is not None else baseline(configuration)
    problems: list[str] = []
    checked: list[str] = []
    backend = mesh(configuration)
    leftover = Ledger.of(configuration).entries()
    checked.append("chaos ledger empty")
    problems += [f"not undone: {e.key}" for e in leftover]
    if before is None:
        problems.append("no pre-experiment baseline recorded: cannot compare the Istio objects")
    else:
        checked.append("every Istio object as before (spec, labels, annotations)")
        now = _objects(configuration)
        was = dict(before.get("objects") or {})
        problems += [f"Istio object added: {k}" for k in sorted(set(now) - set(was))]
        problems += [f"Istio object removed: {k}" for k in sorted(set(was) - set(now))]
        problems += [_changed(k, was[k], now[k]) for k in sorted(set(now) & set(was)) if now[k] != was[k]]
    workloads = list(backend.workloads())
    if before is not None:
        checked.append("replicas per deployment as before, all ready")
        now_replicas = Counter(f"{w.namespace}/{w.deployment}" for w in workloads)
        for dep, n in sorted(dict(before.get("replicas") or {}).items()):
            if now_replicas.get(dep, 0) != n:
                problems.append(f"{dep}: {now_replicas.get(dep, 0)} replicas, {n} before")
    problems += [f"{w.ref} not ready" for w in workloads if not w.ready]
    checked.append("no replica has an active admin fault, every app answers")
    with admin_http(configuration) as http:
        for w in workloads:
            if not w.admin_url:
                continue
            try:
                r = http.get(f"{w.admin_url}/admin/fault")
                active = r.status_code == 200 and bool(r.json().get("active"))
            except (httpx.HTTPError, ValueError) as e:
                problems.append(f"{w.ref}: app admin unreachable ({type(e).__name__})")
                continue
            if active:
                problems.append(f"{w.ref}: admin fault still active")
    if before is not None:
        checked.append("outlier ejections that began during the run have ended")
        was_ejected = set(before.get("ejected") or [])
        try:
            wait.until(
                lambda: not (_ejected(configuration) - was_ejected),
                what="the ejections that began during the experiment to end (baseEjectionTime, then the next sweep)",
                timeout=EJECTION_WAIT_S,
                interval=0.5,
            )
        except MeshproofError as e:
            problems.append(
                f"still ejected: {sorted(_ejected(configuration) - was_ejected)} ({str(e).splitlines()[0]})"
            )
    checked.append("every proxy connected and ACKed the current config")
    try:
        backend.wait_synced(timeout=30)
    except MeshproofError as e:
        problems.append(f"proxies not in sync: {str(e).splitlines()[0]}")
    return Residue(tuple(problems), tuple(checked))
