"""LocustRun with a real Locust subprocess against a tiny HTTP server on 127.0.0.1 (no mesh):
spawn wait, phases, report versus Locust's own totals, errors surfaced, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness import wait
from harness.errors import LoadError
from harness.load import LoadConfig, LoadTarget, LocustRun
from harness.load.local import _group_alive

pytestmark = pytest.mark.slow


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 503 if self.path.startswith("/fail") else 200
        body = json.dumps({"pod": "pod-a", "version": "v1"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _locust_pids(run_id: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", run_id], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def test_phases_report_and_cleanup(server: str, tmp_path: Path) -> None:
    run = LocustRun(LoadConfig(users=3, path="/ok"), LoadTarget(ingress_url=server), workdir=tmp_path)

    def more(n: int) -> None:
        have = run.progress().requests
        wait.until(lambda: run.progress().requests >= have + n, what=f"{n} more requests", timeout=30)

    with run:
        more(20)
        run.phase("fault")
        more(20)
        with run.phase("recovery"):
            more(20)
    r = run.report
    assert r is not None
    assert [p.name for p in r.phases] == ["spawn", "load", "fault", "recovery", "after recovery"]
    assert r.requests >= 60 and r.failures == 0 and dict(r.by_status) == {200: r.requests}
    assert sum(p.requests for p in r.phases) == r.requests
    assert r.locust_requests == r.requests  # Locust's own count agrees with the event logs
    assert dict(r.phase("fault").versions) == {"v1": r.phase("fault").requests}
    assert all(rec.request_id.startswith(run.run_id) for rec in r.records)
    assert (tmp_path / "report.json").is_file()
    assert not _group_alive(run.pid or -1) and not _locust_pids(run.run_id)
    with pytest.raises(LoadError, match="stopped"):
        run.start()


def test_a_workdir_an_earlier_run_left_starts_clean(server: str, tmp_path: Path) -> None:
    """A second run in the same workdir (upgrade-check's load directory after an interrupted check)
    neither stops at once on the first run's stop file nor counts the first run's records."""
    first = LocustRun(LoadConfig(users=2, path="/ok"), LoadTarget(ingress_url=server), workdir=tmp_path)
    with first:
        wait.until(lambda: first.progress().requests >= 10, what="10 requests of the first run", timeout=30)
    assert (tmp_path / "stop").exists() and list((tmp_path / "events").glob("events-*.tsv"))
    second = LocustRun(LoadConfig(users=2, path="/ok"), LoadTarget(ingress_url=server), workdir=tmp_path)
    with second:
        wait.until(lambda: second.progress().requests >= 10, what="10 requests of the second run", timeout=30)
    r = second.report
    assert r is not None and r.requests >= 10
    assert all(rec.request_id.startswith(second.run_id) for rec in r.records)
    assert r.locust_requests == r.requests


def test_failed_requests_are_counted_not_raised(server: str, tmp_path: Path) -> None:
    cfg = LoadConfig(users=2, path="/fail", duration_s=2.0)
    with LocustRun(cfg, LoadTarget(ingress_url=server), workdir=tmp_path) as run:
        assert run.wait(timeout=30) == 0  # ended by itself after its duration
    r = run.report
    assert r is not None and r.requests > 0 and dict(r.by_status) == {503: r.requests}
    assert r.failures == r.requests and r.locust_requests == r.requests


def test_processes_mode(server: str, tmp_path: Path) -> None:
    cfg = LoadConfig(users=4, path="/ok", processes=2)
    with LocustRun(cfg, LoadTarget(ingress_url=server), workdir=tmp_path) as run:
        wait.until(lambda: run.progress().requests >= 50, what="50 requests", timeout=30)
    r = run.report
    assert r is not None and r.failures == 0 and r.requests >= 50
    assert len(list((tmp_path / "events").glob("events-*.tsv"))) >= 2
    assert not _locust_pids(run.run_id)


def test_a_locustfile_error_surfaces_locusts_message(server: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad_locustfile.py"
    bad.write_text("import locust\nraise RuntimeError('the locustfile is broken on purpose')\n")
    run = LocustRun(
        LoadConfig(users=1), LoadTarget(ingress_url=server), workdir=tmp_path / "run", locustfile=bad
    )
    with pytest.raises(LoadError, match="broken on purpose"):
        run.start()
    assert not _locust_pids(run.run_id)


def test_sigkill_of_the_parent_leaves_no_locust(server: str, tmp_path: Path) -> None:
    """The harness process dies hard mid-run: PDEATHSIG takes Locust's master and workers down."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from harness.load import LoadConfig, LoadTarget, LocustRun
        run = LocustRun(LoadConfig(users=2, path="/ok", processes=2), LoadTarget(ingress_url={server!r}),
                        workdir=Path({str(tmp_path)!r}))
        run.start()
        print(run.run_id, flush=True)
        time.sleep(600)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert parent.stdout is not None
        run_id = parent.stdout.readline().strip()
        assert run_id.startswith("mp-"), run_id
        assert len(_locust_pids(run_id)) >= 3  # master + 2 workers
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    wait.until(lambda: not _locust_pids(run_id), what=f"no Locust process of {run_id}", timeout=15)
