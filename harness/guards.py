"""Guards that always undo what a test changed in the shared mesh: configuration variants
(:class:`ConfigGuard`) and app faults and killed replicas (:class:`FaultGuard`).

ConfigGuard: apply validated variants of the manifests' objects, and always restore them.

Every suite shares one mesh, so a test that changes configuration must put the original back.
A guard starts from the manifests (what the mesh was brought up with), hands out deep copies
of their objects to edit (:meth:`ConfigGuard.variant`), validates each variant in the context
of what is applied (so a typo fails loudly instead of proving nothing), writes it to a YAML
file and applies it through the Backend, which blocks until every proxy ACKed it. On
:meth:`ConfigGuard.restore` the originals of every object it changed are applied back in one
go (objects the manifests did not have are deleted).

Besides Istio and Gateway API objects, a guard varies the workloads' Kubernetes objects that say who a workload
is (:data:`WORKLOAD_KINDS`: Deployments and ServiceAccounts), e.g. to run a client under another
ServiceAccount; the backend restarts the workload as that ServiceAccount, and restore puts the
original back.

Objects whose ``spec`` would not change are skipped: istiod pushes nothing for them, so there
is nothing to wait for (and the local backend's ``apply`` would wait for a push in vain).

:attr:`ConfigGuard.applied` is the Bundle the mesh runs now: expectations are derived from it,
never typed into tests.

FaultGuard: a leaked fault poisons every later suite, so the guard remembers every pod it touched
and :meth:`FaultGuard.undo` clears them all (and restarts killed replicas), whatever happened.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness import namespaces, yamlio
from harness.backends.base import AppFault, Backend
from harness.istio import Bundle, load_paths, load_text, validate_documents
from harness.istio.crds import GATEWAY_API_GROUPS
from harness.istio.loader import Document
from harness.istio.model import document_key

Key = tuple[str, str, str, str]  # (group, kind, namespace, name)
Body = dict[str, Any]

_counter = itertools.count(1)


def key_of(body: Mapping[str, Any]) -> Key:
    doc = _doc(body, "<key>")
    return document_key(doc)


def _doc(body: Mapping[str, Any], file: str) -> Document:
    docs = load_text(yamlio.dump(dict(body), sort_keys=False), file)
    if len(docs) != 1:
        raise ValueError(f"expected one object, got {len(docs)}")
    return docs[0]


WORKLOAD_KINDS = ("Deployment", "ServiceAccount")  # Kubernetes objects a guard may vary


def istio_documents(bundle: Bundle) -> tuple[Document, ...]:
    """The routing and policy configuration: Istio's objects and Gateway API objects (HTTPRoutes
    and Gateways, which a guard varies like VirtualServices)."""
    return tuple(d for d in bundle if d.group.endswith(".istio.io") or d.group in GATEWAY_API_GROUPS)


def guarded_documents(bundle: Bundle) -> tuple[Document, ...]:
    """The objects a guard may vary: every Istio object, and the workloads' Deployments and
    ServiceAccounts."""
    return (*istio_documents(bundle), *(d for d in bundle if d.kind in WORKLOAD_KINDS))


class ConfigGuard:
    """Variants of the manifests' objects, applied through ``mesh`` and always restored."""

    def __init__(
        self,
        mesh: Backend,
        manifests: Bundle,
        workdir: Path,
        *,
        istio_version: str | None = None,
        current: Mapping[Key, Body] | None = None,
        observe: Callable[[], Mapping[Key, Body]] | None = None,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._mesh = mesh
        # after every change the proxies ACKed (e.g. the sampler's pool: connections accepted
        # before a listener change keep the old listener until Envoy drains them)
        self._on_change = on_change
        self._manifests = manifests
        self._workdir = workdir
        self._istio_version = istio_version
        self._originals: dict[Key, Body] = {document_key(d): d.body for d in guarded_documents(manifests)}
        # what the mesh runs now, for every object this guard may touch (None: absent); objects
        # ``current`` does not cover (the backend cannot say) are assumed to run their originals
        self._current: dict[Key, Body | None] = {**self._originals, **(current or {})}
        # re-reads what the mesh runs (local backend: its config dir), so restore() never re-applies
        # an object that already runs its original (apply would wait for a push that never comes)
        self._observe = observe
        self._touched: set[Key] = set()
        self._applied = manifests
        self.log: list[str] = []

    # ---- reading ---------------------------------------------------------------------------
    @property
    def applied(self) -> Bundle:
        """The configuration the mesh runs now (manifests with this guard's variants merged in)."""
        return self._applied

    @property
    def manifests(self) -> Bundle:
        return self._manifests

    def original(self, kind: str, name: str, namespace: str = "sample") -> Body:
        doc = self._manifests.find(kind, namespaces.ns(namespace), name)  # a kube worker's copy: its own
        if doc is None:
            raise LookupError(f"the manifests have no {kind} {namespace}/{name}")
        return doc.body

    def variant(
        self, kind: str, name: str, namespace: str = "sample", edit: Callable[[Body], object] | None = None
    ) -> Body:
        """A deep copy of the manifests' object, edited in place by ``edit`` (if given)."""
        body = copy.deepcopy(self.original(kind, name, namespace))
        if edit is not None:
            edit(body)
        return body

    # ---- changing ----------------------------------------------------------------------------
    def apply(self, *bodies: Body, label: str = "variant", unvalidated_because: str = "") -> float:
        """Validate and apply ``bodies``; return the seconds until every proxy ACKed (0: no change).

        ``unvalidated_because`` skips validation, saying why (e.g. a subset on a label only the
        local backend puts on pods, which the manifests' Deployments cannot show).
        """
        docs = [_doc(b, f"{label}.yaml") for b in bodies]
        changed = [d for d in docs if not _same_spec(self._current.get(document_key(d)), d.body)]
        if not changed:
            return 0.0
        if unvalidated_because:
            bundle = self._applied.merged(changed)
            self.log.append(f"not validated ({unvalidated_because}): {', '.join(d.ref for d in changed)}")
        else:
            bundle = validate_documents(changed, self._applied, istio_version=self._istio_version)
        path = self._write(label, [d.body for d in changed])
        for d in changed:
            self._touched.add(document_key(d))
        try:
            seconds = self._mesh.apply([path])
        except BaseException:
            for d in changed:  # unknown whether it landed: make restore() re-apply the original
                self._current[document_key(d)] = {"unknown": True}
            raise
        for d in changed:
            self._current[document_key(d)] = d.body
        self._on_change()
        self._applied = bundle
        self.log.append(f"applied {', '.join(d.ref for d in changed)} ({seconds:.2f}s)")
        return seconds

    def repair(self) -> list[str]:
        """Restore objects that do not run their manifests' spec (a failed restore, an interrupted run)."""
        stale = [k for k, body in self._originals.items() if not _same_spec(self._current.get(k), body)]
        self._touched.update(stale)
        if stale:
            self.restore()
        return ["/".join(k[1:]) for k in stale]

    def restore(self) -> float:
        """Apply the original of every object changed since the start (delete added ones)."""
        back: list[Body] = []
        gone: list[Body] = []
        if self._observe is not None and self._touched:
            seen = self._observe()
            self._current.update({k: seen[k] for k in self._touched if k in seen})
        for key in sorted(self._touched):
            original = self._originals.get(key)
            current = self._current.get(key)
            if original is None:
                if current is not None:
                    gone.append(current)
            elif not _same_spec(current, original):
                back.append(original)
        seconds = 0.0
        if back:
            seconds += self._mesh.apply([self._write("restore", back)])
            for b in back:
                self._current[key_of(b)] = b
        if gone:
            seconds += self._mesh.delete([self._write("delete", gone)])
            for b in gone:
                self._current[key_of(b)] = None
        self._touched.clear()
        if back or gone:
            self._on_change()
        self._applied = self._manifests
        if back or gone:
            self.log.append(f"restored {len(back)} and deleted {len(gone)} objects ({seconds:.2f}s)")
        return seconds

    def _write(self, label: str, bodies: Sequence[Body]) -> Path:
        self._workdir.mkdir(parents=True, exist_ok=True)
        path = self._workdir / f"{next(_counter):03d}-{label}.yaml"
        path.write_text(yamlio.dump_all(list(bodies), sort_keys=False))
        return path


def _same_spec(current: Body | None, wanted: Mapping[str, Any] | None) -> bool:
    if current is None or wanted is None:
        return current is wanted
    return current.get("spec") == wanted.get("spec") and "unknown" not in current


def running_config(mesh: Backend, manifests: Bundle) -> dict[Key, Body]:
    """What the mesh runs now for each of the manifests' Istio objects, where the backend can say.

    The local backend keeps applied objects in :meth:`Backend.config_dir`; other backends
    return None there and the manifests are assumed (they were applied at ``up``).
    """
    current: dict[Key, Body] = {document_key(d): d.body for d in istio_documents(manifests)}
    where = mesh.config_dir()
    if where is None or not where.is_dir():
        return current
    running = {document_key(d): d.body for d in load_paths([where])}
    for key in current:
        current[key] = running.get(key, {"absent": True})
    return current


def observer(mesh: Backend, manifests: Bundle) -> Callable[[], Mapping[Key, Body]] | None:
    """A way to re-read what the mesh runs, when the backend can say (else None: trust tracking)."""
    where = mesh.config_dir()
    if where is None or not where.is_dir():
        return None
    return lambda: running_config(mesh, manifests)


class FaultGuard:
    def __init__(self, mesh: Backend) -> None:
        self._mesh = mesh
        self._faulted: list[str] = []
        self._killed: list[str] = []

    def inject(self, pods: str | Iterable[str], fault: AppFault) -> None:
        for pod in [pods] if isinstance(pods, str) else list(pods):
            if pod not in self._faulted:
                self._faulted.append(pod)
            self._mesh.inject_fault(pod, fault)

    def clear(self, pods: str | Iterable[str]) -> None:
        for pod in [pods] if isinstance(pods, str) else list(pods):
            self._mesh.clear_fault(pod)
            if pod in self._faulted:
                self._faulted.remove(pod)

    def kill(self, pod: str) -> None:
        self._killed.append(pod)
        self._mesh.kill(pod)

    def undo(self) -> list[str]:
        """Clear every fault and restart every killed replica; returns what could not be undone."""
        problems = []
        for pod in list(self._killed):
            try:
                self._mesh.restart(pod)
                self._killed.remove(pod)
            except Exception as e:  # keep undoing the rest
                problems.append(f"restart {pod}: {type(e).__name__}: {e}")
        for pod in list(self._faulted):
            try:
                self.clear(pod)
            except Exception as e:
                problems.append(f"clear fault on {pod}: {type(e).__name__}: {e}")
        return problems
