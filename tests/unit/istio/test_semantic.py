"""Unit tests for harness.istio.semantic: Kubernetes API-server rules and meshproof's own warnings."""

from __future__ import annotations

import pytest

from harness import paths
from harness.istio import semantic
from harness.istio.loader import Document, load_paths, load_text
from harness.istio.model import Bundle

MANIFESTS = paths.MANIFESTS


@pytest.fixture(scope="module")
def sample() -> Bundle:
    return Bundle(load_paths([MANIFESTS]))


def docs(text: str) -> tuple[Document, ...]:
    return load_text(text, "t.yaml")


def run(rule: semantic.Rule, text: str, context: Bundle | None = None) -> list[tuple[str, str, str]]:
    new = docs(text)
    bundle = (context or Bundle(())).merged(new)
    return [(p.path, p.message, p.fix) for d in new for p in rule(d, bundle)]


def vs(routes: str, *, ns: str = "sample", extra: str = "") -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        f"metadata: {{name: vs, namespace: {ns}}}\nspec:\n  hosts: [microservice-1]\n{extra}"
        f"  http:\n{routes}"
    )


def dr(policy: str, *, subsets: str = "") -> str:
    return (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n"
        "metadata: {name: dr, namespace: sample}\nspec:\n  host: microservice-1\n"
        f"  trafficPolicy:\n{policy}{subsets}"
    )


SPLIT = """  - route:
    - destination: {{host: microservice-1, subset: v1}}
      weight: {a}
    - destination: {{host: microservice-1, subset: v2}}
      weight: {b}
"""


OWN = "meshproof's own check (Istio accepts this): "


def test_manifests_break_no_rule(sample: Bundle) -> None:
    assert semantic.check(sample.documents, sample) == []
    assert semantic.warn(sample.documents, sample) == []


# -- weights: meshproof's own warning (Istio accepts any non-negative weights) --------------------


def test_weights_not_summing_to_100_warn_with_the_proportions() -> None:
    ((path, message, fix),) = run(semantic.warn_route_weights, vs(SPLIT.format(a=90, b=20)))
    assert path == "spec.http[0].route"
    assert message == (
        "meshproof's own check (Istio accepts this): weights sum to 110: Istio routes by proportion, "
        "v1 gets 81.8%, v2 gets 18.2%"
    )
    assert "nothing to fix" in fix


def test_weights_that_istio_judges_are_left_to_istio() -> None:
    assert run(semantic.warn_route_weights, vs(SPLIT.format(a=50, b=50))) == []
    assert run(semantic.warn_route_weights, vs(SPLIT.format(a=0, b=0))) == []  # Istio: error
    assert run(semantic.warn_route_weights, vs(SPLIT.format(a=120, b=-20))) == []  # Istio: error
    assert run(semantic.warn_route_weights, vs(SPLIT.format(a="ninety", b=10))) == []  # schema's job
    single = "  - route:\n    - destination: {host: microservice-1}\n"
    assert run(semantic.warn_route_weights, vs(single)) == []
    plain = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
    assert run(semantic.warn_route_weights, plain) == []


# -- selectors: meshproof's own warnings -----------------------------------------------------------


def policy(kind: str, selector: str, ns: str = "sample") -> str:
    return (
        f"apiVersion: security.istio.io/v1\nkind: {kind}\nmetadata: {{name: p, namespace: {ns}}}\n"
        f"spec: {{selector: {{matchLabels: {selector}}}}}\n"
    )


def test_selectors_must_match_a_workload(sample: Bundle) -> None:
    assert run(semantic.warn_selectors, policy("AuthorizationPolicy", "{app: microservice-1}"), sample) == []
    got = run(semantic.warn_selectors, policy("PeerAuthentication", "{app: microservice-2}"), sample)
    ((path, message, fix),) = got
    assert path == "spec.selector.matchLabels"
    assert message == OWN + "selector {app: microservice-2} matches no workload in namespace sample"
    assert "Deployment sample/microservice-1-v1 {app: microservice-1, version: v1}" in fix
    other_ns = run(
        semantic.warn_selectors,
        policy("AuthorizationPolicy", "{app: microservice-1}", "other-namespace"),
        sample,
    )
    assert (
        other_ns[0][1]
        == OWN + "selector {app: microservice-1} matches no workload in namespace other-namespace"
    )


def test_selectors_in_the_root_namespace_and_the_ingress_gateway(sample: Bundle) -> None:
    root = policy("AuthorizationPolicy", "{app: microservice-1}", "istio-system")
    assert run(semantic.warn_selectors, root, sample) == []
    ingress = policy("AuthorizationPolicy", "{istio: ingressgateway}", "istio-system")
    assert run(semantic.warn_selectors, ingress, sample) == []
    gw = (
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: sample}\n"
        "spec: {selector: {istio: egressgateway}, servers: []}\n"
    )
    assert (
        run(semantic.warn_selectors, gw, sample)[0][1]
        == OWN + "selector {istio: egressgateway} matches no workload in any namespace"
    )


def test_selectors_are_not_checked_without_workloads() -> None:
    assert run(semantic.warn_selectors, policy("AuthorizationPolicy", "{app: nothing}")) == []


def test_service_selector_and_subset_labels(sample: Bundle) -> None:
    svc = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: sample}\n"
        "spec: {selector: {app: microservice-one}, ports: [{port: 80}]}\n"
    )
    assert run(semantic.warn_selectors, svc, sample)[0][0] == "spec.selector"
    subsets = "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v3, labels: {version: v3}}\n"
    got = run(semantic.warn_selectors, dr("    connectionPool: {tcp: {}}\n", subsets=subsets), sample)
    ((path, message, _),) = got
    assert path == "spec.subsets[1].labels"
    assert message == OWN + "subset v3 {version: v3} selects no pod of Service sample/microservice-1"


# -- Kubernetes rules ------------------------------------------------------------------------------


def test_deployment_selector_must_match_template() -> None:
    text = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"
        "spec: {selector: {matchLabels: {app: a}}, template: {metadata: {labels: {app: b}}}}\n"
    )
    got = run(semantic.check_workload_selector, text)
    assert got[0][:2] == (
        "spec.selector.matchLabels",
        "selector {app: a} does not match template labels {app: b}",
    )


def test_names_namespaces_and_duplicates(sample: Bundle) -> None:
    bad_name = "apiVersion: v1\nkind: Service\nmetadata: {name: My_Svc, namespace: Bad.NS}\n"
    got = run(semantic.check_names, bad_name)
    assert [p for p, _, _ in got] == ["metadata.name", "metadata.namespace"]
    assert got[0][2] == "rename it, e.g. my-svc"
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: samples}\n"
    got = run(semantic.check_namespaces_exist, cm, sample)
    assert got[0][1].startswith("namespace samples is not defined")
    dup = cm + "---\n" + cm
    assert [m for _, m, _ in run(semantic.warn_duplicates, dup)] == [
        OWN + "duplicate object ConfigMap/samples/c: already defined in t.yaml (document 1); the later "
        "definition wins"
    ]
