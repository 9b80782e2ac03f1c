"""Normalised config_dump comparison (pure)."""

from __future__ import annotations

import copy
from typing import Any

from harness.upgrade import configdiff as cd


def dump(timeout: str = "0s", version: str = "2026-01-01T00:00:00Z/1") -> dict[str, Any]:
    return {
        "configs": [
            {
                "@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump",
                "bootstrap": {"node": {"id": "x"}},
            },
            {
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                "version_info": version,
                "dynamic_active_clusters": [
                    {
                        "version_info": version,
                        "last_updated": "t1",
                        "cluster": {"name": "b", "connect_timeout": "10s"},
                    },
                    {
                        "version_info": version,
                        "last_updated": "t2",
                        "cluster": {"name": "a", "connect_timeout": "1s"},
                    },
                ],
            },
            {
                "@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
                "dynamic_listeners": [
                    {
                        "name": "l1",
                        "active_state": {
                            "version_info": version,
                            "listener": {
                                "name": "l1",
                                "filter_chains": [
                                    {
                                        "filters": [
                                            {"name": "hcm", "typed_config": {"stream_idle_timeout": timeout}}
                                        ]
                                    }
                                ],
                            },
                        },
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
                "dynamic_active_secrets": [{"name": "default", "secret": {"cert": "changes every restart"}}],
            },
        ]
    }


def test_versions_timestamps_order_and_bootstrap_are_ignored() -> None:
    a = cd.normalise(dump())
    other = dump(version="2026-02-02T00:00:00Z/9")
    other["configs"][1]["dynamic_active_clusters"].reverse()
    other["configs"][3]["dynamic_active_secrets"][0]["secret"]["cert"] = "another"
    other["configs"][0]["bootstrap"]["node"]["id"] = "y"
    assert list(a) == ["cluster/a", "cluster/b", "listener/l1", "secret/default"]
    assert cd.diff("ns/p", a, cd.normalise(other)) == []


def test_a_changed_field_is_named_by_its_path() -> None:
    d = cd.diff("ns/p", cd.normalise(dump()), cd.normalise(dump(timeout="5s")))
    assert len(d) == 1
    assert d[0].resource == "listener/l1" and d[0].change == "changed"
    assert [p.path for p in d[0].paths] == ["filter_chains[0].filters[hcm].typed_config.stream_idle_timeout"]
    assert "stream_idle_timeout" in d[0].summary and '"0s" -> "5s"' in d[0].summary


def test_added_and_removed_resources() -> None:
    before = cd.normalise(dump())
    after = copy.deepcopy(before)
    del after["cluster/a"]
    after["cluster/c"] = {"name": "c"}
    changes = {(d.resource, d.change) for d in cd.diff("ns/p", before, after)}
    assert changes == {("cluster/a", "removed"), ("cluster/c", "added")}


def test_allowances_cover_by_resource_and_path_else_unexpected() -> None:
    d = cd.diff("ns/p", cd.normalise(dump()), cd.normalise(dump(timeout="5s")))
    allowed, unexpected = cd.classify(d, [cd.Allowance("cluster/*", "clusters only")])
    assert (allowed, len(unexpected)) == ([], 1)
    allow = [cd.Allowance("listener/*", "idle timeout default changed", path="*stream_idle_timeout")]
    allowed, unexpected = cd.classify(d, allow)
    assert unexpected == [] and allowed[0].allowed_by == "idle timeout default changed"


def test_same_release_allows_nothing() -> None:
    table = {"1.30-dev->1.31-dev": [{"resource": "*", "reason": "r"}]}
    assert cd.allowances_for(table, "1.31-dev", "1.31-dev") == ()
    assert len(cd.allowances_for(table, "1.30-dev", "1.31-dev")) == 1


def _inbound_swap(*extra: cd.PathChange) -> cd.Difference:
    """The difference a fresh-clone CI run's in-place self-upgrade saw on microservice-1-v2-0 (2026-12-07)."""
    svc = "metadata.filter_metadata.istio.services"
    paths = (
        cd.PathChange("circuit_breakers.thresholds[0].max_connections", "4294967295", "100"),
        cd.PathChange("circuit_breakers.thresholds[0].max_requests", "4294967295", "100"),
        cd.PathChange(
            "metadata.filter_metadata.istio.config",
            None,
            '"/apis/networking.istio.io/v1/namespaces/sample/destination-rule/microservice-1"',
        ),
        cd.PathChange(f"{svc}[microservice-1-v2].name", '"microservice-1-v2"', None),
        cd.PathChange(f"{svc}[microservice-1].name", None, '"microservice-1"'),
        *extra,
    )
    return cd.Difference("sample/microservice-1-v2-0", "cluster/inbound|3000||", "changed", paths)


def test_istiods_choice_of_another_service_for_an_inbound_cluster_is_allowed_for_any_pair() -> None:
    allowed, unexpected = cd.classify([_inbound_swap()], ())
    assert not unexpected
    assert [d.allowed_by for d in allowed] == [cd.INBOUND_SERVICE_CHOICE]


def test_an_inbound_change_beyond_the_chosen_services_policy_stays_unexpected() -> None:
    extra = cd.PathChange("connect_timeout", '"10s"', '"1s"')
    allowed, unexpected = cd.classify([_inbound_swap(extra)], ())
    assert not allowed and len(unexpected) == 1


def test_inbound_circuit_breakers_changed_without_another_service_stay_unexpected() -> None:
    d = cd.Difference(
        "sample/microservice-1-v2-0",
        "cluster/inbound|3000||",
        "changed",
        (cd.PathChange("circuit_breakers.thresholds[0].max_connections", "4294967295", "100"),),
    )
    allowed, unexpected = cd.classify([d], ())
    assert not allowed and unexpected == [d]


def test_an_outbound_cluster_naming_another_service_stays_unexpected() -> None:
    d = _inbound_swap()
    outbound = cd.Difference(
        d.proxy, "cluster/outbound|3000||microservice-1.sample.svc.cluster.local", d.change, d.paths
    )
    allowed, unexpected = cd.classify([outbound], ())
    assert not allowed and unexpected == [outbound]
