"""Background load: start Locust (the load component's runner) for probes to read, and stop it."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness import wait
from harness.chaos.context import Configuration, chaos_dir, mesh, state_dir
from harness.chaos.ledger import Entry, Ledger, Undo
from harness.errors import HarnessError, UserError

__all__ = [
    "start_load",
    "stop_load",
]


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
    ``concurrency`` requests in flight: Locust users sending back to back (``engine`` ``locust``,
    the only one: :class:`harness.load.LocustRun`, on this machine on every backend, since probes
    read its event logs and a rollback in another process stops it by its pid). Probes read its
    recent window (:mod:`harness.chaos.load_window`). Returns once the load runs."""
    concurrency = int(concurrency)
    if not 1 <= concurrency <= 64:
        raise UserError(f"start_load: concurrency {concurrency} must be in 1..64")
    if engine != "locust":
        raise UserError(
            f"start_load: unknown engine {engine!r}: the background load is Locust's. Fix: leave engine "
            "out (locust); a probe sends its own burst through the harness sampler"
        )
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


def stop_load(name: str = "default", configuration: Configuration = None) -> dict[str, Any]:
    """Stop the background load ``name`` and summarise everything it saw."""
    from harness.chaos.load_window import window_of

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
    """Stop a load from another process than the one that started it (by its pid)."""
    pid = int(data.get("pid") or 0)
    if data.get("workdir"):
        (Path(str(data["workdir"])) / "stop").touch()  # the locustfile's shape stops gracefully
    if not pid or not _is_locust(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        wait.until(lambda: not _is_locust(pid), what=f"Locust {pid} to exit", timeout=15, interval=0.05)
    except HarnessError:
        os.killpg(pid, signal.SIGKILL)


def _is_locust(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) Locust process (guards against pid reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    ours = b"locust" in cmdline
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and ours


def _undo_load(entry: Entry, configuration: Configuration) -> str:
    stop_load(str(entry.data["name"]), configuration)
    return f"load {entry.data['name']} stopped"


#: the rollback's undo of each ledger kind this family writes (see :func:`harness.chaos.ledger.undo_all`)
UNDO: Mapping[str, Undo] = {"load": Undo(_undo_load)}
