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


def test_istiod_holds_a_change_once_its_store_has_the_stored_version_or_a_later_one() -> None:
    from harness.backends.local.xds import cluster_name, config_key, config_lag, held_versions

    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "sample"},
    }
    vs = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "v", "namespace": "sample"},
    }
    assert cluster_name(route) == "gateway.networking.k8s.io/HTTPRoute/sample/r"
    assert cluster_name({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}) == "Namespace/x"
    configz = [  # /debug/configz, as istiod answers it
        {**route, "metadata": {**route["metadata"], "resourceVersion": "12"}},
        {**vs, "metadata": {**vs["metadata"], "resourceVersion": "9"}},
    ]
    held = held_versions(configz)
    assert held[config_key(route)] == "12"
    assert config_lag(held, {config_key(route): "12", config_key(vs): "9"}) == []
    assert config_lag(held, {config_key(route): "11"}) == []  # a status write made it newer
    assert config_lag(held, {config_key(route): "13"}) == [
        "gateway.networking.k8s.io/HTTPRoute/sample/r at 13 (holds 12)"
    ]
    assert config_lag(held, {config_key(vs): None}) == [
        "networking.istio.io/VirtualService/sample/v still held"
    ]
    gone = {**vs, "metadata": {"name": "gone", "namespace": "sample"}}
    assert config_lag(held, {config_key(gone): None}) == []
    assert config_lag(held, {config_key(gone): "3"}) == [
        "networking.istio.io/VirtualService/sample/gone at 3 (holds None)"
    ]


def test_a_change_that_makes_istiod_push_nothing_propagates_once_held_and_quiet() -> None:
    """A Gateway API object whose translation changes no proxy's config (an HTTPRoute of a missing
    Gateway): held by istiod at its version, no push started and none pending, every proxy ACKed."""
    import httpx

    from harness.backends.local.xds import PushMark, config_key, wait_propagated

    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "orphan", "namespace": "sample"},
    }
    configz = iter([[], [{**route, "metadata": {**route["metadata"], "resourceVersion": "7"}}]])
    reads: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        reads.append(request.url.path)
        if request.url.path == "/debug/configz":
            return httpx.Response(200, json=next(configz))
        if request.url.path == "/metrics":
            return httpx.Response(
                200, text='pilot_inbound_updates{type="config"} 4\npilot_debounce_time_count 3\n'
            )
        acked = {"sent": "v2", "acked": "v2"}
        types = ("envoy.config.cluster.v3.Cluster", "envoy.config.listener.v3.Listener")
        return httpx.Response(
            200, json=[{"proxy": "a.ns", "resources": {f"type.googleapis.com/{t}": acked for t in types}}]
        )

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        wait_propagated(
            http,
            "http://istiod",
            "http://mon",
            PushMark(4.0, 3.0),
            1,
            timeout=30,
            expect={config_key(route): "7"},
            require_push=False,
        )
    # held only at the second read; then the counters must read the same twice before ACKs count
    assert reads == ["/debug/configz", "/debug/configz", *["/metrics", "/debug/syncz"] * 3]


def test_the_stored_version_of_an_object_the_launchers_watcher_synced_first_is_read_back() -> None:
    """When the launcher's file watcher stored a change before the backend's POST /sync, the sync
    reports no version for it: the backend reads the stored one back, at the Kubernetes API path."""
    import httpx

    from harness.backends.local.xds import resource_path, stored_version

    route = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "sample"},
    }
    policy = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "p", "namespace": "sample"},
    }
    gateway = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway", "metadata": {"name": "g"}}
    assert resource_path(route) == "/apis/gateway.networking.k8s.io/v1/namespaces/sample/httproutes/r"
    assert resource_path(policy) == "/apis/security.istio.io/v1/namespaces/sample/authorizationpolicies/p"
    assert resource_path(
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "x"}}
    ) == ("/api/v1/namespaces/x/services/s")

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == resource_path(route):
            return httpx.Response(
                200, json={**route, "metadata": {**route["metadata"], "resourceVersion": "41"}}
            )
        return httpx.Response(404, text="not found")

    with httpx.Client(transport=httpx.MockTransport(handler)) as http:
        assert stored_version(http, "http://kube", route) == "41"
        assert stored_version(http, "http://kube", gateway) == ""  # not stored: the wait says so
