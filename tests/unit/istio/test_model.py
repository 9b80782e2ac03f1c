"""Unit tests for harness.istio.model: durations, host names and the typed views of manifests/."""

from __future__ import annotations

import math

import pytest

from harness import paths
from harness.istio.loader import load_paths, load_text
from harness.istio.model import (
    Bundle,
    ConnectionPool,
    HttpRoute,
    OutlierDetection,
    RouteDestination,
    ServicePort,
    Subset,
    fqdn,
    gateway_ref,
    host_matches,
    labels_match,
    parse_duration,
)

MANIFESTS = paths.MANIFESTS
FQDN = "microservice-1.sample.svc.cluster.local"


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return Bundle(load_paths([MANIFESTS]))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5.0),
        ("1.5s", 1.5),
        ("100ms", 0.1),
        ("1h2m", 3720.0),
        ("1h2m3.5s", 3723.5),
        ("0", 0.0),
        ("0s", 0.0),
        ("-1.5s", -1.5),
        ("+2m", 120.0),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("250us", 0.00025),
        ("250\u00b5s", 0.00025),
        ("3ns", 3e-9),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert math.isclose(parse_duration(text), seconds, rel_tol=1e-12)


@pytest.mark.parametrize(
    "text", ["five seconds", "5", "", "5 s", " 5s", "5S", "s", ".s", "1.5.s", "5d", "--1s"]
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_fqdn_resolves_short_names_only() -> None:
    assert fqdn("microservice-1", "sample") == FQDN
    assert fqdn(FQDN, "other") == FQDN
    assert fqdn("reviews.default", "sample") == "reviews.default"  # has a dot: taken as is
    assert fqdn("*", "sample") == "*"
    assert fqdn("x", "") == "x.default.svc.cluster.local"


def test_host_and_label_matching() -> None:
    assert host_matches("*.sample.svc.cluster.local", FQDN)
    assert not host_matches("*.other.svc.cluster.local", FQDN)
    assert labels_match({"app": "a"}, {"app": "a", "version": "v1"})
    assert not labels_match({"app": "a", "version": "v2"}, {"app": "a", "version": "v1"})
    assert gateway_ref("gw", "sample") == ("sample", "gw")
    assert gateway_ref("istio-system/gw", "sample") == ("istio-system", "gw")
    assert gateway_ref("gw.other.svc.cluster.local", "sample") == ("other", "gw")


def test_deployments(bundle: Bundle) -> None:
    deps = {(d.namespace, d.name): d for d in bundle.deployments()}
    v1 = deps[("sample", "microservice-1-v1")]
    assert v1.replicas == 3
    assert deps[("sample", "microservice-1-v2")].replicas == 1
    assert v1.labels == {"app": "microservice-1", "version": "v1"}
    assert v1.selector == {"app": "microservice-1", "version": "v1"}
    assert v1.service_account == "microservice-1"
    assert v1.ports == {"http": 3000, "admin": 3001}
    assert v1.env == {"VERSION": "v1", "PORT": "3000", "ADMIN_PORT": "3001"}  # POD_NAME: valueFrom
    assert v1.image == "meshproof/microservice-1:dev"
    assert deps[("other-namespace", "client")].labels == {"app": "client", "version": "v1"}
    assert deps[("istio-system", "jaeger")].image.startswith("jaegertracing/all-in-one:1.")


def test_services(bundle: Bundle) -> None:
    svc = next(s for s in bundle.services() if s.name == "microservice-1")
    assert svc.namespace == "sample"
    assert svc.fqdn == FQDN
    assert svc.selector == {"app": "microservice-1"}
    assert svc.ports == (ServicePort("http", 3000, 3000, "TCP", "http"),)
    assert svc.port("http") == svc.port(3000) == svc.ports[0]
    assert bundle.service_for(FQDN) == svc


def test_virtual_services(bundle: Bundle) -> None:
    ingress = bundle.ingress_virtual_service()
    assert ingress is not None
    assert (ingress.name, ingress.namespace) == ("microservice-1-ingress", "sample")
    assert ingress.gateways == ("microservice-1-gateway",)
    assert ingress.gateway_refs() == (("sample", "microservice-1-gateway"),)
    assert not ingress.binds_to_mesh
    (route,) = ingress.http
    assert route.weights_by_subset() == {"v1": 90, "v2": 10}
    assert route.destinations[0] == RouteDestination(FQDN, "v1", 3000, 90, FQDN)
    assert route.fault is None and route.timeout is None and route.timeout_s is None
    mesh = next(vs for vs in bundle.virtual_services() if vs.name == "microservice-1")
    assert mesh.binds_to_mesh
    assert mesh.hosts == (FQDN,)
    assert mesh.http[0].weights_by_subset() == {"v1": 90, "v2": 10}


def test_destination_rule(bundle: Bundle) -> None:
    (dr,) = bundle.destination_rules()
    assert (dr.name, dr.namespace, dr.host, dr.fqdn) == ("microservice-1", "sample", FQDN, FQDN)
    assert dr.subsets == (Subset("v1", {"version": "v1"}), Subset("v2", {"version": "v2"}))
    assert dr.subset_names() == ("v1", "v2")
    assert dr.subset("v2") == Subset("v2", {"version": "v2"})
    assert dr.outlier_detection == OutlierDetection(
        consecutive_5xx_errors=5,
        consecutive_gateway_errors=None,
        interval_s=5.0,
        base_ejection_time_s=30.0,
        max_ejection_percent=50,
        split_external_local_origin_errors=False,
    )
    assert dr.connection_pool == ConnectionPool(
        max_connections=100, http1_max_pending_requests=100, http2_max_requests=100
    )
    assert bundle.destination_rules_for(FQDN) == (dr,)


def test_security_and_gateway_views(bundle: Bundle) -> None:
    (ap,) = bundle.authorization_policies()
    assert (ap.name, ap.namespace, ap.action) == ("microservice-1", "sample", "ALLOW")
    assert ap.selector == {"app": "microservice-1"}
    assert ap.rules[0]["from"][0]["source"]["notNamespaces"] == ["trusted-namespace"]
    assert ap.rules[0]["to"][0]["operation"]["methods"] == ["GET"]
    (pa,) = bundle.peer_authentications()
    assert (pa.name, pa.namespace, pa.mode, pa.selector, pa.port_level) == (
        "default",
        "sample",
        "STRICT",
        {},
        {},
    )
    (gw,) = bundle.gateways()
    assert gw.selector == {"istio": "ingressgateway"}
    assert (gw.servers[0].port, gw.servers[0].protocol, gw.servers[0].hosts) == (80, "HTTP", ("*",))
    names = {n.name: n for n in bundle.namespaces()}
    assert set(names) == {"sample", "trusted-namespace", "other-namespace"}
    assert all(n.injection_enabled for n in names.values())
    assert {(a.namespace, a.name) for a in bundle.service_accounts()} == {
        ("sample", "microservice-1"),
        ("trusted-namespace", "client"),
        ("other-namespace", "client"),
    }


def test_find_merged_without(bundle: Bundle) -> None:
    doc = bundle.find("VirtualService", "sample", "microservice-1")
    assert doc is not None and doc.kind == "VirtualService"
    assert bundle.find("VirtualService", "other", "microservice-1") is None
    assert bundle.find("Namespace", None, "sample") is not None
    (replacement,) = load_text(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\n"
        "metadata: {name: microservice-1, namespace: sample}\nspec: {hosts: [x]}\n"
    )
    merged = bundle.merged([replacement])
    assert len(merged) == len(bundle)
    assert merged.find("VirtualService", "sample", "microservice-1") is replacement
    assert len(bundle.without([replacement])) == len(bundle) - 1
    assert bundle.fqdn("microservice-1", "sample") == FQDN


def test_weights_by_subset_rules() -> None:
    single = HttpRoute(None, (), (RouteDestination("h", None, None, None, "h"),), None, None)
    assert single.weights_by_subset() == {"h": 100}
    split = HttpRoute(
        None,
        (),
        (RouteDestination("h", "v1", None, 70, "h"), RouteDestination("h", "v2", None, None, "h")),
        None,
        "1.5s",
    )
    assert split.weights_by_subset() == {"v1": 70, "v2": 0}
    assert split.timeout_s == 1.5


def test_outlier_detection_defaults_are_envoys() -> None:
    od = OutlierDetection.from_raw({})
    assert (od.consecutive_5xx_errors, od.interval_s, od.base_ejection_time_s, od.max_ejection_percent) == (
        5,
        10.0,
        30.0,
        10,
    )
    assert OutlierDetection.from_raw({"consecutive5xxErrors": 0}).consecutive_5xx_errors == 0


def test_views_tolerate_malformed_documents() -> None:
    docs = load_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"
        "spec: {replicas: many, template: {spec: {containers: [5, {ports: [{containerPort: x}]}]}}}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\n"
        "spec: {hosts: 3, http: [{route: [{destination: 7, weight: a}]}, 5]}\n"
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\n"
        "spec: {trafficPolicy: {outlierDetection: {interval: soon}}, subsets: [{name: 1}]}\n"
    )
    b = Bundle(docs)
    (dep,) = b.deployments()
    assert (dep.namespace, dep.replicas, dep.ports) == ("default", 1, {})
    (vs,) = b.virtual_services()
    assert vs.hosts == ()
    assert vs.http[0].destinations[0].weight is None
    (dr,) = b.destination_rules()
    assert dr.outlier_detection is not None and dr.outlier_detection.interval_s == 10.0
