"""Distributed Locust inside a Kubernetes cluster (kind / existing backends): a master and N workers
as Deployments in ``other-namespace``, sidecar-injected, so the load enters through the mesh.

* :func:`manifests` renders the objects: a ConfigMap with ``loadtests/locustfile.py`` and
  ``shapes.py``; the master Deployment + Service (port 5557) and the worker Deployment. Every
  request leaves through a worker's own sidecar with other-namespace's identity: to the ingress
  gateway's Service (user class ``ingress``) or straight to the service (``mesh``), see
  :func:`target_in_cluster`. The pods wait for their sidecar (``holdApplicationUntilProxyStarts``).
* The master runs Locust with its web UI on the pod's 127.0.0.1 (``--autostart``, not
  ``--headless``), so the harness reads ``/stats/requests`` (workers connected, state, users) and
  stops the run (``POST /stop``) through a port-forward (:mod:`harness.load.kube_run`). After a
  stop, or the shape's end, Locust quits ``--autoquit`` seconds later (time for the workers' last
  stats reports) and writes ``--json-file``; the master's shell then prints Locust's exit code and
  that JSON on one line between markers into the pod log and sleeps, so the harness reads both
  with an ordinary pod-log request (:func:`parse_master_log`) before deleting the objects.
* :func:`report_from_locust_stats` turns that JSON into the same :class:`~harness.load.LoadReport`
  (per-second resolution: phases are split at whole seconds; latency percentiles are the run's).
  The locustfile's ``--mp-split-stats`` names each request's stats entry after its status, answering
  version and pod, so Locust's own per-second counts carry status codes, versions and pods per phase.
"""

from __future__ import annotations

import json
import math
import shlex
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from harness.backends.kube.istio_install import GATEWAY_SERVICE, ISTIO_NAMESPACE
from harness.errors import UnsupportedFeature
from harness.load import (
    DEFAULT_SERVICE,
    LOCUSTFILE,
    USER_CLASSES,
    Latency,
    LoadConfig,
    LoadReport,
    LoadTarget,
    PhaseMark,
    PhaseStats,
    SecondStats,
)

NAMESPACE = "other-namespace"
NAME = "meshproof-locust"
MASTER_PORT = 5557
#: Locust's web UI on the master, bound to the pod's loopback: reached only through a port-forward.
WEB_PORT = 8089
#: The official image of the pinned Locust (the locustfile comes from the ConfigMap).
IMAGE = "locustio/locust:2.47.0"
MOUNT = "/mnt/locust"
JSON_FILE = "/tmp/locust"  # Locust appends ".json"
#: Seconds Locust's users get to finish their request after a stop.
STOP_TIMEOUT_S = 3
#: Seconds between the end of the run and the master's exit: the workers report stats every 3 s.
AUTOQUIT_S = 5
#: Lines the master's shell prints into its log after Locust exits (see :func:`parse_master_log`).
EXIT_MARK = "meshproof-locust-exit"
STATS_MARK = "meshproof-locust-stats"
DONE_MARK = "meshproof-locust-done"  # after the stats line: the log is complete
#: The locustfile's --mp-log-exceptions: an exception a worker's user raised (the lines after it: where).
EXCEPTION_MARK = "meshproof-locust-exception"
#: The pod label every object and pod of one run carries.
RUN_LABEL = "meshproof/run"


def target_in_cluster(
    user_class: str = "ingress", service: tuple[str, str, int] = DEFAULT_SERVICE
) -> LoadTarget:
    """Where in-cluster workers send: ``ingress`` through the ingress gateway's Service (as outside
    users do, but from inside the mesh), ``mesh`` straight to the service (sidecar to sidecar)."""
    if user_class == "ingress":
        return LoadTarget(ingress_url=f"http://{GATEWAY_SERVICE}.{ISTIO_NAMESPACE}.svc.cluster.local:80")
    if user_class == "mesh":
        name, ns, port = service
        return LoadTarget(service_url=f"http://{name}.{ns}.svc.cluster.local:{port}")
    raise UnsupportedFeature(
        f"user class {user_class!r} on kind/existing: the in-cluster Locust workers send either through "
        "the ingress gateway (ingress) or from their own sidecar to the service (mesh). Fix: "
        "--user-class ingress or --user-class mesh"
    )


def _base_url(target: LoadTarget) -> str:
    return target.ingress_url or target.service_url


def locust_args(
    config: LoadConfig,
    target: LoadTarget,
    run_id: str,
    *,
    locustfile: str = f"{MOUNT}/locustfile.py",
    json_file: str = JSON_FILE,
    web_port: int = WEB_PORT,
    master_bind: tuple[str, int] | None = None,
) -> list[str]:
    """The master's Locust arguments (workers get only --worker and the master's address; Locust
    hands them the ``--mp-*`` options with each spawn message). The keyword arguments exist for
    the rehearsal on this machine (``tests/load``): in the pod the defaults hold."""
    c = config
    workers = max(1, c.processes)
    bind = (
        ["--master-bind-host", master_bind[0], "--master-bind-port", str(master_bind[1])]
        if master_bind
        else []
    )
    args = [
        "-f",
        locustfile,
        "--master",
        *bind,
        "--autostart",
        "--autoquit",
        str(AUTOQUIT_S),
        "--web-host",
        "127.0.0.1",
        "--web-port",
        str(web_port),
        "--expect-workers",
        str(workers),
        "--users",
        str(c.users),
        "--spawn-rate",
        f"{c.rate:g}",
        "--stop-timeout",
        str(STOP_TIMEOUT_S),
        "--exit-code-on-error",
        "0",
        "--only-summary",
        "--json-file",
        json_file,
        "--mp-split-stats",  # one stats entry per status, version and pod: see report_from_locust_stats
        "--mp-log-exceptions",  # the workers' user exceptions, into the master's log
        "--mp-shape",
        c.shape,
        "--mp-duration",
        f"{c.duration_s:g}",
        "--mp-ingress",
        _base_url(target),
        "--mp-path",
        c.path,
        "--mp-run-id",
        run_id,
    ]
    if c.headers:
        args += ["--mp-header", json.dumps(dict(c.headers))]
    return [*args, *USER_CLASSES["ingress"]]


# Prints Locust's --json-file as one line (Locust writes it indented), so a short log tail holds it.
_ONE_LINE = 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])), separators=(",", ":")))'


def master_script(
    config: LoadConfig,
    target: LoadTarget,
    run_id: str,
    *,
    json_file: str = JSON_FILE,
    hold: str = "exec sleep infinity",
    **overrides: Any,
) -> str:
    """The master container's shell: Locust, then its exit code and stats into the log, then ``hold``
    (the container stays up until the harness has read the log and deletes the Deployment).
    ``overrides`` go to :func:`locust_args` (the rehearsal on this machine)."""
    args = locust_args(config, target, run_id, json_file=json_file, **overrides)
    locust = " ".join(shlex.quote(a) for a in ["locust", *args])
    dump = " ".join(shlex.quote(a) for a in ["python3", "-c", _ONE_LINE, f"{json_file}.json"])
    return f'{locust}; code=$?; echo "{EXIT_MARK} $code"; printf "{STATS_MARK} "; {dump} || echo; echo {DONE_MARK}; {hold}'


@dataclass(frozen=True)
class MasterExit:
    """What the master's log says once Locust has exited."""

    exit_code: int
    stats: list[dict[str, Any]] | None  # Locust's --json-file entries; None when it wrote none
    log: str  # the log up to the exit line (Locust's own output)


def parse_master_log(text: str) -> MasterExit | None:
    """The exit code and stats the master's shell printed after Locust exited; None while it runs,
    and until the shell has logged its last line (the stats line is written after the exit line)."""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        head, _, code = lines[i].partition(" ")
        if head != EXIT_MARK or not code.strip().lstrip("-").isdigit():
            continue
        if DONE_MARK not in lines[i + 1 :]:
            return None
        stats: list[dict[str, Any]] | None = None
        for line in lines[i + 1 :]:
            if line.startswith(STATS_MARK + " "):
                try:
                    doc = json.loads(line[len(STATS_MARK) + 1 :])
                except ValueError:
                    break
                if isinstance(doc, list):
                    stats = [e for e in doc if isinstance(e, dict)]
                break
        return MasterExit(int(code.strip()), stats, "\n".join(lines[:i]))
    return None


def manifests(
    config: LoadConfig,
    target: LoadTarget,
    *,
    run_id: str,
    namespace: str = NAMESPACE,
    image: str = IMAGE,
    locustfile: Path = LOCUSTFILE,
) -> list[dict[str, Any]]:
    """ConfigMap, master Service and Deployment, worker Deployment (``config.processes`` replicas)."""
    if config.user_class not in ("ingress", "mesh") or not _base_url(target):
        raise UnsupportedFeature(
            "in-cluster Locust sends from its own sidecar: user class 'ingress' (through the gateway's "
            "Service) or 'mesh' (to the service), with target_in_cluster(user_class) as the target"
        )
    labels = {"app": NAME, RUN_LABEL: run_id}
    # The sidecar, and the app held until it is up (the workers' first connection goes through it).
    inject = {"sidecar.istio.io/inject": "true"}
    annotations = {"proxy.istio.io/config": '{"holdApplicationUntilProxyStarts": true}'}
    files = {
        "locustfile.py": locustfile.read_text(),
        "shapes.py": (locustfile.parent / "shapes.py").read_text(),
    }
    volume = {"name": "locustfile", "configMap": {"name": NAME}}
    mount = {"name": "locustfile", "mountPath": MOUNT}

    def deployment(role: str, replicas: int, container: dict[str, Any]) -> dict[str, Any]:
        pod_labels = {**labels, "role": role}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"{NAME}-{role}", "namespace": namespace, "labels": pod_labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": NAME, "role": role}},
                "template": {
                    "metadata": {"labels": {**pod_labels, **inject}, "annotations": annotations},
                    "spec": {
                        "serviceAccountName": "client",
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{"image": image, "volumeMounts": [mount], **container}],
                        "volumes": [volume],
                    },
                },
            },
        }

    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": NAME, "namespace": namespace, "labels": labels},
            "data": files,
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"{NAME}-master", "namespace": namespace, "labels": labels},
            "spec": {
                # This run's master only: a killed earlier run's master may still be terminating
                # while this one's rolls out (the Deployment's own selector is immutable: no run id).
                "selector": {"app": NAME, "role": "master", RUN_LABEL: run_id},
                "ports": [{"name": "tcp-locust", "port": MASTER_PORT, "targetPort": MASTER_PORT}],
            },
        },
        deployment(
            "master",
            1,
            {
                "name": "master",
                "command": ["sh", "-c", master_script(config, target, run_id)],
                "ports": [{"containerPort": MASTER_PORT, "name": "tcp-locust"}],
            },
        ),
        deployment(
            "worker",
            max(1, config.processes),
            {
                "name": "worker",
                "args": [
                    "-f",
                    f"{MOUNT}/locustfile.py",
                    "--worker",
                    "--master-host",
                    f"{NAME}-master.{namespace}.svc.cluster.local",
                    "--master-port",
                    str(MASTER_PORT),
                ],
            },
        ),
    ]


def split_name(name: str) -> tuple[str, tuple[int, str, str, bool] | None]:
    """``'<name> #[status, version, pod, overloaded]'`` (the locustfile's ``--mp-split-stats``) ->
    (name, key); a name without the suffix -> (name, None)."""
    base, sep, tail = name.rpartition(" #")
    if sep:
        try:
            status, version, pod, overloaded = json.loads(tail)
            return base, (int(status), str(version), str(pod), bool(overloaded))
        except (ValueError, TypeError):
            pass
    return name, None


def report_from_locust_stats(
    config: LoadConfig,
    target: LoadTarget,
    stats: Sequence[Mapping[str, Any]],
    phases: Sequence[PhaseMark],
    *,
    started_at: float,
    ended_at: float,
    request_id_prefix: str = "",
    locust_exit_code: int = 0,
    errors: Mapping[str, int] | None = None,
    workdir: Path = Path(),
) -> LoadReport:
    """A LoadReport from Locust's ``--json-file`` entries (per-endpoint, per-second counts).

    Locust counts requests per whole second of their start time: each second belongs to the phase
    that holds its middle, so a second is never counted twice and phase boundaries are exact to
    +-0.5 s. With ``--mp-split-stats`` each entry is one (status, version, pod, overloaded) of an
    endpoint, so the phases get status codes, versions and pods (of the 200s, as locally) and
    Envoy's sheds; without it those stay empty. Latency percentiles are the whole run's (Locust
    keeps one histogram per entry, not per second); there are no per-request records."""
    reqs: Counter[int] = Counter()
    fails: Counter[int] = Counter()
    hist: Counter[float] = Counter()
    # per split key: requests per second
    keyed: list[tuple[tuple[int, str, str, bool], Counter[int]]] = []
    by_status: Counter[int] = Counter()
    total = failed = 0
    for e in stats:
        n_total = int(e.get("num_requests", 0))
        total += n_total
        failed += int(e.get("num_failures", 0))
        per_sec: Counter[int] = Counter()
        for t, n in (e.get("num_reqs_per_sec") or {}).items():
            reqs[int(t)] += int(n)
            per_sec[int(t)] += int(n)
        for t, n in (e.get("num_fail_per_sec") or {}).items():
            fails[int(t)] += int(n)
        for ms, n in (e.get("response_times") or {}).items():
            hist[float(ms)] += int(n)
        _, key = split_name(str(e.get("name", "")))
        if key is not None:
            keyed.append((key, per_sec))
            by_status[key[0]] += n_total
    latency = _hist_latency(hist)
    duration = max(ended_at - started_at, 1e-9)

    def seconds_of(lo: float, hi: float) -> list[int]:
        return [s for s in range(math.floor(lo), math.ceil(hi)) if lo <= s + 0.5 < hi]

    phase_stats = []
    for m in phases:
        end = m.end if m.end is not None else ended_at
        secs = seconds_of(m.start, end)
        n, k = sum(reqs[s] for s in secs), sum(fails[s] for s in secs)
        statuses: Counter[int] = Counter()
        versions: Counter[str] = Counter()
        pods: Counter[str] = Counter()
        shed = 0
        for (status, version, pod, overloaded), per_sec in keyed:
            c = sum(per_sec[s] for s in secs)
            if not c:
                continue
            statuses[status] += c
            shed += c if overloaded else 0
            if status == 200:
                versions[version] += c if version else 0
                pods[pod] += c if pod else 0
        phase_stats.append(
            PhaseStats(
                name=m.name,
                start_s=m.start - started_at,
                end_s=end - started_at,
                requests=n,
                failures=k,
                by_status=MappingProxyType(dict(sorted(statuses.items()))),
                rps=n / max(end - m.start, 1e-9),
                error_ratio=k / n if n else 0.0,
                latency=latency,
                versions=MappingProxyType(dict(sorted((+versions).items()))),
                pods=MappingProxyType(dict(sorted((+pods).items()))),
                overloaded=shed,
            )
        )
    t0 = math.floor(started_at)
    series = tuple(SecondStats(s - t0, reqs[s], fails[s], 0.0) for s in range(t0, math.ceil(ended_at)))
    return LoadReport(
        config=config,
        target=target,
        started_at=started_at,
        duration_s=duration,
        requests=total,
        failures=failed,
        by_status=MappingProxyType(dict(sorted(by_status.items()))),
        rps=total / duration,
        latency=latency,
        phases=tuple(phase_stats),
        series=series,
        errors=MappingProxyType(dict(errors or {})),
        request_id_prefix=request_id_prefix,
        locust_requests=total,
        locust_exit_code=locust_exit_code,
        locust_cpu_s=0.0,
        workdir=workdir,
    )


def _hist_latency(hist: Mapping[float, int]) -> Latency:
    """Percentiles from Locust's rounded response-time histogram {ms: count}."""
    n = sum(hist.values())
    if not n:
        return Latency()
    keys = sorted(hist)

    def q(p: float) -> float:
        rank, seen = p * n, 0
        for k in keys:
            seen += hist[k]
            if seen >= rank:
                return k
        return keys[-1]

    return Latency(q(0.5), q(0.9), q(0.95), q(0.99), keys[-1])
