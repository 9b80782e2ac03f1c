"""The embedded mesh enforces what istiod translated: routing, RBAC and STRICT mTLS, end to end."""

from __future__ import annotations

import httpx
import pytest

from harness.backends.base import Backend
from harness.traffic import checks
from harness.traffic.client import Sampler

pytestmark = pytest.mark.e2e


def test_ingress_routes_to_both_versions_and_denies_post(mesh: Backend) -> None:
    with Sampler(max_connections=8) as s:
        get = s.sample(mesh, source="ingress", n=200, concurrency=8)
        post = s.sample(mesh, source="ingress", method="POST", n=20, concurrency=4)
    assert get.status_counts() == {200: 200}, get.status_counts()
    assert set(get.version_counts()) == {"v1", "v2"}, get.version_counts()
    checks.assert_check(checks.rbac_denied(post))


def test_strict_mtls_refuses_plaintext_but_serves_mesh_clients(mesh: Backend) -> None:
    app = next(w for w in mesh.workloads() if w.role == "app")
    with httpx.Client(timeout=5, trust_env=False) as http, pytest.raises(httpx.TransportError):
        http.get(f"{app.sidecar_url}/api/greet")
    with Sampler(max_connections=4) as s:
        other = s.sample(mesh, source="other-namespace/client", n=10, concurrency=2)
        trusted = s.sample(mesh, source="trusted-namespace/client", n=10, concurrency=2)
    checks.assert_check(checks.allowed(other))
    checks.assert_check(checks.rbac_denied(trusted))
    assert all("URI=spiffe://cluster.local/ns/other-namespace/sa/client" in r.xfcc for r in other.responses)


def test_every_proxy_runs_istios_drain_period(mesh: Backend) -> None:
    """Every Envoy drains a replaced listener for Istio's default drainDuration (45 s, what pilot-agent
    passes as --drain-time-s) with --drain-strategy immediate. At 1 s the sidecars closed the
    ingress's kept-alive connections mid-request about a second after each policy change (503 UC
    upstream_reset_before_response_started{connection_termination}; bench/bench_drain.py)."""
    with httpx.Client(timeout=5, trust_env=False) as http:
        options = {
            w.ref: http.get(f"{w.proxy_admin_url}/server_info").json()["command_line_options"]
            for w in [*mesh.workloads(), mesh.workload("ingress")]
            if w.proxy_admin_url
        }
    assert len(options) >= 7, options.keys()  # every sidecar and the ingress gateway
    seen = {ref: (o.get("drain_time"), o.get("drain_strategy")) for ref, o in options.items()}
    assert set(seen.values()) == {("45s", "Immediate")}, seen
