"""AuthorizationPolicy evaluation with Istio's semantics, and the request-matrix check.

:func:`decide` answers "does Istio allow this request at this workload?" from the policies
alone: CUSTOM is not modelled; a matching DENY policy denies; if any ALLOW policy selects
the workload, one of them must match; otherwise the request is allowed. A policy matches when
any of its rules matches; a rule matches when each of ``from``, ``to`` and ``when`` that is
present matches (entries of ``from``/``to`` are alternatives, fields inside one are all
required). Source namespaces and principals come from the peer's mTLS identity: a plaintext
peer has none, so ``namespaces`` never matches it and ``notNamespaces`` always does.

Strings match as Istio matches them: exact, ``prefix*``, ``*suffix`` or ``*`` (any non-empty).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import UnsupportedFeature
from harness.istio import AuthorizationPolicy
from harness.istio.model import labels_match
from harness.traffic.checks import CheckResult
from harness.traffic.client import SampleResult

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


def _match(pattern: str, value: str) -> bool:
    if pattern == "*":
        return value != ""
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _any(patterns: Sequence[str], value: str) -> bool:
    return any(_match(p, value) for p in patterns)


_SOURCE_FIELDS = {"principals", "notPrincipals", "namespaces", "notNamespaces"}
_OPERATION_FIELDS = {"methods", "notMethods", "paths", "notPaths"}


def _field_ok(spec: Mapping[str, Any], name: str, value: str, *, identity: bool) -> bool:
    """``name`` (one must match) and ``notName`` (none may match) of a source or operation.

    Identity fields (principals, namespaces) come from the mTLS peer: without one (plaintext,
    ``value == ""``) a positive list never matches and a negative list never excludes.
    """
    negative = "not" + name[0].upper() + name[1:]

    def hit(patterns: Sequence[str]) -> bool:
        if identity and not value:
            return False
        return _any(patterns, value)

    if name in spec and not hit(spec[name]):
        return False
    return not (negative in spec and hit(spec[negative]))


def _source_matches(src: Mapping[str, Any], peer: Peer) -> bool:
    unknown = set(src) - _SOURCE_FIELDS
    if unknown:
        raise UnsupportedFeature(
            f"source fields {sorted(unknown)} are not modelled. Fix: extend suites/_support/authz.py"
        )
    namespace = peer.namespace if peer.principal else ""
    return _field_ok(src, "principals", peer.principal, identity=True) and _field_ok(
        src, "namespaces", namespace, identity=True
    )


def _operation_matches(op: Mapping[str, Any], req: Request) -> bool:
    unknown = set(op) - _OPERATION_FIELDS
    if unknown:
        raise UnsupportedFeature(
            f"operation fields {sorted(unknown)} are not modelled. Fix: extend suites/_support/authz.py"
        )
    path = req.path.split("?", 1)[0]
    return _field_ok(op, "methods", req.method, identity=False) and _field_ok(
        op, "paths", path, identity=False
    )


def _rule_matches(rule: Mapping[str, Any], peer: Peer, req: Request) -> bool:
    if rule.get("when"):
        raise UnsupportedFeature(
            "AuthorizationPolicy `when` conditions are not modelled. Fix: extend suites/_support/authz.py"
        )
    froms = rule.get("from")
    tos = rule.get("to")
    if froms and not any(_source_matches(f.get("source") or {}, peer) for f in froms):
        return False
    return not (tos and not any(_operation_matches(t.get("operation") or {}, req) for t in tos))


def selecting(
    policies: Sequence[AuthorizationPolicy], namespace: str, labels: Mapping[str, str]
) -> list[AuthorizationPolicy]:
    """Policies that apply to a workload: its namespace's (selector matching) and the root namespace's."""
    return [
        p for p in policies if p.namespace in (namespace, ROOT_NAMESPACE) and labels_match(p.selector, labels)
    ]


def decide(policies: Sequence[AuthorizationPolicy], peer: Peer, req: Request) -> bool:
    """True if Istio allows ``req`` from ``peer`` under ``policies`` (already selected for the workload)."""
    if any(p.action == "CUSTOM" for p in policies):
        raise UnsupportedFeature("CUSTOM AuthorizationPolicies are not modelled")
    for p in policies:
        if p.action == "DENY" and any(_rule_matches(r, peer, req) for r in p.rules):
            return False
    allows = [p for p in policies if p.action == "ALLOW"]
    if not allows:
        return True
    return any(_rule_matches(r, peer, req) for p in allows for r in p.rules)


# --------------------------------------------------------------------------- the matrix


@dataclass(frozen=True)
class Cell:
    peer: Peer
    request: Request
    allow: bool  # what the policies say

    @property
    def label(self) -> str:
        return f"{self.peer.source} {self.request.method} {self.request.path}"


@dataclass(frozen=True)
class Outcome:
    cell: Cell
    allowed: int  # 2xx answered by the app
    denied: int  # 403 "RBAC: access denied"
    other: Mapping[int, int]  # anything else, by status

    @property
    def total(self) -> int:
        return self.allowed + self.denied + sum(self.other.values())

    @property
    def conforms(self) -> bool:
        want = self.allowed if self.cell.allow else self.denied
        return self.total > 0 and want == self.total


def outcome(cell: Cell, result: SampleResult) -> Outcome:
    other: dict[int, int] = {}
    allowed = denied = 0
    for r in result.responses:
        if r.ok:
            allowed += 1
        elif r.rbac_denied:
            denied += 1
        else:
            other[r.status] = other.get(r.status, 0) + 1
    return Outcome(cell, allowed, denied, other)


def matrix_check(outcomes: Sequence[Outcome], *, name: str = "authz_matrix") -> CheckResult:
    """Every cell got exactly what the policy says: all allowed (2xx from the app) or all RBAC-denied."""
    rows = [("source", "method", "path", "expected", "n", "allowed", "denied", "other", "")]
    for o in outcomes:
        other = ",".join(f"{k}x{v}" for k, v in sorted(o.other.items())) or "-"
        rows.append(
            (
                o.cell.peer.source,
                o.cell.request.method,
                o.cell.request.path,
                "allow" if o.cell.allow else "deny",
                str(o.total),
                str(o.allowed),
                str(o.denied),
                other,
                "ok" if o.conforms else "MISMATCH",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = "\n".join("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in rows)
    bad = [o for o in outcomes if not o.conforms]
    head = f"{len(outcomes) - len(bad)} of {len(outcomes)} cells as the policy says" + (
        f"; mismatches: {', '.join(o.cell.label for o in bad)}" if bad else ""
    )
    return CheckResult(
        name=name,
        passed=bool(outcomes) and not bad,
        detail=f"{head}\n{table}",
        evidence={"mismatches": tuple(o.cell.label for o in bad), "cells": len(outcomes)},
    )
