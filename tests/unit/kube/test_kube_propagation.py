"""The config-propagation decision on canned istiod /debug/syncz, /debug/configz and /metrics output."""

from __future__ import annotations

import pytest

from harness import wait
from harness.backends import istiod
from harness.backends.kube import propagation as p
from harness.errors import BackendError, WaitTimeout
from harness.prometheus import metric_sum

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
UUID = "0d3c5f0e-1b7a-4c3e-9a55-6f1e2b3c4d5e"
N1 = "2026-11-25T17:00:00Z/11" + UUID
N2 = "2026-11-25T17:00:05Z/12" + UUID

# Current istiod: flat fields plus the per-type `resources` map.
SYNCZ_SYNCED = [
    {
        "cluster_id": "Kubernetes",
        "proxy": "microservice-1-v1-6f7d8-abcde.sample",
        "proxy_type": "sidecar",
        "istio_version": "1.30.1",
        "cluster_sent": N1,
        "cluster_acked": N1,
        "listener_sent": N1,
        "listener_acked": N1,
        "resources": {
            CDS: {"sent": N1, "acked": N1, "sentTime": "2026-11-25T17:00:00Z"},
            LDS: {"sent": N1, "acked": N1},
        },
    },
    {
        "proxy": "istio-ingressgateway-7f9-xyz12.istio-system",
        "proxy_type": "router",
        "resources": {CDS: {"sent": N1, "acked": N1}, LDS: {"sent": N1, "acked": N1}},
    },
]
# One proxy has been sent push 12 and has not ACKed it yet.
SYNCZ_STALE = [
    SYNCZ_SYNCED[0] | {"resources": {CDS: {"sent": N2, "acked": N1}, LDS: {"sent": N1, "acked": N1}}},
    SYNCZ_SYNCED[1],
]
# ... and the same proxy rejected it.
SYNCZ_NACK = [
    SYNCZ_SYNCED[0] | {"resources": {CDS: {"sent": N2, "acked": N1, "lastError": "cluster 'x': invalid"}}},
    SYNCZ_SYNCED[1],
]
# An older istiod: flat fields only.
SYNCZ_OLD = [
    {
        "proxy": "client-5c9-q.other-namespace",
        "cluster_sent": N1,
        "cluster_acked": N1,
        "route_sent": N2,
        "route_acked": N1,
        "endpoint_sent": "",
        "endpoint_acked": "",
    }
]

CONFIGZ = [
    {
        "kind": "VirtualService",
        "apiVersion": "networking.istio.io/v1",
        "metadata": {"name": "microservice-1", "namespace": "sample", "resourceVersion": "2041"},
        "spec": {},
    },
    {
        "kind": "DestinationRule",
        "apiVersion": "networking.istio.io/v1alpha3",
        "metadata": {"name": "microservice-1", "namespace": "sample", "resourceVersion": "2000"},
        "spec": {},
    },
]

METRICS = """# HELP pilot_inbound_updates Total number of updates received by pilot.
# TYPE pilot_inbound_updates counter
pilot_inbound_updates{type="config"} 14
pilot_inbound_updates{type="eds"} 40
pilot_inbound_updates{type="svc"} 3
# TYPE pilot_debounce_time histogram
pilot_debounce_time_bucket{le="0.1"} 9
pilot_debounce_time_sum 1.25
pilot_debounce_time_count 12
"""

VS = p.ConfigExpectation("networking.istio.io", "VirtualService", "sample", "microservice-1", "2041")
PROXIES = {"microservice-1-v1-6f7d8-abcde.sample", "istio-ingressgateway-7f9-xyz12.istio-system"}


def sample(
    syncz: list[dict],
    configz: list[dict] = CONFIGZ,
    metrics: str = METRICS,  # type: ignore[type-arg]
    pod: str = "istiod-1",
) -> p.IstiodSample:
    return p.IstiodSample(
        pod,
        tuple(istiod.parse_syncz(syncz, pod)),
        p.config_index(configz),
        istiod.PushCounters.from_metrics(metrics),
    )


def test_parse_syncz_current_format() -> None:
    proxies = istiod.parse_syncz(SYNCZ_SYNCED, "istiod-1")
    assert [x.proxy for x in proxies] == [
        "microservice-1-v1-6f7d8-abcde.sample",
        "istio-ingressgateway-7f9-xyz12.istio-system",
    ]
    first = proxies[0]
    assert first.proxy_type == "sidecar" and first.istiod == "istiod-1"
    assert [t.type for t in first.types] == ["CDS", "LDS"]
    assert first.synced and first.status == "SYNCED"


def test_parse_syncz_old_flat_format() -> None:
    (proxy,) = istiod.parse_syncz(SYNCZ_OLD)
    assert {t.type for t in proxy.types} == {"CDS", "RDS"}  # EDS was never sent: not a type to wait for
    assert proxy.pending == ("RDS",) and proxy.status == "RDS STALE"


def test_parse_syncz_rejects_non_lists() -> None:
    with pytest.raises(BackendError):
        istiod.parse_syncz({"error": "unauthorized"}, "istiod-1")


def test_push_version_strips_the_uuid() -> None:
    assert istiod.push_version(N2) == "2026-11-25T17:00:05Z/12"


def test_config_index_and_lag() -> None:
    index = p.config_index(CONFIGZ)
    assert index[("networking.istio.io", "VirtualService", "sample", "microservice-1")] == "2041"
    assert p.config_lag(index, [VS]) == []
    newer = p.ConfigExpectation("networking.istio.io", "VirtualService", "sample", "microservice-1", "2050")
    assert p.config_lag(index, [newer]) == [
        "VirtualService/sample/microservice-1 at resourceVersion 2041, want 2050"
    ]
    older = p.ConfigExpectation("networking.istio.io", "VirtualService", "sample", "microservice-1", "2000")
    assert p.config_lag(index, [older]) == []  # istiod already has something newer
    gone = p.ConfigExpectation("networking.istio.io", "DestinationRule", "sample", "microservice-1", None)
    assert p.config_lag(index, [gone]) == ["DestinationRule/sample/microservice-1 still present"]
    new = p.ConfigExpectation("security.istio.io", "AuthorizationPolicy", "sample", "deny", "7")
    assert p.config_lag(index, [new]) == ["AuthorizationPolicy/sample/deny not seen yet"]


def test_metric_sum() -> None:
    assert metric_sum(METRICS, "pilot_inbound_updates", {"type": "config"}) == 14
    assert metric_sum(METRICS, "pilot_inbound_updates") == 57
    assert metric_sum(METRICS, "pilot_debounce_time_count") == 12
    assert metric_sum(METRICS, "pilot_xds_pushes") is None
    otel = 'pilot_inbound_updates_total{otel_scope_name="pilot",type="config"} 3 1732550400000\n'
    assert metric_sum(otel, "pilot_inbound_updates", {"type": "config"}) == 3


def test_evaluate_synced() -> None:
    v = p.evaluate([sample(SYNCZ_SYNCED)], expected_proxies=PROXIES, expectations=[VS])
    assert v.ok, v


def test_evaluate_stale_missing_and_lagging() -> None:
    lagging = p.ConfigExpectation("networking.istio.io", "VirtualService", "sample", "microservice-1", "2099")
    v = p.evaluate(
        [sample(SYNCZ_STALE)], expected_proxies=PROXIES | {"client-1.other-namespace"}, expectations=[lagging]
    )
    assert not v.ok and not v.nacks
    text = "\n".join(v.problems)
    assert "istiod istiod-1: VirtualService/sample/microservice-1 at resourceVersion 2041, want 2099" in text
    assert "not connected to istiod: client-1.other-namespace" in text
    assert "microservice-1-v1-6f7d8-abcde.sample: CDS STALE" in text


def test_evaluate_nack() -> None:
    v = p.evaluate([sample(SYNCZ_NACK)], expected_proxies=PROXIES)
    assert v.nacks == (
        "microservice-1-v1-6f7d8-abcde.sample rejected CDS push 2026-11-25T17:00:05Z/12: "
        "cluster 'x': invalid",
    )


def test_evaluate_requires_a_push_after_the_change() -> None:
    before = istiod.PushCounters.from_metrics(METRICS)
    same = p.evaluate([sample(SYNCZ_SYNCED)], expectations=[VS], baseline={"istiod-1": before})
    assert same.problems == ("istiod istiod-1: no config event received since the change",)
    event_only = METRICS.replace('type="config"} 14', 'type="config"} 15')
    v = p.evaluate(
        [sample(SYNCZ_SYNCED, metrics=event_only)], expectations=[VS], baseline={"istiod-1": before}
    )
    assert v.problems == ("istiod istiod-1: no push started since the change",)
    pushed = event_only.replace("pilot_debounce_time_count 12", "pilot_debounce_time_count 13")
    assert p.evaluate(
        [sample(SYNCZ_SYNCED, metrics=pushed)], expectations=[VS], baseline={"istiod-1": before}
    ).ok
    # Without Istio config changes, or for a replica without a baseline, counters are not consulted.
    assert p.evaluate([sample(SYNCZ_SYNCED)], baseline={"istiod-1": before}).ok
    assert p.evaluate([sample(SYNCZ_SYNCED)], expectations=[VS], baseline={"istiod-2": before}).ok
    # A metric this istiod does not export never blocks.
    assert p.evaluate([sample(SYNCZ_SYNCED, metrics="")], expectations=[VS], baseline={"istiod-1": before}).ok


def test_evaluate_merges_replicas() -> None:
    a = sample(SYNCZ_SYNCED[:1], pod="istiod-a")
    b = sample(SYNCZ_SYNCED[1:], pod="istiod-b")
    assert p.evaluate([a, b], expected_proxies=PROXIES).ok
    assert not p.evaluate([], expected_proxies=PROXIES).ok


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_convergence_needs_identical_clean_rounds() -> None:
    rounds = [SYNCZ_STALE, SYNCZ_SYNCED, SYNCZ_SYNCED, SYNCZ_SYNCED]
    seen: list[int] = []

    def next_round() -> list[p.IstiodSample]:
        seen.append(1)
        return [sample(rounds[min(len(seen) - 1, len(rounds) - 1)])]

    conv = p.Convergence(next_round, expected_proxies=PROXIES, expectations=[VS])
    result = wait.until(conv, what="sync", timeout=10, interval=0.25, converge=2, clock=FakeClock())  # type: ignore[arg-type]
    assert result == "2 proxies SYNCED"
    assert len(seen) == 4  # stale, first clean (baseline for comparison), two identical clean rounds


def test_convergence_restarts_the_quiet_window_on_change() -> None:
    n1_round = sample(SYNCZ_SYNCED)
    newer = [e | {"resources": {CDS: {"sent": N2, "acked": N2}}} for e in SYNCZ_SYNCED]
    rounds = [n1_round, sample(newer), n1_round]
    conv = p.Convergence(lambda: [rounds.pop(0)] if rounds else [n1_round])
    assert conv() is None  # first clean round: nothing to compare with
    assert conv() is None  # changed: a push happened
    assert conv() is None  # changed back
    assert conv() == "2 proxies SYNCED"


def test_convergence_raises_on_nack_and_describes_the_wait() -> None:
    conv = p.Convergence(lambda: [sample(SYNCZ_NACK)], expected_proxies=PROXIES)
    with pytest.raises(BackendError, match="rejected the configuration"):
        conv()
    stale = p.Convergence(lambda: [sample(SYNCZ_STALE)], expected_proxies=PROXIES)
    with pytest.raises(WaitTimeout):
        wait.until(stale, what="sync", timeout=1, interval=0.25, converge=2, clock=FakeClock())  # type: ignore[arg-type]
    assert "CDS STALE" in stale.describe()
