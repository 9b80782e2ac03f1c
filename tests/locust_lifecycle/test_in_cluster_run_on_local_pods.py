"""KubeLocustRun end to end with the real Locust, over a fake API server whose Deployments run as
local processes (no cluster here): the ConfigMap's files become the mounted directory, each pod's
container command runs as a process group, the pod's addresses map onto one loopback address of
this machine, ``open_port`` connects to it, ``pod_log`` reads the process's output, deleting a
Deployment kills its processes. What this leaves untested is Kubernetes and Istio themselves.
The master's stats are checked against the workers' own per-request logs: no request is lost at
the stop (the master quits ``--autoquit`` seconds after it, once the workers have reported)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness import proc, wait
from harness.backends.kube.api import Channel, ObjectRef
from harness.backends.kube.load_objects import MOUNT, NAME
from harness.backends.kube.load_runner import KubeLocustRun
from harness.errors import LoadError
from harness.load import LOCUSTFILE, LoadConfig, LoadTarget
from tests.unit.kube.fakes import FakeCluster

pytestmark = pytest.mark.slow


class _Handler(BaseHTTPRequestHandler):
    """Every fifth request answers 503; answers name their pod and version, like the sample app."""

    count = 0
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            type(self).count += 1
            n = self.count
        status = 503 if n % 5 == 0 else 200
        body = json.dumps({"pod": f"pod-{n % 2}", "version": "v1"}).encode()
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


class ProcessCluster(FakeCluster):
    """FakeCluster whose Deployments' containers run here (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root
        # One loopback address of its own: Locust's fixed ports (8089, 5557) clash with nobody.
        self.ip = f"127.{random.randint(100, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # pod name -> its container's process
        self.bin = Path(sys.executable).parent

    def _rewrite(self, text: str, namespace: str) -> str:
        text = text.replace(MOUNT, str(self.root / "mnt"))
        text = text.replace(f"{NAME}-master.{namespace}.svc.cluster.local", self.ip)
        return text.replace("--web-host 127.0.0.1", f"--web-host {self.ip} --master-bind-host {self.ip}")

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        live = super().apply(obj)
        ns = obj["metadata"]["namespace"]
        if obj["kind"] == "ConfigMap":
            mnt = self.root / "mnt"
            mnt.mkdir(parents=True, exist_ok=True)
            for name, text in obj["data"].items():
                (mnt / name).write_text(text)
        if obj["kind"] == "Deployment":
            tmpl = obj["spec"]["template"]
            c = tmpl["spec"]["containers"][0]
            argv = list(c.get("command") or [str(self.bin / "locust"), *c.get("args", [])])
            argv = [self._rewrite(a, ns) for a in argv]
            env = {"PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONUNBUFFERED": "1"}
            for pod in self.list("v1", "Pod", ns, f"app={NAME},role={tmpl['metadata']['labels']['role']}"):
                name = pod["metadata"]["name"]
                self.procs[name] = proc.spawn(
                    argv,
                    log_path=self.root / f"{name}.log",
                    env=env,
                    new_session=True,
                    die_with_parent=True,
                )
        return live

    def delete(self, ref: ObjectRef, *, grace_seconds: int | None = None) -> bool:
        if ref.kind == "Deployment":
            for name in [n for n in self.procs if n.startswith(ref.name + "-")]:
                _kill(self.procs[name])
        return super().delete(ref, grace_seconds=grace_seconds)

    def pod_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        tail_lines: int | None = 400,
        since_seconds: int | None = None,
    ) -> str:
        """The whole output (``since_seconds`` is ignored: the run must keep a record read twice once)."""
        try:
            lines = (self.root / f"{pod}.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-(tail_lines or len(lines)) :]) + "\n"

    def open_port(self, namespace: str, pod: str, port: int) -> Channel:
        self.opened.append((namespace, pod, port))
        s = socket.create_connection((self.ip, port), timeout=5)
        s.settimeout(None)
        return s

    def kill_all(self) -> None:
        for p in self.procs.values():
            _kill(p)


def _kill(p: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    c = ProcessCluster(tmp_path / "pods")
    try:
        yield c
    finally:
        c.kill_all()


def test_a_two_worker_run_marks_phases_snapshots_and_reports_from_the_workers_records(
    server: str, cluster: ProcessCluster, tmp_path: Path
) -> None:
    run = KubeLocustRun(
        LoadConfig(users=4, processes=2),
        api=cluster,
        workdir=tmp_path / "load",
        target=LoadTarget(ingress_url=server),
        poll=0.2,
    )

    def more(n: int) -> None:
        have = run.progress().requests
        wait.until(lambda: run.progress().requests >= have + n, what=f"{n} more requests", timeout=60)

    with run:
        assert len([n for n in cluster.procs if "-worker-" in n]) == 2
        more(200)
        run.phase("fault")
        snap = run.snapshot(settle_s=0.0)  # every user past the boundary: the load phase is complete
        more(200)
    r = run.report
    assert r is not None, (tmp_path / "load").iterdir()
    assert [p.name for p in r.phases] == ["spawn", "load", "fault"]
    assert sum(p.requests for p in r.phases) == r.requests == sum(r.by_status.values())
    fault = r.phase("fault")
    assert fault.requests >= 100 and set(fault.by_status) == {200, 503}
    assert fault.failures == fault.by_status[503] and dict(fault.versions) == {"v1": fault.by_status[200]}
    assert set(fault.pods) == {"pod-0", "pod-1"}
    assert snap.phase("load").requests == r.phase("load").requests > 0
    assert snap.in_phase("load") == r.in_phase("load")
    assert r.requests == r.locust_requests  # Locust's own count: no record lost at the stop
    assert len({rec.request_id.rsplit("-", 1)[0] for rec in r.records}) == 4  # 4 users, 2 processes
    assert r.locust_exit_code == 0 and "Shutting down (exit code 0)" in run.log_path.read_text()
    assert all(p.poll() is not None for p in cluster.procs.values())  # deleted: the processes are gone
    assert all(cluster.get(ObjectRef.of(o)) is None for o in run.objects)


def test_a_locustfile_error_surfaces_locusts_message_and_leaves_nothing(
    cluster: ProcessCluster, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "locustfile.py").write_text("from locust import FastHttpUser\ndef broken(:\n")
    shutil.copy(LOCUSTFILE.parent / "shapes.py", broken / "shapes.py")
    run = KubeLocustRun(
        LoadConfig(users=2),
        api=cluster,
        workdir=tmp_path / "load",
        target=LoadTarget(ingress_url="http://127.0.0.1:9"),
        locustfile=broken / "locustfile.py",
        poll=0.2,
    )
    with pytest.raises(LoadError, match="master exited 1 before spawning") as e:
        run.start()
    assert "SyntaxError" in str(e.value)
    assert not [n for n in cluster.procs if "-worker-" in n]  # never applied: the master failed first
    assert all(p.poll() is not None for p in cluster.procs.values())
    assert all(cluster.get(ObjectRef.of(o)) is None for o in run.objects)


def test_ctrl_c_during_the_run_deletes_everything_and_stops_locust(
    server: str, cluster: ProcessCluster, tmp_path: Path
) -> None:
    run = KubeLocustRun(
        LoadConfig(users=2),
        api=cluster,
        workdir=tmp_path / "load",
        target=LoadTarget(ingress_url=server),
        poll=0.2,
    )

    def interrupted() -> None:
        with run:
            wait.until(lambda: run.progress().requests > 0, what="the first requests", timeout=60)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted()
    assert run.report is None and not run.running
    assert all(p.poll() is not None for p in cluster.procs.values())
    assert all(cluster.get(ObjectRef.of(o)) is None for o in run.objects)


def test_an_exception_in_a_workers_user_fails_the_run(
    server: str, cluster: ProcessCluster, tmp_path: Path
) -> None:
    """Locust keeps a worker's user exceptions in the master's memory only: the locustfile's
    --mp-log-exceptions puts them into the master's log, and the run fails with them."""
    buggy = tmp_path / "buggy"
    buggy.mkdir()
    shutil.copy(LOCUSTFILE.parent / "shapes.py", buggy / "shapes.py")
    (buggy / "locustfile.py").write_text(
        LOCUSTFILE.read_text()
        + "\n\ndef _bug(self):\n    raise KeyError('meshproof test: a bug in a task')\n\n\nIngressUser.tasks = [_bug]\n"
    )
    run = KubeLocustRun(
        LoadConfig(users=2),
        api=cluster,
        workdir=tmp_path / "load",
        target=LoadTarget(ingress_url=server),
        locustfile=buggy / "locustfile.py",
        poll=0.2,
    )
    with pytest.raises(LoadError, match="users raised an exception") as e, run:
        pass
    assert "meshproof test: a bug in a task" in str(e.value) and "_bug" in str(e.value)
    assert all(cluster.get(ObjectRef.of(o)) is None for o in run.objects)
