"""Distributed Locust inside a Kubernetes cluster (kind / existing backends): a master and N workers
as Deployments in ``other-namespace``, sidecar-injected, so the load enters through the mesh.

* :func:`manifests` renders the objects: a ConfigMap with ``loadtests/locustfile.py`` and
  ``shapes.py``; the master Deployment + Service (port 5557) and the worker Deployment. Every
  request leaves through a worker's own sidecar with other-namespace's identity: to the ingress
  gateway's Service (user class ``ingress``) or straight to the service (``mesh``), see
  :func:`target_in_cluster`. The pods wait for their sidecar (``holdApplicationUntilProxyStarts``).
* The master runs Locust with its web UI on the pod's 127.0.0.1 (``--autostart``, not
  ``--headless``), so the harness reads ``/stats/requests`` (workers connected, state, users) and
  stops the run (``POST /stop``) through a port-forward (:mod:`harness.backends.kube.load_runner`). After a
  stop, or the shape's end, Locust quits ``--autoquit`` seconds later (time for the workers' last
  stats reports) and writes ``--json-file``; the master's shell then prints Locust's exit code and
  that JSON on one line between markers into the pod log and sleeps, so the harness reads both
  with an ordinary pod-log request (:func:`parse_master_log`) before deleting the objects.
* Each worker logs one line per request to stdout (the locustfile's ``--mp-events -``): the same
  record a local run writes to its event files, after :data:`EVENT_MARK`. The harness reads them
  from the workers' pod logs while the load runs (:func:`parse_events`), so phases, snapshots and
  reports are built from per-request records exactly as locally
  (:func:`harness.load.build_report`). When its Locust quits (the master's quit) a worker's shell
  logs :data:`EXIT_MARK` and sleeps: its log is then complete and stays readable.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.backends.kube.istio_install import GATEWAY_SERVICE, ISTIO_NAMESPACE
from harness.errors import UnsupportedFeature
from harness.load.config import DEFAULT_SERVICE, LOCUSTFILE, USER_CLASSES, LoadConfig, LoadTarget
from harness.load.report import RequestRecord

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
#: Before each per-request line in a worker's log (the locustfile's ``--mp-events -``), then a tab.
EVENT_MARK = "meshproof-event"
#: The locustfile's --mp-log-exceptions: an exception a worker's user raised (the lines after it: where).
EXCEPTION_MARK = "meshproof-locust-exception"
#: The pod label every object and pod of one run carries.
RUN_LABEL = "meshproof/run"


def target_in_cluster(
    user_class: str = "ingress",
    service: tuple[str, str, int] = DEFAULT_SERVICE,
    *,
    gateway_namespace: str = ISTIO_NAMESPACE,
) -> LoadTarget:
    """Where in-cluster workers send: ``ingress`` through the ingress gateway's Service in
    ``gateway_namespace`` (as outside users do, but from inside the mesh), ``mesh`` straight to the
    service (sidecar to sidecar)."""
    if user_class == "ingress":
        return LoadTarget(ingress_url=f"http://{GATEWAY_SERVICE}.{gateway_namespace}.svc.cluster.local:80")
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
    the rehearsal on this machine (``tests/locust_lifecycle``): in the pod the defaults hold."""
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


def worker_script(namespace: str = NAMESPACE, *, locustfile: str = f"{MOUNT}/locustfile.py") -> str:
    """A worker container's shell: Locust as a worker logging each request to stdout, then its exit
    code. Exit 0 (its master quit) holds the container, so its log stays complete and readable
    until the harness deletes the Deployment; any other code ends the container (a crash the
    harness sees in the pod's status)."""
    args = [
        "locust",
        "-f",
        locustfile,
        "--worker",
        "--master-host",
        f"{NAME}-master.{namespace}.svc.cluster.local",
        "--master-port",
        str(MASTER_PORT),
        "--exit-code-on-error",
        "0",  # failed requests are the load's results, not the worker's failure
        "--mp-events",
        "-",
    ]
    locust = " ".join(shlex.quote(a) for a in args)
    return (
        f'{locust}; code=$?; echo "{EXIT_MARK} $code"; [ "$code" -eq 0 ] || exit "$code"; exec sleep infinity'
    )


def parse_events(text: str) -> tuple[list[RequestRecord], int | None]:
    """A worker's log -> its request records and Locust's exit code (None while it runs)."""
    records: list[RequestRecord] = []
    code: int | None = None
    for line in text.splitlines():
        head, tab, rest = line.partition("\t")
        if head == EVENT_MARK and tab:
            rec = RequestRecord.parse(rest)
            if rec is not None:
                records.append(rec)
            continue
        mark, _, value = line.partition(" ")
        if mark == EXIT_MARK and value.strip().lstrip("-").isdigit():
            code = int(value.strip())
    return records, code


@dataclass(frozen=True)
class MasterExit:
    """What the master's log says once Locust has exited."""

    exit_code: int
    stats: list[dict[str, Any]] | None  # Locust's --json-file entries; None when it wrote none
    log: str  # the log up to the exit line (Locust's own output)

    @property
    def requests(self) -> int:
        """Locust's own count of the run's requests (-1 without stats)."""
        if self.stats is None:
            return -1
        return sum(int(e.get("num_requests") or 0) for e in self.stats)


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
            {"name": "worker", "command": ["sh", "-c", worker_script(namespace)]},
        ),
    ]
