"""Where a local mesh keeps its files inside the state dir, and free-address helpers."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from harness.ports import port_outside_ephemeral_range
from harness.proc import pid_alive


class Layout:
    """Paths in the state dir. ``logs/`` survives ``down``; runtime dirs do not."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir.resolve()
        self.marker = self.root / "backend.json"
        self.status = self.root / "status.json"
        self.plan = self.root / "plan.json"
        self.config = self.root / "config"  # the Istio and Gateway API objects the mesh runs
        self.kube = self.root / "kube"  # the rest of the in-memory cluster (Namespaces, Pods, ...)
        self.workloads = self.root / "workloads"  # the Deployments and ServiceAccounts it runs
        self.istiod = self.root / "istiod"
        self.proxies = self.root / "proxies"
        self.logs = self.root / "logs"
        self.ca_root = self.root / "root-cert.pem"
        self.root.mkdir(parents=True, exist_ok=True)
        for d in (self.logs, self.istiod, self.proxies):
            d.mkdir(parents=True, exist_ok=True)

    def proxy_dir(self, pod: str) -> Path:
        return self.proxies / pod

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    @property
    def control_socket(self) -> Path:
        p = self.root / "control.sock"
        if len(str(p)) < 100:
            return p
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"meshproof-{digest}.sock"

    def cleanup_runtime(self) -> None:
        """Remove everything but the logs and status (certs, config, proxy work dirs, socket)."""
        for d in (self.config, self.kube, self.workloads, self.istiod, self.proxies, self.root / "jaeger"):
            shutil.rmtree(d, ignore_errors=True)
        for f in (self.plan, self.ca_root, self.marker):
            f.unlink(missing_ok=True)
        self.control_socket.unlink(missing_ok=True)

    def pick_block(self, reserved: Collection[int] = ()) -> int:
        """A second octet B such that nothing listens on 127.B.0.0/16 yet and no mesh reserved it."""
        busy = set(reserved)
        for table in ("/proc/net/tcp",):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                local = line.split()[1]
                ip_hex = local.split(":")[0]
                octets = [int(ip_hex[i : i + 2], 16) for i in range(6, -1, -2)]
                if octets[0] == 127:
                    busy.add(octets[1])
        for b in range(10, 250):
            if b not in busy:
                return b
        raise RuntimeError("no free 127.B.0.0/16 block")


class Reservations:
    """Machine-wide claims on 127.B blocks and TCP ports, one file per owning process.

    Two meshes started at the same moment (parallel CI jobs, several checkouts) would otherwise both
    see the same block and ports free, because a port is only tested by binding it and is bound for
    real seconds later. Every claim happens under one ``flock`` and is written to
    ``<tmp>/meshproof-reservations-<uid>/<pid>.json`` before the lock is released; claims of dead
    processes are ignored (and removed), so a SIGKILLed supervisor frees its block and ports.
    """

    def __init__(self, owner: int, root: Path | None = None) -> None:
        self.owner = owner
        self.root = root or Path(tempfile.gettempdir()) / f"meshproof-reservations-{os.getuid()}"
        self.root.mkdir(parents=True, exist_ok=True)
        self._mine: dict[str, Any] = {"block": None, "ports": []}

    @property
    def _file(self) -> Path:
        return self.root / f"{self.owner}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[int, dict[str, Any]]]:
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self._others()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _others(self) -> dict[int, dict[str, Any]]:
        live: dict[int, dict[str, Any]] = {}
        for f in self.root.glob("*.json"):
            try:
                pid = int(f.stem)
                claim = json.loads(f.read_text())
            except (ValueError, OSError):
                continue
            if pid == self.owner:
                continue
            if not pid_alive(pid):
                f.unlink(missing_ok=True)
                continue
            live[pid] = claim
        return live

    def _write(self) -> None:
        tmp = self._file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._mine))
        tmp.replace(self._file)

    def block(self, layout: Layout) -> int:
        """Pick and claim a free 127.B.0.0/16 block."""
        with self._locked() as others:
            b = layout.pick_block({int(c["block"]) for c in others.values() if c.get("block") is not None})
            self._mine["block"] = b
            self._write()
            return b

    def port(self) -> int:
        """Pick and claim a TCP port that is free and that no other live mesh has claimed."""
        with self._locked() as others:
            taken = {int(p) for c in others.values() for p in c.get("ports", [])}
            taken.update(self._mine["ports"])
            port = port_outside_ephemeral_range(taken)
            self._mine["ports"].append(port)
            self._write()
            return port

    def release(self) -> None:
        self._file.unlink(missing_ok=True)


def object_filename(obj: Mapping[str, Any]) -> str:
    """One file per object: ``<kind>.<namespace>.<name>.yaml``, the kind qualified by its API group
    outside Kubernetes' core and Istio's groups (a Gateway API Gateway is not an Istio Gateway)."""
    meta = obj.get("metadata") or {}
    kind = str(obj.get("kind", "Unknown"))
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    if group and not group.endswith("istio.io"):
        kind = f"{kind}.{group}"
    parts = [kind, str(meta.get("namespace") or "default"), str(meta.get("name", ""))]
    return ".".join(re.sub(r"[^A-Za-z0-9_-]", "_", p) for p in parts) + ".yaml"
