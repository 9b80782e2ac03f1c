"""Authorization: every (source, method, path) cell is allowed or denied exactly as the policy says.

The expected outcome of each cell is computed from the AuthorizationPolicies the mesh runs
(:func:`suites._support.authz.decide`, Istio's evaluation order and matching rules), with each
source's real mTLS identity (namespace and service account of the calling workload). The
design's policy allows GET from every namespace except ``trusted-namespace``; so GET from the
ingress gateway and from ``other-namespace`` reach the app (200, version reported), while
everything from ``trusted-namespace`` and every POST/PUT/DELETE gets Envoy RBAC's
403 ``RBAC: access denied``.

Each cell gets the zero-rule sample size: a cell that misbehaves on at least ``min_deviation``
of its requests is caught with probability ``power``; a correct mesh never fails.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest

from harness import wait
from harness.backends.base import Backend
from harness.errors import UnsupportedFeature
from harness.istio import Bundle
from harness.istio.model import labels_match
from harness.namespaces import host, ref
from harness.traffic.client import Sampler, SampleSpec
from suites._support.authz import Cell, Outcome, Peer, Request, decide, matrix_check, outcome, selecting

pytestmark = [pytest.mark.e2e]

SOURCES = (
    "ingress",
    ref("trusted-namespace/client"),
    ref("other-namespace/client"),
)  # a worker's copy: its own
METHODS = ("GET", "POST", "PUT", "DELETE")
#: the app's path and a near miss (trailing slash: same handler in the app, another string to Envoy)
PATHS = ("/api/greet", "/api/greet/")
SERVICE = host("microservice-1.sample.svc.cluster.local")
CONCURRENCY = 32  # in flight across all cells at once


def peer(mesh: Backend, source: str) -> Peer:
    w = mesh.workload(source)
    return Peer(source=source, namespace=w.namespace, principal=w.spiffe_id.removeprefix("spiffe://"))


def expected_cells(bundle: Bundle, mesh: Backend) -> list[Cell]:
    """Every cell with the outcome the policies give it at the service's pods."""
    service = bundle.service_for(SERVICE)
    assert service is not None, f"the manifests define no Service {SERVICE}"
    pods = [
        w
        for w in mesh.workloads()
        if w.role == "app" and w.namespace == service.namespace and labels_match(service.selector, w.labels)
    ]
    policies = bundle.authorization_policies()
    cells = []
    for source in SOURCES:
        p = peer(mesh, source)
        for method in METHODS:
            for path in PATHS:
                req = Request(method, path)
                verdicts = {decide(selecting(policies, w.namespace, w.labels), p, req) for w in pods}
                if len(verdicts) != 1:
                    raise UnsupportedFeature(
                        f"{source} {method} {path} is allowed at some pods of {SERVICE} and denied at others: "
                        "the outcome depends on routing. Fix: test per subset"
                    )
                cells.append(Cell(p, req, verdicts.pop()))
    return cells


def run_matrix(
    sampler: Sampler, mesh: Backend, cells: Sequence[Cell], n: int, host: str | None = None
) -> list[Outcome]:
    """``n`` requests per cell, all cells interleaved in one window (independent read-only checks);
    those from the ingress with ``host`` as Host (a Gateway API listener's hostname)."""
    specs = [
        SampleSpec(
            n=n,
            source=c.peer.source,
            method=c.request.method,
            path=c.request.path,
            host_header=host if c.peer.source == "ingress" else None,
        )
        for c in cells
    ]
    results = sampler.sample_many(mesh, specs, concurrency=CONCURRENCY)
    return [outcome(c, r) for c, r in zip(cells, results, strict=True)]


def settle(sampler: Sampler, mesh: Backend, cells: Sequence[Cell], host: str | None = None) -> int:
    """Wait until a light pass over every cell conforms twice in a row; returns requests sent.

    After a policy change the proxies have ACKed, but connections opened under the old listener
    config are served by it until they drain: the first requests may still see the old policy.
    """
    sent = 0

    def light_pass() -> Any:
        nonlocal sent
        outcomes = run_matrix(sampler, mesh, cells, 3, host)
        sent += sum(o.total for o in outcomes)
        return matrix_check(outcomes, name="settle")

    wait.until(light_pass, what="every authorization cell to conform", timeout=30, interval=0.1, converge=2)
    return sent


def test_authorization_matrix_matches_policy(
    mesh_backend, sampler, config, design, evidence, ingress_host
) -> None:
    """Allow vs deny for every source x method x path cell, exactly as Istio evaluates the policy."""
    started = time.perf_counter()
    cells = expected_cells(config.applied, mesh_backend)
    allowed = {c.label for c in cells if c.allow}
    # the design's policy, spelled out: only GET from ingress and other-namespace gets through
    assert allowed == {f"{s} GET {p}" for s in ("ingress", ref("other-namespace/client")) for p in PATHS}, (
        allowed
    )
    gate = settle(sampler, mesh_backend, cells, ingress_host)
    n = design.n_exact()
    outcomes = run_matrix(sampler, mesh_backend, cells, n, ingress_host)
    evidence.require(
        matrix_check(outcomes),
        requests=gate + sum(o.total for o in outcomes),
        confidence=f"{design.exact_confidence()} (per cell, {len(cells)} cells x {n})",
        wall_s=time.perf_counter() - started,
    )


@pytest.mark.negative
def test_negative_mutant_policy_without_not_namespaces_fails_matrix(
    mesh_backend, sampler, config, design, evidence, ingress_host
) -> None:
    """Negative control: a mutant policy without ``notNamespaces`` makes the matrix check FAIL,
    exactly in the trusted-namespace GET cells (the ones the mutant flips)."""
    started = time.perf_counter()
    asserted = expected_cells(config.applied, mesh_backend)
    policy = config.applied.authorization_policies()[0]

    def drop_not_namespaces(body: dict[str, Any]) -> None:
        for rule in body["spec"]["rules"]:
            for f in rule.get("from", []):
                f.get("source", {}).pop("notNamespaces", None)
            rule["from"] = [f for f in rule.get("from", []) if f.get("source")]
            if not rule["from"]:
                del rule["from"]

    mutant = config.variant("AuthorizationPolicy", policy.name, policy.namespace, drop_not_namespaces)
    apply_s = config.apply(mutant, label="mutant-policy")
    running = expected_cells(config.applied, mesh_backend)
    flipped = {a.label for a, r in zip(asserted, running, strict=True) if a.allow != r.allow}
    assert flipped == {f"{ref('trusted-namespace/client')} GET {p}" for p in PATHS}, flipped
    gate = settle(sampler, mesh_backend, running, ingress_host)  # the mutant is live: its own matrix conforms
    # A mismatch is exact (one wrong answer fails the cell), and the mutant's flipped cells answer
    # wrongly every time: a tenth of the zero-rule sample shows it as surely as all of it.
    n = max(3, design.n_exact() // 10)
    outcomes = run_matrix(sampler, mesh_backend, asserted, n, ingress_host)
    evidence.require_failure(
        matrix_check(outcomes),
        requests=gate + sum(o.total for o in outcomes),
        confidence=f"exact (per cell, {len(asserted)} cells x {n}: the flipped cells fail on every request)",
        wall_s=time.perf_counter() - started,
        notes=f"mutant ACK {apply_s:.2f}s",
        because=(
            f"exactly the cells the mutant flips answered against the asserted policy: {sorted(flipped)}",
            lambda c: set(c.evidence["mismatches"]) == flipped,  # type: ignore[arg-type]
        ),
    )
