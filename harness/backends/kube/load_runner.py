# Over 500 lines: one lifecycle (apply, wait, phases, stop, results, cleanup) and its failure reports.
"""KubeLocustRun: Locust's master and workers as Deployments inside the cluster (kind / existing),
behind the same API as :class:`harness.load.LocustRun`: a context manager, ``phase(name)``,
``progress()``, ``snapshot()``, and a :class:`~harness.load.LoadReport` from ``stop()`` / on leaving
the block. ::

    with KubeLocustRun(LoadConfig(users=40, processes=3), api=backend.api, workdir=tmp) as run:
        run.phase("fault")
        ...
    run.report.phase("fault").error_ratio

Lifecycle (objects from :func:`harness.backends.kube.load_objects.manifests`, all labelled with the run id):

1. ``start()`` server-side applies the ConfigMap (the locustfile), the master Service and
   Deployment (a killed earlier run's objects have the same names: the apply takes them over) and
   waits (:func:`harness.wait.until`) until the master's web API answers, read through a
   :class:`~harness.backends.kube.portforward.PortForward` to the pod's 127.0.0.1:8089. Then it
   applies the worker Deployment and waits until the master reports every worker connected, then
   until Locust's state is ``running`` (the users of the shape's first tick are spawned). While waiting it fails fast, with the pod's log tail, when a
   pod cannot start, a worker's Locust exits (a locustfile error), or the master's Locust exits.
2. ``phase(name)`` marks phase boundaries on the harness clock (unix seconds).
   ``progress()`` and ``snapshot()`` read the workers' per-request records from their pod logs
   (:func:`harness.backends.kube.load_objects.parse_events`; each read asks only for the last seconds, records are
   kept once by request id), as a local run reads its event files.
3. ``stop()`` sends ``POST /stop`` (unless the shape already ended the run), waits until the
   master's shell has logged Locust's exit code and stats (see :func:`harness.backends.kube.load_objects.parse_master_log`)
   and until every worker's shell has logged its Locust's exit (its records are then complete).
4. The report is built by :func:`harness.load.build_report` from the records (Locust's own total
   from the master's stats as the cross-check); every object is deleted and the port-forward closed,
   whether the run passed, failed or was interrupted.

Why pod logs, not the web API or an exec: the web API serves only cumulative totals and the
master's totals lag the workers by up to their 3-second report interval, so per-phase counts
polled from it would be off by seconds of load. A pod log is one ordinary GET through the API the
backend already uses (no exec stream); the kubelet joins a line the runtime split at 16 KiB.

Limits, by nature of the cluster: Locust's CPU time stays in the worker pods (0 in the report).
The kubelet serves the current log file of a container (rotated at its ``containerLogMaxSize``,
10 MiB by default, about 60,000 records): a run reads its workers' logs at every progress or
snapshot, so only a run nobody looks at for that long could lose records (``stop()`` then fails
on the count check). A SIGKILLed harness leaves the objects; the next run takes them over (same
names) and its Service selects only its own master.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, Self

import httpx

from harness import httpclient, namespaces, wait
from harness.backends.kube.api import KubeApi
from harness.backends.kube.apply import apply_objects, delete_objects, ref_of, wait_gone
from harness.backends.kube.load_objects import (
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
    parse_events,
    parse_master_log,
    target_in_cluster,
)
from harness.backends.kube.pods import live, name_of, pod_ready
from harness.backends.kube.portforward import PortForward
from harness.backends.kube.readiness import pod_problems
from harness.errors import BackendError, LoadError
from harness.load.config import DEFAULT_SERVICE, LOCUSTFILE, LoadConfig, LoadTarget
from harness.load.report import LoadReport, PhaseMark, build_report
from harness.load.run import (
    FIRST_PHASE,
    SPAWN_PHASE,
    PhaseClock,
    Progress,
    RunState,
    locust_message,
    users_past,
)

#: what Locust's master logs when a worker's heartbeats stop (locust.runners.MasterRunner); the
#: worker's last stats message may then never be counted, while its event log holds every request
HEARTBEAT_LOST = "failed to send heartbeat, setting state to missing"


class Forward(Protocol):
    """A local address for a pod port (a started PortForward)."""

    @property
    def url(self) -> str: ...

    def stop(self) -> None: ...


ForwardFactory = Callable[[str, str, int], Forward]  # (namespace, pod, port) -> started forward


class _Pending(Exception):
    """Not there yet (what was seen): retried by wait.until and shown as its last seen value."""


_RETRY = (_Pending, httpx.HTTPError, OSError, BackendError, ValueError)
#: Seconds between two reads of the workers' logs for progress() (a snapshot always reads).
READ_EVERY_S = 0.25
#: Seconds a log read reaches back before the previous one (lines the runtime stamped just
#: before it but wrote after; a record read twice is kept once).
READ_OVERLAP_S = 3


class KubeLocustRun(PhaseClock):
    """In-cluster distributed Locust (one master, ``config.processes`` workers); a context manager."""

    where = "in the cluster"
    what = "in-cluster Locust"

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
        self._http = http or httpclient.client(timeout=10.0)
        self._forward_factory = forward or self._port_forward
        self._wall, self._clock, self._poll = wall, clock, poll
        self._state = RunState.NEW
        self._applied = False
        self._master = ""  # the master pod of this run, once seen
        self._forward: Forward | None = None
        self._phases: list[PhaseMark] = []
        self._started_at = self._applied_at = 0.0
        self._exit: MasterExit | None = None
        self._init_records()
        self._seen: set[str] = set()  # request ids of the records read
        self._read_at: dict[str, float] = {}  # worker pod -> when its log was last read (our clock)
        self._worker_exit: dict[str, int] = {}  # worker pod -> its Locust's exit code, once logged
        self._events_read = float("-inf")
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
        if self._state is not RunState.NEW:
            raise LoadError(f"this KubeLocustRun is {self._state.value}; start a new one")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "manifests.json").write_text(json.dumps(self.objects, indent=2))
        self._state = RunState.RUNNING
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
            self._state = RunState.STOPPED
            try:
                self._cleanup()
            except Exception as cleanup:  # noqa: BLE001 - the start failure matters more
                e.add_note(f"and deleting the Locust objects failed: {cleanup}")
            raise
        self.phase(FIRST_PHASE)
        return self

    def progress(self) -> Progress:
        """Figures so far, from the workers' per-request records (read at most every READ_EVERY_S)."""
        if self._state is RunState.RUNNING and self._clock.now() - self._events_read >= READ_EVERY_S:
            self._read_events()
        return self._progress()

    def snapshot(self, *, settle_s: float = 1.0, timeout: float = 30.0) -> LoadReport:
        """The report so far, while the load keeps running (as :meth:`harness.load.LocustRun.snapshot`):
        waits until each Locust user's records include a request started ``settle_s`` after the last
        phase boundary (a user sends one request at a time: the closed phases are then complete),
        not waiting for a user quiet for ``QUIET_USER_S``."""
        if self._state is not RunState.RUNNING:
            if self.report is None:
                raise LoadError("snapshot() of an in-cluster load that is not running")
            return self.report
        boundary = self._phases[-1].start

        def settled() -> bool:
            self._read_events()
            past = users_past(self._newest_start, boundary + settle_s, now=self._wall())
            if past is not None:
                raise _Pending(
                    f"{past} of {len(self._newest_start)} Locust users past the phase boundary; "
                    f"{len(self._records)} records read"
                )
            return True

        wait.until(
            settled,
            what=f"every in-cluster Locust user to log a request started {settle_s:g} s after the phase boundary",
            timeout=timeout,
            interval=self._poll,
            retry_on=(_Pending, BackendError),
            clock=self._clock,
            hint=f"the worker pods' logs: kubectl logs -n {self.namespace} -l {self.selector},role=worker -c worker",
        )
        started_at, phases = self._dated_back(list(self._phases))
        return build_report(
            self.config,
            self.target,
            self._records,
            phases,
            started_at=started_at,
            ended_at=self._wall(),
            request_id_prefix=self.run_id,
            workdir=self.workdir,
        )

    def _dated_back(self, phases: list[PhaseMark]) -> tuple[float, list[PhaseMark]]:
        """The run's start and phases, the first phase from the first request: the master starts
        its users as soon as the workers connect, a moment before this side sees them connected."""
        started_at = min((r.start for r in self._records), default=self._started_at)
        started_at = min(started_at, self._started_at)
        phases[0] = PhaseMark(phases[0].name, started_at, phases[0].end)
        return started_at, phases

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
        if self._state is RunState.NEW:
            raise LoadError("KubeLocustRun.stop() before start()")
        if self._state is RunState.STOPPED:
            raise LoadError("the in-cluster Locust run was cleaned up without a report (see the first error)")
        ended_at = self._wall()
        try:
            finished_alone = self._exit_if_known() is not None
            done = self._exit if finished_alone else self._stop_and_wait()
            assert done is not None
            if done.exit_code == 0:
                self._await_workers()
            self._state = RunState.STOPPED
            report = self._report(done, ended_at, finished_alone=finished_alone)
        finally:
            self._state = RunState.STOPPED
            self._cleanup()
        self.report = report
        (self.workdir / "report.json").write_text(json.dumps(report.to_json(), indent=2))
        return report

    def _abort(self) -> None:
        self._state = RunState.STOPPED
        self._cleanup()

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
                f"{locust_message(done.log)}"
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
                    f"its log:\n{locust_message(tail)}"
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

    # ---- the workers' records
    def _read_events(self) -> None:
        """Read the new lines of every worker's log: records (kept once by request id) and Locust's
        exit. A worker container that restarted lost its records: an error."""
        self._events_read = self._clock.now()
        pods = self.api.list("v1", "Pod", self.namespace, f"{self.selector},role=worker")
        for pod in pods:
            name = name_of(pod)
            if not live(pod):
                continue
            for cs in (pod.get("status") or {}).get("containerStatuses") or []:
                if cs.get("name") == "worker" and int(cs.get("restartCount") or 0) > 0:
                    raise LoadError(
                        f"Locust's worker in pod {self.namespace}/{name} restarted during the run "
                        f"(restarts {cs.get('restartCount')}): its requests so far are lost; its log:\n"
                        f"{locust_message(self._log_tail(name, 'worker'))}"
                    )
            if name in self._worker_exit:
                continue  # its log is complete and read
            last = self._read_at.get(name)
            since = None if last is None else math.ceil(self._clock.now() - last) + READ_OVERLAP_S
            read_at = self._clock.now()
            text = self.api.pod_log(self.namespace, name, "worker", tail_lines=None, since_seconds=since)
            self._read_at[name] = read_at
            records, code = parse_events(text)
            for rec in records:
                if rec.request_id in self._seen:
                    continue
                self._seen.add(rec.request_id)
                self._keep(rec)
            if code is not None:  # its Locust quit (its master did): the log is complete
                self._worker_exit[name] = code

    def _await_workers(self) -> None:
        """After the master's exit: every worker's Locust has quit and its records are read."""
        want = max(1, self.config.processes)

        def done() -> bool:
            self._read_events()
            if len(self._worker_exit) < want:
                raise _Pending(f"{len(self._worker_exit)} of {want} workers logged their Locust's exit")
            return True

        wait.until(
            done,
            what="every in-cluster Locust worker to quit and log its last requests",
            timeout=self.config.stop_timeout + 30,
            interval=self._poll,
            retry_on=(_Pending, BackendError),
            clock=self._clock,
            hint=f"the worker pods' logs: kubectl logs -n {self.namespace} -l {self.selector},role=worker -c worker",
        )
        bad = {pod: code for pod, code in self._worker_exit.items() if code != 0}
        if bad:
            raise LoadError(f"in-cluster Locust workers exited non-zero: {bad}")

    # ---- results
    def _report(self, done: MasterExit, ended_at: float, *, finished_alone: bool) -> LoadReport:
        if done.exit_code != 0:
            raise LoadError(
                f"in-cluster Locust exited {done.exit_code} (2: an unhandled error in a user):\n"
                f"{locust_message(done.log)}"
            )
        at = done.log.find(EXCEPTION_MARK)
        if at >= 0:  # a worker's user raised (the locustfile's --mp-log-exceptions)
            where = "\n".join(done.log[at:].splitlines()[:15])
            raise LoadError(f"in-cluster Locust's users raised an exception ({self.log_path}):\n{where}")
        if "Traceback (most recent call last)" in done.log:
            raise LoadError(
                f"in-cluster Locust logged a traceback ({self.log_path}):\n{locust_message(done.log)}"
            )
        if done.stats is None:
            raise LoadError(f"in-cluster Locust exited 0 but logged no stats ({self.log_path})")
        note = ""
        if done.requests != len(self._records):
            if not self._master_missed_a_stop(done):
                raise LoadError(
                    f"in-cluster Locust counted {done.requests} requests, its workers' logs hold "
                    f"{len(self._records)} records ({self.log_path}): the report would be wrong. Was a "
                    "worker's log rotated before it was read (a very long run nobody looked at)?"
                )
            note = (
                f"Locust's master counted {done.requests} requests, its workers' logs hold "
                f"{len(self._records)} records, each request id once: the master lost a worker's "
                f"heartbeat ({HEARTBEAT_LOST!r} in its log) and missed that worker's last stats; "
                "the report counts the records"
            )
        starts = sorted(r.start for r in self._records)
        late = ended_at + STOP_TIMEOUT_S + AUTOQUIT_S + 60
        if starts and (starts[0] < self._applied_at - 2 or starts[-1] > late):
            raise LoadError(
                f"in-cluster Locust sent requests from {starts[0]:.0f} to {starts[-1]:.0f} (unix s) for a run "
                f"applied at {self._applied_at:.0f} and stopped at {ended_at:.0f} by this machine's clock: the "
                "cluster's clock differs from ours, so phase boundaries would land on the wrong seconds. "
                "Fix: synchronise the node clocks (NTP)"
            )
        if self._records:  # requests run until the users stop: they belong to the last phase
            last = max(r.start + r.latency_ms / 1000 for r in self._records)
            ended_at = last if finished_alone else max(ended_at, last)
        started_at, phases = self._dated_back(list(self._phases))
        phases[-1] = PhaseMark(phases[-1].name, phases[-1].start, max(ended_at, phases[-1].start))
        return build_report(
            self.config,
            self.target,
            self._records,
            phases,
            started_at=started_at,
            ended_at=max(ended_at, started_at),
            request_id_prefix=self.run_id,
            locust_requests=done.requests,
            locust_exit_code=done.exit_code,
            locust_note=note,
            workdir=self.workdir,
        )

    def _master_missed_a_stop(self, done: MasterExit) -> bool:
        """The master's total is short because it lost a worker's heartbeat, not a record lost: fewer
        requests than records, every record a distinct request id, and Locust's own log line."""
        ids = {r.request_id for r in self._records}
        return done.requests < len(self._records) == len(ids) and HEARTBEAT_LOST in done.log

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
                e.add_note(f"{role} {name_of(pod)} log (last lines):\n{locust_message(tail)}")

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


def in_cluster(
    config: LoadConfig,
    api: KubeApi,
    workdir: Path,
    gateway_namespace: str,
    *,
    image: str | None,
    ready_timeout: float,
) -> KubeLocustRun:
    """The run :meth:`KubeBackend.load_runner` hands out: aimed at the sample (a pytest-xdist worker's
    copy: its own names) through ``gateway_namespace``'s ingress, in its Locust namespace (a copy: its
    own other-namespace), in ``image`` or else the pinned official one."""
    name, service_ns, port = DEFAULT_SERVICE
    target = target_in_cluster(
        config.user_class, (name, namespaces.ns(service_ns), port), gateway_namespace=gateway_namespace
    )
    where = namespaces.ns(NAMESPACE)
    if image:
        return KubeLocustRun(
            config,
            api=api,
            workdir=workdir,
            target=target,
            namespace=where,
            image=image,
            ready_timeout=ready_timeout,
        )
    return KubeLocustRun(
        config, api=api, workdir=workdir, target=target, namespace=where, ready_timeout=ready_timeout
    )


def _role(pod: Mapping[str, Any]) -> str:
    return str(((pod.get("metadata") or {}).get("labels") or {}).get("role", ""))


def _aggregated(status: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``Aggregated`` row of ``/stats/requests`` (Locust puts it last)."""
    rows = [r for r in status.get("stats") or [] if isinstance(r, dict)]
    for r in reversed(rows):
        if r.get("name") == "Aggregated":
            return r
    return rows[-1] if rows else {}


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
