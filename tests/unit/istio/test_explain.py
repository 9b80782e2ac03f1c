"""meshproof explain: per object, the oracles' predictions (pure; the running mesh is faked)."""

from __future__ import annotations

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
