"""Free TCP ports on this machine: the one ``free_port``, and ports for processes that live long.

:func:`free_port` asks the kernel for a port nobody listens on (the caller binds it moments later;
a clash then fails clearly). :func:`port_outside_ephemeral_range` finds one below the kernel's
ephemeral range, so that outbound connections of other processes cannot take it between the pick
and the bind (the local mesh's listeners).
"""

from __future__ import annotations

import socket
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now, chosen by the kernel on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def port_outside_ephemeral_range(taken: set[int], *, start: int = 20000) -> int:
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
