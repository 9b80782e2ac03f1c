"""Where a run waits: spans of wall time (kind, what, start, end), kept in this process's memory.

:func:`harness.wait.until` records every wait it does (kind ``wait``, its ``what``); the traffic
sampler records each batch it sends (kind ``traffic``), the local backend its mesh's start and
stop (kind ``mesh``). meshproof's pytest plugin takes the spans that ended during a test phase
and hangs them on that phase's report, from where they reach ``suites-report.json`` (each test's
``spans``; in a pytest-xdist run through the worker's serialised reports), and
``bench/bench_cpu.py`` says from them where the run waited while the cores were idle.

Recording is one append to a bounded deque (atomic in CPython: no lock): no I/O, nothing to
configure, and nothing grows without bound in a process nobody drains (the CLI, a chaos run).
Times are wall-clock seconds since the epoch (:func:`time.time`), so spans of the pytest-xdist
workers and the bench's own CPU readings share one axis.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

__all__ = ["CPU_ATTR", "LIMIT", "SPANS_ATTR", "WORKER_ATTR", "Span", "record", "span", "take"]

#: Spans kept when nobody takes them (the oldest are dropped first).
LIMIT = 20_000
#: The attributes of a pytest report that carry its phase's spans, its pytest-xdist worker id and
#: the worker's CPU seconds (``time.process_time()``) when the phase ended.
SPANS_ATTR = "meshproof_spans"
WORKER_ATTR = "meshproof_worker"
CPU_ATTR = "meshproof_cpu_s"


class Span(NamedTuple):
    kind: str  # wait, traffic, mesh
    what: str  # what was awaited or done (a wait's ``what``)
    start: float  # time.time() at the start
    end: float  # time.time() at the end


_spans: deque[Span] = deque(maxlen=LIMIT)


def record(kind: str, what: str, start: float, end: float | None = None) -> None:
    """Keep one span; ``end`` defaults to now."""
    _spans.append(Span(kind, what, start, time.time() if end is None else end))


@contextmanager
def span(kind: str, what: str) -> Iterator[None]:
    """Record the time the ``with`` block takes (also when it raises)."""
    start = time.time()
    try:
        yield
    finally:
        record(kind, what, start)


def take() -> list[Span]:
    """The spans recorded since the last call, oldest first (they are no longer kept here)."""
    out = []
    while True:
        try:
            out.append(_spans.popleft())
        except IndexError:
            return out
