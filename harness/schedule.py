"""Which test a pytest-xdist worker runs next: tests that keep the cores busy beside tests that wait.

Each worker of ``meshproof test`` runs its own mesh on the same cores. Some tests keep those cores
busy the whole time (Locust's load, the sampler's batches of concurrent requests); others mostly
wait on their mesh (an ejection window, trace ingestion, a restarted client, one probe at a time)
and leave the cores idle. pytest-xdist's default ``load`` scheduling hands out tests in chunks in
collection order, so both workers ran their busy tests together (the cores saturated, each test
slowed by the other) and later their waiting tests together (the cores idle): the idle core-seconds
``bench/bench_cpu.py`` reports. :class:`LaneScheduling` sends each worker one test ahead instead and
picks it by lane: while the other workers hold :func:`busy_at_once` busy tests (one per two cores),
the next is a waiting one if any is left; otherwise a busy one. Within a lane, tests keep their
collection order (the workers sort the longest, under-load tests first). Which test is which lane is
the suites' knowledge (a function of the test id: the controller collects nothing and sees no markers).

Scheduling changes only which worker runs a test and when: every test runs once, on a mesh of its
own worker's, with the same statistics and verdicts.

On a shared cluster (backends kind and existing) the workers share one mesh, each with a copy of
the sample of its own (:mod:`harness.namespaces`); a test that changes what every worker's proxies
share (``istio-system``'s Telemetry, its Gateway) is ``pinned``: only the first worker (``gw0``,
which runs the sample ``up`` applied) gets it, before its other tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

#: A test that keeps the cores busy (load, concurrent traffic) / one that mostly waits on its mesh.
BUSY, WAITS = "busy", "waits"


def busy_at_once(cores: int | None = None) -> int:
    """How many busy tests may run at once: one per two cores, so that the waiting tests run beside
    busy ones instead of together at the end. Measured on 2 cores with ``bench/bench_cpu.py``, three
    side-by-side pairs: one busy test at once left 25.4-25.7 idle core-seconds and ran 80.9, 83.9
    and 89.5 s (1.56-1.59x the mesh-CPU floor); one per core (two busy tests together, the waiting
    tests left for the last ~27 s, 0.8 of the 2 cores idle) 35.2-36.5 and 86.7, 90.3, 87.6 s
    (1.67-1.70x)."""
    return max(1, (cores if cores is not None else os.cpu_count() or 1) // 2)


def pick(pending: Sequence[int], lanes: Sequence[str], others: Iterable[int], limit: int) -> int:
    """The position in ``pending`` (collection indices not yet sent) of the test to send next.

    ``others``: the test each other worker runs next (the last it holds: what runs beside the one
    sent now); ``lanes[i]`` is test i's lane. While ``limit`` or more of them are busy, the first
    waiting test; otherwise the first busy one; the first pending test when the wanted lane is empty."""
    busy = sum(1 for i in others if lanes[i] == BUSY)
    want = WAITS if busy >= limit else BUSY
    return next((pos for pos, i in enumerate(pending) if lanes[i] == want), 0)


def make_scheduler(
    config: pytest.Config,
    log: Any,
    lane: Callable[[str], str],
    limit: int | None = None,
    pinned: Callable[[str], bool] = lambda _nodeid: False,
) -> Any:
    """A pytest-xdist scheduler (``pytest_xdist_make_scheduler``) that sends tests by :func:`pick`,
    at most ``limit`` busy tests at once (default :func:`busy_at_once`); a ``pinned`` test only to
    worker ``gw0``, which takes those first."""
    from xdist.scheduler.load import LoadScheduling  # type: ignore[import-untyped]

    class LaneScheduling(LoadScheduling):  # type: ignore[misc]
        """``--dist load`` with one test sent ahead per worker, chosen by lane."""

        def __init__(self) -> None:
            super().__init__(config, log)
            self.lanes: list[str] = []
            self.pinned: list[bool] = []
            self.limit = limit if limit is not None else busy_at_once()

        def schedule(self) -> None:
            if self.collection is None and self.collection_is_completed:
                ids = next(iter(self.node2collection.values()))
                self.lanes = [lane(nodeid) for nodeid in ids]
                self.pinned = [pinned(nodeid) for nodeid in ids]
            super().schedule()  # validates the collections; sends a first chunk we take back below
            for node in self.nodes:  # a worker that may run none of the tests left
                if not node.shutting_down and not self.node2pending[node] and not self._open(node):
                    node.shutdown()

        def _open(self, node: Any) -> list[int]:
            """Positions in ``pending`` of the tests ``node`` may run (gw0: its pinned ones first)."""
            if getattr(node.gateway, "id", "") == "gw0":
                first = [p for p, i in enumerate(self.pending) if self.pinned[i]]
                return first or list(range(len(self.pending)))
            return [p for p, i in enumerate(self.pending) if not self.pinned[i]]

        def _send_tests(self, node: Any, num: int) -> None:
            # A worker runs a test once it holds the next one too (pytest's nextitem): it holds two,
            # and gets one more, picked then, whenever one completes. The base class's chunks
            # (its first distribution) are cut to that.
            held = self.node2pending[node]
            for _ in range(min(num, max(1, 2 - len(held)))):
                open_ = self._open(node)
                if not open_:
                    return
                others = [theirs[-1] for n, theirs in self.node2pending.items() if n is not node and theirs]
                mine = [self.pending[p] for p in open_]
                index = self.pending.pop(open_[pick(mine, self.lanes, others, self.limit)])
                held.append(index)
                node.send_runtest_some([index])

        def check_schedule(self, node: Any, duration: float = 0) -> None:
            if node.shutting_down:
                return
            if self._open(node):
                self._send_tests(node, 2 - len(self.node2pending[node]))
            else:
                node.shutdown()

    return LaneScheduling()
