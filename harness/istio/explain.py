"""``meshproof explain``: per object, what the mesh will do, as the oracles predict it.

* VirtualService: each HTTP route's match and its traffic proportions (route oracle).
* DestinationRule: effective outlier detection and connection-pool limits as Envoy runs them.
  Those are read from the running mesh's Envoy (``/config_dump``, Envoy's defaults filled in by
  the outlier and overflow oracles); without a running mesh that has the rule applied, explain
  says so instead of guessing from the field names.
* AuthorizationPolicy: the decision per caller (every Deployment of the configuration, the
  ingress gateway, a plaintext caller) and method, for each workload the policy selects.
* PeerAuthentication: the effective mTLS mode of each workload it can affect.
* HTTPRoute (Gateway API): its parent refs and hostnames, then per rule its matches, filters
  and backend proportions (each weight over the rule's total; an unset weight is the CRD's
  default, 1). Whether a parent accepts the route and a backend resolves is Istio's decision,
  not the object's: explain names a backend the configuration has no Service for, a
  cross-namespace one and a rule with nothing to forward to, and says that the route's
  conditions (``meshproof status``) and the gateway's Envoy decide what is served there. With a
  running mesh that holds the route with the same spec, the conditions Istio wrote are shown.

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
#: the Gateway API objects a running mesh holds, with the status Istio wrote
#: (:meth:`harness.backends.base.Backend.gateway_api_objects`)
GatewayApiObjects = Sequence[Mapping[str, Any]]
METHODS = ("GET", "POST", "PUT", "DELETE")


def explain(
    docs: Sequence[Document],
    bundle: Bundle,
    clusters: ClusterLookup | None = None,
    gateway_api: GatewayApiObjects | None = None,
) -> list[str]:
    """Lines describing what the mesh does with each of ``docs`` (``bundle``: docs plus context;
    ``clusters`` and ``gateway_api``: what a running mesh runs and holds, None without one)."""
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
        elif doc.kind == "HTTPRoute" and doc.api_version.startswith(GATEWAY_API_GROUP + "/"):
            body = _http_route(doc, bundle, gateway_api)
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


# --------------------------------------------------------------------------- Gateway API HTTPRoute

GATEWAY_API_GROUP = "gateway.networking.k8s.io"
#: the HTTPRoute CRD's defaults for an unset backendRef weight and redirect status code (its
#: schema's ``default``s; a unit test reads them from the CRD of the Gateway API version the
#: pinned Istio requires)
DEFAULT_BACKEND_WEIGHT = 1
DEFAULT_REDIRECT_STATUS = 302


def _http_route(doc: Document, bundle: Bundle, held: GatewayApiObjects | None) -> list[str]:
    spec = doc.spec
    namespace = doc.namespace or "default"
    parents = [_parent_text(p, namespace) for p in _dicts(spec.get("parentRefs"))]
    lines = [f"parents: {', '.join(parents) if parents else 'none (the route attaches nowhere)'}"]
    hostnames = [str(h) for h in spec.get("hostnames") or []]
    lines.append(
        f"hostnames: {', '.join(hostnames)}"
        if hostnames
        else "hostnames: none set (the parents' own: a Gateway listener's hostname, a Service's name)"
    )
    rules = _dicts(spec.get("rules"))
    for i, rule in enumerate(rules):
        name = f" {rule['name']}" if rule.get("name") else ""
        matches = _dicts(rule.get("matches"))
        when = " or ".join(_route_match_text(m) for m in matches) if matches else "every request"
        lines.append(f"rules[{i}]{name}: {when}")
        lines.extend(f"  filter: {_filter_text(f, namespace)}" for f in _dicts(rule.get("filters")))
        lines.extend(f"  {line}" for line in _backends(rule, namespace, bundle))
    if not rules:
        lines.append("no rules")
    lines.extend(_held_conditions(doc, held))
    return lines


def _dicts(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value or [] if isinstance(v, Mapping)]


def _parent_text(ref: Mapping[str, Any], namespace: str) -> str:
    kind = str(ref.get("kind") or "Gateway")
    text = f"{kind} {ref.get('namespace') or namespace}/{ref.get('name')}"
    extra = [f"section {ref['sectionName']}"] if ref.get("sectionName") else []
    extra += [f"port {ref['port']}"] if ref.get("port") is not None else []
    if kind == "Service":
        extra.append("in-mesh callers of that Service (GAMMA)")
    return text + (f" ({', '.join(extra)})" if extra else "")


def _route_match_text(m: Mapping[str, Any]) -> str:
    parts = []
    path = m.get("path")
    if isinstance(path, Mapping):
        parts.append(f"path {path.get('type') or 'PathPrefix'} {path.get('value', '/')!r}")
    parts += [
        f"header {h.get('name')} {h.get('type') or 'Exact'} {h.get('value')!r}"
        for h in _dicts(m.get("headers"))
    ]
    parts += [
        f"query {q.get('name')} {q.get('type') or 'Exact'} {q.get('value')!r}"
        for q in _dicts(m.get("queryParams"))
    ]
    if m.get("method"):
        parts.append(f"method {m['method']}")
    return "(" + " and ".join(parts) + ")" if parts else "(path PathPrefix '/')"


def _header_changes(body: Mapping[str, Any]) -> str:
    parts = [f"set {h.get('name')}: {h.get('value')!r}" for h in _dicts(body.get("set"))]
    parts += [f"add {h.get('name')}: {h.get('value')!r}" for h in _dicts(body.get("add"))]
    parts += [f"remove {name}" for name in body.get("remove") or []]
    return ", ".join(parts) or "no change"


def _path_modifier(path: Mapping[str, Any]) -> str:
    kind = str(path.get("type") or "")
    value = path.get("replacePrefixMatch") if kind == "ReplacePrefixMatch" else path.get("replaceFullPath")
    return f"path {kind} {value!r}"


def _filter_text(f: Mapping[str, Any], namespace: str) -> str:
    kind = str(f.get("type"))
    if kind in ("RequestHeaderModifier", "ResponseHeaderModifier"):
        key = kind[0].lower() + kind[1:]
        return f"{kind}: {_header_changes(f.get(key) or {})}"
    if kind == "URLRewrite":
        body = f.get("urlRewrite") or {}
        parts = [f"hostname {body['hostname']!r}"] if body.get("hostname") else []
        if isinstance(body.get("path"), Mapping):
            parts.append(_path_modifier(body["path"]))
        return f"URLRewrite: {', '.join(parts) or 'no change'}"
    if kind == "RequestRedirect":
        body = f.get("requestRedirect") or {}
        parts = [f"{k} {body[k]!r}" for k in ("scheme", "hostname", "port") if body.get(k) is not None]
        if isinstance(body.get("path"), Mapping):
            parts.append(_path_modifier(body["path"]))
        code = body.get("statusCode")
        parts.append(
            f"status {code}"
            if code is not None
            else f"status {DEFAULT_REDIRECT_STATUS} (unset: the CRD's default)"
        )
        return (
            f"RequestRedirect: {', '.join(parts)}; the gateway answers with the redirect, nothing is "
            "forwarded"
        )
    if kind == "RequestMirror":
        body = f.get("requestMirror") or {}
        ref = body.get("backendRef") or {}
        share = ""
        if body.get("percent") is not None:
            share = f", {body['percent']}% of requests"
        elif isinstance(body.get("fraction"), Mapping):
            frac = body["fraction"]
            share = f", {frac.get('numerator')}/{frac.get('denominator', 100)} of requests"
        return f"RequestMirror: copies to {_ref_text(ref, namespace)}{share} (responses ignored)"
    if kind == "ExtensionRef":
        ref = f.get("extensionRef") or {}
        return (
            f"ExtensionRef {ref.get('group')}/{ref.get('kind')} {ref.get('name')}: what it does is "
            "the implementation's (Istio's) decision"
        )
    return f"{kind}: not described by meshproof; Istio's translation and the gateway's Envoy config decide"


def _ref_text(ref: Mapping[str, Any], namespace: str) -> str:
    kind = str(ref.get("kind") or "Service")
    port = f":{ref['port']}" if ref.get("port") is not None else ""
    prefix = "" if kind == "Service" else f"{kind} "
    return f"{prefix}{ref.get('namespace') or namespace}/{ref.get('name')}{port}"


def _backends(rule: Mapping[str, Any], namespace: str, bundle: Bundle) -> list[str]:
    refs = _dicts(rule.get("backendRefs"))
    redirects = any(f.get("type") == "RequestRedirect" for f in _dicts(rule.get("filters")))
    if not refs:
        if redirects:
            return []
        return [
            "no backendRefs: nothing to forward to; what the gateway answers is Istio's decision "
            "(the route's conditions in `meshproof status`, the gateway's Envoy config)"
        ]
    weights = [_weight(r) for r in refs]
    total = sum(weights)
    lines = []
    for ref, weight in zip(refs, weights, strict=True):
        given = "weight unset, the CRD's default 1" if ref.get("weight") is None else f"weight {weight}"
        if total <= 0:
            share = "no traffic"
        elif weight == 0:
            share = "0% (weight 0: gets no traffic)"
        else:
            share = f"{100.0 * weight / total:.1f}% ({given} of {total})"
        note = _unresolved(ref, namespace, bundle)
        lines.append(f"-> {_ref_text(ref, namespace)} {share}{f'; {note}' if note else ''}")
    if total <= 0:
        lines.append(
            "every weight is 0: no backend gets traffic; what the gateway answers is Istio's decision "
            "(the route's conditions in `meshproof status`, the gateway's Envoy config)"
        )
    if redirects:
        lines.append("a RequestRedirect answers before any backend is chosen")
    return lines


def _weight(ref: Mapping[str, Any]) -> int:
    value = ref.get("weight")
    return DEFAULT_BACKEND_WEIGHT if value is None else int(value)


def _unresolved(ref: Mapping[str, Any], namespace: str, bundle: Bundle) -> str:
    """Why the configuration alone cannot say this backend resolves ("" when it can)."""
    kind = str(ref.get("kind") or "Service")
    group = str(ref.get("group") or "")
    target_ns = str(ref.get("namespace") or namespace)
    decide = (
        "whether it resolves is Istio's decision (the route's ResolvedRefs condition, `meshproof status`)"
    )
    if (group, kind) != ("", "Service"):
        return f"a {kind} backend: {decide}"
    if bundle.find("Service", target_ns, str(ref.get("name"))) is None:
        return (
            f"no Service {target_ns}/{ref.get('name')} in the configuration: {decide}; its share is "
            "then answered by the gateway's Envoy, not forwarded"
        )
    if target_ns != namespace:
        return f"in another namespace (needs a ReferenceGrant there): {decide}"
    return ""


def _given_in(given: Any, held: Any) -> bool:
    """Every field the file gives is held with that value (the cluster may hold more: the fields
    the API server defaults, e.g. a backendRef's ``group``, ``kind`` and ``weight``)."""
    if isinstance(given, Mapping):
        return isinstance(held, Mapping) and all(
            k in held and _given_in(v, held[k]) for k, v in given.items()
        )
    if isinstance(given, list):
        return (
            isinstance(held, list)
            and len(given) == len(held)
            and all(_given_in(g, h) for g, h in zip(given, held, strict=True))
        )
    return bool(given == held)


def _held_conditions(doc: Document, held: GatewayApiObjects | None) -> list[str]:
    """Istio's conditions on the route the running mesh holds, if it holds this spec."""
    if held is None:
        return [
            "whether each parent accepts the route is Istio's decision: no running mesh to ask "
            "(`meshproof apply` it, then `meshproof status`)"
        ]
    namespace = doc.namespace or "default"
    same = next(
        (
            o
            for o in held
            if o.get("kind") == doc.kind
            and (o.get("metadata") or {}).get("name") == doc.name
            and ((o.get("metadata") or {}).get("namespace") or "default") == namespace
        ),
        None,
    )
    if same is None:
        return ["the running mesh does not hold this route: Istio's conditions appear once it is applied"]
    if not _given_in(doc.spec, same.get("spec")):
        return ["the running mesh holds another spec of this route: its conditions are not this file's"]
    lines = []
    for parent in _dicts((same.get("status") or {}).get("parents")):
        ref = parent.get("parentRef") or {}
        conditions = "; ".join(
            f"{c.get('type')}={c.get('status')} ({c.get('reason')}: {c.get('message')})"
            for c in _dicts(parent.get("conditions"))
        )
        lines.append(f"Istio's conditions for {_parent_text(ref, namespace)}: {conditions or 'none yet'}")
    return lines or ["the running mesh holds this route; Istio has written no conditions for it yet"]
