"""Where a chaos activity finds its mesh: the state dir, the attached backend, Envoy admin access.

Chaos Toolkit calls our activities as plain functions in its own process. Each finds the mesh
from the state dir: the experiment's ``configuration`` key ``meshproof_state`` (usually
``{type: env, key: MESHPROOF_STATE, default: .meshproof}``), else the settings' state dir
(``MESHPROOF_STATE``). The backend is attached once per process and state dir. What the actions
changed and have not undone is in :mod:`harness.chaos.ledger`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness import httpclient
from harness.backends.base import Backend
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

    transport = _transports.get(settings_for(configuration).state_dir.resolve())
    return httpclient.client(timeout=10.0, transport=transport)


def chaos_dir(configuration: Configuration = None) -> Path:
    d = state_dir(configuration) / "chaos"
    d.mkdir(parents=True, exist_ok=True)
    return d
