"""The route under test, whichever traffic API the mesh routes with: one routing suite for both.

A mesh runs either the manifests' VirtualServices (``--traffic-api istio``) or their Gateway API
HTTPRoutes (``gateway-api``; :mod:`harness.istio.traffic_api`). The routing suites ask a
:class:`RouteUnderTest` for what differs between the two and nothing else:

* which object it is and how a request reaches it (:attr:`RouteUnderTest.request`: the ingress
  Gateway API listener takes only its hostname, so the sampler sends that ``Host``);
* the prediction for a request (:meth:`RouteUnderTest.predict`): the route or rule the request
  takes and its split by destination, from the route oracle of its API
  (:mod:`harness.istio.oracles.routing` / :mod:`harness.istio.oracles.httproute`), and which
  pods answer for each destination (the DestinationRule subset's labels / the backendRef
  Service's selector);
* its variants: re-weighted (:meth:`RouteUnderTest.weighted`), a first rule matching a header or
  a path prefix (:meth:`RouteUnderTest.matched`), a three-way split over two single replicas and
  another version (:meth:`RouteUnderTest.three_way`).

Destinations are named as each API names them (subset ``v1`` / backend Service
``microservice-1-v1``); the suites speak in versions and ask :meth:`RouteUnderTest.category`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness.backends.base import Workload
from harness.guards import ConfigGuard
from harness.istio import Bundle, VirtualService
from harness.istio.model import GATEWAY_API_GROUP, HTTPRouteObject
from harness.traffic.split import (
    Attribution,
    attribution,
    backend_attribution,
    expected_rule_split,
    expected_split,
    route_for,
    rule_for,
)

Body = dict[str, Any]
#: why a suite runs only over the VirtualServices (``pytest.mark.istio_routes(reason=...)``)
FAULTS_ARE_VIRTUAL_SERVICES = "fault injection is a VirtualService route's (Gateway API has no fault filter)"
POLICY_IS_THE_DESTINATION_RULE = (
    "its traffic policy is the DestinationRule of microservice-1, the VirtualServices' destination; "
    "the HTTPRoutes route to the per-version Services, which it does not reach"
)
#: a per-pod label the local backend puts on every replica (the kube backend has none)
REPLICA_LABEL = "meshproof.dev/replica"


@dataclass(frozen=True)
class Match:
    """A request condition a match test puts on a rule: a header's exact value, or a path prefix."""

    header: tuple[str, str] | None = None
    prefix: str | None = None


@dataclass(frozen=True)
class Prediction:
    """What the route does with one request: its split (percent by destination), who answers
    for each destination, and which route or rule decided (for the evidence notes)."""

    split: dict[str, float]
    who: Attribution
    via: str


@dataclass(frozen=True)
class ThreeWay:
    """The objects of a three-way split and its weights by destination."""

    bodies: list[Body]
    weights: dict[str, int]
    unvalidated_because: str = ""


class RouteUnderTest(Protocol):
    api: str  # "istio" | "gateway-api"
    kind: str
    name: str
    namespace: str
    #: sampler keyword arguments every request to this route needs (e.g. ``host_header``)
    request: Mapping[str, Any]

    def category(self, applied: Bundle, version: str) -> str:
        """The destination name of ``version`` (a subset, or a backend Service)."""
        ...

    def predict(
        self,
        applied: Bundle,
        workloads: Sequence[Workload],
        *,
        path: str = "/api/greet",
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
    ) -> Prediction: ...

    def weighted(self, config: ConfigGuard, weights: Mapping[str, int]) -> Body:
        """This route with its first rule's weights replaced (keys: destination names)."""
        ...

    def matched(self, config: ConfigGuard, match: Match, to: str, rest: str | None, *, name: str) -> Body:
        """This route with a first rule ``match`` -> destination ``to``; with ``rest``, every other
        request goes to destination ``rest`` (else the route's rules stay behind it)."""
        ...

    def three_way(self, config: ConfigGuard, a: Workload, b: Workload) -> ThreeWay:
        """80/10/10 over replica ``a``, replica ``b`` (each alone) and the other version."""
        ...


def _host_header(host: str | None) -> dict[str, Any]:
    return {"host_header": host} if host else {}


# --------------------------------------------------------------------------- VirtualService


@dataclass(frozen=True)
class VirtualServiceRoute:
    name: str
    namespace: str
    api: str = "istio"
    kind: str = "VirtualService"
    request: Mapping[str, Any] = field(default_factory=dict)

    def _vs(self, applied: Bundle) -> VirtualService:
        for vs in applied.virtual_services():
            if vs.name == self.name and vs.namespace == self.namespace:
                return vs
        raise LookupError(f"VirtualService {self.namespace}/{self.name} is not applied")

    def category(self, applied: Bundle, version: str) -> str:
        d = self._vs(applied).http[0].destinations[0]
        for dr in applied.destination_rules_for(d.fqdn):
            for s in dr.subsets:
                if s.labels.get("version") == version:
                    return s.name
        raise LookupError(f"no DestinationRule subset of {d.fqdn} selects version {version}")

    def predict(
        self,
        applied: Bundle,
        workloads: Sequence[Workload],
        *,
        path: str = "/api/greet",
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
    ) -> Prediction:
        route = route_for(self._vs(applied), path=path, method=method, headers=headers or {})
        via = f"VirtualService {self.namespace}/{self.name} route {route.name or '(unnamed)'}"
        return Prediction(expected_split(route), attribution(applied, route, workloads), via)

    def _destination(self, config: ConfigGuard, subset: str | None, weight: int | None = None) -> Body:
        d = self._vs(config.applied).http[0].destinations[0]
        dest: Body = {"host": d.host}
        if d.port is not None:
            dest["port"] = {"number": d.port}
        if subset is not None:
            dest["subset"] = subset
        out: Body = {"destination": dest}
        if weight is not None:
            out["weight"] = weight
        return out

    def weighted(self, config: ConfigGuard, weights: Mapping[str, int]) -> Body:
        route = [self._destination(config, s, w) for s, w in weights.items()]

        def edit(body: Body) -> None:
            body["spec"]["http"][0]["route"] = route

        return config.variant(self.kind, self.name, self.namespace, edit)

    def matched(self, config: ConfigGuard, match: Match, to: str, rest: str | None, *, name: str) -> Body:
        condition: Body = {}
        if match.header is not None:
            condition["headers"] = {match.header[0]: {"exact": match.header[1]}}
        if match.prefix is not None:
            condition["uri"] = {"prefix": match.prefix}
        first = {"name": name, "match": [condition], "route": [self._destination(config, to)]}
        others = None if rest is None else {"name": "rest", "route": [self._destination(config, rest)]}

        def edit(body: Body) -> None:
            if others is None:
                body["spec"]["http"].insert(0, first)
            else:
                body["spec"]["http"] = [first, others]

        return config.variant(self.kind, self.name, self.namespace, edit)

    def three_way(self, config: ConfigGuard, a: Workload, b: Workload) -> ThreeWay:
        d = self._vs(config.applied).http[0].destinations[0]
        dr_name = config.applied.destination_rules_for(d.fqdn)[0].name
        version = a.version

        def add_subsets(body: Body) -> None:
            body["spec"]["subsets"] += [
                {
                    "name": f"{version}-a",
                    "labels": {"version": version, REPLICA_LABEL: a.labels[REPLICA_LABEL]},
                },
                {
                    "name": f"{version}-b",
                    "labels": {"version": version, REPLICA_LABEL: b.labels[REPLICA_LABEL]},
                },
            ]

        other = next(v for v in ("v1", "v2") if v != version)
        weights = {f"{version}-a": 80, f"{version}-b": 10, self.category(config.applied, other): 10}
        return ThreeWay(
            [
                config.variant("DestinationRule", dr_name, self.namespace, add_subsets),
                self.weighted(config, weights),
            ],
            weights,
            f"subsets on {REPLICA_LABEL}, which the backend (not the manifests) puts on pods",
        )


# --------------------------------------------------------------------------- HTTPRoute


@dataclass(frozen=True)
class HTTPRouteRoute:
    name: str
    namespace: str
    api: str = "gateway-api"
    kind: str = "HTTPRoute"
    request: Mapping[str, Any] = field(default_factory=dict)

    def _route(self, applied: Bundle) -> HTTPRouteObject:
        for r in applied.http_routes():
            if r.name == self.name and r.namespace == self.namespace:
                return r
        raise LookupError(f"HTTPRoute {self.namespace}/{self.name} is not applied")

    def _template(self, applied: Bundle) -> Body:
        """The first backendRef of the first rule, as written (its port, namespace)."""
        doc = applied.find(self.kind, self.namespace, self.name)
        assert doc is not None
        return dict(doc.body["spec"]["rules"][0]["backendRefs"][0])

    def category(self, applied: Bundle, version: str) -> str:
        """The backend Service that selects what the route's first backend selects, but ``version``."""
        ref = self._route(applied).rules[0].backend_refs[0]
        template = applied.service_for(ref.fqdn)
        if template is None:
            raise LookupError(f"no Service {ref.namespace}/{ref.name} behind HTTPRoute {self.name}")
        wanted = {**template.selector, "version": version}
        for s in applied.services():
            if s.namespace == ref.namespace and dict(s.selector) == wanted:
                return s.name
        raise LookupError(f"no Service in {ref.namespace} selects exactly {wanted}")

    def predict(
        self,
        applied: Bundle,
        workloads: Sequence[Workload],
        *,
        path: str = "/api/greet",
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
    ) -> Prediction:
        route = self._route(applied)
        rule = rule_for(route, path=path, method=method, headers=headers or {})
        via = f"HTTPRoute {self.namespace}/{self.name} rule {route.rules.index(rule)}"
        return Prediction(expected_rule_split(rule), backend_attribution(applied, rule, workloads), via)

    def _ref(self, config: ConfigGuard, service: str, weight: int | None = None) -> Body:
        ref = {**self._template(config.applied), "name": service}
        ref.pop("weight", None)
        if weight is not None:
            ref["weight"] = weight
        return ref

    def weighted(self, config: ConfigGuard, weights: Mapping[str, int]) -> Body:
        refs = [self._ref(config, s, w) for s, w in weights.items()]

        def edit(body: Body) -> None:
            body["spec"]["rules"][0]["backendRefs"] = refs

        return config.variant(self.kind, self.name, self.namespace, edit)

    def matched(self, config: ConfigGuard, match: Match, to: str, rest: str | None, *, name: str) -> Body:
        # the path as the API server stores it (its default is written out: istiod expects it)
        condition: Body = {"path": {"type": "PathPrefix", "value": match.prefix or "/"}}
        if match.header is not None:
            condition["headers"] = [{"type": "Exact", "name": match.header[0], "value": match.header[1]}]
        first = {"matches": [condition], "backendRefs": [self._ref(config, to)]}
        others = None if rest is None else {"backendRefs": [self._ref(config, rest)]}

        def edit(body: Body) -> None:
            if others is None:
                body["spec"]["rules"].insert(0, first)
            else:
                body["spec"]["rules"] = [first, others]

        return config.variant(self.kind, self.name, self.namespace, edit)

    def three_way(self, config: ConfigGuard, a: Workload, b: Workload) -> ThreeWay:
        applied = config.applied
        mine = self.category(applied, a.version)
        base = config.original("Service", mine, self.namespace)
        services = []
        for suffix, pod in (("a", a), ("b", b)):
            svc = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"{mine}-{suffix}", "namespace": self.namespace},
                "spec": {
                    "selector": {**base["spec"]["selector"], REPLICA_LABEL: pod.labels[REPLICA_LABEL]},
                    "ports": base["spec"]["ports"],
                },
            }
            services.append(svc)
        other = next(v for v in ("v1", "v2") if v != a.version)
        weights = {f"{mine}-a": 80, f"{mine}-b": 10, self.category(applied, other): 10}
        return ThreeWay(
            [*services, self.weighted(config, weights)],
            weights,
            f"Services selecting {REPLICA_LABEL}, which the backend (not the manifests) puts on pods",
        )


# --------------------------------------------------------------------------- finding them


def _listener_host(applied: Bundle, route: HTTPRouteObject) -> str | None:
    """The hostname a request needs to reach ``route`` through its Gateway: the route's own
    (non-wildcard) hostname, else its parent listener's."""
    concrete = [h for h in route.hostnames if not h.startswith("*")]
    if concrete:
        return concrete[0]
    for ns, name in route.gateway_refs():
        doc = next(
            (
                d
                for d in applied.of_kind("Gateway")
                if d.group == GATEWAY_API_GROUP and d.name == name and (d.namespace or "default") == ns
            ),
            None,
        )
        if doc is None:
            continue
        section = next((p.section_name for p in route.parent_refs if p.name == name), None)
        for listener in doc.spec.get("listeners") or []:
            if section is not None and listener.get("name") != section:
                continue
            host = listener.get("hostname")
            if isinstance(host, str) and not host.startswith("*"):
                return host
    return None


def ingress_route(applied: Bundle, api: str) -> RouteUnderTest:
    """The route traffic entering through the ingress gateway takes: the first VirtualService bound
    to a Gateway, or the first HTTPRoute whose parent is a Gateway (sent its listener's Host)."""
    if api == "gateway-api":
        route = next((r for r in applied.http_routes() if r.gateway_refs()), None)
        assert route is not None, "the manifests define no HTTPRoute attached to a Gateway"
        return HTTPRouteRoute(
            route.name, route.namespace, request=_host_header(_listener_host(applied, route))
        )
    vs = applied.ingress_virtual_service()
    assert vs is not None, "the manifests define no VirtualService bound to a Gateway"
    return VirtualServiceRoute(vs.name, vs.namespace)


def mesh_route(applied: Bundle, api: str, host: str) -> RouteUnderTest:
    """The route in-mesh callers of ``host`` take: a mesh-bound VirtualService, or a GAMMA
    HTTPRoute (its parent the Service ``host``)."""
    if api == "gateway-api":
        for r in applied.http_routes():
            if any(p.is_service and applied.fqdn(p.name, p.namespace) == host for p in r.parent_refs):
                return HTTPRouteRoute(r.name, r.namespace)
        raise LookupError(f"no HTTPRoute has the Service {host} as its parent (GAMMA)")
    for vs in applied.virtual_services():
        if vs.binds_to_mesh and any(applied.fqdn(h, vs.namespace) == host for h in vs.hosts):
            return VirtualServiceRoute(vs.name, vs.namespace)
    raise LookupError(f"no mesh-bound VirtualService for {host}")
