"""Effective circuit-breaker limits of an Envoy cluster, and bounds on the 503s they shed.

The limits are read from the cluster as the proxy runs it (``/config_dump``):
``circuit_breakers.thresholds`` of the DEFAULT priority, with Envoy's documented defaults where a
field is unset (max_connections, max_pending_requests and max_requests 1024; max_retries 3).
Istio writes its own "unlimited" (2^32-1) for what a DestinationRule leaves out; either way the
number used is the one Envoy runs.

Bounds for a batch of requests that each hold the upstream for ``hold_s``: at or below
``active + pending`` concurrent requests nothing may be shed; above it at least the requests
that could not have been served in the batch's wall time are shed (``active`` at a time, each
``hold_s`` long), and never all of them (the first is always admitted). Both bounds follow from
counting; a slow machine makes a batch longer, which only lowers the lower bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENVOY_DEFAULT_LIMIT = 1024
ENVOY_DEFAULT_RETRIES = 3
#: what Istio writes for a limit the DestinationRule leaves out (the largest uint32)
UNLIMITED = 2**32 - 1


def _shown(value: int) -> str:
    return "unlimited" if value >= UNLIMITED else str(value)


@dataclass(frozen=True)
class Limits:
    max_connections: int = ENVOY_DEFAULT_LIMIT
    max_pending_requests: int = ENVOY_DEFAULT_LIMIT
    max_requests: int = ENVOY_DEFAULT_LIMIT
    max_retries: int = ENVOY_DEFAULT_RETRIES

    @classmethod
    def from_cluster(cls, cluster: Mapping[str, Any]) -> Limits:
        thresholds = (cluster.get("circuit_breakers") or {}).get("thresholds") or []
        default: Mapping[str, Any] = next(
            (t for t in thresholds if t.get("priority", "DEFAULT") == "DEFAULT"), {}
        )

        def get(name: str, fallback: int) -> int:
            value = default.get(name)
            if isinstance(value, Mapping):
                value = value.get("value")
            return fallback if value is None else int(value)

        return cls(
            max_connections=get("max_connections", ENVOY_DEFAULT_LIMIT),
            max_pending_requests=get("max_pending_requests", ENVOY_DEFAULT_LIMIT),
            max_requests=get("max_requests", ENVOY_DEFAULT_LIMIT),
            max_retries=get("max_retries", ENVOY_DEFAULT_RETRIES),
        )

    @property
    def active(self) -> int:
        """Requests that can be upstream at once (HTTP/1.1: one per connection)."""
        return min(self.max_connections, self.max_requests)

    @property
    def pending(self) -> int:
        return self.max_pending_requests

    @property
    def in_flight(self) -> int:
        return self.active + self.pending

    def max_served(self, wall_s: float, hold_s: float) -> int:
        """Most requests that can complete in ``wall_s`` when each holds the upstream ``hold_s``."""
        return self.active * (math.floor(wall_s / hold_s) + 1)

    def shed_bounds(self, total: int, concurrency: int, wall_s: float, hold_s: float) -> tuple[int, int]:
        """``(least, most)`` requests of a batch that must be shed with 503 overflow."""
        if concurrency <= self.in_flight:
            return 0, 0
        least = max(1, total - self.max_served(wall_s, hold_s))
        return min(least, total - 1), total - 1

    def describe(self) -> str:
        return (
            f"{_shown(self.active)} active request(s) (max_connections {_shown(self.max_connections)}, "
            f"max_requests {_shown(self.max_requests)}), {_shown(self.pending)} pending, "
            f"{_shown(self.max_retries)} retries"
        )
