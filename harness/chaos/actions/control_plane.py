"""Control-plane loss: stop istiod and prove the outage on every proxy, start it and prove the return."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from harness import httpclient, wait
from harness.chaos.actions.common import NotYet
from harness.chaos.context import Configuration, mesh
from harness.chaos.ledger import Entry, Ledger, Undo
from harness.errors import BackendError, StateError, UserError

__all__ = [
    "start_control_plane",
    "stop_control_plane",
]


def xds_connections(configuration: Configuration = None) -> dict[str, int]:
    """Per proxy (``ns/pod``), Envoy's ``control_plane.connected_state`` gauge: 1 while its ADS
    stream is up, 0 once it ended (see :data:`harness.envoy.XDS_CONNECTED`)."""

    from harness import envoy

    out: dict[str, int] = {}
    with httpclient.client(timeout=5.0) as http:
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
        raise NotYet(_describe(serving, connected, want=0))

    wait.until(
        outage,
        what="the control-plane outage: nothing of istiod serving and every proxy's xDS stream down "
        "(Envoy's control_plane.connected_state 0)",
        timeout=timeout_s,
        interval=0.1,
        retry_on=(NotYet, BackendError),
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
        raise NotYet(_describe(serving, connected, want=1))

    wait.until(
        reconnected,
        what="istiod serving and every proxy's xDS stream up (Envoy's control_plane.connected_state 1)",
        timeout=float(timeout_s),
        interval=0.1,
        retry_on=(NotYet, BackendError),
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


def _undo_control_plane(entry: Entry, configuration: Configuration) -> str:
    start_control_plane(configuration=configuration)
    return "istiod started again"


#: the rollback's undo of each ledger kind this family writes (see :func:`harness.chaos.ledger.undo_all`);
#: a stopped control plane is undone first: nothing else applies without it
UNDO: Mapping[str, Undo] = {"control-plane": Undo(_undo_control_plane, first=True)}
