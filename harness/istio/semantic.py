# Over 500 lines: one function per Istio semantic rule, a flat list best read in one place.
"""Istio's semantic rules: what a schema cannot say.

Each rule is a function ``rule(doc, bundle) -> list[ConfigProblem]``: it looks at one document
and may consult the whole bundle (the documents being validated plus, for ``apply -f``, the
configuration already applied). Rules never raise on malformed input: a field of the wrong type
is skipped here because schema validation reports it.

Rules and messages follow Istio's own validation (``pkg/config/validation`` in istio.io/istio)
where Istio has the rule; meshproof adds stricter rules where a mistake would make a test
meaningless (route weights must add up to exactly 100; subsets, gateways and selectors must
refer to something that exists in the bundle).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from harness.errors import ConfigProblem
from harness.istio.loader import Document
from harness.istio.model import (
    DEFAULT_NAMESPACE,
    Bundle,
    Workload,
    document_key,
    fqdn,
    gateway_ref,
    host_matches,
    labels_match,
    parse_duration,
)
from harness.istio.providers import check_telemetry_providers

Rule = Callable[[Document, Bundle], list[ConfigProblem]]

NETWORKING = "networking.istio.io"
SECURITY = "security.istio.io"
ROOT_NAMESPACE = "istio-system"  # Istio's default root namespace: policies here apply mesh-wide
# Pods the mesh install provides; a selector that these labels satisfy always matches.
MESH_PROVIDED_LABELS: tuple[Mapping[str, str], ...] = (
    {"istio": "ingressgateway", "app": "istio-ingressgateway"},
)
# Namespaces that exist in any cluster (or are created by the Istio install).
IMPLICIT_NAMESPACES = frozenset({"default", "istio-system", "kube-system", "kube-public", "kube-node-lease"})

_DURATION_FIX = "write a duration such as 5s, 1.5s, 100ms or 1h2m (a number followed by ms, s, m or h)"


def _is(doc: Document, group: str, kind: str) -> bool:
    return doc.group == group and doc.kind == kind


def _map(obj: Any) -> dict[str, Any]:
    return obj if isinstance(obj, dict) else {}


def _list(obj: Any) -> list[Any]:
    return obj if isinstance(obj, list) else []


def _int(obj: Any) -> int | None:
    return obj if isinstance(obj, int) and not isinstance(obj, bool) else None


def _labels_text(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(labels.items())) + "}"


# ---------------------------------------------------------------------------------------------
# VirtualService routes


def _route_sections(spec: Mapping[str, Any]) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """``(section, index, route)`` for every http/tcp/tls route of a VirtualService spec."""
    for section in ("http", "tcp", "tls"):
        for i, route in enumerate(_list(spec.get(section))):
            if isinstance(route, dict):
                yield section, i, route


def check_route_weights(doc: Document, bundle: Bundle) -> list[ConfigProblem]:
    """Weights are non-negative and, with more than one destination, add up to exactly 100.

    Istio itself only rejects negative weights and an all-zero total (it normalises the rest);
    meshproof requires 100 so that the configured split is the split a test expects.
    """
    if not _is(doc, NETWORKING, "VirtualService"):
        return []
    problems = []
    for section, i, route in _route_sections(doc.spec):
        dests = _list(route.get("route"))
        weights: list[int] = []
        typed = True
        for j, dest in enumerate(dests):
            raw = _map(dest).get("weight")
            if raw is None:
                weights.append(0)
                continue
            w = _int(raw)
            if w is None:
                typed = False  # wrong type: the schema check reports it
                continue
            if w < 0:
                problems.append(
                    doc.problem(
                        f"spec.{section}[{i}].route[{j}].weight",
                        f"weight {w} < 0",
                        "use a weight from 0 to 100",
                    )
                )
            weights.append(w)
        if not typed or len(dests) < 2:
            continue
        total = sum(weights)
        if total != 100:
            terms = " + ".join(str(w) for w in weights)
            problems.append(
                doc.problem(
                    f"spec.{section}[{i}].route",
                    f"route weights sum to {total}, must be 100 ({terms})",
                    f"change the weights of the {len(dests)} destinations so they add up to 100 "
                    "(an omitted weight counts as 0)",
                )
            )
    return problems


def _destinations(spec: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(path, destination)`` of every destination a VirtualService sends or mirrors to."""
    for section, i, route in _route_sections(spec):
        for j, dest in enumerate(_list(route.get("route"))):
            d = _map(dest).get("destination")
            if isinstance(d, dict):
                yield f"spec.{section}[{i}].route[{j}].destination", d
        if isinstance(route.get("mirror"), dict):
            yield f"spec.{section}[{i}].mirror", route["mirror"]
        for k, mirror in enumerate(_list(route.get("mirrors"))):
            d = _map(mirror).get("destination")
            if isinstance(d, dict):
                yield f"spec.{section}[{i}].mirrors[{k}].destination", d


def check_subset_references(doc: Document, bundle: Bundle) -> list[ConfigProblem]:
    """Every subset a VirtualService routes to is defined by a DestinationRule for that host.

    Short hosts resolve against the VirtualService's namespace (``microservice-1`` in ``sample``
    is ``microservice-1.sample.svc.cluster.local``); DestinationRule hosts resolve against theirs.
    """
    if not _is(doc, NETWORKING, "VirtualService"):
        return []
    ns = doc.namespace or DEFAULT_NAMESPACE
    problems = []
    rules = bundle.destination_rules()
    for path, dest in _destinations(doc.spec):
        host, subset = dest.get("host"), dest.get("subset")
        if not (isinstance(host, str) and host and isinstance(subset, str) and subset):
            continue
        host_fqdn = fqdn(host, ns)
        matching = [dr for dr in rules if dr.fqdn and host_matches(dr.fqdn, host_fqdn)]
        if any(subset in dr.subset_names() for dr in matching):
            continue
        if matching:
            dr = matching[0]
            defined = ", ".join(dr.subset_names()) or "no subsets"
            fix = (
                f"add a subset named {subset} to DestinationRule {dr.namespace}/{dr.name} "
                f"(it defines: {defined}), or route to one of those"
            )
        else:
            fix = (
                f"add a DestinationRule for host {host_fqdn} with a subset named {subset} "
                f"(e.g. subsets: [{{name: {subset}, labels: {{version: {subset}}}}}])"
            )
        problems.append(
            doc.problem(
                f"{path}.subset",
                f"subset {subset} of host {host_fqdn} is not defined by any DestinationRule",
                fix,
            )
        )
    return problems


def check_gateway_references(doc: Document, bundle: Bundle) -> list[ConfigProblem]:
    """Gateways a VirtualService binds to exist (``mesh`` is the reserved sidecar gateway).

    Also Istio's rule that a VirtualService bound to the mesh cannot use the host ``*``.
    """
    if not _is(doc, NETWORKING, "VirtualService"):
        return []
    ns = doc.namespace or DEFAULT_NAMESPACE
    spec = doc.spec
    refs: list[tuple[str, str]] = []
    for i, g in enumerate(_list(spec.get("gateways"))):
        refs.append((f"spec.gateways[{i}]", g))
    for section, i, route in _route_sections(spec):
        for j, match in enumerate(_list(route.get("match"))):
            for k, g in enumerate(_list(_map(match).get("gateways"))):
                refs.append((f"spec.{section}[{i}].match[{j}].gateways[{k}]", g))
    existing = [(gw.namespace, gw.name) for gw in bundle.gateways()]
    problems = []
    for path, name in refs:
        if not isinstance(name, str) or name == "mesh":
            continue
        gw_ns, gw_name = gateway_ref(name, ns)
        if (gw_ns, gw_name) in existing:
            continue
        known = ", ".join(f"{n}/{g}" for n, g in existing) or "none in this configuration"
        problems.append(
            doc.problem(
                path,
                f"gateway {gw_ns}/{gw_name} does not exist",
                f"define Gateway {gw_name} in namespace {gw_ns}, or name an existing one "
                f"(as name in the same namespace, or namespace/name; existing: {known})",
            )
        )
    gateways = [g for g in _list(spec.get("gateways")) if isinstance(g, str)]
    if not gateways or "mesh" in gateways:
        for i, host in enumerate(_list(spec.get("hosts"))):
            if host == "*":
                problems.append(
                    doc.problem(
                        f"spec.hosts[{i}]",
                        "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                        "list the service host(s), or bind the VirtualService to a Gateway with spec.gateways",
                    )
                )
    return problems


def check_fault_injection(doc: Document, bundle: Bundle) -> list[ConfigProblem]:
    """Fault injection has an abort and/or a delay, percentages in 0..100, an HTTP status 200..599."""
    if not _is(doc, NETWORKING, "VirtualService"):
        return []
    problems = []
    for i, route in enumerate(_list(doc.spec.get("http"))):
        fault = _map(route).get("fault")
        if not isinstance(fault, dict):
            continue
        base = f"spec.http[{i}].fault"
        if fault.get("abort") is None and fault.get("delay") is None:
            problems.append(
                doc.problem(
                    base, "HTTP fault injection must have an abort and/or a delay", "add abort or delay"
                )
            )
        for part in ("abort", "delay"):
            section = _map(fault.get(part))
            value = _map(section.get("percentage")).get("value")
            pct = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            if pct is not None and (pct < 0 or pct > 100 or 0 < pct < 0.0001):
                problems.append(
                    doc.problem(
                        f"{base}.{part}.percentage.value",
                        f"percentage {value} is neither 0.0, nor in range [0.0001, 100.0]",
                        "use a percentage from 0 to 100",
                    )
                )
            percent = _int(section.get("percent"))
            if percent is not None and not 0 <= percent <= 100:
                problems.append(
                    doc.problem(
                        f"{base}.{part}.percent",
                        f"percentage {percent} is not in range 0..100",
                        "use a percentage from 0 to 100 (prefer percentage.value; percent is deprecated)",
                    )
                )
        status = _int(_map(fault.get("abort")).get("httpStatus"))
        if status is not None and not 200 <= status <= 599:
            problems.append(
                doc.problem(
                    f"{base}.abort.httpStatus",
                    f"HTTP status {status} is not in range 200-599",
                    "use an HTTP status code from 200 to 599, e.g. 503",
                )
            )
    return problems


# ---------------------------------------------------------------------------------------------
# Durations

# Duration fields Istio validates with ValidateDuration (>= 1ms, whole milliseconds), relative
# to a traffic policy; the flag says whether 0 (= disabled) is accepted.
_POLICY_DURATIONS: tuple[tuple[str, bool], ...] = (
    ("outlierDetection.interval", False),
    ("outlierDetection.baseEjectionTime", False),
    ("connectionPool.tcp.connectTimeout", False),
    ("connectionPool.tcp.idleTimeout", True),
    ("connectionPool.tcp.maxConnectionDuration", False),
    ("connectionPool.tcp.tcpKeepalive.time", False),
    ("connectionPool.tcp.tcpKeepalive.interval", False),
    ("connectionPool.http.idleTimeout", False),
    ("connectionPool.http.http2KeepAlive.interval", False),
    ("connectionPool.http.http2KeepAlive.timeout", False),
    ("loadBalancer.warmup.duration", False),
)
_HTTP_ROUTE_DURATIONS: tuple[tuple[str, bool], ...] = (
    ("timeout", False),
    ("retries.perTryTimeout", False),
    ("retries.backoff", False),
    ("fault.delay.fixedDelay", False),
    ("fault.delay.exponentialDelay", False),
    ("corsPolicy.maxAge", False),
)


def _dig(obj: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _traffic_policies(spec: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(path, policy)`` of every traffic policy in a DestinationRule spec, port-level included."""

    def with_ports(path: str, policy: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        if not isinstance(policy, dict):
            return
        yield path, policy
        for k, port_policy in enumerate(_list(policy.get("portLevelSettings"))):
            if isinstance(port_policy, dict):
                yield f"{path}.portLevelSettings[{k}]", port_policy

    yield from with_ports("spec.trafficPolicy", spec.get("trafficPolicy"))
    for i, subset in enumerate(_list(spec.get("subsets"))):
        yield from with_ports(f"spec.subsets[{i}].trafficPolicy", _map(subset).get("trafficPolicy"))


def duration_problem(value: str, *, zero_ok: bool = False) -> tuple[str, str] | None:
    """``(message, fix)`` if ``value`` is not a valid Istio duration, else None.

    Istio (``agent.ValidateDuration``) wants at least 1ms and whole milliseconds.
    """
    try:
        seconds = parse_duration(value)
    except ValueError:
        return f'invalid duration "{value}"', _DURATION_FIX
    if zero_ok and seconds == 0:
        return None
    if seconds < 0.001:
        return "duration must be greater than 1ms", "use a duration of at least 1ms, e.g. 100ms or 5s"
    if abs(seconds * 1000 - round(seconds * 1000)) > 1e-6:
        return "only durations to ms precision are supported", "round the duration to whole milliseconds"
    return None


def check_durations(doc: Document, bundle: Bundle) -> list[ConfigProblem]:
    """Durations (outlier detection, timeouts, retries, fault delays, ...) are valid Istio durations."""
    found: list[tuple[str, Any, bool]] = []
    if _is(doc, NETWORKING, "DestinationRule"):
        for path, policy in _traffic_policies(doc.spec):
            for rel, zero_ok in _POLICY_DURATIONS:
                found.append((f"{path}.{rel}", _dig(policy, rel), zero_ok))
    elif _is(doc, NETWORKING, "VirtualService"):
        for i, route in enumerate(_list(doc.spec.get("http"))):
            for rel, zero_ok in _HTTP_ROUTE_DURATIONS:
                found.append((f"spec.http[{i}].{rel}", _dig(route, rel), zero_ok))
    problems = []
    for path, value, zero_ok in found:
        if not isinstance(value, str):
            continue  # absent, or the wrong type (the schema check reports that)
        bad = duration_problem(value, zero_ok=zero_ok)
        if bad is not None:
            problems.append(doc.problem(path, *bad))
    return problems


# ---------------------------------------------------------------------------------------------
# DestinationRule traffic policies


_NON_NEGATIVE = (
    ("connectionPool.tcp.maxConnections", "max connections"),
    ("connectionPool.http.http1MaxPendingRequests", "http1 max pending requests"),
    ("connectionPool.http.http2MaxRequests", "http2 max requests"),
    ("connectionPool.http.maxRequestsPerConnection", "max requests per connection"),
    ("connectionPool.http.maxRetries", "max retries"),
    ("connectionPool.http.maxConcurrentStreams", "max concurrent streams"),
)


def check_traffic_policies(doc: Document, bundle: Bundle) -> list[ConfigProblem]:
    """Outlier detection and connection pool rules of Istio's DestinationRule validation.

    The removed ``consecutiveErrors`` is an error here: Istio still parses it but no longer
    applies it, so a circuit breaker written with it silently does nothing.
    """
    if not _is(doc, NETWORKING, "DestinationRule"):
        return []
    problems = []
    for path, policy in _traffic_policies(doc.spec):
        if not policy:
            problems.append(
                doc.problem(
                    path, "traffic policy must have at least one field", "remove it, or add a setting"
                )
            )
        outlier = policy.get("outlierDetection")
        if isinstance(outlier, dict):
            base = f"{path}.outlierDetection"
            if "consecutiveErrors" in outlier:
                problems.append(
                    doc.problem(
                        f"{base}.consecutiveErrors",
                        "consecutiveErrors was removed: Istio ignores it, so it ejects nothing",
                        "use consecutive5xxErrors or consecutiveGatewayErrors",
                    )
                )
            for name in ("maxEjectionPercent", "minHealthPercent"):
                value = _int(outlier.get(name))
                if value is not None and not 0 <= value <= 100:
                    problems.append(
                        doc.problem(
                            f"{base}.{name}",
                            f"percentage {value} is not in range 0..100",
                            "use a value from 0 to 100",
                        )
                    )
            local = _int(outlier.get("consecutiveLocalOriginFailures"))
            if local and local > 0 and outlier.get("splitExternalLocalOriginErrors") is not True:
                problems.append(
                    doc.problem(
                        f"{base}.consecutiveLocalOriginFailures",
                        "outlier detection consecutive local origin failures is specified, "
                        "but split external local origin errors is set to false",
                        "set splitExternalLocalOriginErrors: true, or remove consecutiveLocalOriginFailures",
                    )
                )
        pool = policy.get("connectionPool")
        if isinstance(pool, dict):
            if pool.get("tcp") is None and pool.get("http") is None:
                problems.append(
                    doc.problem(
                        f"{path}.connectionPool",
                        "connection pool must have at least one field",
                        "add tcp or http settings, or remove connectionPool",
                    )
                )
            for rel, what in _NON_NEGATIVE:
                value = _int(_dig(policy, rel))
                if value is not None and value < 0:
                    problems.append(
                        doc.problem(f"{path}.{rel}", f"{what} must be non-negative", "use a value >= 0")
                    )
    return problems


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def check_subsets(doc: Document, bundle: Bundle) -> list[ConfigProblem]:
    """Subset names are unique DNS-1123 labels (Istio's ``validateSubsetName``)."""
    if not _is(doc, NETWORKING, "DestinationRule"):
        return []
    problems = []
    seen: set[str] = set()
    for i, subset in enumerate(_list(doc.spec.get("subsets"))):
        name = _map(subset).get("name")
        if not isinstance(name, str):
            continue
        path = f"spec.subsets[{i}].name"
        if name in seen:
            problems.append(
                doc.problem(path, f"duplicate subset names: {name}", "give every subset its own name")
            )
        seen.add(name)
        if not name:
            problems.append(doc.problem(path, "subset name cannot be empty", "name the subset, e.g. v1"))
        elif not (_DNS_LABEL.fullmatch(name) and len(name) <= 63):
            problems.append(
                doc.problem(
                    path,
                    f"subset name is invalid: {name}",
                    "use lower-case letters, digits and '-', starting and ending with a letter or digit",
                )
            )
    return problems


# ---------------------------------------------------------------------------------------------
# Selectors must select something


# kind -> (group, path to the selector's labels, whether the selector is namespace-scoped)
_SELECTORS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "AuthorizationPolicy": (SECURITY, ("selector", "matchLabels"), True),
    "PeerAuthentication": (SECURITY, ("selector", "matchLabels"), True),
    "RequestAuthentication": (SECURITY, ("selector", "matchLabels"), True),
    "Telemetry": ("telemetry.istio.io", ("selector", "matchLabels"), True),
    "WasmPlugin": ("extensions.istio.io", ("selector", "matchLabels"), True),
    "Sidecar": (NETWORKING, ("workloadSelector", "labels"), True),
    "EnvoyFilter": (NETWORKING, ("workloadSelector", "labels"), True),
    "DestinationRule": (NETWORKING, ("workloadSelector", "matchLabels"), True),
    # A Gateway selects gateway pods in any namespace (Istio's default).
    "Gateway": (NETWORKING, ("selector",), False),
    "Service": ("", ("selector",), True),
}


def _mesh_provided(selector: Mapping[str, str]) -> bool:
    return any(labels_match(selector, labels) for labels in MESH_PROVIDED_LABELS)


def _candidates(workloads: Sequence[Workload], namespace: str | None) -> list[Workload]:
    return [w for w in workloads if namespace is None or w.namespace == namespace]


def _workloads_text(workloads: Sequence[Workload]) -> str:
    shown = [f"{w.kind} {w.namespace}/{w.name} {_labels_text(w.labels)}" for w in workloads[:6]]
    return "; ".join(shown) + ("; ..." if len(workloads) > 6 else "")


def check_selectors(doc: Document, bundle: Bundle) -> list[ConfigProblem]:
    """Selectors match at least one workload's pod labels, if the bundle holds any workloads.

    Namespace-scoped selectors look in the object's namespace (in the root namespace
    ``istio-system`` policies apply mesh-wide); a Gateway's selector looks everywhere. Labels of
    the mesh's ingress gateway (``istio: ingressgateway``) always match: the Istio install
    provides those pods. DestinationRule subsets must select pods of the Service they name.
    """
    entry = _SELECTORS.get(doc.kind)
    workloads = bundle.workloads()
    if entry is None or not workloads:
        return []
    group, path, namespaced = entry
    if doc.group != group:
        return []
    if doc.kind == "Service" and doc.spec.get("type") == "ExternalName":
        return []
    ns = doc.namespace or DEFAULT_NAMESPACE
    scope: str | None = ns if namespaced and ns != ROOT_NAMESPACE else None
    if doc.kind == "Service":
        scope = ns
    problems = []
    raw = _dig(doc.spec, ".".join(path))
    if isinstance(raw, dict) and raw:
        selector = {str(k): str(v) for k, v in raw.items()}
        candidates = _candidates(workloads, scope)
        if not _mesh_provided(selector) and not any(labels_match(selector, w.labels) for w in candidates):
            where = f"namespace {scope}" if scope else "any namespace"
            if candidates:
                fix = f"change it to match the pod labels of a workload ({_workloads_text(candidates)})"
            else:
                fix = f"no workload runs in {where}: add one, or correct metadata.namespace"
            problems.append(
                doc.problem(
                    "spec." + ".".join(path),
                    f"selector {_labels_text(selector)} matches no workload in {where}",
                    fix,
                )
            )
    if doc.kind == "DestinationRule":
        problems.extend(_check_subset_selectors(doc, bundle, workloads))
    return problems


def _check_subset_selectors(
    doc: Document, bundle: Bundle, workloads: Sequence[Workload]
) -> list[ConfigProblem]:
    host = doc.spec.get("host")
    if not isinstance(host, str) or not host:
        return []
    service = bundle.service_for(fqdn(host, doc.namespace or DEFAULT_NAMESPACE))
    if service is None or not service.selector:
        return []
    pods = [
        w for w in workloads if w.namespace == service.namespace and labels_match(service.selector, w.labels)
    ]
    if not pods:
        return []  # the Service's own selector check reports that
    problems = []
    for i, subset in enumerate(_list(doc.spec.get("subsets"))):
        labels = _map(_map(subset).get("labels"))
        if not labels:
            continue
        wanted = {str(k): str(v) for k, v in labels.items()}
        if any(labels_match(wanted, w.labels) for w in pods):
            continue
        name = _map(subset).get("name")
        problems.append(
            doc.problem(
                f"spec.subsets[{i}].labels",
                f"subset {name} {_labels_text(wanted)} selects no pod of Service "
                f"{service.namespace}/{service.name}",
                f"match the pod labels of one of its workloads ({_workloads_text(pods)})",
            )
        )
    return problems


# ---------------------------------------------------------------------------------------------
# Kubernetes rules that would fail at apply time


def check_workload_selector(doc: Document, bundle: Bundle) -> list[ConfigProblem]:
    """A Deployment's (StatefulSet's, ...) selector matches its own pod template labels."""
    if doc.group != "apps" or doc.kind not in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"):
        return []
    spec = doc.spec
    match = _map(_map(spec.get("selector")).get("matchLabels"))
    labels = _map(_map(_map(spec.get("template")).get("metadata")).get("labels"))
    if match and not all(labels.get(k) == v for k, v in match.items()):
        return [
            doc.problem(
                "spec.selector.matchLabels",
                f"selector {_labels_text(match)} does not match template labels {_labels_text(labels)}",
                "make spec.template.metadata.labels include every label of spec.selector.matchLabels",
            )
        ]
    return []


_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def _suggest_name(name: str) -> str:
    s = re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-.")
    return s or "my-object"


_NAME_RULES = {
    "label": "a DNS-1123 label: at most 63 lower-case letters, digits or '-', starting and ending "
    "with a letter or digit",
    "1035": "a DNS-1035 label: at most 63 lower-case letters, digits or '-', starting with a letter "
    "and ending with a letter or digit",
    "subdomain": "a DNS-1123 subdomain: lower-case letters, digits, '-' or '.', starting and ending "
    "with a letter or digit",
}


def _name_ok(name: str, rule: str) -> bool:
    if rule == "1035":
        return bool(_DNS_1035.fullmatch(name)) and len(name) <= 63
    if rule == "label":
        return bool(_DNS_LABEL.fullmatch(name)) and len(name) <= 63
    return bool(_DNS_SUBDOMAIN.fullmatch(name)) and len(name) <= 253


def check_names(doc: Document, bundle: Bundle) -> list[ConfigProblem]:
    """Object names are valid Kubernetes names (DNS-1123; Services and Namespaces: DNS labels)."""
    problems = []
    rule = "subdomain"
    if doc.group == "" and doc.kind == "Service":
        rule = "1035"
    elif doc.group == "" and doc.kind == "Namespace":
        rule = "label"
    if not _name_ok(doc.name, rule):
        problems.append(
            doc.problem(
                "metadata.name",
                f"invalid name {doc.name!r}: must be {_NAME_RULES[rule]}",
                f"rename it, e.g. {_suggest_name(doc.name)}",
            )
        )
    ns = doc.namespace
    if ns is not None and not _name_ok(ns, "label"):
        problems.append(
            doc.problem(
                "metadata.namespace",
                f"invalid namespace {ns!r}: must be {_NAME_RULES['label']}",
                f"use e.g. {_suggest_name(ns).replace('.', '-')}",
            )
        )
    return problems


def check_namespaces_exist(doc: Document, bundle: Bundle) -> list[ConfigProblem]:
    """If the bundle defines Namespaces, objects live in one of them (or a built-in one)."""
    defined = {n.name for n in bundle.namespaces()}
    if not defined or doc.kind == "Namespace" or doc.namespace is None:
        return []
    if doc.namespace in defined or doc.namespace in IMPLICIT_NAMESPACES:
        return []
    return [
        doc.problem(
            "metadata.namespace",
            f"namespace {doc.namespace} is not defined (defined here: {', '.join(sorted(defined))})",
            "add a Namespace object for it, or correct metadata.namespace",
        )
    ]


def check_duplicates(doc: Document, bundle: Bundle) -> list[ConfigProblem]:
    """An object (kind, namespace, name) is defined once."""
    key = document_key(doc)
    first = next((d for d in bundle.documents if document_key(d) == key), None)
    if first is None or first is doc:
        return []
    return [
        doc.problem(
            "metadata.name",
            f"duplicate object {doc.ref}: already defined in {first.file} (document {first.index})",
            "remove one of the two, or give this one another name",
        )
    ]


RULES: tuple[Rule, ...] = (
    check_names,
    check_duplicates,
    check_namespaces_exist,
    check_workload_selector,
    check_route_weights,
    check_subset_references,
    check_gateway_references,
    check_fault_injection,
    check_durations,
    check_traffic_policies,
    check_subsets,
    check_selectors,
    check_telemetry_providers,
)


def check(docs: Sequence[Document], bundle: Bundle, rules: Sequence[Rule] = RULES) -> list[ConfigProblem]:
    """Every problem the ``rules`` find in ``docs``; ``bundle`` is the context they resolve in."""
    problems: list[ConfigProblem] = []
    for doc in docs:
        for rule in rules:
            problems.extend(rule(doc, bundle))
    return problems
