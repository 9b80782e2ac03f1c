"""Locust users and load shapes for meshproof's sample service. The only place that imports locust.

Run by :class:`harness.load.LocustRun` as a subprocess (``locust -f loadtests/locustfile.py
--headless ...``), never imported into the pytest or CLI process: ``import locust`` monkey-patches
the process with gevent.

Users (``FastHttpUser``, geventhttpclient):

``IngressUser``
    ``GET /api/greet`` through the ingress gateway (``--mp-ingress``).
``MeshUser``
    The same call from inside the mesh: the client workload's app (``--mp-call``, its ``/api/call``)
    calls the service URL (``--mp-service``) through its outbound sidecar; the downstream status is
    what counts.

Every request carries ``x-request-id: <run id>-<process>.<user>-<n>`` (``--mp-run-id``), so the harness
can find load requests in traces. Each process appends one line per request to
``<--mp-events>/events-<pid>.tsv``: start time (unix s), latency ms, status (0 = no response),
name, answering pod and version (of any JSON answer of the app), request id, error, flags
(``overloaded``: Envoy's x-envoy-overloaded). The harness builds its report from these lines
(exact per-phase counts and percentiles) and cross-checks the totals against Locust's own stats.
With ``--mp-events -`` (in-cluster workers) the lines go to stdout, each after ``meshproof-event``
and a tab, into the pod's log, and the process part of the request ids is ``<hostname>.<pid>``
(every worker pod's Locust may have the same pid).

The harness ends a run by creating ``--mp-stop-file``: the shape's next tick (within a second)
returns None and Locust shuts down cleanly, writing its stats. (A signal is the fallback: Locust
2.47 handles SIGTERM only after a shaped headless run has ended, and SIGINT can surface as a
KeyboardInterrupt traceback inside a user greenlet.)

Shape (``--mp-shape``): ``steady`` (``-u`` users at ``-r`` per second; until stopped, or for
``--mp-duration`` seconds), ``ramp`` (linearly up to ``-u`` over the duration), ``spike`` (a quarter of
``-u``, all of ``-u`` in the middle third, a quarter again), ``step`` (four equal steps up to ``-u``).

Without ``--mp-ingress``/``--mp-call`` the targets come from the running mesh:
``meshproof status --json`` (state dir from ``MESHPROOF_STATE``, default ``.meshproof``).
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlencode

from locust import FastHttpUser, LoadTestShape, events, task
from locust.runners import STATE_RUNNING, MasterRunner, WorkerRunner
from shapes import SHAPES, users_at

DEFAULT_SERVICE = ("microservice-1", "sample", 3000)


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--mp-shape", choices=SHAPES, default="steady", help="meshproof load shape")
    parser.add_argument("--mp-duration", type=float, default=0.0, help="seconds of load (0: until stopped)")
    parser.add_argument("--mp-ingress", default="", help="ingress base URL (default: meshproof status)")
    parser.add_argument("--mp-call", default="", help="a client workload's /api/call URL (MeshUser)")
    parser.add_argument("--mp-service", default="", help="in-mesh service base URL (MeshUser)")
    parser.add_argument("--mp-path", default="/api/greet", help="request path")
    parser.add_argument("--mp-header", default="", help='extra request headers as JSON: {"k": "v"}')
    parser.add_argument("--mp-run-id", default="mp-load", help="prefix of every x-request-id")
    parser.add_argument(
        "--mp-events", default="", help="directory for the per-request event logs ('-': stdout, in-cluster)"
    )
    parser.add_argument("--mp-stop-file", default="", help="the run ends (cleanly) once this file exists")
    parser.add_argument(
        "--mp-control",
        default="",
        help='a steady run follows this JSON file, {"epoch": k, "users": n, "rate": r}, read every tick; '
        "each change is confirmed in <file>.done",
    )
    parser.add_argument(
        "--mp-log-exceptions",
        action="store_true",
        help="the master logs its workers' user exceptions when it quits (in-cluster runs)",
    )


# --------------------------------------------------------------------------- per process setup

_events_file: Any = None
_event_prefix = ""  # "meshproof-event\t" when the events go to stdout (a pod's log)
_host = [""]  # "<hostname>." before the pid in request ids, when the events go to stdout
_ids = itertools.count(1)
_users = itertools.count(1)  # this process's users, numbered as they start
_flushed = [0.0]  # when the event log was last flushed: the harness reads it live
#: seconds between flushes of the event log (one write of the lines buffered since): a snapshot of
#: the load waits until each user's request started after a phase boundary is logged. With 0.5 s a
#: snapshot's wait took 0.54 s on average in bench/bench_cpu.py's run, with 0.1 s 0.38 s
FLUSH_S = 0.1
_environment: list[Any] = [None]  # Locust's Environment (set at init)


def _die_with_parent() -> None:
    """A --processes worker is forked by the Locust master: die with it (PR_SET_PDEATHSIG)."""
    parent = os.getppid()
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    if os.getppid() != parent:  # the master died before the signal was armed
        os._exit(1)


@events.init.add_listener
def _on_init(environment: Any, **_kw: Any) -> None:
    global _events_file, _event_prefix
    _environment[0] = environment
    opts = environment.parsed_options
    if isinstance(environment.runner, WorkerRunner):
        _die_with_parent()

    if opts is not None and opts.mp_events == "-":
        _events_file, _event_prefix = sys.stdout, "meshproof-event\t"
        _host[0] = f"{socket.gethostname()}."
    elif opts is not None and opts.mp_events:
        os.makedirs(opts.mp_events, exist_ok=True)
        path = os.path.join(opts.mp_events, f"events-{os.getpid()}.tsv")
        _events_file = open(path, "a", buffering=1 << 16, encoding="utf-8")  # noqa: SIM115


@events.quit.add_listener
def _on_quit(**_kw: Any) -> None:
    _flush()


def _flush() -> None:
    if _events_file is not None:
        _events_file.flush()
        _flushed[0] = time.monotonic()


# --------------------------------------------------------------------------- control (a shared run)

_epoch = [0]  # the control file's epoch the shape last applied


def _control(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None  # not written yet (the harness replaces it atomically)
    return doc if isinstance(doc, dict) else None


def _confirm(opts: Any, users: int) -> None:
    """``<--mp-control>.done``: the epoch now in effect and the users running (written atomically)."""
    done = f"{opts.mp_control}.done"
    with open(done + ".tmp", "w", encoding="utf-8") as fh:
        json.dump({"epoch": _epoch[0], "users": int(users), "at": time.time()}, fh)
    os.replace(done + ".tmp", done)


@events.spawning_complete.add_listener
def _on_spawned(user_count: int, **_kw: Any) -> None:
    """A change of users has taken effect (fired by the master or the single process, after the
    users it stopped are gone): the harness's wait for the change ends here."""
    environment = _environment[0]
    opts = environment.parsed_options if environment is not None else None
    if opts is not None and opts.mp_control and not isinstance(environment.runner, WorkerRunner):
        _confirm(opts, user_count)


@events.quitting.add_listener
def _log_exceptions(environment: Any, **_kw: Any) -> None:
    """With --mp-log-exceptions the master prints the exceptions its workers' users raised (Locust
    keeps them only in memory, for its web UI): in a cluster they happen in other pods, and this
    puts them in the master's log, where the harness reads the run's outcome."""
    opts = environment.parsed_options
    if opts is None or not opts.mp_log_exceptions or not isinstance(environment.runner, MasterRunner):
        return
    for row in environment.runner.exceptions.values():
        nodes = ", ".join(sorted(row["nodes"]))
        print(f"meshproof-locust-exception {row['count']}x on {nodes}: {row['msg']}", flush=True)
        print(str(row["traceback"]).rstrip(), flush=True)


@events.request.add_listener
def _record(
    request_type: str,
    name: str,
    response_time: float,
    response: Any,
    context: dict[str, Any],
    exception: Any,
    start_time: float = 0.0,
    **_kw: Any,
) -> None:
    if _events_file is None:
        return
    status = context.get("status")
    if status is None:
        status = getattr(response, "status_code", 0) or 0
    pod, version = context.get("pod", ""), context.get("version", "")
    error = "" if exception is None else f"{type(exception).__name__}: {exception}"
    error = error.replace("\t", " ").replace("\n", " ")[:200]
    _events_file.write(
        f"{_event_prefix}{start_time:.6f}\t{response_time:.3f}\t{int(status)}\t{name}\t{pod}\t{version}\t"
        f"{context.get('request_id', '')}\t{error}\t{context.get('flags', '')}\n"
    )
    now = time.monotonic()
    if now - _flushed[0] >= FLUSH_S:
        _flushed[0] = now
        _events_file.flush()


# --------------------------------------------------------------------------- targets


def _status_json() -> dict[str, Any]:
    exe = shutil.which("meshproof") or os.path.join(os.path.dirname(sys.executable), "meshproof")
    state = os.environ.get("MESHPROOF_STATE", ".meshproof")
    out = subprocess.run(
        [exe, "status", "--json", "--state", state], capture_output=True, text=True, timeout=60, check=False
    )
    if out.returncode != 0:
        raise SystemExit(
            f"no running mesh for the load: meshproof status exited {out.returncode}: {out.stderr}"
        )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def _headers(opts: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in json.loads(opts.mp_header).items()} if opts.mp_header else {}


def _request_id(opts: Any, user: int) -> str:
    """``<run id>-<process>.<user>-<n>``: a user sends one request at a time, so once each user
    has logged a request started after some moment, every request started before it is logged."""
    return f"{opts.mp_run_id}-{_host[0]}{os.getpid()}.{user}-{next(_ids)}"


def _identity(body: Any, context: dict[str, Any]) -> None:
    if isinstance(body, dict):
        context["pod"] = str(body.get("pod") or "")
        context["version"] = str(body.get("version") or "")


def _flags(headers: Any, context: dict[str, Any]) -> None:
    if headers and headers.get("x-envoy-overloaded"):
        context["flags"] = "overloaded"  # Envoy shed it (circuit breaker)


class IngressUser(FastHttpUser):
    """GET /api/greet (or --mp-path) through the ingress gateway."""

    def on_stop(self) -> None:
        _flush()  # a shared run's pause: its last requests are in the event log before it confirms

    weight = 1
    host = "http://ingress.invalid"  # replaced in on_start

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        base = opts.mp_ingress or str(_status_json().get("ingress_url") or "")
        if not base:
            raise SystemExit("the running mesh has no ingress gateway")
        self.client.base_url = base.rstrip("/")
        self._path = opts.mp_path
        self._headers = _headers(opts)
        self._opts = opts
        self._user = next(_users)

    @task
    def greet(self) -> None:
        rid = _request_id(self._opts, self._user)
        with self.client.get(
            self._path,
            headers={**self._headers, "x-request-id": rid},
            name=f"ingress {self._path}",
            catch_response=True,
        ) as resp:
            ctx = resp.request_meta["context"]
            ctx["request_id"] = rid
            _flags(resp.headers, ctx)
            if resp.status_code and (resp.headers or {}).get("content-type", "").startswith(
                "application/json"
            ):
                with contextlib.suppress(ValueError):
                    _identity(resp.json(), ctx)  # the app's answers name their pod, faults included


class MeshUser(FastHttpUser):
    """The client workload's app calls the service through its outbound sidecar (/api/call)."""

    def on_stop(self) -> None:
        _flush()

    weight = 1
    host = "http://client.invalid"

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        call, service = opts.mp_call, opts.mp_service
        if not call:
            status = _status_json()
            client = next(
                (w for w in status.get("workloads", []) if w.get("role") == "client" and w.get("app_url")),
                None,
            )
            if client is None:
                raise SystemExit("the running mesh has no client workload to call from")
            call = str(client["app_url"]).rstrip("/") + "/api/call"
            name, ns, port = DEFAULT_SERVICE
            service = service or f"http://{name}.{ns}.svc.cluster.local:{port}"
        self._call, self._service = call, service.rstrip("/")
        self._path = opts.mp_path
        self._headers = _headers(opts)
        self._opts = opts
        self._user = next(_users)

    @task
    def call(self) -> None:
        rid = _request_id(self._opts, self._user)
        params = [("url", self._service + self._path), ("method", "GET"), ("timeout_ms", "10000")]
        params += [("header", f"{k}:{v}") for k, v in {**self._headers, "x-request-id": rid}.items()]
        with self.client.get(
            f"{self._call}?{urlencode(params)}", name=f"mesh {self._path}", catch_response=True
        ) as resp:
            ctx = resp.request_meta["context"]
            ctx["request_id"] = rid
            if resp.status_code != 200:  # /api/call itself failed: the outbound connection broke
                ctx["status"] = 0
                resp.failure(f"/api/call answered {resp.status_code}")
                return
            try:
                wrapped = resp.json()
            except ValueError:
                ctx["status"] = 0
                resp.failure("/api/call answered no JSON")
                return
            status = int(wrapped.get("status") or 0)
            ctx["status"] = status
            _flags(wrapped.get("headers") or {}, ctx)
            _identity(wrapped.get("body"), ctx)
            if status == 200:
                resp.success()
            else:
                resp.failure(f"HTTP {status} from the mesh")


# --------------------------------------------------------------------------- shapes


class MeshproofShape(LoadTestShape):
    """Drives -u/-r users over time according to --mp-shape; stops after --mp-duration (if set).
    With ``--mp-control`` a steady run takes its users and spawn rate from that file instead, so
    one Locust serves one test after another (0 users: paused between them)."""

    use_common_options = True
    _last: tuple[int, float] | None = None

    def tick(self) -> tuple[int, float] | None:
        opts = self.runner.environment.parsed_options  # type: ignore[union-attr]
        t = self.get_run_time()
        duration = float(opts.mp_duration or 0)
        if duration > 0 and t >= duration:
            return None
        if opts.mp_stop_file and os.path.exists(opts.mp_stop_file):
            return None  # the harness asked for the end: Locust stops its users and writes its stats
        users = int(opts.num_users or 1)
        rate = float(opts.spawn_rate or users)
        control = _control(opts.mp_control) if opts.mp_control and opts.mp_shape == "steady" else None
        if control is not None:
            users, rate = int(control["users"]), float(control["rate"])
        if opts.mp_shape != "steady":
            rate = max(rate, float(users))  # follow the shape within a second
        value = (users_at(opts.mp_shape, users, duration, t), rate)
        if control is not None and int(control["epoch"]) != _epoch[0]:
            _epoch[0] = int(control["epoch"])
            runner = self.runner
            if value == self._last and runner is not None and runner.state == STATE_RUNNING:
                _confirm(opts, runner.user_count)  # nothing to change: Locust starts no spawn to confirm it
        self._last = value
        return value
