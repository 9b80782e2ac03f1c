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


def test_wait_propagated_reads_istiods_counters_until_the_push_then_only_the_acks() -> None:
    import httpx

    from harness.backends.local.xds import PushMark, wait_propagated

    metrics = iter(
        [
            'pilot_inbound_updates{type="config"} 1\npilot_debounce_time_count 1\n',  # not ingested yet
            'pilot_inbound_updates{type="config"} 2\npilot_debounce_time_count 1\n',  # not pushed yet
            'pilot_inbound_updates{type="config"} 2\npilot_debounce_time_count 2\n',  # pushed
        ]
    )
    acked = {"sent": "v2", "acked": "v2"}
    pending = {"sent": "v2", "acked": "v1"}
    syncz = iter([pending, acked, acked])
    reads: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        reads.append(request.url.path)
        if request.url.path == "/metrics":
            return httpx.Response(200, text=next(metrics))
        r = next(syncz)
        types = ("envoy.config.cluster.v3.Cluster", "envoy.config.listener.v3.Listener")
        resources = {f"type.googleapis.com/{t}": r for t in types}
        return httpx.Response(200, json=[{"proxy": "a.ns", "resources": resources}])

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        wait_propagated(http, "http://istiod", "http://mon", PushMark(1.0, 1.0), 1, timeout=30)
    # the counters are read until istiod pushed, then only /debug/syncz until two ACKed reads in a row
    assert reads == ["/metrics", "/metrics", "/metrics", "/debug/syncz", "/debug/syncz", "/debug/syncz"]
