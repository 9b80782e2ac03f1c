"""harness.schedule: pytest-xdist hands a worker a waiting test while another runs a busy one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest

from harness.schedule import BUSY, WAITS, busy_at_once, make_scheduler, pick

B, W = BUSY, WAITS


def test_busy_at_once_is_one_per_two_cores() -> None:
    assert busy_at_once(1) == 1
    assert busy_at_once(2) == 1
    assert busy_at_once(4) == 2
    assert busy_at_once(0) == 1


def test_pick_a_waiting_test_while_another_worker_is_busy() -> None:
    lanes = [B, B, W, B, W]
    assert pick([1, 2, 3, 4], lanes, others=[0], limit=1) == 1  # test 2, the first waiting one
    assert pick([1, 2, 3, 4], lanes, others=[2], limit=1) == 0  # the other waits: test 1, busy
    assert pick([1, 2, 3, 4], lanes, others=[], limit=1) == 0
    assert pick([1, 2, 3, 4], lanes, others=[0], limit=2) == 0  # room for two busy tests at once


def test_pick_falls_back_to_the_first_pending_test_when_its_lane_is_empty() -> None:
    lanes = [B, B, B]
    assert pick([1, 2], lanes, others=[0], limit=1) == 0
    lanes = [W, W, W]
    assert pick([1, 2], lanes, others=[0], limit=1) == 0


class Config:
    """What pytest-xdist's LoadScheduling reads from the pytest config."""

    def __init__(self, workers: int) -> None:
        self.values = {"tx": [f"{workers}*popen"], "maxschedchunk": None, "dist": "load"}

    def getvalue(self, name: str) -> Any:
        return self.values[name]

    getoption = getvalue


class Node:
    def __init__(self, name: str) -> None:
        self.name = name
        self.gateway = type("Gateway", (), {"id": name})()
        self.shutting_down = False
        self.received: list[int] = []

    def send_runtest_some(self, indices: list[int]) -> None:
        self.received += indices

    def shutdown(self) -> None:
        self.shutting_down = True


def run(
    lanes: dict[str, str],
    workers: int,
    order: list[int],
    limit: int = 1,
    pinned: Callable[[str], bool] = lambda _nodeid: False,
) -> tuple[Any, list[Node]]:
    """Schedule the collection ``lanes`` (test id -> lane) on ``workers`` fake nodes; then complete
    tests in turn, worker ``order[k % len(order)]`` each time, until every node shut down."""
    pytest.importorskip("xdist")
    ids = list(lanes)
    sched = make_scheduler(cast("pytest.Config", Config(workers)), None, lanes.__getitem__, limit, pinned)
    nodes = [Node(f"gw{i}") for i in range(workers)]
    for node in nodes:
        sched.add_node(node)
        sched.add_node_collection(node, ids)
    sched.schedule()
    for step in range(1000):
        node = nodes[order[step % len(order)]]
        held = sched.node2pending[node]
        if node.shutting_down and not held:
            if all(n.shutting_down and not sched.node2pending[n] for n in nodes):
                break
            continue
        if len(held) >= 2 or (node.shutting_down and held):
            sched.mark_test_complete(node, held[0])
    return sched, nodes


def test_one_worker_takes_the_busy_tests_while_the_other_takes_the_waiting_ones() -> None:
    lanes = {f"suites/test_under_load.py::t{i}": B for i in range(4)}
    lanes |= {f"suites/test_outlier.py::t{i}": W for i in range(4)}
    lanes |= {f"suites/test_routing.py::t{i}": B for i in range(2)}
    sched, (a, b) = run(lanes, 2, [0, 1])
    ids = list(lanes)
    assert [ids[i] for i in a.received][:4] == [f"suites/test_under_load.py::t{i}" for i in range(4)]
    assert [ids[i] for i in b.received][:4] == [f"suites/test_outlier.py::t{i}" for i in range(4)]
    assert sorted(a.received + b.received) == list(range(len(ids)))  # each test once
    assert not sched.pending and a.shutting_down and b.shutting_down


def test_three_workers_on_two_cores_run_two_busy_tests_and_one_waiting() -> None:
    lanes = {f"suites/test_under_load.py::t{i}": B for i in range(6)}
    lanes |= {f"suites/test_tracing.py::t{i}": W for i in range(4)}
    _sched, (a, b, c) = run(lanes, 3, [0, 1, 2], limit=2)
    ids = list(lanes)
    assert all(lanes[ids[i]] == B for i in a.received[:2] + b.received[:2])
    assert all(lanes[ids[i]] == W for i in c.received[:4])
    assert sorted(a.received + b.received + c.received) == list(range(len(ids)))


def test_without_a_waiting_test_the_order_is_the_collection_order() -> None:
    """Negative control of the lane choice: all busy, each worker takes the next test in order."""
    lanes = {f"suites/test_routing.py::t{i}": B for i in range(6)}
    _sched, (a, b) = run(lanes, 2, [0, 1])
    assert a.received[:2] == [0, 1]
    assert b.received[:2] == [2, 3]
    assert sorted(a.received + b.received) == list(range(6))


def test_fewer_tests_than_two_per_worker_still_all_run() -> None:
    lanes = {
        "suites/test_outlier.py::t0": W,
        "suites/test_routing.py::t0": B,
        "suites/test_routing.py::t1": B,
    }
    _sched, nodes = run(lanes, 3, [0, 1, 2])
    assert sorted(i for n in nodes for i in n.received) == [0, 1, 2]
    assert all(n.shutting_down for n in nodes)


def test_the_suites_lanes() -> None:
    from harness.paths import CHECKOUT
    from suites.conftest import WAITING_SUITES, suite_lane

    assert suite_lane("suites/test_outlier.py::test_x") == WAITS
    assert suite_lane("suites/test_under_load.py::test_y[a::b]") == BUSY
    assert suite_lane("test_tracing.py::test_z") == WAITS
    assert all((CHECKOUT / "suites" / name).is_file() for name in WAITING_SUITES)


def test_pinned_tests_run_only_on_the_first_worker_and_first() -> None:
    """On a shared cluster the mesh-wide suites (tracing, Gateway API) go to gw0 alone."""
    from suites.conftest import mesh_wide

    lanes = {f"suites/test_routing.py::t{i}": B for i in range(4)}
    lanes |= {f"suites/test_tracing.py::t{i}": W for i in range(3)}
    lanes |= {f"suites/test_outlier.py::t{i}": W for i in range(3)}
    _sched, (a, b, c) = run(lanes, 3, [0, 1, 2], limit=2, pinned=mesh_wide)
    ids = list(lanes)
    tracing = [i for i, nodeid in enumerate(ids) if mesh_wide(nodeid)]
    assert a.received[: len(tracing)] == tracing  # gw0 takes them before anything else
    assert not set(tracing) & set(b.received + c.received)
    assert sorted(a.received + b.received + c.received) == list(range(len(ids)))  # each test once
    assert all(n.shutting_down for n in (a, b, c))


def test_without_pinning_other_workers_take_mesh_wide_suites_too() -> None:
    """Negative control: the local backend (a mesh per worker) pins nothing."""
    lanes = {f"suites/test_tracing.py::t{i}": W for i in range(6)}
    _sched, (a, b) = run(lanes, 2, [0, 1])
    assert a.received and b.received


def test_a_worker_with_only_pinned_tests_left_shuts_down() -> None:
    lanes = {f"suites/test_tracing.py::t{i}": W for i in range(3)}
    _sched, (a, b) = run(lanes, 2, [0, 1], pinned=lambda _nodeid: True)
    assert sorted(a.received) == [0, 1, 2] and not b.received
    assert a.shutting_down and b.shutting_down
