"""meshproof explain: per object, the oracles' predictions (pure; the running mesh is faked)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from harness import paths
from harness.istio.explain import explain
from harness.istio.loader import load_paths, load_text
from harness.istio.model import Bundle

MANIFESTS = paths.MANIFESTS

DESIGN = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: microservice-1, namespace: sample}
spec:
  host: microservice-1
  subsets: [{name: v1, labels: {version: v1}}]
  trafficPolicy:
    outlierDetection: {consecutiveErrors: 5, interval: 5s, baseEjectionTime: 30s, maxEjectionPercent: 50}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: w, namespace: sample}
spec:
  hosts: [microservice-1]
  http:
  - match: [{headers: {x-canary: {exact: "true"}}, uri: {prefix: /api}}]
    route: [{destination: {host: microservice-1, subset: v2}}]
  - route:
    - {destination: {host: microservice-1, subset: v1}, weight: 90}
    - {destination: {host: microservice-1, subset: v2}, weight: 20}
  - route:
    - {destination: {host: microservice-1, subset: v1}, weight: 0}
    - {destination: {host: microservice-1, subset: v2}, weight: 0}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ignored}
"""


def bundle_with(text: str) -> tuple[Any, Bundle]:
    docs = load_text(text, "design.yaml")
    return docs, Bundle(load_paths([MANIFESTS])).merged(docs)


def test_routes_are_explained_by_proportion() -> None:
    docs, bundle = bundle_with(DESIGN)
    lines = explain(docs, bundle)
    text = "\n".join(lines)
    assert "VirtualService sample/w (design.yaml, document 2)" in text
    assert "http[0]: (header x-canary exact 'true' and uri prefix '/api') -> v2 100.0%" in text
    assert "http[1]: every request -> v1 81.8%, v2 18.2%" in text
    assert "add up to 0" in text
    assert "ConfigMap" not in text


def test_destination_rule_without_a_running_mesh_says_unknown() -> None:
    docs, bundle = bundle_with(DESIGN)
    text = "\n".join(explain(docs, bundle))
    assert "effective outlier detection and pool limits: unknown (no running mesh)" in text


def test_destination_rule_from_the_running_envoy() -> None:
    docs, bundle = bundle_with(DESIGN)
    clusters = {
        "outbound|3000||microservice-1.sample.svc.cluster.local": {
            "outlier_detection": {"interval": "5s", "base_ejection_time": "30s", "max_ejection_percent": 50},
            "circuit_breakers": {"thresholds": [{"max_connections": 4294967295}]},
        }
    }
    text = "\n".join(explain(docs, bundle, clusters.get))
    assert "outlier detection: eject after 5 consecutive 5xx, gateway errors: off, interval 5s" in text
    assert "at most 50% of hosts" in text
    assert (
        "outbound|3000|v1|microservice-1.sample.svc.cluster.local: not in the running mesh's Envoy config"
        in text
    )


def test_destination_rule_for_an_unknown_service() -> None:
    text = DESIGN.replace("host: microservice-1\n  subsets", "host: nowhere\n  subsets")
    docs, bundle = bundle_with(text)
    assert "no Service for nowhere.sample.svc.cluster.local" in "\n".join(explain(docs, bundle, {}.get))


def test_authorization_and_mtls_of_the_manifests() -> None:
    docs = load_paths([MANIFESTS])
    bundle = Bundle(docs)
    text = "\n".join(explain(docs, bundle))
    assert "from trusted-namespace/client: GET DENY, POST DENY" in text
    assert "from other-namespace/client: GET allow, POST DENY" in text
    assert "from plaintext (no mTLS identity): GET allow" in text
    assert "sample/microservice-1-v1: port 3000: STRICT" in text


def test_policies_that_select_nothing() -> None:
    text = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: none, namespace: sample}
spec: {selector: {matchLabels: {app: nothing}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: none, namespace: nowhere}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: custom, namespace: sample}
spec: {action: CUSTOM, provider: {name: x}, rules: [{}]}
"""
    docs, bundle = bundle_with(text)
    out = "\n".join(explain(docs, bundle))
    assert "selects no workload of the configuration" in out
    assert "affects no workload of the configuration" in out
    assert "not predictable" in out


# --------------------------------------------------------------------------- HTTPRoute

ROUTES = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split, namespace: sample}
spec:
  parentRefs:
  - {name: microservice-1, namespace: istio-system, sectionName: http}
  - {group: "", kind: Service, name: microservice-1, port: 3000}
  hostnames: [microservice-1.gateway-api.meshproof.test]
  rules:
  - name: canary
    matches:
    - path: {type: PathPrefix, value: /api}
      headers: [{name: x-canary, value: "true"}]
      method: GET
    - queryParams: [{type: RegularExpression, name: v, value: "2.*"}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-set, value: a}]
        add: [{name: x-add, value: b}]
        remove: [x-remove]
    - type: URLRewrite
      urlRewrite: {hostname: inner.test, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    backendRefs:
    - {name: microservice-1, port: 3000, weight: 90}
    - {name: microservice-1, port: 3000, weight: 30}
    - {name: microservice-1, port: 3000, weight: 0}
  - backendRefs:
    - {name: microservice-1, port: 3000}
    - {name: microservice-1-gone, port: 3000}
    - {name: tracing, namespace: istio-system, port: 16686}
  - matches: [{path: {type: Exact, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: moved.test, port: 8443}
  - matches: [{path: {type: PathPrefix, value: /none}}]
  - matches: [{path: {type: PathPrefix, value: /zero}}]
    backendRefs: [{name: microservice-1, port: 3000, weight: 0}]
"""


def route_lines(held: list[dict[str, Any]] | None = None) -> list[str]:
    docs, bundle = bundle_with(ROUTES)
    lines = explain(docs, bundle, gateway_api=held)
    assert lines[0] == "HTTPRoute sample/split (design.yaml, document 1)"
    return [line.strip() for line in lines[1:]]


def test_an_http_route_is_explained_per_rule_with_its_parents_matches_and_filters() -> None:
    lines = route_lines()
    assert lines[0] == (
        "parents: Gateway istio-system/microservice-1 (section http), "
        "Service sample/microservice-1 (port 3000, in-mesh callers of that Service (GAMMA))"
    )
    assert lines[1] == "hostnames: microservice-1.gateway-api.meshproof.test"
    assert lines[2] == (
        "rules[0] canary: (path PathPrefix '/api' and header x-canary Exact 'true' and method GET) "
        "or (query v RegularExpression '2.*')"
    )
    assert lines[3] == "filter: RequestHeaderModifier: set x-set: 'a', add x-add: 'b', remove x-remove"
    assert lines[4] == "filter: URLRewrite: hostname 'inner.test', path ReplacePrefixMatch '/v2'"


def test_backend_proportions_are_each_weight_over_the_rules_total() -> None:
    text = "\n".join(route_lines())
    assert "-> sample/microservice-1:3000 75.0% (weight 90 of 120)" in text
    assert "-> sample/microservice-1:3000 25.0% (weight 30 of 120)" in text
    assert "-> sample/microservice-1:3000 0% (weight 0: gets no traffic)" in text
    # unset weights are the CRD's default 1: three backends a third each
    assert "rules[1]: every request" in text
    assert "-> sample/microservice-1:3000 33.3% (weight unset, the CRD's default 1 of 3)" in text


def test_what_istio_decides_is_named_not_guessed() -> None:
    text = "\n".join(route_lines())
    assert (
        "-> sample/microservice-1-gone:3000 33.3% (weight unset, the CRD's default 1 of 3); no Service "
        "sample/microservice-1-gone in the configuration: whether it resolves is Istio's decision (the "
        "route's ResolvedRefs condition, `meshproof status`); its share is then answered by the gateway's "
        "Envoy, not forwarded"
    ) in text
    assert (
        "-> istio-system/tracing:16686 33.3% (weight unset, the CRD's default 1 of 3); in another namespace "
        "(needs a ReferenceGrant there): whether it resolves is Istio's decision"
    ) in text
    assert (
        "rules[3]: (path PathPrefix '/none')\nno backendRefs: nothing to forward to; what the gateway" in text
    )
    assert "every weight is 0: no backend gets traffic; what the gateway answers is Istio's decision" in text
    assert "whether each parent accepts the route is Istio's decision: no running mesh to ask" in text


def test_a_redirect_is_the_gateways_answer() -> None:
    text = "\n".join(route_lines())
    assert (
        "filter: RequestRedirect: scheme 'https', hostname 'moved.test', port 8443, status 302 (unset: the "
        "CRD's default); the gateway answers with the redirect, nothing is forwarded"
    ) in text


def test_istios_conditions_are_shown_when_the_running_mesh_holds_the_same_spec() -> None:
    docs, _ = bundle_with(ROUTES)
    held = {
        "kind": "HTTPRoute",
        "metadata": {"name": "split", "namespace": "sample"},
        "spec": docs[0].spec,
        "status": {
            "parents": [
                {
                    "parentRef": {
                        "name": "microservice-1",
                        "namespace": "istio-system",
                        "sectionName": "http",
                    },
                    "conditions": [
                        {
                            "type": "Accepted",
                            "status": "True",
                            "reason": "Accepted",
                            "message": "Route was valid",
                        },
                        {
                            "type": "ResolvedRefs",
                            "status": "False",
                            "reason": "BackendNotFound",
                            "message": "backend(microservice-1-gone.sample.svc.cluster.local) not found",
                        },
                    ],
                }
            ]
        },
    }
    assert route_lines([held])[-1] == (
        "Istio's conditions for Gateway istio-system/microservice-1 (section http): Accepted=True (Accepted: "
        "Route was valid); ResolvedRefs=False (BackendNotFound: backend(microservice-1-gone.sample.svc."
        "cluster.local) not found)"
    )
    # what the cluster holds carries the fields the API server defaulted: still this file's spec
    defaulted = copy.deepcopy(held)
    defaulted["spec"]["rules"][1]["backendRefs"][0].update(group="", kind="Service", weight=1)
    assert route_lines([defaulted])[-1].startswith(
        "Istio's conditions for Gateway istio-system/microservice-1"
    )
    other = {**held, "spec": {"rules": []}}
    assert route_lines([other])[-1] == (
        "the running mesh holds another spec of this route: its conditions are not this file's"
    )
    assert route_lines([])[-1] == (
        "the running mesh does not hold this route: Istio's conditions appear once it is applied"
    )


def test_the_defaults_explain_assumes_are_the_crds() -> None:
    import json

    from harness.istio import explain as ex
    from harness.istio.schemas import load_schemas

    entry = load_schemas().gateway_api().find("gateway.networking.k8s.io", "HTTPRoute")
    assert entry is not None
    crd = json.loads(Path(entry.path).read_text())
    v1 = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    rule = v1["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["rules"]["items"]["properties"]
    assert rule["backendRefs"]["items"]["properties"]["weight"]["default"] == ex.DEFAULT_BACKEND_WEIGHT
    redirect = rule["filters"]["items"]["properties"]["requestRedirect"]["properties"]
    assert redirect["statusCode"]["default"] == ex.DEFAULT_REDIRECT_STATUS
