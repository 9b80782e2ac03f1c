"""The in-cluster Locust protocol rehearsed on 127.0.0.1 with the real Locust (no cluster here):
the master container's shell (:func:`harness.load.kube.master_script`) and one worker process,
against a tiny HTTP server. What :class:`~harness.load.kube_run.KubeLocustRun` relies on, checked
against Locust 2.47 itself: the web API reports the worker and the spawn, ``POST /stop`` ends the
run, Locust quits after ``--autoquit`` and the shell logs its exit code and stats on one line; the
stats, split by status/version/pod, count every request the worker sent (none lost at the stop)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import proc, wait
from harness.load import LOCUSTFILE, LoadConfig, LoadTarget, PhaseMark
from harness.load.kube import master_script, parse_master_log, report_from_locust_stats, split_name

pytestmark = pytest.mark.slow


class _Handler(BaseHTTPRequestHandler):
    """Every fifth request answers 503 (naming its pod, like the app's fault answers)."""

    count = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            type(self).count += 1
            n = self.count
        status = 503 if n % 5 == 0 else 200
        body = json.dumps({"pod": "pod-a", "version": "v1"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _end(p: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=10)


def test_master_script_and_a_worker_run_stop_and_log_complete_split_stats(
    server: str, tmp_path: Path
) -> None:
    web, bus = _free_port(), _free_port()
    bin_dir = str(Path(sys.executable).parent)  # locust and python3 of this venv, as in the image
    script = master_script(
        LoadConfig(users=3, path="/api/greet"),
        LoadTarget(ingress_url=server),
        "mp-rehearsal",
        json_file=str(tmp_path / "locust"),
        hold="true",
        locustfile=str(LOCUSTFILE),
        web_port=web,
        master_bind=("127.0.0.1", bus),
    )
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
    master = proc.spawn(
        ["sh", "-c", script],
        log_path=tmp_path / "master.log",
        env=env,
        new_session=True,
        die_with_parent=True,
    )
    # The worker's own --mp-events opens its per-request log at init (the master's options arrive
    # later with the spawn): the independent count the master's stats are checked against.
    worker = proc.spawn(
        [
            *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker"),
            *(
                "--master-host",
                "127.0.0.1",
                "--master-port",
                str(bus),
                "--mp-events",
                str(tmp_path / "events"),
            ),
        ],
        log_path=tmp_path / "worker.log",
        env=env,
        new_session=True,
        die_with_parent=True,
    )
    base = f"http://127.0.0.1:{web}"
    try:
        with httpx.Client(timeout=5, trust_env=False) as http:

            def status() -> dict[str, Any]:
                doc: dict[str, Any] = http.get(base + "/stats/requests").json()
                return doc

            wait.until(
                lambda: (s := status())["worker_count"] == 1 and s["state"] == "running",
                what="the master to report its worker and the users spawned",
                timeout=60,
                interval=0.2,
                retry_on=(httpx.HTTPError,),
            )
            wait.until(
                lambda: int(status()["stats"][-1]["num_requests"]) >= 100,
                what="100 requests counted by the master",
                timeout=60,
                interval=0.2,
            )
            assert http.post(base + "/stop").json()["success"] is True
        done = wait.until(
            lambda: parse_master_log((tmp_path / "master.log").read_text()),
            what="Locust to quit and the shell to log its exit code and stats",
            timeout=60,
            interval=0.2,
        )
        assert master.wait(timeout=30) == 0
    finally:
        _end(master)
        _end(worker)
    log = (tmp_path / "master.log").read_text()
    assert done.exit_code == 0 and done.stats, log[-2000:]
    keys = {split_name(e["name"])[1] for e in done.stats}
    assert keys == {(200, "v1", "pod-a", False), (503, "v1", "pod-a", False)}
    sent = sum(len(f.read_text().splitlines()) for f in (tmp_path / "events").glob("events-*.tsv"))
    counted = sum(int(e["num_requests"]) for e in done.stats)
    assert counted == sent  # the workers' last reports reached the master before it quit
    seconds = sorted({int(t) for e in done.stats for t in e["num_reqs_per_sec"]})
    report = report_from_locust_stats(
        LoadConfig(users=3),
        LoadTarget(ingress_url=server),
        done.stats,
        [PhaseMark("load", seconds[0], seconds[-1] + 1.0)],
        started_at=seconds[0],
        ended_at=seconds[-1] + 1.0,
    )
    load = report.phase("load")
    assert load.requests == report.requests == counted
    assert load.by_status[503] == load.failures == report.failures > 0
    assert dict(load.versions) == {"v1": load.by_status[200]} and dict(load.pods) == {
        "pod-a": load.by_status[200]
    }
