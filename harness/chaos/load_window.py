"""What the background load saw in a window: probes read the Locust run that
:func:`harness.chaos.actions.start_load` started (:class:`harness.load.LocustRun`, whose locustfile
logs every request to ``events/*.tsv``), from its ledger entry.

A request counts in the window in which it completed (send time + latency), so a probe's window
holds the answers the mesh gave in it, however long each request took.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import wait
from harness.errors import WaitTimeout
from harness.load.local import event_records
from harness.load.report import RequestRecord


class WallClock(wait.Clock):
    """The wall clock the load's events are stamped with (``time.time``)."""

    def now(self) -> float:
        return time.time()


WALL_CLOCK = WallClock()


@dataclass(frozen=True)
class Window:
    """Requests that completed in ``[start, end]``."""

    start: float
    end: float
    total: int = 0
    status: dict[str, int] = field(default_factory=dict)
    pods: dict[str, int] = field(default_factory=dict)
    latencies_ms: tuple[float, ...] = ()

    @property
    def errors(self) -> int:
        """Requests without a 2xx/3xx/4xx answer: 5xx and no response at all (status 0)."""
        return sum(n for code, n in self.status.items() if code == "0" or code.startswith("5"))


def _records(load: Mapping[str, Any]) -> Iterator[RequestRecord]:
    return event_records(Path(str(load["workdir"])) / "events")


def window_of(load: Mapping[str, Any], start: float, end: float) -> Window:
    """The window of the load whose ledger data is ``load``."""
    total = 0
    status: Counter[str] = Counter()
    pods: Counter[str] = Counter()
    lat: list[float] = []
    for r in _records(load):
        done = r.start + r.latency_ms / 1000.0
        if not start <= done <= end:
            continue
        total += 1
        status[str(r.status)] += 1
        if r.pod:
            pods[r.pod] += 1
        if r.status:
            lat.append(r.latency_ms)
    return Window(start, end, total, dict(status), dict(pods), tuple(lat))


def last_error_of(load: Mapping[str, Any], start: float, end: float) -> float | None:
    """When the last request that got a 5xx or no answer completed, within ``[start, end]``."""
    last = None
    for r in _records(load):
        done = r.start + r.latency_ms / 1000.0
        if start <= done <= end and (r.status == 0 or r.status >= 500):
            last = done if last is None else max(last, done)
    return last


def window_with_at_least(
    load: Mapping[str, Any],
    window_s: float,
    min_requests: int,
    *,
    timeout: float,
    clock: wait.Clock = WALL_CLOCK,
) -> Window:
    """The last ``window_s`` seconds of the load, extended forward (the load keeps sending) until
    they hold at least ``min_requests`` completed requests, or ``timeout`` seconds passed.

    A count, not a speed: a busy machine that completes fewer requests per second makes the probe
    wait longer, it does not turn "too few requests" into a verdict. At the deadline the window is
    returned as it is (the caller decides that too few requests is no evidence)."""
    start = clock.now() - float(window_s)
    first = window_of(load, start, start + float(window_s))  # the window as asked, if it is enough
    if first.total >= int(min_requests):
        return first
    seen = [first]

    def enough() -> bool:
        seen[0] = window_of(load, start, clock.now())
        return seen[0].total >= int(min_requests)

    with contextlib.suppress(WaitTimeout):  # what the window holds at the deadline is the answer
        wait.until(
            enough,
            what=f"{min_requests} requests of the load completed since {window_s:g} s before the probe",
            timeout=max(0.0, float(timeout)),
            interval=0.1,
            clock=clock,
        )
    return seen[0]
