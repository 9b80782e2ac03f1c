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
set_route_policy            restore_route_policy         retries/timeout of one named http route
fail_replicas               clear_replica_faults         a replica's own sidecar (or app admin) fault
shorten_cert_lifetime       restore_cert_lifetime        a replica's workload certificate lifetime
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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness import proc, wait
from harness.chaos import objects
from harness.chaos.context import Configuration, chaos_dir, mesh, state_dir
from harness.chaos.ledger import Ledger
from harness.errors import BackendError, HarnessError, StateError, UserError
from harness.mesh import FAULT_VIAS, Fault

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
    "restore_route_policy",
    "rollback_all",
    "restore_cert_lifetime",
    "set_route_policy",
    "shorten_cert_lifetime",
    "start_control_plane",
    "start_load",
    "stop_control_plane",
    "stop_load",
]

# --------------------------------------------------------------------------- one http route


def http_route(vs: Mapping[str, Any], route: str) -> tuple[int, dict[str, Any]]:
    """Index and body of the http route named ``route``; UserError listing the names otherwise."""
    routes = list((vs.get("spec") or {}).get("http") or [])
    for i, r in enumerate(routes):
        if isinstance(r, dict) and r.get("name") == route:
            return i, r
    names = ", ".join(str(r.get("name")) for r in routes if isinstance(r, dict) and r.get("name")) or "none"
    raise UserError(
        f"VirtualService {objects.object_key(vs)} has no http route named {route!r} (named routes: {names}). "
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


def _route_of(
    virtual_service: str, route: str, configuration: Configuration
) -> tuple[dict[str, Any], int, Any]:
    """The running VirtualService ``ns/name``, the index of its http route ``route``, and that route."""
    vs = objects.find_object("VirtualService", virtual_service, configuration)
    if vs is None:
        raise UserError(f"no VirtualService {virtual_service} runs in the mesh. Fix: check `ns/name`")
    index, before_route = http_route(vs, route)
    return vs, index, before_route


def _change_route(
    virtual_service: str,
    route: str,
    found: tuple[dict[str, Any], int, Any],
    change: Mapping[str, Any],
    kind: str,
    configuration: Configuration,
    data: Mapping[str, Any],
) -> float:
    """Apply route ``found`` (:func:`_route_of`) with ``change`` merged in (validated first),
    remembering the route as it was, and ``data``, in the ledger under ``<kind>:<vs>/<route>``;
    returns the propagation seconds."""
    vs, index, before_route = found
    patched = objects.applicable(vs)
    patched["spec"]["http"][index] = {**before_route, **change}
    objects.validate([patched], configuration)
    Ledger.of(configuration).record(
        f"{kind}:{virtual_service}/{route}",
        kind,
        {"virtual_service": virtual_service, "route": route, "before_route": before_route, **data},
    )
    return objects.apply_bodies([patched], kind, configuration)


def _put_route_back(
    kind: str,
    virtual_service: str,
    route: str,
    configuration: Configuration,
    *,
    still_ours: Callable[[Mapping[str, Any], Mapping[str, Any]], bool],
    action: str,
) -> tuple[bool, bool, float]:
    """Undo :func:`_change_route`: put the route back as the ledger remembers it, if ``still_ours(route
    now, ledger data)``; only that route is touched. Returns (ledgered, restored, propagation s)."""
    ledger = Ledger.of(configuration)
    key = f"{kind}:{virtual_service}/{route}"
    entry = ledger.get(key)
    if entry is None:
        return False, False, 0.0
    vs = objects.find_object("VirtualService", virtual_service, configuration)
    restored, seconds = False, 0.0
    if vs is not None:
        routes = list((vs.get("spec") or {}).get("http") or [])
        index = next((i for i, r in enumerate(routes) if r.get("name") == route), None)
        if index is not None and still_ours(routes[index], entry.data):
            body = objects.applicable(vs)
            body["spec"]["http"][index] = copy.deepcopy(dict(entry.data["before_route"]))
            seconds = objects.apply_bodies([body], action, configuration)
            restored = True
    ledger.done(key)
    return True, restored, seconds


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
    found = _route_of(virtual_service, route, configuration)
    fault = route_fault(abort_percent, abort_status, delay_ms, delay_percent)
    change = {"fault": fault}
    seconds = _change_route(virtual_service, route, found, change, "route-fault", configuration, change)
    return {"virtual_service": virtual_service, "route": route, "fault": fault, "propagation_s": seconds}


def remove_route_fault(
    virtual_service: str, route: str, configuration: Configuration = None
) -> dict[str, Any]:
    """Put the route back as it was before :func:`inject_route_fault`, if it still carries the
    injected fault. Only that route is touched: concurrent edits elsewhere in the object stay."""
    ledgered, restored, seconds = _put_route_back(
        "route-fault",
        virtual_service,
        route,
        configuration,
        still_ours=lambda now, data: now.get("fault") == data["fault"],
        action="route-restore",
    )
    if not ledgered:
        return {"virtual_service": virtual_service, "route": route, "restored": False, "note": "no fault"}
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
    status: int | None = 503,
    rate: float = 1.0,
    delay_ms: int = 0,
    via: str = "sidecar",
    proof_from: str = "ingress",
    proof_path: str = "/api/greet",
    proof_timeout_s: float = 30.0,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Make replicas answer ``status`` (and/or wait ``delay_ms``) for ``rate`` of requests, and prove
    it before the method goes on.

    ``via`` ``sidecar`` (default): each replica's own inbound Envoy, through an EnvoyFilter that
    selects only that replica (:mod:`harness.sidecar_fault`; any HTTP service). The effect is proven
    on the victim's own Envoy: its inbound fault counters (``aborts_injected`` for a status,
    ``delays_injected`` for a delay) must move within ``proof_timeout_s`` while requests go from
    ``proof_from`` to ``proof_path`` (batches of 10; with a running load they move sooner), or the
    action fails with the counters seen. ``via`` ``app``: the sample app's ``/admin/fault`` (a
    second way to compare against), proven by the app reporting the fault active."""
    if via not in FAULT_VIAS:
        raise UserError(f"fail_replicas: via {via!r} is not one of {', '.join(FAULT_VIAS)}")
    raw_status: Any = status  # Chaos Toolkit passes configuration values as given (None, "none", "503")
    status = None if raw_status in (None, "", "none") else int(raw_status)
    rate, delay_ms = float(rate), int(delay_ms or 0)
    if status is None and not delay_ms:
        raise UserError("fail_replicas: nothing to inject. Fix: set status and/or delay_ms")
    if not 0.0 < rate <= 1.0:
        raise UserError(f"fail_replicas: rate {rate:g} must be in (0, 1]")
    backend = mesh(configuration)
    workloads = [backend.workload(p) for p in _pods(pods)]  # unknown pods fail before anything changes
    if via == "sidecar":  # bad victims (gateway, no sidecar, no inbound HTTP) fail before any change
        from harness import sidecar_fault
        from harness.chaos.context import admin_http

        with admin_http(configuration) as http:
            for w in workloads:
                sidecar_fault.check_victim(http, w)
    ledger = Ledger.of(configuration)
    fault = Fault(status=status, rate=rate, delay_ms=delay_ms, via=via)
    evidence: list[dict[str, Any]] = []
    for w in workloads:
        kind = "replica-fault" if via == "sidecar" else "app-fault"
        ledger.record(f"{kind}:{w.ref}", kind, {"pod": w.ref, "via": via})
        if via == "sidecar":
            evidence.append(
                _proven_sidecar_fault(
                    backend, w, fault, proof_from, proof_path, float(proof_timeout_s), configuration
                )
            )
        else:
            backend.inject_fault(w.ref, fault)
            evidence.append(_proven_app_fault(w, configuration))
    return {
        "pods": [w.ref for w in workloads],
        "status": status,
        "rate": rate,
        "delay_ms": delay_ms,
        "via": via,
        "evidence": evidence,
    }


def _proven_sidecar_fault(
    backend: Any,
    w: Any,
    fault: Fault,
    source: str,
    path: str,
    timeout_s: float,
    configuration: Configuration,
) -> dict[str, Any]:
    from contextlib import nullcontext

    from harness import sidecar_fault
    from harness.chaos.context import admin_http
    from harness.traffic.client import Sampler

    with admin_http(configuration) as http:
        before = sidecar_fault.inbound_counts(http, w)
        injected = backend.inject_fault(w.ref, fault)
        counter = "aborts_injected" if fault.status is not None else "delays_injected"
        seen: dict[str, Any] = {}
        t0 = time.monotonic()
        # proof_from "": send nothing, wait for the traffic already flowing (a running load)
        sampling = Sampler(timeout=max(10.0, fault.delay_ms / 1000 + 5)) if source else nullcontext()
        with sampling as sampler:

            def moved() -> bool:
                d = sidecar_fault.inbound_counts(http, w) - before
                seen.update(aborts=d.aborts, delays=d.delays, requests=d.requests)
                if (d.aborts if fault.status is not None else d.delays) > 0:
                    return True
                if sampler is not None:
                    sampler.sample(backend, source=source, path=path, n=10, concurrency=2)
                raise _NotYet(
                    f"{w.ref}'s inbound Envoy: {d.requests} requests, {d.aborts} aborts_injected, "
                    f"{d.delays} delays_injected since the fault"
                )

            try:
                wait.until(
                    moved,
                    what=f"the fault to take effect on {w.ref}'s own sidecar ({counter} moving)",
                    timeout=timeout_s,
                    interval=0.05,
                    retry_on=(_NotYet,),
                )
            except HarnessError as e:
                raise BackendError(
                    f"fail_replicas: the sidecar fault on {w.ref} did not take effect within "
                    f"{timeout_s:g} s: its inbound Envoy counted {seen.get('requests', 0)} requests, "
                    f"{seen.get('aborts', 0)} aborts_injected, {seen.get('delays', 0)} delays_injected "
                    f"({f'traffic from {source} to {path}' if source else 'the traffic already flowing'})"
                ) from e
    return {**injected, "proof": {counter: seen, "proven_s": round(time.monotonic() - t0, 3)}}


def _proven_app_fault(w: Any, configuration: Configuration) -> dict[str, Any]:
    import httpx

    from harness.chaos.context import admin_http

    with admin_http(configuration) as http:
        try:
            doc = http.get(f"{w.admin_url}/admin/fault").json()
        except (httpx.HTTPError, ValueError) as e:
            raise BackendError(f"fail_replicas: cannot read {w.ref}'s admin fault: {e}") from e
    if not doc.get("active"):
        raise BackendError(f"fail_replicas: {w.ref}'s app does not report the fault active: {doc}")
    return {"pod": w.ref, "via": "app", "proof": {"admin_fault": doc}}


def clear_replica_faults(pods: str | Sequence[str], configuration: Configuration = None) -> dict[str, Any]:
    """Remove every replica fault of ``pods`` (sidecar EnvoyFilter and app admin fault alike)."""
    backend = mesh(configuration)
    ledger = Ledger.of(configuration)
    cleared = []
    for pod in _pods(pods):
        ref = backend.workload(pod).ref
        backend.clear_fault(ref)
        ledger.done(f"replica-fault:{ref}")
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


def apply_resource(path: str, configuration: Configuration = None) -> dict[str, Any]:
    """Validate and apply the Istio objects in ``path``; each object's predecessor (or its
    absence) is remembered for :func:`restore_resources`."""
    objs = objects.file_objects(path)
    objects.validate(objs, configuration)
    ledger = Ledger.of(configuration)
    running = {objects.object_key(o): o for o in mesh(configuration).istio_objects()}
    for o in objs:
        key = objects.object_key(o)
        before = running.get(key)
        ledger.record(
            f"object:{key}", "object", {"object": key, "before": before and objects.applicable(before)}
        )
    seconds = objects.apply_bodies(objs, "apply", configuration)
    return {"applied": [objects.object_key(o) for o in objs], "propagation_s": seconds}


def remove_resource(path: str, configuration: Configuration = None) -> dict[str, Any]:
    """Delete the Istio objects named in ``path`` (those that run); restorable like apply_resource."""
    objs = objects.file_objects(path)
    ledger = Ledger.of(configuration)
    running = {objects.object_key(o): o for o in mesh(configuration).istio_objects()}
    present = [running[objects.object_key(o)] for o in objs if objects.object_key(o) in running]
    for o in present:
        key = objects.object_key(o)
        ledger.record(f"object:{key}", "object", {"object": key, "before": objects.applicable(o)})
    seconds = objects.delete_bodies(present, "remove", configuration) if present else 0.0
    return {"removed": [objects.object_key(o) for o in present], "propagation_s": seconds}


def restore_resources(path: str | None = None, configuration: Configuration = None) -> dict[str, Any]:
    """Put back every object changed by apply_resource/remove_resource (of ``path``, or all)."""
    keys = {objects.object_key(o) for o in objects.file_objects(path)} if path else None
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
    current = objects.find_object(kind, ref, configuration)
    before = data.get("before")
    if before is None:
        if current is not None:
            objects.delete_bodies([current], "restore-delete", configuration)
            return f"deleted {key}"
        return f"{key} already absent"
    if current is not None and objects.comparable(current) == objects.comparable(before):
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
    objects.apply_bodies([body], "restore", configuration)
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


class _NotYet(HarnessError):
    """A condition polled by :func:`harness.wait.until` does not hold yet; the message says why."""


def xds_connections(configuration: Configuration = None) -> dict[str, int]:
    """Per proxy (``ns/pod``), Envoy's ``control_plane.connected_state`` gauge: 1 while its ADS
    stream is up, 0 once it ended (see :data:`harness.envoy.XDS_CONNECTED`)."""
    import httpx

    from harness import envoy

    out: dict[str, int] = {}
    with httpx.Client(timeout=5.0, trust_env=False) as http:
        for w in mesh(configuration).workloads():
            if not w.proxy_admin_url:
                continue
            value = envoy.xds_connected(http, w.proxy_admin_url)
            if value is None:
                raise StateError(
                    f"proxy {w.ref} does not expose {envoy.XDS_CONNECTED}, so its xDS connection cannot "
                    "be observed. Fix: restart the mesh with this meshproof (harness/proxy_stats.py adds "
                    "the gauge to every proxy's proxyStatsMatcher)"
                )
            out[w.ref] = value
    return out


def _outage_seen(configuration: Configuration) -> tuple[list[str], dict[str, int]]:
    return mesh(configuration).control_plane_serving(), xds_connections(configuration)


def _describe(serving: Sequence[str], connected: Mapping[str, int], want: int) -> str:
    off = sorted(ref for ref, v in connected.items() if v != want)
    state = "connected" if want == 0 else "disconnected"
    proxies = (
        f"{len(off)} of {len(connected)} proxies still {state} ({', '.join(off)})"
        if off
        else f"all {len(connected)} proxies {'disconnected' if want == 0 else 'connected'}"
    )
    return f"control plane serving: {'; '.join(serving) if serving else 'nothing'}; {proxies}"


def stop_control_plane(
    outage_s: float = 0.0, timeout_s: float = 60.0, configuration: Configuration = None
) -> dict[str, Any]:
    """Stop istiod, prove the outage, and keep it for ``outage_s`` seconds.

    The outage is proven, within ``timeout_s``, by two observations at once: nothing of the
    control plane serves any more (:meth:`Backend.control_plane_serving`: local, istiod's xDS port
    refuses connections; Kubernetes, no ready istiod pod or endpoint) and every proxy's Envoy says
    its xDS stream is down (``control_plane.connected_state`` 0). If that is not seen, the action
    fails with what was last seen. The outage then lasts ``outage_s`` measured from the proof,
    during which istiod must stay gone. Returns the measured figures. The proxies keep serving with
    the last config they ACKed."""
    outage_s, timeout_s = float(outage_s), float(timeout_s)
    if outage_s < 0:
        raise UserError(f"stop_control_plane: outage_s {outage_s:g} must be >= 0")
    ledger = Ledger.of(configuration)
    ledger.record("control-plane", "control-plane", {})
    t0 = time.monotonic()
    mesh(configuration).stop_control_plane()
    stopped_s = time.monotonic() - t0
    gone: dict[str, float] = {}

    def outage() -> bool:
        serving, connected = _outage_seen(configuration)
        now = time.monotonic() - t0
        if not serving:
            gone.setdefault("istiod", now)
        if connected and all(v == 0 for v in connected.values()):
            gone.setdefault("xds", now)
        if not serving and connected and all(v == 0 for v in connected.values()):
            gone["proxies"] = len(connected)
            return True
        raise _NotYet(_describe(serving, connected, want=0))

    wait.until(
        outage,
        what="the control-plane outage: nothing of istiod serving and every proxy's xDS stream down "
        "(Envoy's control_plane.connected_state 0)",
        timeout=timeout_s,
        interval=0.1,
        retry_on=(_NotYet, BackendError),
    )
    proven = time.monotonic()
    ledger.update("control-plane", outage_proven_at=time.time())

    def held() -> bool:
        # Nothing to wait on but time: the outage lasts outage_s. The wait checks, every 0.25 s,
        # that it is still an outage (istiod did not come back). The proxies are not re-read: while
        # istiod is away each Envoy keeps retrying with backoff (4 new xds-grpc connections in a
        # 6 s outage on the local mesh), and for the moment pilot-agent takes to close each one
        # again the gauge reads 1 without any config flowing.
        serving = mesh(configuration).control_plane_serving()
        if serving:
            raise BackendError(
                f"the outage ended {time.monotonic() - proven:.1f} s into the {outage_s:g} s asked for: "
                + "; ".join(serving)
            )
        return time.monotonic() - proven >= outage_s

    wait.until(
        held,
        what=f"the outage to last outage_s={outage_s:g} s from its proof",
        timeout=outage_s + 30.0,
        interval=0.25,
    )
    return {
        "control_plane": "stopped",
        "stop_returned_s": round(stopped_s, 3),
        "istiod_gone_s": round(gone["istiod"], 3),
        "xds_lost_s": round(gone["xds"], 3),
        "proxies_disconnected": int(gone["proxies"]),
        "outage_held_s": round(time.monotonic() - proven, 3),
    }


def start_control_plane(timeout_s: float = 120.0, configuration: Configuration = None) -> dict[str, Any]:
    """Start istiod again and prove its return: the backend waits until istiod is ready and every
    proxy has reconnected and ACKed its config (istiod's view), then every proxy's Envoy must say
    its xDS stream is up (``control_plane.connected_state`` 1). Idempotent."""
    ledger = Ledger.of(configuration)
    entry = ledger.get("control-plane")
    t0 = time.monotonic()
    mesh(configuration).start_control_plane()
    synced_s = time.monotonic() - t0

    def reconnected() -> bool:
        serving, connected = _outage_seen(configuration)
        if serving and connected and all(v == 1 for v in connected.values()):
            return True
        raise _NotYet(_describe(serving, connected, want=1))

    wait.until(
        reconnected,
        what="istiod serving and every proxy's xDS stream up (Envoy's control_plane.connected_state 1)",
        timeout=float(timeout_s),
        interval=0.1,
        retry_on=(_NotYet, BackendError),
    )
    out: dict[str, Any] = {
        "control_plane": "running",
        "reconnected_and_acked_s": round(synced_s, 3),
        "envoy_connected_s": round(time.monotonic() - t0, 3),
    }
    proven_at = (entry.data.get("outage_proven_at") if entry is not None else None) or None
    if proven_at:
        out["outage_total_s"] = round(time.time() - float(proven_at), 3)
    ledger.done("control-plane")
    return out


# --------------------------------------------------------------------------- everything


def rollback_all(configuration: Configuration = None) -> dict[str, Any]:
    """Undo everything the ledger still holds, newest first (a catch-all rollback)."""
    from harness.chaos.residue import undo_all

    undone, failed = undo_all(configuration)
    if failed:
        raise BackendError("could not undo: " + "; ".join(failed))
    return {"undone": undone}


# --------------------------------------------------------------------------- route policies


def set_route_policy(
    virtual_service: str,
    route: str,
    retries: Mapping[str, Any] | None = None,
    timeout: str | None = None,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Set ``retries`` (Istio's HTTPRetry: attempts, retryOn, perTryTimeout) and/or ``timeout`` on
    the http route named ``route`` of ``virtual_service`` (``ns/name``), nothing else; the route as
    it was is remembered for :func:`restore_route_policy`."""
    found = _route_of(virtual_service, route, configuration)
    policy: dict[str, Any] = {}
    if retries is not None:
        policy["retries"] = {k: (int(v) if k == "attempts" else v) for k, v in dict(retries).items()}
    if timeout:
        policy["timeout"] = str(timeout)
    if not policy:
        raise UserError("set_route_policy: nothing to set. Fix: give retries and/or timeout")
    seconds = _change_route(
        virtual_service, route, found, policy, "route-policy", configuration, {"policy": policy}
    )
    return {"virtual_service": virtual_service, "route": route, "policy": policy, "propagation_s": seconds}


def restore_route_policy(
    virtual_service: str, route: str, configuration: Configuration = None
) -> dict[str, Any]:
    """Put the route back as it was before :func:`set_route_policy` (no-op when not set)."""
    _, restored, _ = _put_route_back(
        "route-policy",
        virtual_service,
        route,
        configuration,
        still_ours=lambda now, data: True,  # a policy change is the route's whole shape: always put back
        action="route-policy-restore",
    )
    return {"virtual_service": virtual_service, "route": route, "restored": restored}


# --------------------------------------------------------------------------- certificate lifetime


def _remaining_s(cert: Any) -> float:
    import datetime as dt

    return (dt.datetime.fromisoformat(cert.not_after) - dt.datetime.now(dt.UTC)).total_seconds()


def shorten_cert_lifetime(
    pods: str | Sequence[str],
    ttl: str = "20s",
    proof_timeout_s: float = 90.0,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Make each replica's sidecar ask istiod's CA for workload certificates of lifetime ``ttl``
    (pilot-agent's ``SECRET_TTL``, a Go duration, at least 10s; it renews at half the lifetime), and
    prove it: within ``proof_timeout_s`` the replica's Envoy must hold a certificate that expires
    within ``ttl`` from now (one-sided: slowness only shortens what is left). Local: the proxy is
    replaced without a gap. Only these replicas rotate fast; the rest of the mesh keeps its default."""
    from harness import envoy, sidecar_fault
    from harness.chaos.context import admin_http
    from harness.mesh import cert_ttl_seconds

    seconds = cert_ttl_seconds(ttl)
    backend = mesh(configuration)
    workloads = [backend.workload(p) for p in _pods(pods)]  # unknown pods fail before anything changes
    with admin_http(configuration) as http:
        for w in workloads:  # bad victims (gateway, no sidecar, no inbound HTTP) fail before any change
            sidecar_fault.check_victim(http, w)
    ledger = Ledger.of(configuration)
    out = []
    for w in workloads:
        ledger.record(f"cert-ttl:{w.ref}", "cert-ttl", {"pod": w.ref, "ttl": ttl})
        replaced = backend.set_cert_ttl(w.ref, ttl)
        seen: dict[str, Any] = {}

        def short(ref: str = w.ref, seen: dict[str, Any] = seen) -> bool:
            now = backend.workload(ref)
            with admin_http(configuration) as http:
                cert = envoy.workload_certificate(http, now.proxy_admin_url)
            seen.update(
                serial=cert.serial, not_after=cert.not_after, remaining_s=round(_remaining_s(cert), 3)
            )
            if _remaining_s(cert) <= seconds:
                return True
            raise _NotYet(f"{ref}'s Envoy holds certificate {cert.serial} valid until {cert.not_after}")

        try:
            wait.until(
                short,
                what=f"{w.ref}'s Envoy to hold a certificate expiring within {ttl}",
                timeout=float(proof_timeout_s),
                interval=0.2,
                retry_on=(_NotYet, BackendError),
            )
        except HarnessError as e:
            raise BackendError(
                f"shorten_cert_lifetime: {w.ref}'s sidecar did not get a certificate of lifetime {ttl} within "
                f"{float(proof_timeout_s):g} s: its Envoy holds {seen or 'no certificate'}"
            ) from e
        out.append({"pod": w.ref, "ttl": ttl, "replaced": replaced, "certificate": seen})
    return {"pods": [w.ref for w in workloads], "ttl": ttl, "evidence": out}


def restore_cert_lifetime(pods: str | Sequence[str], configuration: Configuration = None) -> dict[str, Any]:
    """Give each replica's sidecar its default certificate lifetime back (no-op when not shortened)."""
    backend = mesh(configuration)
    ledger = Ledger.of(configuration)
    restored = []
    for pod in _pods(pods):
        ref = backend.workload(pod).ref
        if ledger.get(f"cert-ttl:{ref}") is None:
            continue
        backend.set_cert_ttl(ref, "")
        ledger.done(f"cert-ttl:{ref}")
        restored.append(ref)
    return {"restored": restored}
