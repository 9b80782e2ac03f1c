"""What several action families share: the pods argument, the "not yet" of a polled proof, the wait
that proves a fault took effect, and the restore of each pod's ledger entry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from harness import wait
from harness.chaos.context import Configuration, mesh
from harness.chaos.ledger import Ledger
from harness.errors import BackendError, HarnessError

__all__ = ["NotYet", "pods_of", "prove", "restore_each"]

T = TypeVar("T")


class NotYet(HarnessError):
    """A condition polled by :func:`harness.wait.until` does not hold yet; the message says why."""


def pods_of(pods: str | Sequence[str]) -> list[str]:
    return [pods] if isinstance(pods, str) else [str(p) for p in pods]


def prove(
    took_effect: Callable[[], bool],
    *,
    what: str,
    timeout_s: float,
    failure: Callable[[], str],
    interval: float = 0.05,
    retry_on: tuple[type[BaseException], ...] = (NotYet,),
) -> None:
    """Poll ``took_effect`` until it holds (``retry_on`` errors are "not yet"); when it does not within
    ``timeout_s``, one BackendError whose message is ``failure()``, read then (what was last seen)."""
    try:
        wait.until(took_effect, what=what, timeout=timeout_s, interval=interval, retry_on=retry_on)
    except HarnessError as e:
        raise BackendError(failure()) from e


def restore_each(
    pods: str | Sequence[str], configuration: Configuration, kind: str, undo: Callable[[Any, str], T]
) -> list[T]:
    """For each of ``pods`` with an open ``kind:<ref>`` ledger entry: ``undo(backend, ref)``, then the
    entry is done. What each undo returned (pods without an entry are skipped: a no-op)."""
    backend = mesh(configuration)
    ledger = Ledger.of(configuration)
    out = []
    for pod in pods_of(pods):
        ref = backend.workload(pod).ref
        if ledger.get(f"{kind}:{ref}") is None:
            continue
        out.append(undo(backend, ref))
        ledger.done(f"{kind}:{ref}")
    return out
