"""Unit tests for harness.istio.semantic: each rule, its Istio wording, and a clean manifests/."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from harness.istio import semantic
from harness.istio.loader import Document, load_paths, load_text
from harness.istio.model import Bundle

MANIFESTS = Path(__file__).resolve().parents[3] / "manifests"


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


def test_manifests_break_no_rule(sample: Bundle) -> None:
    assert semantic.check(sample.documents, sample) == []


# -- weights ---------------------------------------------------------------------------------------


def test_weights_must_sum_to_100() -> None:
    ((path, message, fix),) = run(semantic.check_route_weights, vs(SPLIT.format(a=90, b=20)))
    assert path == "spec.http[0].route"
    assert message == "route weights sum to 110, must be 100 (90 + 20)"
    assert "add up to 100" in fix
    assert run(semantic.check_route_weights, vs(SPLIT.format(a=50, b=50))) == []


def test_weight_rules_for_single_missing_negative_and_wrong_type() -> None:
    single = "  - route:\n    - destination: {host: microservice-1}\n"
    assert run(semantic.check_route_weights, vs(single)) == []
    omitted = "  - route:\n    - destination: {host: a}\n    - destination: {host: b}\n"
    assert (
        run(semantic.check_route_weights, vs(omitted))[0][1] == "route weights sum to 0, must be 100 (0 + 0)"
    )
    negative = run(semantic.check_route_weights, vs(SPLIT.format(a=110, b=-10)))
    assert negative[0][:2] == ("spec.http[0].route[1].weight", "weight -10 < 0")
    assert run(semantic.check_route_weights, vs(SPLIT.format(a="ninety", b=10))) == []  # schema's job
    tcp = (
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: t}\n"
        "spec:\n  hosts: [h]\n  tcp:\n  - route:\n    - {destination: {host: a}, weight: 60}\n"
        "    - {destination: {host: b}, weight: 60}\n"
    )
    assert run(semantic.check_route_weights, tcp)[0][0] == "spec.tcp[0].route"


# -- subsets ---------------------------------------------------------------------------------------


def test_subset_must_be_defined(sample: Bundle) -> None:
    got = run(semantic.check_subset_references, vs(SPLIT.format(a=50, b=50).replace("v2", "v3")), sample)
    ((path, message, fix),) = got
    assert path == "spec.http[0].route[1].destination.subset"
    assert message == (
        "subset v3 of host microservice-1.sample.svc.cluster.local is not defined by any DestinationRule"
    )
    assert "add a subset named v3 to DestinationRule sample/microservice-1 (it defines: v1, v2)" in fix


def test_short_and_full_host_names_resolve_to_the_same_rule(sample: Bundle) -> None:
    full = SPLIT.format(a=50, b=50).replace(
        "host: microservice-1,", "host: microservice-1.sample.svc.cluster.local,"
    )
    assert run(semantic.check_subset_references, vs(full), sample) == []
    assert run(semantic.check_subset_references, vs(SPLIT.format(a=50, b=50)), sample) == []


def test_short_host_resolves_against_the_virtual_service_namespace(sample: Bundle) -> None:
    got = run(semantic.check_subset_references, vs(SPLIT.format(a=50, b=50), ns="other-namespace"), sample)
    assert [m for _, m, _ in got] == [
        f"subset {s} of host microservice-1.other-namespace.svc.cluster.local is not defined by any DestinationRule"
        for s in ("v1", "v2")
    ]
    assert "add a DestinationRule for host microservice-1.other-namespace" in got[0][2]


def test_wildcard_destination_rule_host_counts() -> None:
    text = (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: all, namespace: sample}\n"
        "spec: {host: '*.sample.svc.cluster.local', subsets: [{name: v1, labels: {version: v1}}, "
        "{name: v2, labels: {version: v2}}]}\n---\n" + vs(SPLIT.format(a=50, b=50))
    )
    assert run(semantic.check_subset_references, text) == []


def test_mirror_subsets_are_checked(sample: Bundle) -> None:
    routes = "  - route:\n    - destination: {host: microservice-1, subset: v1}\n" + (
        "    mirror: {host: microservice-1, subset: shadow}\n"
    )
    got = run(semantic.check_subset_references, vs(routes), sample)
    assert got[0][0] == "spec.http[0].mirror.subset"


# -- gateways --------------------------------------------------------------------------------------


def test_gateways_must_exist(sample: Bundle) -> None:
    routes = SPLIT.format(a=50, b=50)
    ok = vs(routes, extra="  gateways: [microservice-1-gateway, sample/microservice-1-gateway, mesh]\n")
    assert run(semantic.check_gateway_references, ok, sample) == []
    bad = vs(routes, extra="  gateways: [missing-gateway, istio-system/ingress]\n")
    got = run(semantic.check_gateway_references, bad, sample)
    assert [(p, m) for p, m, _ in got] == [
        ("spec.gateways[0]", "gateway sample/missing-gateway does not exist"),
        ("spec.gateways[1]", "gateway istio-system/ingress does not exist"),
    ]
    assert "existing: sample/microservice-1-gateway" in got[0][2]


def test_wildcard_host_needs_a_gateway() -> None:
    text = vs(SPLIT.format(a=50, b=50)).replace("hosts: [microservice-1]", "hosts: ['*']")
    got = run(semantic.check_gateway_references, text)
    assert got[0][:2] == (
        "spec.hosts[0]",
        "wildcard host * is not allowed for virtual services bound to the mesh gateway",
    )


# -- durations -------------------------------------------------------------------------------------


@pytest.mark.parametrize("good", ["5s", "1.5s", "100ms", "1h2m", "0.5s"])
def test_good_durations(good: str) -> None:
    assert run(semantic.check_durations, dr(f"    outlierDetection: {{interval: {good}}}\n")) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("five seconds", 'invalid duration "five seconds"'),
        ("5", 'invalid duration "5"'),
        ("0s", "duration must be greater than 1ms"),
        ("500us", "duration must be greater than 1ms"),
        ("1.0005s", "only durations to ms precision are supported"),
    ],
)
def test_bad_durations(value: str, message: str) -> None:
    got = run(semantic.check_durations, dr(f"    outlierDetection: {{baseEjectionTime: '{value}'}}\n"))
    assert got == [
        (
            "spec.trafficPolicy.outlierDetection.baseEjectionTime",
            message,
            got[0][2],
        )
    ]
    assert got[0][2]


def test_durations_in_routes_subsets_and_port_policies() -> None:
    routes = (
        "  - route: [{destination: {host: h}}]\n    timeout: 2 s\n"
        "    retries: {attempts: 2, perTryTimeout: 1x}\n"
        "    fault: {delay: {fixedDelay: soon, percentage: {value: 10}}}\n"
    )
    paths = [p for p, _, _ in run(semantic.check_durations, vs(routes))]
    assert paths == [
        "spec.http[0].timeout",
        "spec.http[0].retries.perTryTimeout",
        "spec.http[0].fault.delay.fixedDelay",
    ]
    policy = "    portLevelSettings:\n    - port: {number: 80}\n      connectionPool: {tcp: {connectTimeout: 1d}}\n"
    subsets = "  subsets:\n  - name: v1\n    trafficPolicy: {outlierDetection: {interval: x}}\n"
    paths = [p for p, _, _ in run(semantic.check_durations, dr(policy, subsets=subsets))]
    assert paths == [
        "spec.trafficPolicy.portLevelSettings[0].connectionPool.tcp.connectTimeout",
        "spec.subsets[0].trafficPolicy.outlierDetection.interval",
    ]
    idle = dr("    connectionPool: {tcp: {idleTimeout: 0s}}\n")
    assert run(semantic.check_durations, idle) == []  # 0 disables the TCP idle timeout


# -- traffic policies, faults, subsets ------------------------------------------------------------


def test_removed_consecutive_errors_has_a_specific_fix() -> None:
    got = run(
        semantic.check_traffic_policies, dr("    outlierDetection: {consecutiveErrors: 5, interval: 5s}\n")
    )
    ((path, message, fix),) = got
    assert path == "spec.trafficPolicy.outlierDetection.consecutiveErrors"
    assert "consecutiveErrors was removed" in message
    assert fix == "use consecutive5xxErrors or consecutiveGatewayErrors"


def test_outlier_percentages_and_pool_limits() -> None:
    policy = (
        "    outlierDetection: {maxEjectionPercent: 150, minHealthPercent: -1, consecutiveLocalOriginFailures: 3}\n"
        "    connectionPool: {http: {maxRetries: -1}}\n"
    )
    got = [(p, m) for p, m, _ in run(semantic.check_traffic_policies, dr(policy))]
    assert got == [
        ("spec.trafficPolicy.outlierDetection.maxEjectionPercent", "percentage 150 is not in range 0..100"),
        ("spec.trafficPolicy.outlierDetection.minHealthPercent", "percentage -1 is not in range 0..100"),
        (
            "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
            "outlier detection consecutive local origin failures is specified, "
            "but split external local origin errors is set to false",
        ),
        ("spec.trafficPolicy.connectionPool.http.maxRetries", "max retries must be non-negative"),
    ]
    empty = run(semantic.check_traffic_policies, dr("    connectionPool: {}\n"))
    assert empty[0][1] == "connection pool must have at least one field"


def test_fault_injection_rules() -> None:
    routes = (
        "  - route: [{destination: {host: h}}]\n"
        "    fault: {abort: {httpStatus: 700, percentage: {value: 101}}, delay: {fixedDelay: 1s, percent: 120}}\n"
        "  - route: [{destination: {host: h}}]\n    fault: {}\n"
    )
    got = [(p, m) for p, m, _ in run(semantic.check_fault_injection, vs(routes))]
    assert got == [
        (
            "spec.http[0].fault.abort.percentage.value",
            "percentage 101 is neither 0.0, nor in range [0.0001, 100.0]",
        ),
        ("spec.http[0].fault.delay.percent", "percentage 120 is not in range 0..100"),
        ("spec.http[0].fault.abort.httpStatus", "HTTP status 700 is not in range 200-599"),
        ("spec.http[1].fault", "HTTP fault injection must have an abort and/or a delay"),
    ]


def test_subset_names() -> None:
    subsets = "  subsets:\n  - {name: v1}\n  - {name: v1}\n  - {name: V_2}\n"
    got = [
        (p, m)
        for p, m, _ in run(semantic.check_subsets, dr("    connectionPool: {tcp: {}}\n", subsets=subsets))
    ]
    assert got == [
        ("spec.subsets[1].name", "duplicate subset names: v1"),
        ("spec.subsets[2].name", "subset name is invalid: V_2"),
    ]


# -- selectors -------------------------------------------------------------------------------------


def policy(kind: str, selector: str, ns: str = "sample") -> str:
    return (
        f"apiVersion: security.istio.io/v1\nkind: {kind}\nmetadata: {{name: p, namespace: {ns}}}\n"
        f"spec: {{selector: {{matchLabels: {selector}}}}}\n"
    )


def test_selectors_must_match_a_workload(sample: Bundle) -> None:
    assert run(semantic.check_selectors, policy("AuthorizationPolicy", "{app: microservice-1}"), sample) == []
    got = run(semantic.check_selectors, policy("PeerAuthentication", "{app: microservice-2}"), sample)
    ((path, message, fix),) = got
    assert path == "spec.selector.matchLabels"
    assert message == "selector {app: microservice-2} matches no workload in namespace sample"
    assert "Deployment sample/microservice-1-v1 {app: microservice-1, version: v1}" in fix
    other_ns = run(
        semantic.check_selectors,
        policy("AuthorizationPolicy", "{app: microservice-1}", "other-namespace"),
        sample,
    )
    assert other_ns[0][1] == "selector {app: microservice-1} matches no workload in namespace other-namespace"


def test_selectors_in_the_root_namespace_and_the_ingress_gateway(sample: Bundle) -> None:
    root = policy("AuthorizationPolicy", "{app: microservice-1}", "istio-system")
    assert run(semantic.check_selectors, root, sample) == []
    ingress = policy("AuthorizationPolicy", "{istio: ingressgateway}", "istio-system")
    assert run(semantic.check_selectors, ingress, sample) == []
    gw = (
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g, namespace: sample}\n"
        "spec: {selector: {istio: egressgateway}, servers: []}\n"
    )
    assert (
        run(semantic.check_selectors, gw, sample)[0][1]
        == "selector {istio: egressgateway} matches no workload in any namespace"
    )


def test_selectors_are_not_checked_without_workloads() -> None:
    assert run(semantic.check_selectors, policy("AuthorizationPolicy", "{app: nothing}")) == []


def test_service_selector_and_subset_labels(sample: Bundle) -> None:
    svc = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: sample}\n"
        "spec: {selector: {app: microservice-one}, ports: [{port: 80}]}\n"
    )
    assert run(semantic.check_selectors, svc, sample)[0][0] == "spec.selector"
    subsets = "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v3, labels: {version: v3}}\n"
    got = run(semantic.check_selectors, dr("    connectionPool: {tcp: {}}\n", subsets=subsets), sample)
    ((path, message, _),) = got
    assert path == "spec.subsets[1].labels"
    assert message == "subset v3 {version: v3} selects no pod of Service sample/microservice-1"


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
    assert [m for _, m, _ in run(semantic.check_duplicates, dup)] == [
        "duplicate object ConfigMap/samples/c: already defined in t.yaml (document 1)"
    ]
