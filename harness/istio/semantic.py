"""meshproof's own checks: what Istio's validation and analyzers do not check.

Istio's verdict comes from Istio's code (:mod:`harness.istio.analyzer`). What is left here is:

* Kubernetes API-server rules for Kubernetes objects that would fail at ``kubectl apply``
  (object and namespace names, a Deployment's selector against its template, objects in a
  namespace the configuration does not define). These are problems (exit 2).
* meshproof's own warnings, each labelled as such: things Istio accepts but that make a test's
  expectation easy to misread (weights that do not add up to 100: Istio routes by proportion;
  a selector or subset that selects no workload of the configuration; an object defined twice).
  They never fail validation.

Each rule is a function ``rule(doc, bundle) -> list[ConfigProblem]``; rules never raise on
malformed input (the schema check reports a field of the wrong type).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from harness.errors import ConfigProblem
from harness.istio.loader import Document
from harness.istio.model import (
    DEFAULT_NAMESPACE,
    Bundle,
    WorkloadResource,
    document_key,
    fqdn,
    labels_match,
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
# Route weights: Istio accepts any non-negative weights and routes by proportion

OWN = "meshproof's own check (Istio accepts this)"


def warn_route_weights(doc: Document, bundle: Bundle) -> list[ConfigProblem]:
    """Weights of a multi-destination route that do not add up to 100: say what Istio will do."""
    from harness.istio.model import VirtualService
    from harness.istio.oracles.routing import proportions

    if not _is(doc, NETWORKING, "VirtualService"):
        return []
    problems = []
    vs = VirtualService.from_document(doc)
    for i, route in enumerate(vs.http):
        raw = _list(_map(_list(doc.spec.get("http"))[i]).get("route"))
        if len(raw) < 2 or any(_int(_map(d).get("weight")) is None and "weight" in _map(d) for d in raw):
            continue
        weights = route.weights_by_subset()
        total = sum(weights.values())
        if total in (0, 100) or any(w < 0 for w in weights.values()):
            continue  # Istio's own validation rejects all-zero and negative weights
        shares = ", ".join(f"{k} gets {v * 100:.1f}%" for k, v in proportions(route).items())
        problems.append(
            doc.problem(
                f"spec.http[{i}].route",
                f"{OWN}: weights sum to {total}: Istio routes by proportion, {shares}",
                "nothing to fix if that split is intended; weights adding up to 100 read as percentages",
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


def _dig(obj: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _mesh_provided(selector: Mapping[str, str]) -> bool:
    return any(labels_match(selector, labels) for labels in MESH_PROVIDED_LABELS)


def _candidates(workloads: Sequence[WorkloadResource], namespace: str | None) -> list[WorkloadResource]:
    return [w for w in workloads if namespace is None or w.namespace == namespace]


def _workloads_text(workloads: Sequence[WorkloadResource]) -> str:
    shown = [f"{w.kind} {w.namespace}/{w.name} {_labels_text(w.labels)}" for w in workloads[:6]]
    return "; ".join(shown) + ("; ..." if len(workloads) > 6 else "")


def warn_selectors(doc: Document, bundle: Bundle) -> list[ConfigProblem]:
    """Selectors match at least one workload's pod labels, if the bundle holds any workloads.

    Namespace-scoped selectors look in the object's namespace (in the root namespace
    ``istio-system`` policies apply mesh-wide); a Gateway's selector looks everywhere. Labels of
    the mesh's ingress gateway (``istio: ingressgateway``) always match: the Istio install
    provides those pods. DestinationRule subsets must select pods of the Service they name.
    """
    entry = _SELECTORS.get(doc.kind)
    workloads = bundle.workload_resources()
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
                    f"{OWN}: selector {_labels_text(selector)} matches no workload in {where}",
                    fix,
                )
            )
    if doc.kind == "DestinationRule":
        problems.extend(_check_subset_selectors(doc, bundle, workloads))
    return problems


def _check_subset_selectors(
    doc: Document, bundle: Bundle, workloads: Sequence[WorkloadResource]
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
                f"{OWN}: subset {name} {_labels_text(wanted)} selects no pod of Service "
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


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
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


def warn_duplicates(doc: Document, bundle: Bundle) -> list[ConfigProblem]:
    """An object (kind, namespace, name) defined twice: the later definition wins."""
    key = document_key(doc)
    first = next((d for d in bundle.documents if document_key(d) == key), None)
    if first is None or first is doc:
        return []
    return [
        doc.problem(
            "metadata.name",
            f"{OWN}: duplicate object {doc.ref}: already defined in {first.file} (document "
            f"{first.index}); the later definition wins",
            "remove one of the two, or give this one another name",
        )
    ]


# Kubernetes API-server rules: problems (exit 2).
RULES: tuple[Rule, ...] = (
    check_names,
    check_namespaces_exist,
    check_workload_selector,
    check_telemetry_providers,
)
# meshproof's own warnings: never fail validation.
WARNINGS: tuple[Rule, ...] = (
    warn_duplicates,
    warn_route_weights,
    warn_selectors,
)


def check(docs: Sequence[Document], bundle: Bundle, rules: Sequence[Rule] = RULES) -> list[ConfigProblem]:
    """Every problem the ``rules`` find in ``docs``; ``bundle`` is the context they resolve in."""
    problems: list[ConfigProblem] = []
    for doc in docs:
        for rule in rules:
            problems.extend(rule(doc, bundle))
    return problems


def warn(docs: Sequence[Document], bundle: Bundle) -> list[ConfigProblem]:
    """meshproof's own warnings for ``docs``."""
    return check(docs, bundle, WARNINGS)
