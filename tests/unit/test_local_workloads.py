"""Which Deployment/ServiceAccount changes the local mesh applies: a workload's ServiceAccount, only
to a ServiceAccount that exists; anything else is refused with a fix."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from harness.backends.local.workloads import (
    Rollout,
    differing_paths,
    key_of,
    plan_apply,
    plan_delete,
    service_account,
)
from harness.errors import StateError, UnsupportedFeature, UserError


def deployment(sa: str | None = "client", ns: str = "other-namespace", image: str = "x:1") -> dict[str, Any]:
    pod: dict[str, Any] = {"containers": [{"name": "c", "image": image}]}
    if sa is not None:
        pod["serviceAccountName"] = sa
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "client", "namespace": ns},
        "spec": {"replicas": 1, "template": {"metadata": {"labels": {"app": "client"}}, "spec": pod}},
    }


def account(name: str, ns: str = "other-namespace") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": ns}}


def running(*objs: dict[str, Any]) -> dict[Any, Any]:
    return {key_of(o): o for o in objs}


RUNNING = running(deployment(), account("client"))


def test_service_account_as_kubernetes_reads_it() -> None:
    assert service_account(deployment("a")) == "a"
    assert service_account(deployment(None)) == "default"
    old = deployment(None)
    old["spec"]["template"]["spec"]["serviceAccount"] = "legacy"
    assert service_account(old) == "legacy"


def test_a_new_service_account_applied_with_it_rolls_the_deployment_out() -> None:
    change = plan_apply(RUNNING, [account("impostor"), deployment("impostor")])
    assert change.rollouts == (Rollout("other-namespace", "client", "impostor", "client"),)
    assert [key_of(a) for a in change.service_accounts] == [("ServiceAccount", "other-namespace", "impostor")]
    assert [key_of(d) for d in change.deployments] == [("Deployment", "other-namespace", "client")]


def test_back_to_an_existing_or_the_default_service_account() -> None:
    now = running(deployment("impostor"), account("client"), account("impostor"))
    assert plan_apply(now, [deployment("client")]).rollouts[0].service_account == "client"
    assert plan_apply(now, [deployment(None)]).rollouts[0].service_account == "default"


def test_unchanged_deployment_rolls_nothing_out() -> None:
    assert plan_apply(RUNNING, [copy.deepcopy(deployment())]).rollouts == ()


def test_a_service_account_that_does_not_exist_is_refused() -> None:
    with pytest.raises(UserError, match=r"ServiceAccount 'impostor', which does not exist.*Fix: apply"):
        plan_apply(RUNNING, [deployment("impostor")])
    with pytest.raises(UserError, match="does not exist in namespace other-namespace"):
        plan_apply(RUNNING, [account("impostor", ns="sample"), deployment("impostor")])


def test_any_other_change_is_unsupported_and_named() -> None:
    with pytest.raises(UnsupportedFeature, match=r"spec.template.spec.containers.*Fix:"):
        plan_apply(RUNNING, [deployment(image="x:2")])


def test_a_deployment_the_mesh_does_not_run_is_unsupported() -> None:
    with pytest.raises(UnsupportedFeature, match="not one of them"):
        plan_apply(RUNNING, [deployment(ns="elsewhere")])


def test_delete_removes_service_accounts_never_deployments() -> None:
    now = running(deployment(), account("client"), account("impostor"))
    assert plan_delete(now, [account("impostor")]) == [("ServiceAccount", "other-namespace", "impostor")]
    with pytest.raises(StateError, match="not applied"):
        plan_delete(now, [account("nobody")])
    with pytest.raises(UnsupportedFeature, match="cannot delete Deployment"):
        plan_delete(now, [deployment()])


def test_differing_paths() -> None:
    assert differing_paths({"a": {"b": 1, "c": [1]}}, {"a": {"b": 2, "c": [1]}, "d": 0}) == [
        "spec.a.b",
        "spec.d",
    ]


def test_istiods_view_of_endpoint_identities() -> None:
    from harness.backends.local.xds import parse_endpoint_identities

    shardz = {  # /debug/endpointShardz: host -> namespace -> shards
        "microservice-1.sample.svc.cluster.local": {
            "sample": {
                "Shards": {
                    "Kubernetes/Kubernetes": [
                        {
                            "Namespace": "sample",
                            "WorkloadName": "microservice-1-v2",
                            "ServiceAccount": "spiffe://cluster.local/ns/sample/sa/canary",
                        },
                        {
                            "Namespace": "sample",
                            "WorkloadName": "microservice-1-v1",
                            "ServiceAccount": "spiffe://cluster.local/ns/sample/sa/microservice-1",
                        },
                    ]
                }
            }
        }
    }
    assert parse_endpoint_identities(shardz) == {
        ("sample", "microservice-1-v2"): {"spiffe://cluster.local/ns/sample/sa/canary"},
        ("sample", "microservice-1-v1"): {"spiffe://cluster.local/ns/sample/sa/microservice-1"},
    }
    assert parse_endpoint_identities(None) == {}
