"""harness.backends.local.xds: when the local backend counts a proxy as in sync with istiod."""

from __future__ import annotations

from harness.backends.istiod import ProxySync, TypeSync
from harness.backends.local.xds import unsynced


def test_a_proxy_is_in_sync_once_it_acked_clusters_and_listeners() -> None:
    fresh = ProxySync("a.ns", "sidecar", ())  # connected, istiod has not answered yet
    half = ProxySync("b.ns", "sidecar", (TypeSync("CDS", "v1/x", "v1/x"),))
    synced = ProxySync(
        "c.ns",
        "sidecar",
        (TypeSync("CDS", "v1/x", "v1/x"), TypeSync("LDS", "v1/y", "v1/y"), TypeSync("RDS", "", "")),
    )
    stale = ProxySync("d.ns", "router", (TypeSync("CDS", "v2/x", "v1/x"), TypeSync("LDS", "v1/y", "v1/y")))
    assert unsynced([fresh, half, synced, stale]) == ["a.ns:CDS", "a.ns:LDS", "b.ns:LDS", "d.ns:CDS"]
    assert unsynced([synced]) == []
