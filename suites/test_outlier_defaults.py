"""The design's DestinationRule: predicted from the Envoy config istiod generated, then observed.

The original design writes outlier detection with the deprecated ``consecutiveErrors: 5``.
Istio accepts it with a deprecation warning and no longer translates it, so the cluster's
``outlier_detection`` block has no ``consecutive_5xx`` and Envoy's default applies: eject after
5 consecutive 5xx, 500 included. The expectation comes from the effective-outlier oracle over
the ingress gateway's ``/config_dump`` (never from the field's name), and the verdict counts:
the faulted replica answered exactly threshold..threshold+1 errors (concurrency 1: one request
may be routed before the ejection reaches the worker) before the gateway's ``/clusters`` showed
it ejected. Negative control: the same check against the design's DestinationRule with
``consecutive5xxErrors: 0`` added fails because nothing is ejected.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from harness import wait
from harness.backends.base import AppFault, Backend, Workload
from harness.envoy import EnvoyAdmin, address_owner, outbound_cluster
from harness.guards import ConfigGuard, FaultGuard
from harness.istio.oracles.outlier import EffectiveOutlier
from harness.traffic.checks import CheckResult
from harness.traffic.client import Sampler
from harness.traffic.split import attribution, route_for
from suites._support.routes import POLICY_IS_THE_DESTINATION_RULE

pytestmark = [pytest.mark.e2e, pytest.mark.istio_routes(reason=POLICY_IS_THE_DESTINATION_RULE)]

# The design's outlier detection, as written there (000_5f6f375ae6cf420d.txt, code example 5).
DESIGN_OUTLIER: dict[str, Any] = {
    "consecutiveErrors": 5,
    "interval": "5s",
    "baseEjectionTime": "30s",
    "maxEjectionPercent": 50,
}


def design_variant(
    config: ConfigGuard, mesh: Backend, admin_http: Any, outlier: dict[str, Any]
) -> tuple[EnvoyAdmin, str, EffectiveOutlier | None, Workload, float]:
    """Apply ``outlier`` as the DestinationRule's outlierDetection; return the gateway's admin, the
    cluster, its effective outlier detection (the oracle over config_dump), a replica behind it
    and the ACK seconds."""
    vs = config.applied.ingress_virtual_service()
    assert vs is not None
    route = route_for(vs)
    d = next(d for d in route.destinations if d.weight != 0)
    dr = config.applied.destination_rules_for(d.fqdn)[0]

    def edit(body: dict[str, Any]) -> None:
        body["spec"].setdefault("trafficPolicy", {})["outlierDetection"] = dict(outlier)

    cluster = outbound_cluster(d.port or 3000, d.subset, d.fqdn)
    admin = EnvoyAdmin(admin_http, mesh.workload("ingress"))
    before = admin.active_cluster(cluster)
    apply_s = config.apply(config.variant("DestinationRule", dr.name, dr.namespace, edit), label="design-dr")
    running = admin.await_change(
        cluster, before, changed=apply_s > 0, what="with the design's outlier detection"
    )
    who = attribution(config.applied, route, mesh.workloads())
    victim = mesh.workload(who.pods(d.subset or d.host)[0])
    return admin, cluster, EffectiveOutlier.from_cluster(running), victim, apply_s


def ejection_on_500s(
    mesh: Backend,
    sampler: Sampler,
    faults: FaultGuard,
    admin: EnvoyAdmin,
    cluster: str,
    victim: Workload,
    *,
    threshold: int,
    describe: str,
) -> tuple[CheckResult, int]:
    """500s from ``victim`` one request at a time until it is ejected or ``4 x threshold`` came;
    the check: ejected after threshold..threshold+1 of them."""
    hosts = admin.hosts(cluster)
    address = next((a for a in hosts if address_owner(a, [victim])), "")
    assert address, f"{victim.name} is not an endpoint of {cluster}: {list(hosts)}"
    faults.inject(victim.name, AppFault(status=500, rate=1.0))
    errors = sent = 0
    budget = 4 * threshold

    def poll() -> bool:
        nonlocal errors, sent
        result = sampler.sample(mesh, n=1, concurrency=1)
        sent += result.total
        errors += sum(1 for r in result.responses if r.status == 500 and r.pod == victim.name)
        return address in admin.ejected(cluster) or errors >= budget

    wait.until(poll, what=f"{victim.name} ejected or {budget} 500s from it", timeout=60, interval=0.0)
    ejected = address in admin.ejected(cluster)
    high = threshold + 1
    check = CheckResult(
        name=f"design_dr_ejects_after({threshold} consecutive 5xx, Envoy default)",
        passed=ejected and threshold <= errors <= high,
        detail=(
            f"effective outlier detection at the gateway: {describe}; expected ejection after "
            f"{threshold}..{high} 500s from {victim.name}; observed "
            f"{'ejected' if ejected else 'NOT ejected'} after {errors} ({sent} requests)"
        ),
        evidence={"errors": errors, "ejected": ejected, "budget": budget},
    )
    return check, sent


def test_designs_deprecated_consecutive_errors_ejects_on_envoys_default(
    mesh_backend, sampler, config, faults, design, evidence, admin_http
) -> None:
    started = time.perf_counter()
    admin, cluster, od, victim, apply_s = design_variant(config, mesh_backend, admin_http, DESIGN_OUTLIER)
    assert od is not None, "the gateway's cluster runs no outlier detection for the design's DestinationRule"
    threshold = od.ejects_after_5xx
    assert threshold == 5, f"predicted from the Envoy config: {od.describe()}"
    check, sent = ejection_on_500s(
        mesh_backend, sampler, faults, admin, cluster, victim, threshold=threshold, describe=od.describe()
    )
    evidence.require(
        check,
        requests=sent,
        confidence="exact: counts at concurrency 1",
        wall_s=time.perf_counter() - started,
        notes=f"ACK {apply_s:.2f}s",
    )


@pytest.mark.negative
def test_negative_5xx_ejection_turned_off_fails_the_design_check(
    mesh_backend, sampler, config, faults, design, evidence, admin_http
) -> None:
    """Negative control: the design's DestinationRule plus ``consecutive5xxErrors: 0`` (Istio writes
    consecutive_5xx 0, enforcing 0: the rule is off). Asserting the design's prediction (5), the
    check FAILS because the replica is never ejected."""
    started = time.perf_counter()
    broken = {**DESIGN_OUTLIER, "consecutive5xxErrors": 0}
    admin, cluster, od, victim, apply_s = design_variant(config, mesh_backend, admin_http, broken)
    assert od is not None and od.ejects_after_5xx is None, od
    check, sent = ejection_on_500s(
        mesh_backend, sampler, faults, admin, cluster, victim, threshold=5, describe=od.describe()
    )
    evidence.require_failure(
        check,
        requests=sent,
        confidence="exact: counts at concurrency 1",
        wall_s=time.perf_counter() - started,
        notes=f"ACK {apply_s:.2f}s",
        because=(
            "the replica was not ejected after 4x the asserted 5 500s",
            lambda c: not c.evidence["ejected"] and c.evidence["errors"] >= c.evidence["budget"],
        ),
    )
