"""The request-matrix check over the authorization oracle.

What Istio decides for a (peer, request) comes from :mod:`harness.istio.oracles.authz`
(re-exported here); this module turns decisions and sampled responses into a check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from harness.istio.oracles.authz import Peer, Request, decide, decision, selecting
from harness.traffic.checks import CheckResult
from harness.traffic.client import SampleResult

__all__ = ["Cell", "Outcome", "Peer", "Request", "decide", "decision", "matrix_check", "outcome", "selecting"]


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
