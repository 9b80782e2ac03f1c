"""Backends run the mesh under test: ``local`` (embedded processes) and ``kube`` (kind / existing).

This module is the factory: code above the backends reaches ``backends.local`` and ``backends.kube``
through it (an import-linter contract in pyproject.toml names the few exceptions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.backends.base import Backend
    from harness.doctor import ToolStatus
    from harness.settings import Settings


def create(settings: Settings) -> Backend:
    """The backend that ``settings.backend`` names (not started)."""
    if settings.backend == "local":
        from harness.backends.local.backend import LocalBackend

        return LocalBackend(settings)
    from harness.backends.kube.backend import KubeBackend

    return KubeBackend(settings)


def doctor(settings: Settings, backend: str) -> list[ToolStatus]:
    """What ``meshproof doctor`` lists for ``backend``: "local", or "kind"/"existing" (one list for both)."""
    if backend == "local":
        from harness.backends.local.doctor import backend_doctor as local_doctor

        return local_doctor(settings)
    from harness.backends.kube.doctor import backend_doctor as kube_doctor

    return kube_doctor(settings)


def attach(settings: Settings) -> Backend:
    """The backend of a mesh already brought up (``meshproof up --detach``) in ``settings.state_dir``.

    Raises StateError when the state dir holds no running mesh.
    """
    import json

    from harness.errors import StateError

    marker = settings.state_dir / "backend.json"
    if not marker.is_file():
        raise StateError(
            f"no mesh is running with state dir {settings.state_dir}. "
            "Fix: run `meshproof up --detach` first, or pass --state/MESHPROOF_STATE of the running mesh"
        )
    name = json.loads(marker.read_text()).get("backend", "local")
    backend = create(settings.with_overrides(backend=name))
    return backend.attach()
