"""The design's DestinationRule: predicted from the Envoy config istiod generated, then observed.

The original design writes outlier detection with the deprecated ``consecutiveErrors: 5``.
Istio accepts it with a deprecation warning and no longer translates it, so the cluster's
``outlier_detection`` block has no ``consecutive_5xx`` and Envoy's default applies: eject after
5 consecutive 5xx, 500 included. The expectation comes from the effective-outlier oracle over
the ingress gateway's ``/config_dump`` (never from the field's name), and the verdict counts:
the faulted replica answered exactly threshold..threshold+1 errors (concurrency 1: one request
may be routed before the ejection reaches the worker) before the gateway's ``/clusters`` showed
it ejected.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from harness import wait
from harness.backends.base import Fault
from harness.istio.oracles.outlier import EffectiveOutlier
from harness.traffic.checks import CheckResult
from suites._support.envoy import EnvoyAdmin, address_owner, outbound_cluster
from suites._support.routing import attribution, route_for

pytestmark = [pytest.mark.e2e]

# The design's outlier detection, as written there (000_5f6f375ae6cf420d.txt, code example 5).
DESIGN_OUTLIER: dict[str, Any] = {
    "consecutiveErrors": 5,
    "interval": "5s",
    "baseEjectionTime": "30s",
    "maxEjectionPercent": 50,
}


def test_designs_deprecated_consecutive_errors_ejects_on_envoys_default(
    mesh_backend, sampler, config, faults, design, evidence, admin_http
) -> None:
    started = time.perf_counter()
    vs = config.applied.ingress_virtual_service()
    assert vs is not None
    route = route_for(vs)
    d = next(d for d in route.destinations if d.weight != 0)
    dr = config.applied.destination_rules_for(d.fqdn)[0]

    def designs(body: dict[str, Any]) -> None:
        body["spec"].setdefault("trafficPolicy", {})["outlierDetection"] = dict(DESIGN_OUTLIER)

    apply_s = config.apply(
        config.variant("DestinationRule", dr.name, dr.namespace, designs), label="design-dr"
    )
    cluster = outbound_cluster(d.port or 3000, d.subset, d.fqdn)
    admin = EnvoyAdmin(admin_http, mesh_backend.workload("ingress"))

    def effective() -> EffectiveOutlier | None:
        c = admin.active_cluster(cluster)
        od = EffectiveOutlier.from_cluster(c) if c is not None else None
        return od if od is not None and od.interval_s == 5 else None

    od = wait.until(
        effective, what=f"{cluster} at the gateway to run the design's outlier detection", timeout=30
    )
    threshold = od.ejects_after_5xx
    assert threshold == 5, f"predicted from the Envoy config: {od.describe()}"

    who = attribution(config.applied, route, mesh_backend.workloads())
    victim = mesh_backend.workload(who.pods(d.subset or d.host)[0])
    hosts = admin.hosts(cluster)
    address = next((a for a in hosts if address_owner(a, [victim])), "")
    assert address, f"{victim.name} is not an endpoint of {cluster}: {list(hosts)}"
    faults.inject(victim.name, Fault(status=500, rate=1.0))

    errors = sent = 0
    budget = 4 * threshold

    def poll() -> bool:
        nonlocal errors, sent
        result = sampler.sample(mesh_backend, n=1, concurrency=1)
        sent += result.total
        errors += sum(1 for r in result.responses if r.status == 500 and r.pod == victim.name)
        return address in admin.ejected(cluster) or errors >= budget

    wait.until(poll, what=f"{victim.name} ejected or {budget} 500s from it", timeout=60, interval=0.0)
    ejected = address in admin.ejected(cluster)
    high = threshold + 1
    evidence.require(
        CheckResult(
            name=f"design_dr_ejects_after({threshold} consecutive 5xx, Envoy default)",
            passed=ejected and threshold <= errors <= high,
            detail=(
                f"effective outlier detection at the gateway: {od.describe()}; expected ejection after "
                f"{threshold}..{high} 500s from {victim.name}; observed "
                f"{'ejected' if ejected else 'NOT ejected'} after {errors} ({sent} requests)"
            ),
            evidence={"errors": errors, "ejected": ejected},
        ),
        requests=sent,
        confidence="exact: counts at concurrency 1",
        wall_s=time.perf_counter() - started,
        notes=f"ACK {apply_s:.2f}s",
    )
