"""Where a local mesh keeps its files inside the state dir, and free-address helpers."""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class Layout:
    """Paths in the state dir. ``logs/`` survives ``down``; runtime dirs do not."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        for d in (self.logs, self.istiod, self.proxies):
            d.mkdir(parents=True, exist_ok=True)

    @property
    def marker(self) -> Path:
        return self.root / "backend.json"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def istiod(self) -> Path:
        return self.root / "istiod"

    @property
    def proxies(self) -> Path:
        return self.root / "proxies"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def ca_root(self) -> Path:
        return self.root / "root-cert.pem"

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
        for d in (self.config, self.istiod, self.proxies):
            shutil.rmtree(d, ignore_errors=True)
        for f in (self.plan, self.ca_root, self.marker):
            f.unlink(missing_ok=True)
        self.control_socket.unlink(missing_ok=True)

    def pick_block(self) -> int:
        """A second octet B such that nothing listens on 127.B.0.0/16 yet."""
        busy = set()
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


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(taken: set[int], *, start: int = 20000) -> int:
    """A TCP port free on all addresses (Envoy's stats listeners bind 0.0.0.0), not in ``taken``.

    Ports come from below the kernel's ephemeral range, so the outbound connections of the mesh's
    own processes cannot grab one between allocation and bind.
    """
    lo, hi = _ephemeral_range()
    candidates = range(start, lo) if lo - start > 500 else range(hi + 1, 65535)
    for port in candidates:
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("0.0.0.0", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError("no free TCP port outside the ephemeral range")


def object_filename(obj: Mapping[str, Any]) -> str:
    """One file per object in istiod's config dir: ``<kind>.<namespace>.<name>.yaml``."""
    meta = obj.get("metadata") or {}
    parts = [
        str(obj.get("kind", "Unknown")),
        str(meta.get("namespace") or "default"),
        str(meta.get("name", "")),
    ]
    return ".".join(re.sub(r"[^A-Za-z0-9_-]", "_", p) for p in parts) + ".yaml"
