"""SharedLocust with a real Locust against a tiny HTTP server on 127.0.0.1 (no mesh): one Locust
serves consecutive slices, resized between them (up, down, paused), each slice's report holds only
its own requests and users, and a Locust killed mid-slice is replaced for the next one."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from harness import wait
from harness.errors import LoadError
from harness.load import LoadConfig, LoadTarget
from harness.load.shared import LoadSlice, SharedLocust
from tests.locust_lifecycle.test_local_run import _Handler, _locust_pids

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def target() -> Iterator[LoadTarget]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield LoadTarget(ingress_url=f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.shutdown()
    httpd.server_close()


def _users(records: list) -> set[str]:  # type: ignore[type-arg]
    return {r.request_id.rsplit("-", 1)[0] for r in records}


def _run_phase(load: LoadSlice, name: str, n: int = 40, users: int = 1) -> None:
    """Phase ``name`` until it holds ``n`` requests and requests of ``users`` users: on a fast local
    server two users can send 40 requests before a third sends its first (a CI run saw 2 of 3)."""
    load.phase(name)
    have = load.progress().requests
    wait.until(lambda: load.progress().requests >= have + n, what=f"{n} requests in {name}", timeout=30)
    wait.until(
        lambda: len(_users(load.snapshot(settle_s=0.0).in_phase(name))) >= users,
        what=f"requests of {users} users in {name}",
        timeout=30,
    )
    load.phase(f"after {name}")


def test_one_locust_serves_slices_each_with_its_own_requests(target: LoadTarget, tmp_path: Path) -> None:
    shared = SharedLocust(tmp_path / "shared")
    reports = []
    try:
        for i, users in enumerate((3, 6, 2)):
            cfg = LoadConfig(users=users, spawn_rate=100, path="/ok")
            with shared.slice(cfg, target, workdir=tmp_path / f"t{i}") as load:
                _run_phase(load, "x", users=users)
                snap = load.snapshot(settle_s=0.0)
                # exactly the slice's users send in its phases: the ones a decrease stopped are gone
                assert len(_users(snap.in_phase("x"))) == users
            reports.append(load.report)
            if i == 1:
                shared.pause()
                assert shared.running_users == 0
        run_id = reports[0].request_id_prefix
        assert shared.starts == 1 and all(r.request_id_prefix == run_id for r in reports)
    finally:
        shared.close()
    ids: set[str] = set()
    for r in reports:
        assert r is not None and r.failures == 0
        assert r.requests == sum(p.requests for p in r.phases)  # every request inside the slice
        assert all(r.started_at <= rec.start < r.started_at + r.duration_s for rec in r.records)
        mine = {rec.request_id for rec in r.records}
        assert not mine & ids  # no request in two slices
        ids |= mine
    assert not _locust_pids(run_id)


def test_a_locust_killed_mid_slice_is_replaced_for_the_next(target: LoadTarget, tmp_path: Path) -> None:
    shared = SharedLocust(tmp_path / "shared")
    cfg = LoadConfig(users=2, spawn_rate=100, path="/ok")
    try:
        first = shared.slice(cfg, target, workdir=tmp_path / "a")

        def killed_mid_phase() -> None:
            with first:
                first.phase("x")
                wait.until(lambda: first.progress().requests >= 10, what="10 requests", timeout=30)
                pid = shared._run.pid  # type: ignore[union-attr]
                os.kill(pid, signal.SIGKILL)
                wait.until(lambda: first.exited, what="Locust gone", timeout=10)

        with pytest.raises(LoadError, match="exited"):
            killed_mid_phase()
        with shared.slice(cfg, target, workdir=tmp_path / "b") as second:
            _run_phase(second, "x", 10)
        assert shared.starts == 2 and second.run_id != first.run_id
        r = second.report
        assert r is not None and all(rec.request_id.startswith(second.run_id) for rec in r.records)
    finally:
        shared.close()
    assert not _locust_pids(first.run_id) and not _locust_pids(second.run_id)
