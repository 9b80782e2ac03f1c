"""What several action families share: the pods argument, and the "not yet" of a polled proof."""

from __future__ import annotations

from collections.abc import Sequence

from harness.errors import HarnessError

__all__ = ["NotYet", "pods_of"]


class NotYet(HarnessError):
    """A condition polled by :func:`harness.wait.until` does not hold yet; the message says why."""


def pods_of(pods: str | Sequence[str]) -> list[str]:
    return [pods] if isinstance(pods, str) else [str(p) for p in pods]
