"""``meshproof explain``: per object, what the mesh will do, as the oracles predict it.

* VirtualService: each HTTP route's match and its traffic proportions (route oracle).
* DestinationRule: effective outlier detection and connection-pool limits as Envoy runs them.
  Those are read from the running mesh's Envoy (``/config_dump``, Envoy's defaults filled in by
  the outlier and overflow oracles); without a running mesh that has the rule applied, explain
  says so instead of guessing from the field names.
* AuthorizationPolicy: the decision per caller (every Deployment of the configuration, the
  ingress gateway, a plaintext caller) and method, for each workload the policy selects.
* PeerAuthentication: the effective mTLS mode of each workload it can affect.

Everything here is pure: the running mesh is reached through ``clusters``, a callable the CLI
passes in (cluster name -> Envoy cluster JSON, or None).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from harness.errors import UnsupportedFeature
from harness.istio.loader import Document
from harness.istio.model import (
    AuthorizationPolicy,
    Bundle,
    DestinationRule,
    PeerAuthentication,
    VirtualService,
    labels_match,
)
from harness.istio.oracles import authz, identity, mtls, routing
from harness.istio.oracles.outlier import EffectiveOutlier
from harness.istio.oracles.overflow import Limits

ClusterLookup = Callable[[str], Mapping[str, Any] | None]
METHODS = ("GET", "POST", "PUT", "DELETE")


def explain(docs: Sequence[Document], bundle: Bundle, clusters: ClusterLookup | None = None) -> list[str]:
    """Lines describing what the mesh does with each of ``docs`` (``bundle``: docs plus context)."""
    out: list[str] = []
    for doc in docs:
        head = f"{doc.kind} {doc.namespace or 'default'}/{doc.name} ({doc.file}, document {doc.index})"
        if doc.kind == "VirtualService":
            body = _virtual_service(VirtualService.from_document(doc))
        elif doc.kind == "DestinationRule":
            body = _destination_rule(DestinationRule.from_document(doc), bundle, clusters)
        elif doc.kind == "AuthorizationPolicy":
            body = _authorization(AuthorizationPolicy.from_document(doc), bundle)
        elif doc.kind == "PeerAuthentication":
            body = _peer_authentication(PeerAuthentication.from_document(doc), bundle)
        else:
            continue
        out.append(head)
        out.extend(f"  {line}" for line in body)
    return out


def _virtual_service(vs: VirtualService) -> list[str]:
    lines = []
    for i, route in enumerate(vs.http):
        when = "every request" if not route.match else " or ".join(_match_text(m) for m in route.match)
        try:
            split = routing.describe(route)
        except LookupError as exc:
            split = str(exc)
        lines.append(f"http[{i}]{f' {route.name}' if route.name else ''}: {when} -> {split}")
    return lines or ["no HTTP routes"]


def _match_text(m: Mapping[str, Any]) -> str:
    parts = []
    for key, value in m.items():
        if key == "headers" and isinstance(value, Mapping):
            parts += [f"header {h} {_sm(r)}" for h, r in value.items()]
        elif key in ("uri", "method") and isinstance(value, Mapping):
            parts.append(f"{key} {_sm(value)}")
        elif key != "name":
            parts.append(f"{key}={value}")
    return "(" + " and ".join(parts) + ")" if parts else "(anything)"


def _sm(rule: Any) -> str:
    if isinstance(rule, Mapping) and rule:
        kind, value = next(iter(rule.items()))
        return f"{kind} {value!r}"
    return "present"


def _destination_rule(dr: DestinationRule, bundle: Bundle, clusters: ClusterLookup | None) -> list[str]:
    service = bundle.service_for(dr.fqdn)
    ports = [p.port for p in service.ports] if service is not None else []
    if clusters is None or not ports:
        why = "no running mesh" if clusters is None else f"no Service for {dr.fqdn} in the configuration"
        return [
            f"effective outlier detection and pool limits: unknown ({why}); they are read from the "
            "Envoy config istiod generates: apply it to a running mesh (`meshproof up`, `meshproof apply`) "
            "and run explain again"
        ]
    lines = []
    for port in ports:
        for subset in (None, *dr.subset_names()):
            name = f"outbound|{port}|{subset or ''}|{dr.fqdn}"
            cluster = clusters(name)
            if cluster is None:
                lines.append(f"{name}: not in the running mesh's Envoy config")
                continue
            od = EffectiveOutlier.from_cluster(cluster)
            lines.append(f"{name}:")
            lines.append(f"  outlier detection: {od.describe() if od else 'none'}")
            lines.append(f"  pool: {Limits.from_cluster(cluster).describe()}")
    return lines


def _callers(bundle: Bundle) -> list[authz.Peer]:
    peers = [
        authz.Peer(
            f"{d.namespace or 'default'}/{d.name}",
            d.namespace or "default",
            identity.principal(d),
        )
        for d in bundle.of_kind("Deployment")
    ]
    gateway = identity.gateway_spiffe_id().removeprefix("spiffe://")
    peers.append(authz.Peer("ingress", identity.GATEWAY_NAMESPACE, gateway))
    peers.append(authz.Peer("plaintext (no mTLS identity)", "", ""))
    return peers


def _authorization(policy: AuthorizationPolicy, bundle: Bundle) -> list[str]:
    every = bundle.authorization_policies()
    targets = [
        w
        for w in bundle.workload_resources()
        if policy in authz.selecting(every, w.namespace, w.labels) and w.kind != "Namespace"
    ]
    if not targets:
        return ["selects no workload of the configuration"]
    lines = []
    for w in targets:
        applying = authz.selecting(every, w.namespace, w.labels)
        lines.append(f"at {w.namespace}/{w.name} (policies: {', '.join(p.name for p in applying)}):")
        for peer in _callers(bundle):
            if peer.source == f"{w.namespace}/{w.name}":
                continue
            try:
                verdicts = [
                    f"{m} {'allow' if authz.decide(applying, peer, authz.Request(m, '/')) else 'DENY'}"
                    for m in METHODS
                ]
            except UnsupportedFeature as exc:
                lines.append(f"  from {peer.source}: not predictable ({exc})")
                continue
            lines.append(f"  from {peer.source}: {', '.join(verdicts)}")
    return lines


def _peer_authentication(pa: PeerAuthentication, bundle: Bundle) -> list[str]:
    every = bundle.peer_authentications()
    lines = []
    for w in bundle.workload_resources():
        if w.kind not in ("Deployment", "StatefulSet", "DaemonSet", "Pod"):
            continue
        in_scope = pa.namespace == mtls.ROOT_NAMESPACE or (
            w.namespace == pa.namespace and (not pa.selector or labels_match(pa.selector, w.labels))
        )
        if not in_scope:
            continue
        ports = sorted(
            {
                p.target_port if isinstance(p.target_port, int) else p.port
                for s in bundle.services()
                if s.namespace == w.namespace and labels_match(s.selector, w.labels)
                for p in s.ports
            }
        )
        modes = {port: mtls.effective_mode(every, w.namespace, w.labels, port) for port in ports or [0]}
        text = ", ".join(f"port {p}: {m}" if p else m for p, m in modes.items())
        lines.append(f"{w.namespace}/{w.name}: {text}")
    return lines or ["affects no workload of the configuration"]
