"""Where a chaos activity finds its mesh, and the ledger of what it changed.

Chaos Toolkit calls our activities as plain functions in its own process. Each finds the mesh
from the state dir: the experiment's ``configuration`` key ``meshproof_state`` (usually
``{type: env, key: MESHPROOF_STATE, default: .meshproof}``), else the settings' state dir
(``MESHPROOF_STATE``). The backend is attached once per process and state dir.

The **ledger** (``<state>/chaos/ledger.json``) is the list of changes an action made and has not
yet undone: an injected route fault with the object as it was before, a replica fault, a killed
replica, an applied object with its predecessor, a running load generator, a stopped control
plane. Every action writes its entry *before* it changes the mesh, and its rollback removes the
entry *after* the change is undone, so whatever ends a run (a failed hypothesis, Ctrl-C, SIGTERM,
a SIGKILLed ``chaos`` process) the entries left say exactly what is still to undo.
:func:`harness.chaos.residue.undo_all` plays them back. Writes are atomic and serialised with
``flock`` (background activities run in threads).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.backends.base import Backend
from harness.errors import UserError
from harness.settings import Settings, from_env

Configuration = Mapping[str, Any] | None

#: The configuration key that names the state dir of the mesh an experiment runs against.
STATE_KEY = "meshproof_state"

_attached: dict[Path, Backend] = {}


def settings_for(configuration: Configuration = None) -> Settings:
    """Settings with the state dir the experiment's configuration names (else MESHPROOF_STATE)."""
    settings = from_env()
    state = (configuration or {}).get(STATE_KEY)
    if state:
        settings = settings.with_overrides(state_dir=Path(str(state)))
    return settings


def state_dir(configuration: Configuration = None) -> Path:
    return settings_for(configuration).state_dir.resolve()


def mesh(configuration: Configuration = None) -> Backend:
    """The running mesh of the state dir, attached once per process."""
    settings = settings_for(configuration)
    key = settings.state_dir.resolve()
    backend = _attached.get(key)
    if backend is None:
        from harness.backends import attach

        backend = attach(settings)
        _attached[key] = backend
    return backend


def use(state: Path, backend: Backend, admin_transport: Any = None) -> None:
    """Make activities for state dir ``state`` use ``backend``, and ``admin_transport`` (an
    ``httpx`` transport) for the Envoy admin reads of :func:`admin_http` (tests inject fakes so)."""
    _attached[state.resolve()] = backend
    if admin_transport is not None:
        _transports[state.resolve()] = admin_transport


def forget(state: Path) -> None:
    _attached.pop(state.resolve(), None)
    _transports.pop(state.resolve(), None)


_transports: dict[Path, Any] = {}


def admin_http(configuration: Configuration = None) -> Any:
    """An ``httpx.Client`` for the proxies' Envoy admin (the caller closes it)."""
    import httpx

    transport = _transports.get(settings_for(configuration).state_dir.resolve())
    return httpx.Client(timeout=10.0, trust_env=False, transport=transport)


def chaos_dir(configuration: Configuration = None) -> Path:
    d = state_dir(configuration) / "chaos"
    d.mkdir(parents=True, exist_ok=True)
    return d


# --------------------------------------------------------------------------- ledger


@dataclass(frozen=True)
class Entry:
    """One change not undone yet. ``key`` identifies the change (one entry per key)."""

    key: str  # e.g. "route-fault:sample/microservice-1/split", "app-fault:sample/microservice-1-v1-0"
    kind: str  # route-fault | replica-fault | app-fault | kill | object | load | control-plane
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
