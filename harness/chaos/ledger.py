"""The chaos ledger: the changes an action made and has not yet undone.

The **ledger** (``<state>/chaos/ledger.json``) is the list of changes an action made and has not
yet undone: an injected route fault with the object as it was before, an app fault, a killed
replica, an applied object with its predecessor, a running load generator, a stopped control
plane. Every action writes its entry *before* it changes the mesh, and its rollback removes the
entry *after* the change is undone, so whatever ends a run (a failed hypothesis, Ctrl-C, SIGTERM,
a SIGKILLed ``chaos`` process) the entries left say exactly what is still to undo.
Writes are atomic and serialised with ``flock`` (background activities run in threads).

The rollback (:func:`undo_all`) plays the entries back through each entry's own undo: every
action family registers, per ledger kind it writes, an :class:`Undo` next to its actions
(``UNDO`` in each module of :mod:`harness.chaos.actions`, gathered there with :func:`registry`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.chaos.context import Configuration, chaos_dir
from harness.errors import UserError


@dataclass(frozen=True)
class Entry:
    """One change not undone yet. ``key`` identifies the change (one entry per key)."""

    key: str  # e.g. "route-fault:sample/microservice-1/split", "app-fault:sample/microservice-1-v1-0"
    # route-fault | route-policy | replica-fault (an app fault by the sidecar) | app-fault (by the app's
    # /admin/fault) | cert-ttl | kill | network-loss | object | load | control-plane
    kind: str
    data: Mapping[str, Any]
    since: float

    def as_json(self) -> dict[str, Any]:
        return {"key": self.key, "kind": self.kind, "data": dict(self.data), "since": self.since}


class Ledger:
    """The changes recorded in one state dir (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "ledger.json"
        self._lock_path = directory / "ledger.lock"

    @classmethod
    def of(cls, configuration: Configuration = None) -> Ledger:
        return cls(chaos_dir(configuration))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, dict[str, Any]]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                entries = self._read()
                before = json.dumps(entries, sort_keys=True)
                yield entries
                if json.dumps(entries, sort_keys=True) != before:
                    tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
                    tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
                    tmp.replace(self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as e:
            raise UserError(
                f"the chaos ledger {self.path} is not JSON ({e}). Fix: inspect it; delete it once the "
                "mesh is known to be clean (or `meshproof down` the mesh)"
            ) from e
        return {str(k): dict(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def entries(self) -> list[Entry]:
        with self._locked() as entries:
            return [
                Entry(k, str(v.get("kind")), dict(v.get("data") or {}), float(v.get("since", 0)))
                for k, v in sorted(entries.items(), key=lambda kv: float(kv[1].get("since", 0)))
            ]

    def get(self, key: str) -> Entry | None:
        return next((e for e in self.entries() if e.key == key), None)

    def record(self, key: str, kind: str, data: Mapping[str, Any]) -> Entry:
        """Record a change about to be made; an existing entry for ``key`` keeps its original data
        (the first pre-change state is the one to restore)."""
        with self._locked() as entries:
            if key not in entries:
                entries[key] = {"kind": kind, "data": dict(data), "since": time.time()}
            v = entries[key]
            return Entry(key, str(v["kind"]), dict(v["data"]), float(v["since"]))

    def update(self, key: str, **data: Any) -> None:
        with self._locked() as entries:
            if key in entries:
                entries[key]["data"] = {**entries[key].get("data", {}), **data}

    def done(self, key: str) -> None:
        """The change ``key`` is undone."""
        with self._locked() as entries:
            entries.pop(key, None)


# --------------------------------------------------------------------------- rollback


@dataclass(frozen=True)
class Undo:
    """How the rollback undoes a ledger entry of one kind: ``run(entry, configuration)`` undoes it
    (and removes the entry) and says what was done in one line. ``first`` entries are undone before
    all others (a stopped control plane: nothing else applies without it)."""

    run: Callable[[Entry, Configuration], str]
    first: bool = False


def registry(*tables: Mapping[str, Undo]) -> dict[str, Undo]:
    """The families' undo tables as one; a ledger kind registered twice is a programming error."""
    out: dict[str, Undo] = {}
    for table in tables:
        for kind, undo in table.items():
            if kind in out:
                raise ValueError(f"ledger kind {kind!r} has two undos: {out[kind].run} and {undo.run}")
            out[kind] = undo
    return out


def undo_all(configuration: Configuration, undos: Mapping[str, Undo]) -> tuple[list[str], list[str]]:
    """Undo every ledger entry with its kind's undo from ``undos``, newest first, the ``first`` kinds
    before the rest; an entry of a kind nobody registered is dropped, and said so.

    Returns (what was undone, what failed)."""
    ledger = Ledger.of(configuration)
    entries = ledger.entries()
    entries.sort(key=lambda e: (not (e.kind in undos and undos[e.kind].first), -e.since))
    done: list[str] = []
    failed: list[str] = []
    for e in entries:
        try:
            undo = undos.get(e.kind)
            if undo is None:
                ledger.done(e.key)
                done.append(f"unknown ledger entry {e.key} dropped")
            else:
                done.append(undo.run(e, configuration))
        except Exception as ex:  # noqa: BLE001, PERF203 - report every entry, undo the rest
            failed.append(f"{e.key}: {type(ex).__name__}: {ex}")
    return done, failed
