"""SPIFFE identity oracle: from the manifests' ServiceAccount and namespace."""

from __future__ import annotations

import pytest

from harness import paths
from harness.istio.loader import load_paths, load_text
from harness.istio.oracles.identity import (
    gateway_spiffe_id,
    principal,
    service_account,
    spiffe_id,
    workload_spiffe_id,
)

MANIFESTS = paths.MANIFESTS


def deployment(pod_spec: str, ns: str = "  namespace: shop\n") -> str:
    return (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n" + ns + "spec:\n  selector:\n"
        "    matchLabels: {app: d}\n  template:\n    metadata:\n      labels: {app: d}\n    spec:\n"
        + pod_spec
        + "      containers: [{name: c, image: i}]\n"
    )


@pytest.mark.parametrize(
    ("pod_spec", "ns", "want"),
    [
        ("      serviceAccountName: api\n", "  namespace: shop\n", "spiffe://cluster.local/ns/shop/sa/api"),
        ("      serviceAccount: legacy\n", "  namespace: shop\n", "spiffe://cluster.local/ns/shop/sa/legacy"),
        ("", "  namespace: shop\n", "spiffe://cluster.local/ns/shop/sa/default"),
        ("", "", "spiffe://cluster.local/ns/default/sa/default"),
    ],
)
def test_spiffe_id_of_a_deployment(pod_spec: str, ns: str, want: str) -> None:
    (doc,) = load_text(deployment(pod_spec, ns), "d.yaml")
    assert spiffe_id(doc) == want
    assert principal(doc) == want.removeprefix("spiffe://")


def test_pod_and_odd_template() -> None:
    (pod,) = load_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: x}\nspec: {serviceAccountName: s}\n",
        "p.yaml",
    )
    assert service_account(pod) == "s"
    (odd,) = load_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {template: 3}\n", "o.yaml"
    )
    assert service_account(odd) == "default"


def test_the_sample_clients_identities() -> None:
    docs = {(d.namespace, d.name): d for d in load_paths([MANIFESTS]) if d.kind == "Deployment"}
    assert spiffe_id(docs[("other-namespace", "client")]).startswith(
        "spiffe://cluster.local/ns/other-namespace/sa/"
    )


def test_workload_and_gateway_ids() -> None:
    docs = load_paths([MANIFESTS])
    assert workload_spiffe_id(docs, "other-namespace", "client").startswith(
        "spiffe://cluster.local/ns/other-namespace/sa/"
    )
    with pytest.raises(LookupError, match="no Deployment"):
        workload_spiffe_id(docs, "nowhere", "client")
    assert (
        gateway_spiffe_id()
        == "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
    )
