"""Diagnostics of a kube mesh, written into a test's directory when it fails: per proxy Envoy's
config_dump, clusters and stats; every container's log (istiod's too); istiod's syncz; the events of
each namespace involved. Best effort per file: a piece that cannot be read leaves a file saying why.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx

from harness.backends.kube import istio_install
from harness.backends.kube.api import KubeApi
from harness.backends.kube.convergence import IstiodSync
from harness.backends.kube.pods import format_events, name_of, namespace_of
from harness.backends.kube.relay import RELAY_NAMESPACE
from harness.mesh import Workload


def write_diagnostics(
    dest: Path,
    api: KubeApi | None,
    *,
    workloads: Callable[[], Sequence[Workload]],
    mesh_pods: Callable[[], list[dict[str, Any]]],
    http: httpx.Client,
    sync: IstiodSync,
) -> list[Path]:
    """Write the files into ``dest``; ``api`` None: one file saying the backend is not connected.
    ``workloads`` (the proxies to dump; empty unless the mesh runs) and ``mesh_pods`` are the backend's."""
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def put(name: str, produce: Callable[[], str]) -> None:
        try:
            text = produce()
        except Exception as e:  # noqa: BLE001 - diagnostics are best effort, per file
            text = f"unavailable: {type(e).__name__}: {e}"
        p = dest / name
        p.write_text(text)
        written.append(p)

    if api is None:
        put("kube-backend.txt", lambda: "the backend is not connected to a cluster")
        return written
    ws: list[Workload] = []
    pods: list[dict[str, Any]] = []
    try:
        ws = list(workloads())
        pods = mesh_pods()
    except Exception as e:  # noqa: BLE001
        put("kube-backend.txt", functools.partial(str, f"listing workloads failed: {e}"))
    for w in ws:
        for what in ("config_dump", "clusters", "stats"):
            if w.proxy_admin_url:
                put(
                    f"{w.namespace}.{w.name}.{what}.txt",
                    functools.partial(_text, http, f"{w.proxy_admin_url}/{what}"),
                )
    try:
        istiod = api.list("v1", "Pod", istio_install.ISTIO_NAMESPACE, "app=istiod")
    except Exception:  # noqa: BLE001
        istiod = []
    for pod in pods + istiod:
        ns, name = namespace_of(pod), name_of(pod)
        spec = pod.get("spec") or {}
        for c in list(spec.get("initContainers") or []) + list(spec.get("containers") or []):
            cname = str(c.get("name", ""))
            if cname not in ("istio-init", "istio-validation"):
                put(f"{ns}.{name}.{cname}.log", functools.partial(api.pod_log, ns, name, cname, 400))
    for pod in istiod:
        put(f"istiod.{name_of(pod)}.syncz.json", functools.partial(_syncz_text, sync, name_of(pod)))
    namespaces = sorted({namespace_of(p) for p in pods} | {istio_install.ISTIO_NAMESPACE, RELAY_NAMESPACE})
    for ns in namespaces:
        put(f"events.{ns}.txt", functools.partial(_events_text, api, ns))
    return written


def _text(http: httpx.Client, url: str) -> str:
    return http.get(url, timeout=30).text


def _syncz_text(sync: IstiodSync, pod: str) -> str:
    return json.dumps(sync.get(pod, "/debug/syncz").json(), indent=1)


def _events_text(api: KubeApi, namespace: str) -> str:
    return format_events(api.list("v1", "Event", namespace))
