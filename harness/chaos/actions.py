# Over 500 lines: every Chaos Toolkit action with the action that undoes it, side by side.
"""Chaos Toolkit actions over the Backend protocol, each paired with the action that undoes it.

Use them as python providers (``module: harness.chaos.actions``). Every function takes the
experiment's ``configuration`` (Chaos Toolkit injects it) to find the mesh (see
:mod:`harness.chaos.context`), records what it changes in the ledger *before* changing it,
and its undo removes the record *after* undoing. Undoing what was never done is a no-op, so
every undo is safe as a rollback whatever point the run reached.

==========================  ===========================  ============================================
action                      undo (rollback)              what it changes
==========================  ===========================  ============================================
inject_route_fault          remove_route_fault           one named http route of a VirtualService
fail_replicas               clear_replica_faults         the app admin fault of replicas
kill_replica                restore_replica              a replica's app process / pod
apply_resource              restore_resources            any Istio objects (from a YAML file)
remove_resource             restore_resources            deletes Istio objects (from a YAML file)
start_load                  stop_load                    a background load generator process
stop_control_plane          start_control_plane          istiod
(any)                       rollback_all                 everything the ledger still holds
==========================  ===========================  ============================================
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from harness import proc, wait
from harness.chaos.context import Configuration, Ledger, chaos_dir, mesh, state_dir
from harness.errors import BackendError, HarnessError, UserError
from harness.mesh import Fault

__all__ = [
    "apply_resource",
    "clear_replica_faults",
    "fail_replicas",
    "inject_route_fault",
    "kill_replica",
    "remove_resource",
    "remove_route_fault",
    "restore_replica",
    "restore_resources",
    "rollback_all",
    "start_control_plane",
    "start_load",
    "stop_control_plane",
    "stop_load",
]

#: metadata the API server owns; dropped before an object is applied back
_SERVER_FIELDS = ("uid", "creationTimestamp", "generation", "managedFields", "selfLink")


# --------------------------------------------------------------------------- objects


def object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('namespace') or 'default'}/{meta.get('name')}"


def find_object(kind: str, ref: str, configuration: Configuration = None) -> dict[str, Any] | None:
    """The running Istio object ``kind`` named ``ns/name`` (None when absent)."""
    ns, _, name = ref.rpartition("/")
    key = f"{kind}/{ns or 'default'}/{name}"
    for obj in mesh(configuration).istio_objects():
        if object_key(obj) == key:
            return obj
    return None


def _applicable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` as it can be applied back: server-owned fields dropped, ``resourceVersion`` kept
    (on Kubernetes it makes the apply fail instead of overwriting a concurrent edit)."""
    body = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in dict(body.get("metadata") or {}).items() if k not in _SERVER_FIELDS}
    body["metadata"] = meta
    return body


def _apply_bodies(bodies: Sequence[Mapping[str, Any]], label: str, configuration: Configuration) -> float:
    path = chaos_dir(configuration) / "objects" / f"{time.time_ns()}-{label}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all([dict(b) for b in bodies], sort_keys=False))
    try:
        return mesh(configuration).apply([path])
    finally:
        path.unlink(missing_ok=True)


def _delete_bodies(bodies: Sequence[Mapping[str, Any]], label: str, configuration: Configuration) -> float:
    path = chaos_dir(configuration) / "objects" / f"{time.time_ns()}-{label}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump_all([dict(b) for b in bodies], sort_keys=False))
    try:
        return mesh(configuration).delete([path])
    finally:
        path.unlink(missing_ok=True)


def http_route(vs: Mapping[str, Any], route: str) -> tuple[int, dict[str, Any]]:
    """Index and body of the http route named ``route``; UserError listing the names otherwise."""
    routes = list((vs.get("spec") or {}).get("http") or [])
    for i, r in enumerate(routes):
        if isinstance(r, dict) and r.get("name") == route:
            return i, r
    names = ", ".join(str(r.get("name")) for r in routes if isinstance(r, dict) and r.get("name")) or "none"
    raise UserError(
        f"VirtualService {object_key(vs)} has no http route named {route!r} (named routes: {names}). "
        "Fix: name the route in the VirtualService, or use one of the names listed"
    )


def route_fault(
    abort_percent: float, abort_status: int, delay_ms: int, delay_percent: float
) -> dict[str, Any]:
    """The VirtualService ``HTTPFaultInjection`` for the arguments (Istio's field names)."""
    fault: dict[str, Any] = {}
    if abort_percent:
        fault["abort"] = {"percentage": {"value": float(abort_percent)}, "httpStatus": int(abort_status)}
    if delay_ms:
        fault["delay"] = {"percentage": {"value": float(delay_percent)}, "fixedDelay": f"{int(delay_ms)}ms"}
    if not fault:
        raise UserError(
            "inject_route_fault: nothing to inject. Fix: set abort_percent and/or delay_ms (with delay_percent)"
        )
    return fault


def _validate(bodies: Sequence[Mapping[str, Any]], configuration: Configuration) -> None:
    """Istio's validation of objects about to be applied, in the context of what the mesh runs."""
    from harness.istio import Bundle, load_text, validate_documents

    running = Bundle(load_text(yaml.safe_dump_all(mesh(configuration).istio_objects()), "<running mesh>"))
    docs = load_text(yaml.safe_dump_all([dict(b) for b in bodies], sort_keys=False), "<chaos action>")
    validate_documents(docs, running)


# --------------------------------------------------------------------------- route faults


def inject_route_fault(
    virtual_service: str,
    route: str,
    abort_percent: float = 0.0,
    abort_status: int = 503,
    delay_ms: int = 0,
    delay_percent: float = 100.0,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Inject an abort and/or delay into the http route named ``route`` of VirtualService
    ``virtual_service`` (``ns/name``), and nothing else: the other routes and fields stay as they
    are. The object as it was is remembered in the state dir for :func:`remove_route_fault`."""
    vs = find_object("VirtualService", virtual_service, configuration)
    if vs is None:
        raise UserError(f"no VirtualService {virtual_service} runs in the mesh. Fix: check `ns/name`")
    index, before_route = http_route(vs, route)
    fault = route_fault(abort_percent, abort_status, delay_ms, delay_percent)
    patched = _applicable(vs)
    patched["spec"]["http"][index] = {**before_route, "fault": fault}
    _validate([patched], configuration)
    key = f"route-fault:{virtual_service}/{route}"
    Ledger.of(configuration).record(
        key,
        "route-fault",
        {"virtual_service": virtual_service, "route": route, "before_route": before_route, "fault": fault},
    )
    seconds = _apply_bodies([patched], "route-fault", configuration)
    return {"virtual_service": virtual_service, "route": route, "fault": fault, "propagation_s": seconds}


def remove_route_fault(
    virtual_service: str, route: str, configuration: Configuration = None
) -> dict[str, Any]:
    """Put the route back as it was before :func:`inject_route_fault`, if it still carries the
    injected fault. Only that route is touched: concurrent edits elsewhere in the object stay."""
    ledger = Ledger.of(configuration)
    key = f"route-fault:{virtual_service}/{route}"
    entry = ledger.get(key)
    if entry is None:
        return {"virtual_service": virtual_service, "route": route, "restored": False, "note": "no fault"}
    vs = find_object("VirtualService", virtual_service, configuration)
    restored = False
    seconds = 0.0
    if vs is not None:
        routes = list((vs.get("spec") or {}).get("http") or [])
        index = next((i for i, r in enumerate(routes) if r.get("name") == route), None)
        if index is not None and routes[index].get("fault") == entry.data["fault"]:
            body = _applicable(vs)
            body["spec"]["http"][index] = copy.deepcopy(dict(entry.data["before_route"]))
            seconds = _apply_bodies([body], "route-restore", configuration)
            restored = True
    ledger.done(key)
    return {
        "virtual_service": virtual_service,
        "route": route,
        "restored": restored,
        "propagation_s": seconds,
    }


# --------------------------------------------------------------------------- replicas


def _pods(pods: str | Sequence[str]) -> list[str]:
    return [pods] if isinstance(pods, str) else [str(p) for p in pods]


def fail_replicas(
    pods: str | Sequence[str],
    status: int = 503,
    rate: float = 1.0,
    delay_ms: int = 0,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Make replicas answer ``status`` (and/or wait ``delay_ms``) for ``rate`` of requests, through
    each app's admin fault endpoint."""
    backend = mesh(configuration)
    workloads = [backend.workload(p) for p in _pods(pods)]  # unknown pods fail before anything changes
    ledger = Ledger.of(configuration)
    for w in workloads:
        ledger.record(f"app-fault:{w.ref}", "app-fault", {"pod": w.ref})
        backend.inject_fault(w.ref, Fault(status=status, rate=rate, delay_ms=delay_ms))
    return {"pods": [w.ref for w in workloads], "status": status, "rate": rate, "delay_ms": delay_ms}


def clear_replica_faults(pods: str | Sequence[str], configuration: Configuration = None) -> dict[str, Any]:
    backend = mesh(configuration)
    ledger = Ledger.of(configuration)
    cleared = []
    for pod in _pods(pods):
        ref = backend.workload(pod).ref
        backend.clear_fault(ref)
        ledger.done(f"app-fault:{ref}")
        cleared.append(ref)
    return {"cleared": cleared}


def kill_replica(pod: str, configuration: Configuration = None) -> dict[str, Any]:
    """Kill a replica's app (local: the supervisor kills the process; kube: the pod is deleted)."""
    backend = mesh(configuration)
    w = backend.workload(pod)
    if w.role == "gateway":
        raise UserError(f"kill_replica: {w.ref} is the ingress gateway. Fix: name an app replica")
    Ledger.of(configuration).record(f"kill:{w.ref}", "kill", {"pod": w.ref, "deployment": w.deployment})
    backend.kill(w.ref)
    return {"killed": w.ref}


def restore_replica(pod: str, configuration: Configuration = None) -> dict[str, Any]:
    """Bring a killed replica back and wait until it is ready (no-op if it was not killed)."""
    backend = mesh(configuration)
    ledger = Ledger.of(configuration)
    ref = backend.workload(pod).ref if "/" not in pod else pod
    key = f"kill:{ref}"
    if ledger.get(key) is None:
        return {"pod": ref, "restored": False, "note": "not killed"}
    t0 = time.monotonic()
    backend.restart(ref)
    ledger.done(key)
    return {"pod": ref, "restored": True, "seconds": round(time.monotonic() - t0, 3)}


# --------------------------------------------------------------------------- any Istio object


def _file_objects(path: str) -> list[dict[str, Any]]:
    from harness.istio import load_paths

    p = Path(path)
    if not p.is_file():
        raise UserError(f"no such file {path}. Fix: give the path of a YAML file (relative to the cwd)")
    return [dict(d.body) for d in load_paths([p])]


def apply_resource(path: str, configuration: Configuration = None) -> dict[str, Any]:
    """Validate and apply the Istio objects in ``path``; each object's predecessor (or its
    absence) is remembered for :func:`restore_resources`."""
    objs = _file_objects(path)
    _validate(objs, configuration)
    ledger = Ledger.of(configuration)
    running = {object_key(o): o for o in mesh(configuration).istio_objects()}
    for o in objs:
        key = object_key(o)
        before = running.get(key)
        ledger.record(f"object:{key}", "object", {"object": key, "before": before and _applicable(before)})
    seconds = _apply_bodies(objs, "apply", configuration)
    return {"applied": [object_key(o) for o in objs], "propagation_s": seconds}


def remove_resource(path: str, configuration: Configuration = None) -> dict[str, Any]:
    """Delete the Istio objects named in ``path`` (those that run); restorable like apply_resource."""
    objs = _file_objects(path)
    ledger = Ledger.of(configuration)
    running = {object_key(o): o for o in mesh(configuration).istio_objects()}
    present = [running[object_key(o)] for o in objs if object_key(o) in running]
    for o in present:
        key = object_key(o)
        ledger.record(f"object:{key}", "object", {"object": key, "before": _applicable(o)})
    seconds = _delete_bodies(present, "remove", configuration) if present else 0.0
    return {"removed": [object_key(o) for o in present], "propagation_s": seconds}


def restore_resources(path: str | None = None, configuration: Configuration = None) -> dict[str, Any]:
    """Put back every object changed by apply_resource/remove_resource (of ``path``, or all)."""
    keys = {object_key(o) for o in _file_objects(path)} if path else None
    ledger = Ledger.of(configuration)
    entries = [
        e for e in ledger.entries() if e.kind == "object" and (keys is None or e.data["object"] in keys)
    ]
    restored = [restore_object(e.data, configuration) for e in entries]
    for e in entries:
        ledger.done(e.key)
    return {"restored": restored}


def restore_object(data: Mapping[str, Any], configuration: Configuration) -> str:
    key = str(data["object"])
    kind, _, ref = key.partition("/")
    current = find_object(kind, ref, configuration)
    before = data.get("before")
    if before is None:
        if current is not None:
            _delete_bodies([current], "restore-delete", configuration)
            return f"deleted {key}"
        return f"{key} already absent"
    if current is not None and current.get("spec") == before.get("spec"):
        return f"{key} already as before"
    body = dict(before)
    if current is not None:  # apply over the current version (kube: its resourceVersion)
        meta = dict(body.get("metadata") or {})
        rv = (current.get("metadata") or {}).get("resourceVersion")
        if rv:
            meta["resourceVersion"] = rv
        else:
            meta.pop("resourceVersion", None)
        body["metadata"] = meta
    else:
        body["metadata"] = {
            k: v for k, v in dict(body.get("metadata") or {}).items() if k != "resourceVersion"
        }
    _apply_bodies([body], "restore", configuration)
    return f"restored {key}"


# --------------------------------------------------------------------------- load


#: Locust runs started by this process, by (state dir, load name)
_locust_runs: dict[tuple[str, str], Any] = {}


def start_load(
    name: str = "default",
    source: str = "ingress",
    concurrency: int = 4,
    path: str = "/api/greet",
    headers: Mapping[str, str] | None = None,
    engine: str = "locust",
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Start background load from ``source`` (``ingress`` or an in-mesh client deployment) with
    ``concurrency`` requests in flight: ``engine`` ``locust`` (Locust users sending back to back,
    :class:`harness.load.LocustRun`) or ``sampler`` (the harness sampler in a loop). Probes read
    its recent window. Returns once the load runs."""
    concurrency = int(concurrency)
    if not 1 <= concurrency <= 64:
        raise UserError(f"start_load: concurrency {concurrency} must be in 1..64")
    if engine not in ("locust", "sampler"):
        raise UserError(f"start_load: unknown engine {engine!r}. Fix: use locust or sampler")
    backend = mesh(configuration)
    backend.workloads()  # fail now, not in the child, when no mesh runs
    ledger = Ledger.of(configuration)
    key = f"load:{name}"
    if ledger.get(key) is not None:
        raise UserError(f"load {name!r} is already running. Fix: stop_load first, or use another name")
    workdir = chaos_dir(configuration) / "load" / name
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    data: dict[str, Any] = {
        "name": name,
        "engine": engine,
        "workdir": str(workdir),
        "source": source,
        "concurrency": concurrency,
        "pid": 0,
    }
    if engine == "locust":
        from harness.load import LoadConfig, LoadTarget, LocustRun

        user_class = "ingress" if source == "ingress" else "mesh"
        target = (
            LoadTarget.from_mesh(backend, client=source)
            if user_class == "mesh"
            else LoadTarget.from_mesh(backend)
        )
        run = LocustRun(
            LoadConfig(users=concurrency, user_class=user_class, path=path, headers=dict(headers or {})),
            target,
            workdir=workdir,
        )
        ledger.record(key, "load", data)
        run.start()
        _locust_runs[(str(state_dir(configuration)), name)] = run
        ledger.update(key, pid=run.pid)
        return {"name": name, "engine": engine, "pid": run.pid, "source": source, "users": concurrency}
    records, log = workdir / "records.jsonl", workdir / "loadgen.log"
    argv = [
        sys.executable,
        "-m",
        "harness.chaos.loadgen",
        "--state",
        str(state_dir(configuration)),
        "--out",
        str(records),
        "--source",
        source,
        "--path",
        path,
        "--concurrency",
        str(concurrency),
    ]
    for k, v in (headers or {}).items():
        argv += ["--header", f"{k}:{v}"]
    ledger.record(key, "load", {**data, "records": str(records)})
    child = proc.spawn(
        argv,
        log_path=log,
        new_session=True,
        die_with_parent=True,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    ledger.update(key, pid=child.pid)

    def answering() -> bool:
        if child.poll() is not None:
            raise HarnessError(f"the load generator exited {child.returncode}: {proc.tail(log)}")
        return records.is_file() and records.stat().st_size > 0

    wait.until(answering, what=f"the first answers to load {name!r}", timeout=30, interval=0.05)
    return {"name": name, "engine": engine, "pid": child.pid, "source": source, "concurrency": concurrency}


def stop_load(name: str = "default", configuration: Configuration = None) -> dict[str, Any]:
    """Stop the background load ``name`` and summarise everything it saw."""
    from harness.chaos.loadgen import window_of

    ledger = Ledger.of(configuration)
    key = f"load:{name}"
    entry = ledger.get(key)
    if entry is None:
        return {"name": name, "stopped": False, "note": "not running"}
    run = _locust_runs.pop((str(state_dir(configuration)), name), None)
    note = ""
    if run is not None:
        try:
            run.stop()
        except HarnessError as e:  # Locust itself failed; its process group is gone all the same
            note = str(e).splitlines()[0]
    else:
        terminate_load(entry.data)
    ledger.done(key)
    w = window_of(entry.data, entry.since, time.time())
    out = {"name": name, "stopped": True, "requests": w.total, "errors": w.errors, "status": w.status}
    return {**out, "note": note} if note else out


def terminate_load(data: Mapping[str, Any]) -> None:
    """Stop a load generator from another process than the one that started it (by its pid)."""
    pid = int(data.get("pid") or 0)
    if data.get("engine") == "locust" and data.get("workdir"):
        (Path(str(data["workdir"])) / "stop").touch()  # the locustfile's shape stops gracefully
    if not pid or not _is_loadgen(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        wait.until(
            lambda: not _is_loadgen(pid), what=f"load generator {pid} to exit", timeout=15, interval=0.05
        )
    except HarnessError:
        os.killpg(pid, signal.SIGKILL)


def _is_loadgen(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) load generator (guards against pid reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    ours = b"harness.chaos.loadgen" in cmdline or b"locust" in cmdline
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and ours


# --------------------------------------------------------------------------- control plane


def stop_control_plane(configuration: Configuration = None) -> dict[str, Any]:
    """Stop istiod. The proxies keep serving with the last config they ACKed."""
    Ledger.of(configuration).record("control-plane", "control-plane", {})
    mesh(configuration).stop_control_plane()
    return {"control_plane": "stopped"}


def start_control_plane(configuration: Configuration = None) -> dict[str, Any]:
    """Start istiod again and wait until every proxy has reconnected and ACKed its config."""
    ledger = Ledger.of(configuration)
    t0 = time.monotonic()
    mesh(configuration).start_control_plane()
    ledger.done("control-plane")
    return {"control_plane": "running", "reconnected_and_acked_s": round(time.monotonic() - t0, 3)}


# --------------------------------------------------------------------------- everything


def rollback_all(configuration: Configuration = None) -> dict[str, Any]:
    """Undo everything the ledger still holds, newest first (a catch-all rollback)."""
    from harness.chaos.residue import undo_all

    undone, failed = undo_all(configuration)
    if failed:
        raise BackendError("could not undo: " + "; ".join(failed))
    return {"undone": undone}
