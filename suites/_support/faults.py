"""FaultGuard: app-level faults and killed replicas that are always undone.

A leaked fault poisons every later suite, so the guard remembers every pod it touched and
:meth:`FaultGuard.undo` clears them all (and restarts killed replicas), whatever happened.
"""

from __future__ import annotations

from collections.abc import Iterable

from harness.backends.base import Backend, Fault


class FaultGuard:
    def __init__(self, mesh: Backend) -> None:
        self._mesh = mesh
        self._faulted: list[str] = []
        self._killed: list[str] = []

    def inject(self, pods: str | Iterable[str], fault: Fault) -> None:
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
