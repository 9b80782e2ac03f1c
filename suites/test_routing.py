"""Routing: traffic splits exactly as the applied routes say, with stated confidence.

The mesh routes with one traffic API (``--traffic-api``): Istio's VirtualServices or Gateway API
HTTPRoutes (the ingress through a Gateway, in-mesh callers through a GAMMA route). Every test is
written once against the route under test (:mod:`suites._support.routes`), which says what
differs: the object, its route oracle, its variants, and how pods are attributed.

Every expectation is derived from the configuration the mesh runs (``config.applied``): the
route or rule a request takes, its weights by destination, and which pods each destination
selects (DestinationRule subset labels / backendRef Service selector). Variants are applied
live and waited for: first every proxy ACKs (``apply``), then the observed split must conform
(``converge_split``); only then is the verdict taken on fresh traffic, with the number of
requests derived from the design (alpha, power, min deviation).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TypedDict, Unpack

import pytest

from harness.backends.base import Backend
from harness.guards import ConfigGuard
from harness.namespaces import host, ref
from harness.traffic.checks import CheckResult
from harness.traffic.client import Sampler
from harness.traffic.design import Design
from harness.traffic.split import (
    converge_split,
    fmt_split,
    sequential_split,
    sequential_split_check,
    split_toward,
)
from suites._support.routes import REPLICA_LABEL, Match, RouteUnderTest, ingress_route, mesh_route

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

INGRESS_CONCURRENCY = 32
MESH_CONCURRENCY = 16
MESH_HOST = host("microservice-1.sample.svc.cluster.local")  # a worker's copy: its own


class RequestShape(TypedDict, total=False):
    """What a route match can look at, and where the request starts."""

    source: str
    method: str
    path: str
    headers: dict[str, str]


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def ingress(mesh_backend: Backend, config: ConfigGuard) -> RouteUnderTest:
    """The ingress route of the mesh's traffic API (VirtualService, or HTTPRoute on a Gateway)."""
    return ingress_route(config.applied, mesh_backend.traffic_api)


@pytest.fixture
def in_mesh(mesh_backend: Backend, config: ConfigGuard) -> RouteUnderTest:
    """The route in-mesh callers of microservice-1 take (mesh VirtualService, or GAMMA HTTPRoute)."""
    return mesh_route(config.applied, mesh_backend.traffic_api, MESH_HOST)


def by_version(config: ConfigGuard, route: RouteUnderTest, weights: Mapping[str, int]) -> dict[str, int]:
    """``{"v1": 90, ...}`` as the route's destination names."""
    return {route.category(config.applied, v): w for v, w in weights.items()}


def swapped(split: Mapping[str, float]) -> dict[str, float]:
    out = dict(zip(split, reversed(list(split.values())), strict=True))
    assert out != dict(split), f"the manifests' split {dict(split)} is symmetric: swapping proves nothing"
    return out


def prove_split(
    mesh: Backend,
    sampler: Sampler,
    config: ConfigGuard,
    design: Design,
    evidence: Any,
    route: RouteUnderTest,
    *,
    apply_s: float = 0.0,
    asserted: Mapping[str, float] | None = None,
    negative: bool = False,
    because: tuple[str, Any] | None = None,
    concurrency: int = INGRESS_CONCURRENCY,
    batch: int = 100,
    **request: Unpack[RequestShape],
) -> CheckResult:
    """Converge on the split the mesh runs, then check fresh traffic against ``asserted`` (default: it)."""
    started = time.perf_counter()
    predicted = route.predict(
        config.applied,
        mesh.workloads(),
        path=request.get("path", "/api/greet"),
        method=request.get("method", "GET"),
        headers=request.get("headers") or {},
    )
    sent: dict[str, Any] = {**route.request, **request}
    applied, who = predicted.split, predicted.who
    # apply() returned once every proxy ACKed; one conforming batch confirms the split is live
    conv = converge_split(
        sampler, mesh, who, applied, batch=batch, consecutive=1, concurrency=concurrency, **sent
    )
    expected = dict(asserted or applied)
    run = sequential_split(sampler, mesh, who, expected, design, concurrency=concurrency, **sent)
    headers = dict(request.get("headers") or {})
    if sent.get("host_header"):
        headers = {"Host": sent["host_header"], **headers}
    label = f"{run.result.method} {run.result.path}" + "".join(f" [{k}: {v}]" for k, v in headers.items())
    check = sequential_split_check(run, expected, request=label)
    applied_note = f"ACK {apply_s:.2f}s" if apply_s else "no config change"
    notes = (
        f"{predicted.via}; {applied_note}, converged {conv.seconds:.2f}s ({conv.batches} batches); "
        f"{run.note()}"
    )
    if asserted is not None:
        notes = f"applied {fmt_split(applied)}; " + notes
    common = {
        "requests": conv.requests + run.sent,
        "confidence": design.weights_confidence(expected),
        "wall_s": time.perf_counter() - started,
        "notes": notes,
        "used_n": run.result.total,
        "fixed_n": run.state.plan.fixed_n,
    }
    if negative:
        evidence.require_failure(check, because=because, **common)
    else:
        evidence.require(check, **common)
    return check


def answered_outside(allowed: set[str]) -> tuple[str, Any]:
    """Failure reason of a match negative: 200s came from destinations the match should not reach."""

    def holds(check: CheckResult) -> bool:
        verdict = check.evidence.get("verdict")
        unexpected = getattr(verdict, "unexpected", {}) or {}
        status = check.evidence.get("status", {})
        outside = any(n > 0 for k, n in unexpected.items() if k not in allowed and not k.startswith("("))
        return outside and set(status) <= {200, "200"}

    return (f"requests were answered by destinations other than {sorted(allowed)} (all 200)", holds)


# --------------------------------------------------------------------------- the configured splits


def test_ingress_split_matches_virtual_service(
    mesh_backend, sampler, config, design, evidence, ingress
) -> None:
    """The ingress route's split (90/10 in the manifests), as derived from the object itself: the
    VirtualService bound to the Gateway, or the HTTPRoute on the Gateway API Gateway."""
    prove_split(mesh_backend, sampler, config, design, evidence, ingress)


def test_in_mesh_split_matches_virtual_service(
    mesh_backend, sampler, config, design, evidence, in_mesh
) -> None:
    """In-mesh callers (other-namespace/client's sidecar) get the mesh route's split: the mesh
    VirtualService, or the GAMMA HTTPRoute whose parent is the Service."""
    prove_split(
        mesh_backend,
        sampler,
        config,
        design,
        evidence,
        in_mesh,
        source=ref("other-namespace/client"),
        concurrency=MESH_CONCURRENCY,
    )


# --------------------------------------------------------------------------- a matrix applied live


@pytest.mark.parametrize(
    "weights",
    [{"v1": 100, "v2": 0}, {"v1": 50, "v2": 50}, {"v1": 80, "v2": 20}, {"v1": 0, "v2": 100}],
    ids=["100-0", "50-50", "80-20", "0-100"],
)
def test_weight_matrix_applied_live(
    mesh_backend, sampler, config, design, evidence, ingress, weights
) -> None:
    """Re-weight the ingress route live; the mesh follows each split (propagation time reported)."""
    apply_s = config.apply(ingress.weighted(config, by_version(config, ingress, weights)), label="weights")
    prove_split(mesh_backend, sampler, config, design, evidence, ingress, apply_s=apply_s)


def test_three_way_split_over_disjoint_subsets(
    mesh_backend, sampler, config, design, evidence, ingress
) -> None:
    """80/10/10 over three disjoint destinations: two single v1 replicas (by pod label) and v2
    (DestinationRule subsets, or per-replica Services as backendRefs)."""
    v1_pods = sorted(w.name for w in mesh_backend.workloads() if w.role == "app" and w.version == "v1")
    labelled = [w for w in mesh_backend.workloads() if w.name in v1_pods and REPLICA_LABEL in w.labels]
    if len(labelled) < 2:
        pytest.skip(f"needs two v1 replicas carrying the per-pod label {REPLICA_LABEL} (local backend)")
    three = ingress.three_way(config, labelled[0], labelled[1])
    apply_s = config.apply(*three.bodies, label="three-way", unvalidated_because=three.unvalidated_because)
    prove_split(mesh_backend, sampler, config, design, evidence, ingress, apply_s=apply_s)


# --------------------------------------------------------------------------- match rules


def test_header_match_routes_canaries_to_v2(mesh_backend, sampler, config, design, evidence, ingress) -> None:
    """``x-canary: true`` takes a header-matched route to v2; other requests keep the weighted split."""
    v2 = ingress.category(config.applied, "v2")
    variant = ingress.matched(config, Match(header=("x-canary", "true")), v2, None, name="canary")
    apply_s = config.apply(variant, label="header-match")
    prove_split(
        mesh_backend,
        sampler,
        config,
        design,
        evidence,
        ingress,
        apply_s=apply_s,
        headers={"x-canary": "true"},
    )
    prove_split(mesh_backend, sampler, config, design, evidence, ingress, headers={"x-canary": "false"})


def test_uri_prefix_match_routes_by_path(mesh_backend, sampler, config, design, evidence, ingress) -> None:
    """A path-prefix ``/api/echo`` route goes to v2; everything else falls through to v1."""
    v1, v2 = (ingress.category(config.applied, v) for v in ("v1", "v2"))
    variant = ingress.matched(config, Match(prefix="/api/echo"), v2, v1, name="echo")
    apply_s = config.apply(variant, label="uri-prefix")
    prove_split(mesh_backend, sampler, config, design, evidence, ingress, apply_s=apply_s, path="/api/echo")
    prove_split(mesh_backend, sampler, config, design, evidence, ingress, path="/api/greet")


def test_weights_not_summing_to_100_route_by_proportion(
    mesh_backend, sampler, config, design, evidence, ingress
) -> None:
    """A 90/20 route is valid (Istio and Gateway API) and splits 81.8% / 18.2%: each weight's
    share of the total."""
    weights = by_version(config, ingress, {"v1": 90, "v2": 20})
    apply_s = config.apply(ingress.weighted(config, weights), label="weights-90-20")
    prove_split(
        mesh_backend,
        sampler,
        config,
        design,
        evidence,
        ingress,
        apply_s=apply_s,
        asserted={k: 100 * w / 110 for k, w in weights.items()},
    )


# --------------------------------------------------------------------------- negative controls


@pytest.mark.negative
def test_negative_swapped_split_fails_the_check(
    mesh_backend, sampler, config, design, evidence, ingress
) -> None:
    """Negative control: with the weights swapped (10/90 applied), checking the manifests' 90/10 FAILS."""
    original = ingress.predict(config.applied, mesh_backend.workloads()).split
    running = swapped(original)
    variant = ingress.weighted(config, {k: int(v) for k, v in running.items()})
    apply_s = config.apply(variant, label="swapped")
    prove_split(
        mesh_backend,
        sampler,
        config,
        design,
        evidence,
        ingress,
        apply_s=apply_s,
        asserted=original,
        negative=True,
        because=split_toward(running, original),
    )


@pytest.mark.negative
def test_negative_swapped_in_mesh_split_fails_the_check(
    mesh_backend, sampler, config, design, evidence, in_mesh
) -> None:
    """Negative control for the sidecar's routing: the mesh route (VirtualService, or GAMMA
    HTTPRoute) swapped (10/90 applied), checking the manifests' 90/10 from other-namespace/client FAILS."""
    original = in_mesh.predict(config.applied, mesh_backend.workloads()).split
    running = swapped(original)
    variant = in_mesh.weighted(config, {k: int(v) for k, v in running.items()})
    apply_s = config.apply(variant, label="swapped-in-mesh")
    prove_split(
        mesh_backend,
        sampler,
        config,
        design,
        evidence,
        in_mesh,
        apply_s=apply_s,
        asserted=original,
        negative=True,
        because=split_toward(running, original),
        source=ref("other-namespace/client"),
        concurrency=MESH_CONCURRENCY,
    )


@pytest.mark.negative
def test_negative_misspelt_header_match_fails_the_header_check(
    mesh_backend, sampler, config, design, evidence, ingress
) -> None:
    """Negative control: the canary route matches ``x-canry`` (typo), so ``x-canary: true`` requests
    fall through to the weighted split and the header-match check (all to v2) FAILS."""
    v2 = ingress.category(config.applied, "v2")
    variant = ingress.matched(config, Match(header=("x-canry", "true")), v2, None, name="matched")
    apply_s = config.apply(variant, label="header-typo")
    prove_split(
        mesh_backend,
        sampler,
        config,
        design,
        evidence,
        ingress,
        apply_s=apply_s,
        asserted={v2: 100.0},
        negative=True,
        because=answered_outside({v2}),
        headers={"x-canary": "true"},
    )


@pytest.mark.negative
def test_negative_wrong_uri_prefix_fails_the_prefix_check(
    mesh_backend, sampler, config, design, evidence, ingress
) -> None:
    """Negative control: the route matches prefix ``/api/echoo``, so ``/api/echo`` falls through to v1
    and the path-prefix check (all to v2) FAILS."""
    v1, v2 = (ingress.category(config.applied, v) for v in ("v1", "v2"))
    variant = ingress.matched(config, Match(prefix="/api/echoo"), v2, v1, name="matched")
    apply_s = config.apply(variant, label="prefix-typo")
    prove_split(
        mesh_backend,
        sampler,
        config,
        design,
        evidence,
        ingress,
        apply_s=apply_s,
        asserted={v2: 100.0},
        negative=True,
        because=answered_outside({v2}),
        path="/api/echo",
    )
