"""AuthorizationPolicy decisions with Istio's semantics.

Order of evaluation at a workload (Istio's documented precedence): CUSTOM policies first (an
external authorizer decides: not predictable here, so a CUSTOM policy raises
UnsupportedFeature), then DENY (any matching DENY policy denies), then ALLOW (if any ALLOW
policy selects the workload, the request must match one of them; otherwise it is allowed).
AUDIT policies never change the decision.

A policy matches when any of its rules matches (no rules: matches nothing, so an ALLOW policy
without rules allows nothing; ``rules: [{}]`` matches everything). A rule matches when each of
``from``, ``to`` and ``when`` that is present matches; the entries of ``from``/``to`` are
alternatives, the fields inside one entry are all required; ``notX`` excludes.
Source namespaces and principals come from the peer's mTLS identity: a plaintext peer has none,
so ``namespaces``/``principals`` never match it and ``notNamespaces``/``notPrincipals`` never
exclude it. Strings match as Istio matches them: exact, ``prefix*``, ``*suffix``, or ``*``
(any non-empty value). Policies apply to a workload from its own namespace (selector matching
its labels, or no selector) and from the root namespace ``istio-system`` (mesh-wide).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import UnsupportedFeature
from harness.istio.model import AuthorizationPolicy, labels_match

ROOT_NAMESPACE = "istio-system"


@dataclass(frozen=True)
class Peer:
    """Who calls: the traffic source's name and its mTLS identity ("" when plaintext)."""

    source: str  # sampler source: "ingress" or "ns/deployment"
    namespace: str
    principal: str  # cluster.local/ns/<ns>/sa/<sa>, "" for plaintext


@dataclass(frozen=True)
class Request:
    method: str
    path: str


@dataclass(frozen=True)
class Decision:
    allow: bool
    reason: str  # which policy (and action) decided, or why nothing did


def _match(pattern: str, value: str) -> bool:
    if pattern == "*":
        return value != ""
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


_SOURCE_FIELDS = {"principals", "notPrincipals", "namespaces", "notNamespaces"}
_OPERATION_FIELDS = {"methods", "notMethods", "paths", "notPaths"}


def _field_ok(spec: Mapping[str, Any], name: str, value: str, *, identity: bool) -> bool:
    """``name`` (one must match) and ``notName`` (none may match) of a source or operation."""
    negative = "not" + name[0].upper() + name[1:]

    def hit(patterns: Sequence[str]) -> bool:
        if identity and not value:
            return False
        return any(_match(p, value) for p in patterns)

    if name in spec and not hit(spec[name]):
        return False
    return not (negative in spec and hit(spec[negative]))


def _unsupported(what: str, fields: set[str]) -> UnsupportedFeature:
    return UnsupportedFeature(
        f"AuthorizationPolicy {what} {sorted(fields)} are not predicted by meshproof's authz oracle. "
        "Fix: extend harness/istio/oracles/authz.py, or test that policy without them"
    )


def source_matches(src: Mapping[str, Any], peer: Peer) -> bool:
    unknown = set(src) - _SOURCE_FIELDS
    if unknown:
        raise _unsupported("source fields", unknown)
    namespace = peer.namespace if peer.principal else ""
    return _field_ok(src, "principals", peer.principal, identity=True) and _field_ok(
        src, "namespaces", namespace, identity=True
    )


def operation_matches(op: Mapping[str, Any], req: Request) -> bool:
    unknown = set(op) - _OPERATION_FIELDS
    if unknown:
        raise _unsupported("operation fields", unknown)
    path = req.path.split("?", 1)[0]
    return _field_ok(op, "methods", req.method, identity=False) and _field_ok(
        op, "paths", path, identity=False
    )


def rule_matches(rule: Mapping[str, Any], peer: Peer, req: Request) -> bool:
    if rule.get("when"):
        raise _unsupported("conditions", {"when"})
    froms = rule.get("from")
    tos = rule.get("to")
    if froms and not any(source_matches(f.get("source") or {}, peer) for f in froms):
        return False
    return not (tos and not any(operation_matches(t.get("operation") or {}, req) for t in tos))


def selecting(
    policies: Sequence[AuthorizationPolicy], namespace: str, labels: Mapping[str, str]
) -> list[AuthorizationPolicy]:
    """Policies that apply to a workload: its namespace's and the root namespace's, selector matching."""
    return [
        p for p in policies if p.namespace in (namespace, ROOT_NAMESPACE) and labels_match(p.selector, labels)
    ]


def decision(policies: Sequence[AuthorizationPolicy], peer: Peer, req: Request) -> Decision:
    """Istio's decision for ``req`` from ``peer`` under ``policies`` (already selected for the workload)."""
    custom = [p for p in policies if p.action == "CUSTOM"]
    if custom:
        raise UnsupportedFeature(
            f"CUSTOM AuthorizationPolicy {custom[0].namespace}/{custom[0].name}: an external authorizer "
            "decides, which meshproof cannot predict. Fix: test that workload without the CUSTOM policy"
        )
    for p in policies:
        if p.action == "DENY" and any(rule_matches(r, peer, req) for r in p.rules):
            return Decision(False, f"DENY policy {p.namespace}/{p.name} matches")
    allows = [p for p in policies if p.action == "ALLOW"]
    if not allows:
        return Decision(True, "no ALLOW policy selects the workload")
    for p in allows:
        if any(rule_matches(r, peer, req) for r in p.rules):
            return Decision(True, f"ALLOW policy {p.namespace}/{p.name} matches")
    names = ", ".join(f"{p.namespace}/{p.name}" for p in allows)
    return Decision(False, f"ALLOW policies select the workload ({names}) but none matches")


def decide(policies: Sequence[AuthorizationPolicy], peer: Peer, req: Request) -> bool:
    """True if Istio allows ``req`` from ``peer`` under ``policies`` (already selected for the workload)."""
    return decision(policies, peer, req).allow
