"""Routing: traffic splits exactly as the applied VirtualServices say, with stated confidence.

Every expectation is derived from the configuration the mesh runs (``config.applied``): the
route a request takes (:func:`route_for`), that route's weights by destination, and which pods
each destination's DestinationRule subset selects. Variants are applied live and waited for:
first every proxy ACKs (``apply``), then the observed split must conform several batches in a
row (``converge_split``); only then is the verdict taken on fresh traffic, with the number of
requests derived from the design (alpha, power, min deviation).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TypedDict, Unpack

import pytest

from harness.backends.base import Backend
from harness.guards import ConfigGuard
from harness.istio import HttpRoute, VirtualService
from harness.traffic.checks import CheckResult
from harness.traffic.client import Sampler
from harness.traffic.design import Design
from harness.traffic.split import (
    attribution,
    converge_split,
    expected_split,
    fmt_split,
    route_for,
    sequential_split,
    sequential_split_check,
    split_toward,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

INGRESS_CONCURRENCY = 32
MESH_CONCURRENCY = 16
#: a per-pod label the local backend puts on every replica (the kube backend has none: skip)
REPLICA_LABEL = "meshproof.dev/replica"


class RequestShape(TypedDict, total=False):
    """What a route match can look at, and where the request starts."""

    source: str
    method: str
    path: str
    headers: dict[str, str]


# --------------------------------------------------------------------------- helpers


def ingress_vs(config: ConfigGuard) -> VirtualService:
    vs = config.applied.ingress_virtual_service()
    assert vs is not None, "the manifests define no VirtualService bound to a Gateway"
    return vs


def mesh_vs(config: ConfigGuard, host: str) -> VirtualService:
    for vs in config.applied.virtual_services():
        if vs.binds_to_mesh and any(config.applied.fqdn(h, vs.namespace) == host for h in vs.hosts):
            return vs
    raise LookupError(f"no mesh-bound VirtualService for {host}")


def destination(route: HttpRoute, subset: str | None, weight: int | None = None) -> dict[str, Any]:
    """One ``route`` entry to ``subset`` of the host and port the given route already uses."""
    d = route.destinations[0]
    dest: dict[str, Any] = {"host": d.host}
    if d.port is not None:
        dest["port"] = {"number": d.port}
    if subset is not None:
        dest["subset"] = subset
    out: dict[str, Any] = {"destination": dest}
    if weight is not None:
        out["weight"] = weight
    return out


def split_variant(
    config: ConfigGuard, weights: Mapping[str, int], vs: VirtualService | None = None
) -> dict[str, Any]:
    """The VirtualService ``vs`` (default: the ingress one) with its first route's weights replaced."""
    vs = vs or ingress_vs(config)
    template = vs.http[0]

    def edit(body: dict[str, Any]) -> None:
        body["spec"]["http"][0]["route"] = [destination(template, s, w) for s, w in weights.items()]

    return config.variant("VirtualService", vs.name, vs.namespace, edit)


def prove_split(
    mesh: Backend,
    sampler: Sampler,
    config: ConfigGuard,
    design: Design,
    evidence: Any,
    vs: VirtualService,
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
    route = route_for(
        vs,
        path=request.get("path", "/api/greet"),
        method=request.get("method", "GET"),
        headers=request.get("headers") or {},
    )
    applied = expected_split(route)
    who = attribution(config.applied, route, mesh.workloads())
    # apply() returned once every proxy ACKed; one conforming batch confirms the split is live
    conv = converge_split(
        sampler, mesh, who, applied, batch=batch, consecutive=1, concurrency=concurrency, **request
    )
    expected = dict(asserted or applied)
    run = sequential_split(sampler, mesh, who, expected, design, concurrency=concurrency, **request)
    headers = request.get("headers") or {}
    label = f"{run.result.method} {run.result.path}" + "".join(f" [{k}: {v}]" for k, v in headers.items())
    check = sequential_split_check(run, expected, request=label)
    applied_note = f"ACK {apply_s:.2f}s" if apply_s else "no config change"
    notes = f"{applied_note}, converged {conv.seconds:.2f}s ({conv.batches} batches); {run.note()}"
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


def test_ingress_split_matches_virtual_service(mesh_backend, sampler, config, design, evidence) -> None:
    """The ingress VirtualService's split (90/10 in the manifests), as derived from the object itself."""
    prove_split(mesh_backend, sampler, config, design, evidence, ingress_vs(config))


def test_in_mesh_split_matches_virtual_service(mesh_backend, sampler, config, design, evidence) -> None:
    """In-mesh callers (other-namespace/client's sidecar) get the mesh VirtualService's split."""
    vs = mesh_vs(config, "microservice-1.sample.svc.cluster.local")
    prove_split(
        mesh_backend,
        sampler,
        config,
        design,
        evidence,
        vs,
        source="other-namespace/client",
        concurrency=MESH_CONCURRENCY,
    )


# --------------------------------------------------------------------------- a matrix applied live


@pytest.mark.parametrize(
    "weights",
    [{"v1": 100, "v2": 0}, {"v1": 50, "v2": 50}, {"v1": 80, "v2": 20}, {"v1": 0, "v2": 100}],
    ids=["100-0", "50-50", "80-20", "0-100"],
)
def test_weight_matrix_applied_live(mesh_backend, sampler, config, design, evidence, weights) -> None:
    """Re-weight the ingress route live; the mesh follows each split (propagation time reported)."""
    apply_s = config.apply(split_variant(config, weights), label="weights")
    prove_split(mesh_backend, sampler, config, design, evidence, ingress_vs(config), apply_s=apply_s)


def test_three_way_split_over_disjoint_subsets(mesh_backend, sampler, config, design, evidence) -> None:
    """80/10/10 over three disjoint subsets: two single v1 replicas (by pod label) and v2."""
    v1_pods = sorted(w.name for w in mesh_backend.workloads() if w.role == "app" and w.version == "v1")
    labelled = [w for w in mesh_backend.workloads() if w.name in v1_pods and REPLICA_LABEL in w.labels]
    if len(labelled) < 2:
        pytest.skip(f"needs two v1 replicas carrying the per-pod label {REPLICA_LABEL} (local backend)")
    a, b = labelled[0], labelled[1]
    vs = ingress_vs(config)
    dr_name = config.applied.destination_rules_for(vs.http[0].destinations[0].fqdn)[0].name

    def add_subsets(body: dict[str, Any]) -> None:
        body["spec"]["subsets"] += [
            {"name": "v1-a", "labels": {"version": "v1", REPLICA_LABEL: a.labels[REPLICA_LABEL]}},
            {"name": "v1-b", "labels": {"version": "v1", REPLICA_LABEL: b.labels[REPLICA_LABEL]}},
        ]

    dr = config.variant("DestinationRule", dr_name, vs.namespace, add_subsets)
    apply_s = config.apply(
        dr,
        split_variant(config, {"v1-a": 80, "v1-b": 10, "v2": 10}),
        label="three-way",
        unvalidated_because=f"subsets on {REPLICA_LABEL}, which the backend (not the manifests) puts on pods",
    )
    prove_split(mesh_backend, sampler, config, design, evidence, ingress_vs(config), apply_s=apply_s)


# --------------------------------------------------------------------------- match rules


def test_header_match_routes_canaries_to_v2(mesh_backend, sampler, config, design, evidence) -> None:
    """``x-canary: true`` takes a header-matched route to v2; other requests keep the weighted split."""
    vs = ingress_vs(config)
    template = vs.http[0]

    def edit(body: dict[str, Any]) -> None:
        canary = {
            "name": "canary",
            "match": [{"headers": {"x-canary": {"exact": "true"}}}],
            "route": [destination(template, "v2")],
        }
        body["spec"]["http"].insert(0, canary)

    apply_s = config.apply(
        config.variant("VirtualService", vs.name, vs.namespace, edit), label="header-match"
    )
    live = ingress_vs(config)
    prove_split(
        mesh_backend, sampler, config, design, evidence, live, apply_s=apply_s, headers={"x-canary": "true"}
    )
    prove_split(mesh_backend, sampler, config, design, evidence, live, headers={"x-canary": "false"})


def test_uri_prefix_match_routes_by_path(mesh_backend, sampler, config, design, evidence) -> None:
    """A ``uri.prefix: /api/echo`` route goes to v2; everything else falls through to v1."""
    vs = ingress_vs(config)
    template = vs.http[0]

    def edit(body: dict[str, Any]) -> None:
        body["spec"]["http"] = [
            {
                "name": "echo",
                "match": [{"uri": {"prefix": "/api/echo"}}],
                "route": [destination(template, "v2")],
            },
            {"name": "rest", "route": [destination(template, "v1")]},
        ]

    apply_s = config.apply(config.variant("VirtualService", vs.name, vs.namespace, edit), label="uri-prefix")
    live = ingress_vs(config)
    prove_split(mesh_backend, sampler, config, design, evidence, live, apply_s=apply_s, path="/api/echo")
    prove_split(mesh_backend, sampler, config, design, evidence, live, path="/api/greet")


def test_weights_not_summing_to_100_route_by_proportion(
    mesh_backend, sampler, config, design, evidence
) -> None:
    """A 90/20 route is valid Istio and splits 81.8% / 18.2%: each weight's share of the total."""
    apply_s = config.apply(split_variant(config, {"v1": 90, "v2": 20}), label="weights-90-20")
    prove_split(
        mesh_backend,
        sampler,
        config,
        design,
        evidence,
        ingress_vs(config),
        apply_s=apply_s,
        asserted={"v1": 100 * 90 / 110, "v2": 100 * 20 / 110},
    )


# --------------------------------------------------------------------------- negative controls


@pytest.mark.negative
def test_negative_swapped_split_fails_the_check(mesh_backend, sampler, config, design, evidence) -> None:
    """Negative control: with the weights swapped (10/90 applied), checking the manifests' 90/10 FAILS."""
    original = expected_split(route_for(ingress_vs(config)))
    swapped = dict(zip(original, reversed(list(original.values())), strict=True))
    assert swapped != original, f"the manifests' split {original} is symmetric: swapping proves nothing"
    apply_s = config.apply(split_variant(config, {k: int(v) for k, v in swapped.items()}), label="swapped")
    prove_split(
        mesh_backend,
        sampler,
        config,
        design,
        evidence,
        ingress_vs(config),
        apply_s=apply_s,
        asserted=original,
        negative=True,
        because=split_toward(swapped, original),
    )


@pytest.mark.negative
def test_negative_swapped_in_mesh_split_fails_the_check(
    mesh_backend, sampler, config, design, evidence
) -> None:
    """Negative control for the sidecar's routing: the mesh VirtualService swapped (10/90 applied),
    checking the manifests' 90/10 from other-namespace/client FAILS."""
    host = "microservice-1.sample.svc.cluster.local"
    original = expected_split(route_for(mesh_vs(config, host)))
    swapped = dict(zip(original, reversed(list(original.values())), strict=True))
    assert swapped != original, f"the manifests' split {original} is symmetric: swapping proves nothing"
    variant = split_variant(config, {k: int(v) for k, v in swapped.items()}, mesh_vs(config, host))
    apply_s = config.apply(variant, label="swapped-in-mesh")
    prove_split(
        mesh_backend,
        sampler,
        config,
        design,
        evidence,
        mesh_vs(config, host),
        apply_s=apply_s,
        asserted=original,
        negative=True,
        because=split_toward(swapped, original),
        source="other-namespace/client",
        concurrency=MESH_CONCURRENCY,
    )


def _canary_variant(config: ConfigGuard, match: dict[str, Any], rest: str | None) -> dict[str, Any]:
    """The ingress VirtualService with a first route ``match`` -> v2 (and, if ``rest``, all else -> rest)."""
    vs = ingress_vs(config)
    template = vs.http[0]

    def edit(body: dict[str, Any]) -> None:
        first = {"name": "matched", "match": [match], "route": [destination(template, "v2")]}
        if rest is None:
            body["spec"]["http"].insert(0, first)
        else:
            body["spec"]["http"] = [first, {"name": "rest", "route": [destination(template, rest)]}]

    return config.variant("VirtualService", vs.name, vs.namespace, edit)


@pytest.mark.negative
def test_negative_misspelt_header_match_fails_the_header_check(
    mesh_backend, sampler, config, design, evidence
) -> None:
    """Negative control: the canary route matches ``x-canry`` (typo), so ``x-canary: true`` requests
    fall through to the weighted split and the header-match check (all to v2) FAILS."""
    apply_s = config.apply(
        _canary_variant(config, {"headers": {"x-canry": {"exact": "true"}}}, None), label="header-typo"
    )
    prove_split(
        mesh_backend,
        sampler,
        config,
        design,
        evidence,
        ingress_vs(config),
        apply_s=apply_s,
        asserted={"v2": 100.0},
        negative=True,
        because=answered_outside({"v2"}),
        headers={"x-canary": "true"},
    )


@pytest.mark.negative
def test_negative_wrong_uri_prefix_fails_the_prefix_check(
    mesh_backend, sampler, config, design, evidence
) -> None:
    """Negative control: the route matches prefix ``/api/echoo``, so ``/api/echo`` falls through to v1
    and the URI-prefix check (all to v2) FAILS."""
    apply_s = config.apply(
        _canary_variant(config, {"uri": {"prefix": "/api/echoo"}}, "v1"), label="prefix-typo"
    )
    prove_split(
        mesh_backend,
        sampler,
        config,
        design,
        evidence,
        ingress_vs(config),
        apply_s=apply_s,
        asserted={"v2": 100.0},
        negative=True,
        because=answered_outside({"v2"}),
        path="/api/echo",
    )
