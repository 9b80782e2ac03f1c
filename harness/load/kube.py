"""Distributed Locust inside a Kubernetes cluster (kind / existing backends): a master and N workers
as Deployments in ``other-namespace``, sidecar-injected, so the load enters through the mesh.

Written and unit-tested offline (no cluster has run it yet, like the kube backend itself).

* :func:`manifests` renders the objects: a ConfigMap with ``loadtests/locustfile.py`` and
  ``shapes.py``; the master Deployment + Service (port 5557) and the worker Deployment. The target
  is the service's in-mesh URL (``IngressUser`` with ``--mp-ingress`` pointing at it), so each
  request leaves through the worker's own sidecar with other-namespace's identity.
* The master's command keeps the container alive after Locust exits (``; sleep infinity``), so the
  harness can read ``/tmp/locust.json`` (Locust's stats, per-second counts) before deleting the
  objects; it is stopped through the same stop file as the local run (``/tmp/stop``).
* :func:`report_from_locust_stats` turns that JSON into the same :class:`~harness.load.LoadReport`
  (per-second resolution: phases are split at whole seconds; latency percentiles are the run's).
"""

from __future__ import annotations

import math
import shlex
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from harness.load import (
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
#: The official image of the pinned Locust (the locustfile comes from the ConfigMap).
IMAGE = "locustio/locust:2.47.0"
MOUNT = "/mnt/locust"


def target_in_cluster(service: tuple[str, str, int] = ("microservice-1", "sample", 3000)) -> LoadTarget:
    name, ns, port = service
    return LoadTarget(ingress_url=f"http://{name}.{ns}.svc.cluster.local:{port}")


def locust_args(config: LoadConfig, target: LoadTarget, run_id: str) -> list[str]:
    """The master's Locust arguments (workers get only --worker and the master's address)."""
    c = config
    args = [
        "-f",
        f"{MOUNT}/locustfile.py",
        "--master",
        "--headless",
        "--expect-workers",
        str(max(1, c.processes)),
        "--users",
        str(c.users),
        "--spawn-rate",
        f"{c.rate:g}",
        "--exit-code-on-error",
        "0",
        "--only-summary",
        "--json-file",
        "/tmp/locust",
        "--mp-shape",
        c.shape,
        "--mp-duration",
        f"{c.duration_s:g}",
        "--mp-ingress",
        target.ingress_url,
        "--mp-path",
        c.path,
        "--mp-run-id",
        run_id,
        "--mp-stop-file",
        "/tmp/stop",
    ]
    return [*args, *USER_CLASSES["ingress"]]


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
    if config.user_class != "ingress":
        from harness.errors import UnsupportedFeature

        raise UnsupportedFeature(
            "in-cluster Locust sends from its own sidecar: use user_class 'ingress' with the service's "
            "in-mesh URL as the target (target_in_cluster())"
        )
    labels = {"app": NAME, "meshproof/run": run_id}
    inject = {"sidecar.istio.io/inject": "true"}
    files = {
        "locustfile.py": locustfile.read_text(),
        "shapes.py": (locustfile.parent / "shapes.py").read_text(),
    }
    volume = {"name": "locustfile", "configMap": {"name": NAME}}
    mount = {"name": "locustfile", "mountPath": MOUNT}
    master_cmd = " ".join(shlex.quote(a) for a in ["locust", *locust_args(config, target, run_id)])

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
                    "metadata": {"labels": {**pod_labels, **inject}, "annotations": {}},
                    "spec": {
                        "serviceAccountName": "client",
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
                "selector": {"app": NAME, "role": "master"},
                "ports": [{"name": "tcp-locust", "port": MASTER_PORT, "targetPort": MASTER_PORT}],
            },
        },
        deployment(
            "master",
            1,
            {
                "name": "master",
                "command": ["sh", "-c", f"{master_cmd}; sleep infinity"],
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


def report_from_locust_stats(
    config: LoadConfig,
    target: LoadTarget,
    stats: Sequence[Mapping[str, Any]],
    phases: Sequence[PhaseMark],
    *,
    started_at: float,
    ended_at: float,
    request_id_prefix: str = "",
    workdir: Path = Path(),
) -> LoadReport:
    """A LoadReport from Locust's ``--json-file`` entries (per-endpoint, per-second counts)."""
    reqs: Counter[int] = Counter()
    fails: Counter[int] = Counter()
    hist: Counter[float] = Counter()
    total = failed = 0
    for e in stats:
        total += int(e.get("num_requests", 0))
        failed += int(e.get("num_failures", 0))
        for t, n in (e.get("num_reqs_per_sec") or {}).items():
            reqs[int(t)] += int(n)
        for t, n in (e.get("num_fail_per_sec") or {}).items():
            fails[int(t)] += int(n)
        for ms, n in (e.get("response_times") or {}).items():
            hist[float(ms)] += int(n)
    latency = _hist_latency(hist)
    duration = max(ended_at - started_at, 1e-9)

    def window(lo: float, hi: float) -> tuple[int, int]:
        secs = range(math.floor(lo), math.ceil(hi))
        return sum(reqs[s] for s in secs), sum(fails[s] for s in secs)

    phase_stats = []
    for m in phases:
        end = m.end if m.end is not None else ended_at
        n, k = window(m.start, end)
        seconds = max(end - m.start, 1e-9)
        phase_stats.append(
            PhaseStats(
                name=m.name,
                start_s=m.start - started_at,
                end_s=end - started_at,
                requests=n,
                failures=k,
                by_status=MappingProxyType({}),
                rps=n / seconds,
                error_ratio=k / n if n else 0.0,
                latency=latency,
                versions=MappingProxyType({}),
                pods=MappingProxyType({}),
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
        by_status=MappingProxyType({}),
        rps=total / duration,
        latency=latency,
        phases=tuple(phase_stats),
        series=series,
        errors=MappingProxyType({}),
        request_id_prefix=request_id_prefix,
        locust_requests=total,
        locust_exit_code=0,
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
