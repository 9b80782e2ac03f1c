# Over 500 lines: one lifecycle (apply, wait, phases, stop, results, cleanup) and its failure reports.
"""KubeLocustRun: Locust's master and workers as Deployments inside the cluster (kind / existing),
behind the same API as :class:`harness.load.LocustRun`: a context manager, ``phase(name)``,
``progress()``, and a :class:`~harness.load.LoadReport` from ``stop()`` / on leaving the block. ::

    with KubeLocustRun(LoadConfig(users=40, processes=3), api=backend.api, workdir=tmp) as run:
        run.phase("fault")
        ...
    run.report.phase("fault").error_ratio

Lifecycle (objects from :func:`harness.load.kube.manifests`, all labelled with the run id):

1. ``start()`` server-side applies the ConfigMap (the locustfile), the master Service and
   Deployment (a killed earlier run's objects have the same names: the apply takes them over) and
   waits (:func:`harness.wait.until`) until the master's web API answers, read through a
   :class:`~harness.backends.kube.portforward.PortForward` to the pod's 127.0.0.1:8089. Then it
   applies the worker Deployment and waits until the master reports every worker connected, then
   until Locust's state is ``running`` (the users of the shape's first tick are spawned). While waiting it fails fast, with the pod's log tail, when a
   pod cannot start, a worker's Locust exits (a locustfile error), or the master's Locust exits.
2. ``phase(name)`` marks phase boundaries on the harness clock (unix seconds).
3. ``stop()`` sends ``POST /stop`` (unless the shape already ended the run) and waits until the
   master's shell has logged Locust's exit code and stats (see :func:`harness.load.kube.parse_master_log`).
4. The report is built by :func:`harness.load.kube.report_from_locust_stats`; every object is
   deleted and the port-forward closed, whether the run passed, failed or was interrupted.

Why the pod log, not the web API or an exec, for the results: the web API serves only cumulative
totals (``/stats/requests``) and 5-second history, and the master's totals lag the workers by up
to their 3-second report interval, so per-phase counts polled from it would be off by seconds of
load. Locust's ``--json-file`` holds per-second counts keyed by the workers' request start times,
which is what phases need; it exists only once Locust has quit, and the pod log carries it out of
the pod without an exec stream (one ordinary GET, through the API the backend already uses).
Locust's failure messages (``/stats/requests`` ``errors``) are read while the web UI still
answers after the stop (best effort: a worker's very last report may come after the last read).

Limits, by nature of the cluster: the per-request records (latencies, request ids), live
snapshots and Locust's CPU time stay in the worker pods. The report has counts per second, split by
status, answering version and pod and Envoy's sheds (the locustfile's ``--mp-split-stats``), and
the run's latency percentiles. A SIGKILLed harness leaves the objects; the next run takes them over
(same names) and its Service selects only its own master.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import httpx

from harness import wait
from harness.backends.kube.api import KubeApi
from harness.backends.kube.apply import apply_objects, delete_objects, ref_of, wait_gone
from harness.backends.kube.pods import live, name_of, pod_ready
from harness.backends.kube.portforward import PortForward
from harness.backends.kube.readiness import pod_problems
from harness.errors import BackendError, LoadError, UnsupportedFeature
from harness.load import (
    FIRST_PHASE,
    LOCUSTFILE,
    SPAWN_PHASE,
    LoadConfig,
    LoadReport,
    LoadTarget,
    PhaseClock,
    PhaseMark,
    Progress,
    _locust_message,
    _State,
)
from harness.load.kube import (
    AUTOQUIT_S,
    EXCEPTION_MARK,
    IMAGE,
    NAME,
    NAMESPACE,
    RUN_LABEL,
    STOP_TIMEOUT_S,
    WEB_PORT,
    MasterExit,
    manifests,
    parse_master_log,
    report_from_locust_stats,
    target_in_cluster,
)


class Forward(Protocol):
    """A local address for a pod port (a started PortForward)."""

    @property
    def url(self) -> str: ...

    def stop(self) -> None: ...


ForwardFactory = Callable[[str, str, int], Forward]  # (namespace, pod, port) -> started forward


class _Pending(Exception):
    """Not there yet (what was seen): retried by wait.until and shown as its last seen value."""


_RETRY = (_Pending, httpx.HTTPError, OSError, BackendError, ValueError)


class KubeLocustRun(PhaseClock):
    """In-cluster distributed Locust (one master, ``config.processes`` workers); a context manager."""

    def __init__(
        self,
        config: LoadConfig,
        *,
        api: KubeApi,
        workdir: Path,
        target: LoadTarget | None = None,
        namespace: str = NAMESPACE,
        image: str = IMAGE,
        locustfile: Path = LOCUSTFILE,
        ready_timeout: float = 300.0,
        http: httpx.Client | None = None,
        forward: ForwardFactory | None = None,
        wall: Callable[[], float] = time.time,
        clock: wait.Clock = wait.REAL_CLOCK,
        poll: float = 0.5,
    ) -> None:
        self.config = config
        self.target = target if target is not None else target_in_cluster(config.user_class)
        self.api = api
        self.workdir = Path(workdir)
        self.namespace = namespace
        self.run_id = f"mp-{uuid.uuid4().hex[:10]}"
        # Rendered now: an unsupported user class or a missing locustfile fails before any apply.
        self.objects = manifests(
            config, self.target, run_id=self.run_id, namespace=namespace, image=image, locustfile=locustfile
        )
        self.ready_timeout = ready_timeout
        self._own_http = http is None
        self._http = http or httpx.Client(timeout=10.0, trust_env=False)
        self._forward_factory = forward or self._port_forward
        self._wall, self._clock, self._poll = wall, clock, poll
        self._state = _State.NEW
        self._applied = False
        self._master = ""  # the master pod of this run, once seen
        self._forward: Forward | None = None
        self._phases: list[PhaseMark] = []
        self._started_at = self._applied_at = 0.0
        self._exit: MasterExit | None = None
        self._errors: dict[str, int] = {}
        self._last_progress: Progress | None = None
        self.report: LoadReport | None = None

    # ---- paths and state
    @property
    def log_path(self) -> Path:
        """The master's log, saved here when the run ends (and on failure)."""
        return self.workdir / "locust-master.log"

    @property
    def exited(self) -> bool:
        """Whether Locust's master has exited (a run with a duration ends by itself); a failed look
        at its log (the API server busy) counts as not yet."""
        return self._exit_if_known() is not None

    @property
    def selector(self) -> str:
        return f"app={NAME},{RUN_LABEL}={self.run_id}"

    # ---- lifecycle
    def start(self) -> Self:
        if self._state is not _State.NEW:
            raise LoadError(f"this KubeLocustRun is {self._state.value}; start a new one")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "manifests.json").write_text(json.dumps(self.objects, indent=2))
        self._state = _State.RUNNING
        workers = max(1, self.config.processes)
        self._applied_at = self._wall()
        try:
            self._applied = True  # from here on, cleanup deletes them (even a half-done apply)
            # The workers come second: a worker gives up (exits) after about a minute without its
            # master, and a crashed worker is an error here. So the master must be up first.
            worker_objects = [o for o in self.objects if _role(o) == "worker"]
            apply_objects(self.api, [o for o in self.objects if _role(o) != "worker"])
            wait.until(
                lambda: bool(self._observe()),
                what=f"the Locust master pod in {self.namespace} to be ready and its web UI to answer",
                timeout=self.ready_timeout,
                interval=self._poll,
                retry_on=_RETRY,
                clock=self._clock,
                hint=f"image pulls take a while on a fresh cluster; `kubectl get pods -n {self.namespace} "
                f"-l {self.selector}`",
            )
            apply_objects(self.api, worker_objects)
            wait.until(
                self._connected,
                what=f"the Locust master in {self.namespace} to report {workers} connected workers",
                timeout=self.ready_timeout,
                interval=self._poll,
                retry_on=_RETRY,
                clock=self._clock,
                hint=f"see the worker pods: `kubectl get pods -n {self.namespace} -l {self.selector}`",
            )
            self._started_at = self._wall()
            self._phases = [PhaseMark(SPAWN_PHASE, self._started_at)]
            wait.until(
                self._spawned,
                what=f"Locust to spawn {self.config.users} users on {workers} workers",
                timeout=self.config.spawn_timeout,
                interval=self._poll,
                retry_on=_RETRY,
                clock=self._clock,
                hint="see the worker pods' logs",
            )
        except BaseException as e:
            self._diagnose(e)
            self._state = _State.STOPPED
            try:
                self._cleanup()
            except Exception as cleanup:  # noqa: BLE001 - the start failure matters more
                e.add_note(f"and deleting the Locust objects failed: {cleanup}")
            raise
        self.phase(FIRST_PHASE)
        return self

    def progress(self) -> Progress:
        """Figures so far, from the master's web API (the last known ones once it has quit)."""
        try:
            status = self._status()
        except _RETRY:
            status = None
        if status is not None:
            total = _aggregated(status)
            self._last_progress = Progress(
                elapsed_s=self._wall() - self._started_at,
                requests=int(total.get("num_requests") or 0),
                failures=int(total.get("num_failures") or 0),
                rps=float(status.get("current_rps") or total.get("current_rps") or 0.0),
                phase=self.current_phase,
            )
        if self._last_progress is None:
            return Progress(self._wall() - self._started_at, 0, 0, 0.0, self.current_phase)
        return self._last_progress

    def snapshot(self, *, settle_s: float = 1.0, timeout: float = 30.0) -> LoadReport:
        """Not on a cluster: Locust's per-second stats leave the master only when it quits."""
        if self.report is not None:
            return self.report
        raise UnsupportedFeature(
            "a load snapshot while in-cluster Locust runs: its per-second stats are read when the run "
            "ends. Fix: end the load (leave the `with` block, or stop()) and read run.report"
        )

    def wait(self, timeout: float) -> int:
        """Block until Locust exits on its own (a run with a duration); returns its exit code."""
        done = wait.until(
            self._master_exit,
            what=f"in-cluster Locust to finish its {self.config.duration_s:g} s run",
            timeout=timeout,
            interval=self._poll,
            retry_on=(BackendError,),
            clock=self._clock,
        )
        return done.exit_code

    def stop(self) -> LoadReport:
        """Stop the run, read Locust's exit code and stats, delete everything; idempotent."""
        if self.report is not None:
            return self.report
        if self._state is _State.NEW:
            raise LoadError("KubeLocustRun.stop() before start()")
        if self._state is _State.STOPPED:
            raise LoadError("the in-cluster Locust run was cleaned up without a report (see the first error)")
        ended_at = self._wall()
        try:
            finished_alone = self._exit_if_known() is not None
            done = self._exit if finished_alone else self._stop_and_wait()
            assert done is not None
            self._state = _State.STOPPED
            report = self._report(done, ended_at, finished_alone=finished_alone)
        finally:
            self._state = _State.STOPPED
            self._cleanup()
        self.report = report
        (self.workdir / "report.json").write_text(json.dumps(report.to_json(), indent=2))
        return report

    def __enter__(self) -> Self:
        return self.start()  # start() cleans up a half-started run before re-raising

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and not isinstance(exc, Exception):  # Ctrl-C, SystemExit: just clean up
            self._state = _State.STOPPED
            self._cleanup()
            return
        try:
            self.stop()
        except Exception as e:
            if exc is None:
                raise
            exc.add_note(f"and stopping in-cluster Locust failed too: {e}")

    # ---- waiting
    def _connected(self) -> bool:
        status = self._observe()
        workers, want = int(status.get("worker_count") or 0), max(1, self.config.processes)
        if workers < want:
            raise _Pending(f"{workers} of {want} workers connected to {self._master}")
        return True

    def _spawned(self) -> bool:
        status = self._observe()
        state, users = status.get("state"), status.get("user_count")
        if state != "running":
            raise _Pending(f"Locust state {state!r}, {users} users, {status.get('worker_count')} workers")
        return True

    def _observe(self) -> dict[str, Any]:
        """One look at the run: fail fast on what will not heal, else the master's web API status."""
        pods = self.api.list("v1", "Pod", self.namespace, self.selector)
        for pod in pods:
            self._check_pod(pod)
        done = self._master_exit()
        if done is not None:
            raise LoadError(
                f"in-cluster Locust's master exited {done.exit_code} before spawning its users:\n"
                f"{_locust_message(done.log)}"
            )
        masters = [p for p in pods if _role(p) == "master" and live(p)]
        if not masters or not pod_ready(masters[0]):
            raise _Pending(_pods_line(pods) or "no Locust pods yet")
        return self._status()

    def _check_pod(self, pod: Mapping[str, Any]) -> None:
        """Raise LoadError when a Locust pod cannot start, or its Locust exited (a worker's locustfile
        error: its container exits and restarts)."""
        name = name_of(pod)
        for p in pod_problems(pod):
            if p.fatal:
                raise LoadError(f"Locust pod {self.namespace}/{p} will not start")
        role = _role(pod)
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") != role:
                continue
            state = cs.get("state") or {}
            waiting = str((state.get("waiting") or {}).get("reason") or "")
            if int(cs.get("restartCount") or 0) > 0 or "terminated" in state or waiting == "CrashLoopBackOff":
                tail = self._log_tail(name, role)
                raise LoadError(
                    f"Locust's {role} in pod {self.namespace}/{name} exited "
                    f"(restarts {cs.get('restartCount') or 0}{', ' + waiting if waiting else ''}); "
                    f"its log:\n{_locust_message(tail)}"
                )
        if role == "master" and not self._master and live(pod):
            self._master = name

    def _master_exit(self) -> MasterExit | None:
        """Locust's exit code and stats from the master's log, once its shell has printed them."""
        if self._exit is not None:
            return self._exit
        if not self._master:
            return None
        text = self.api.pod_log(self.namespace, self._master, "master", tail_lines=400)
        self._exit = parse_master_log(text)
        if self._exit is not None:
            self._save_log(text)
        return self._exit

    def _exit_if_known(self) -> MasterExit | None:
        try:
            return self._master_exit()
        except BackendError:
            return None

    def _status(self) -> dict[str, Any]:
        if not self._master:
            raise _Pending("the Locust master pod is not running yet")
        if self._forward is None:
            self._forward = self._forward_factory(self.namespace, self._master, WEB_PORT)
        r = self._http.get(self._forward.url + "/stats/requests")
        r.raise_for_status()
        doc = r.json()
        if not isinstance(doc, dict):
            raise _Pending(f"/stats/requests answered {type(doc).__name__}, not an object")
        for e in doc.get("errors") or []:
            if isinstance(e, dict) and e.get("error"):
                self._errors[f"{e.get('name', '')}: {e['error']}"] = int(e.get("occurrences") or 0)
        return doc

    def _stop_and_wait(self) -> MasterExit:
        sent: list[bool] = []

        def stopped() -> MasterExit:
            done = self._master_exit()
            if done is not None:
                return done
            if not sent:
                assert self._forward is not None
                self._http.post(self._forward.url + "/stop").raise_for_status()
                sent.append(True)
            with contextlib.suppress(*_RETRY):
                self._status()  # Locust's failure messages, while its web UI still answers
            raise _Pending("Locust has not quit yet" if sent else "POST /stop not answered yet")

        try:
            return wait.until(
                stopped,
                what="in-cluster Locust to stop and log its stats",
                timeout=self.config.stop_timeout + STOP_TIMEOUT_S + AUTOQUIT_S + 30,
                interval=self._poll,
                retry_on=_RETRY,
                clock=self._clock,
                hint=f"the master's log: kubectl logs -n {self.namespace} {self._master} -c master",
            )
        except BaseException as e:
            self._diagnose(e)
            raise

    # ---- results
    def _report(self, done: MasterExit, ended_at: float, *, finished_alone: bool) -> LoadReport:
        if done.exit_code != 0:
            raise LoadError(
                f"in-cluster Locust exited {done.exit_code} (2: an unhandled error in a user):\n"
                f"{_locust_message(done.log)}"
            )
        at = done.log.find(EXCEPTION_MARK)
        if at >= 0:  # a worker's user raised (the locustfile's --mp-log-exceptions)
            where = "\n".join(done.log[at:].splitlines()[:15])
            raise LoadError(f"in-cluster Locust's users raised an exception ({self.log_path}):\n{where}")
        if "Traceback (most recent call last)" in done.log:
            raise LoadError(
                f"in-cluster Locust logged a traceback ({self.log_path}):\n{_locust_message(done.log)}"
            )
        if done.stats is None:
            raise LoadError(f"in-cluster Locust exited 0 but logged no stats ({self.log_path})")
        seconds = _seconds(done.stats)
        late = ended_at + STOP_TIMEOUT_S + AUTOQUIT_S + 60
        if seconds and (seconds[0] < self._applied_at - 2 or seconds[-1] > late):
            raise LoadError(
                f"in-cluster Locust counted requests from {seconds[0]} to {seconds[-1]} (unix s) for a run "
                f"applied at {self._applied_at:.0f} and stopped at {ended_at:.0f} by this machine's clock: the "
                "cluster's clock differs from ours, so phase boundaries would land on the wrong seconds. "
                "Fix: synchronise the node clocks (NTP)"
            )
        started_at = min([self._started_at, *seconds[:1]])
        if seconds:  # requests run until the users stop: they belong to the last phase
            last = float(seconds[-1] + 1)
            ended_at = last if finished_alone else max(ended_at, last)
        phases = list(self._phases)
        phases[0] = PhaseMark(phases[0].name, started_at, phases[0].end)
        phases[-1] = PhaseMark(phases[-1].name, phases[-1].start, max(ended_at, phases[-1].start))
        top = dict(sorted(self._errors.items(), key=lambda kv: -kv[1])[:10])
        return report_from_locust_stats(
            self.config,
            self.target,
            done.stats,
            phases,
            started_at=started_at,
            ended_at=max(ended_at, started_at),
            request_id_prefix=self.run_id,
            locust_exit_code=done.exit_code,
            errors=top,
            workdir=self.workdir,
        )

    # ---- cleanup and diagnostics
    def _cleanup(self) -> None:
        """Close the forward, delete every object of the run and wait until they are gone."""
        if self._forward is not None:
            forward, self._forward = self._forward, None
            forward.stop()
        try:
            if self._applied:
                self._applied = False
                delete_objects(self.api, self.objects)
                wait_gone(self.api, [ref_of(o) for o in self.objects], timeout=60, clock=self._clock)
        finally:
            if self._own_http:
                self._http.close()

    def _diagnose(self, e: BaseException) -> None:
        """Notes for a failed start/stop: the pods, the master's and a worker's log tails."""
        with contextlib.suppress(Exception):
            pods = self.api.list("v1", "Pod", self.namespace, self.selector)
            e.add_note(f"Locust pods ({self.selector}): {_pods_line(pods) or 'none'}")
            shown = set()
            for pod in sorted(pods, key=lambda p: _role(p) != "master"):
                role = _role(pod)
                if role in shown or not live(pod):
                    continue
                shown.add(role)
                tail = self._log_tail(name_of(pod), role)
                if role == "master":
                    self._save_log(tail)
                e.add_note(f"{role} {name_of(pod)} log (last lines):\n{_locust_message(tail)}")

    def _log_tail(self, pod: str, container: str) -> str:
        try:
            return self.api.pod_log(self.namespace, pod, container, tail_lines=200)
        except BackendError as e:
            return f"(no log: {e})"

    def _save_log(self, text: str) -> None:
        with contextlib.suppress(OSError):
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.log_path.write_text(text)

    def _port_forward(self, namespace: str, pod: str, port: int) -> Forward:
        api = self.api
        return PortForward(
            lambda: api.open_port(namespace, pod, port), what=f"Locust's web UI {namespace}/{pod}:{port}"
        ).start()


# ---- pure helpers


def _role(pod: Mapping[str, Any]) -> str:
    return str(((pod.get("metadata") or {}).get("labels") or {}).get("role", ""))


def _aggregated(status: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``Aggregated`` row of ``/stats/requests`` (Locust puts it last)."""
    rows = [r for r in status.get("stats") or [] if isinstance(r, dict)]
    for r in reversed(rows):
        if r.get("name") == "Aggregated":
            return r
    return rows[-1] if rows else {}


def _seconds(stats: Sequence[Mapping[str, Any]]) -> list[int]:
    """The whole seconds (unix) in which Locust counted requests, ascending."""
    return sorted({int(t) for e in stats for t in (e.get("num_reqs_per_sec") or {})})


def _pods_line(pods: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for p in pods:
        st = p.get("status") or {}
        why = [
            str(((cs.get("state") or {}).get("waiting") or {}).get("reason") or "")
            for cs in st.get("containerStatuses") or []
        ]
        ready = "ready" if pod_ready(p) else "not ready"
        extra = ", ".join(w for w in why if w)
        parts.append(
            f"{name_of(p)} ({_role(p)}, {st.get('phase', '?')}, {ready}{', ' + extra if extra else ''})"
        )
    return "; ".join(parts)
