"""Mutual TLS: STRICT sidecars refuse plaintext, in-mesh callers get through with their SPIFFE identity.

The expected mode of every replica comes from the PeerAuthentications the mesh runs
(workload selector over namespace over root namespace; port-level overrides for the service
port). A plaintext request straight to a replica's inbound sidecar listener
(``Workload.sidecar_url``, bypassing every client sidecar) must be *refused after connecting*:
the TCP connection is accepted and then reset because no TLS handshake follows. A refused
*connection* (nothing listening) proves nothing and fails the check.

What RBAC sees as the caller is the identity in the client certificate; the sidecar forwards
it to the app as ``x-forwarded-client-cert``, which the app echoes as ``xfcc``.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import httpx
import pytest

from harness import wait
from harness.backends.base import Workload
from harness.errors import BackendError
from harness.istio import Bundle
from harness.istio.oracles import identity, mtls
from harness.mesh import UNREACHED_HEADER
from harness.traffic.checks import CheckResult

pytestmark = [pytest.mark.e2e]

ROOT_NAMESPACE = "istio-system"
PATH = "/api/greet"


def effective_mode(bundle: Bundle, w: Workload, port: int) -> str:
    """The mTLS mode Istio applies to ``w``'s inbound ``port`` (the mtls oracle)."""
    return mtls.effective_mode(bundle.peer_authentications(), w.namespace, w.labels, port)


def expected_identity(bundle: Bundle, source: str) -> str:
    """The caller's SPIFFE ID as the manifests define it (ServiceAccount and namespace)."""
    if source == "ingress":
        return identity.gateway_spiffe_id()
    namespace, _, deployment = source.partition("/")
    return identity.workload_spiffe_id(bundle.documents, namespace, deployment)


@dataclass(frozen=True)
class Probe:
    workload: str
    outcome: str  # "refused-after-connect", "no-listener", "answered <status>", "other: ..."


def probe(http: httpx.Client, w: Workload) -> Probe:
    """One plaintext GET at ``w``'s inbound sidecar. A connection the backend's forwarding path
    accepted but never carried to the sidecar (UNREACHED_HEADER) is an error of the check: it
    raises instead of passing for a refusal."""
    try:
        r = http.get(f"{w.sidecar_url}{PATH}")
    except (httpx.ConnectError, httpx.ConnectTimeout):
        return Probe(w.name, "no-listener")
    except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
        return Probe(w.name, "refused-after-connect")
    except httpx.HTTPError as e:
        return Probe(w.name, f"other: {type(e).__name__}")
    if UNREACHED_HEADER in r.headers:
        raise BackendError(
            f"the plaintext probe of {w.ref} never reached its sidecar ({r.headers[UNREACHED_HEADER]}); "
            "this says nothing about mTLS. Fix: check the backend's forwarding (`meshproof status`)"
        )
    return Probe(w.name, f"answered {r.status_code}")


def plaintext_refused(probes: Sequence[Probe], expected: Mapping[str, str]) -> CheckResult:
    """Every plaintext attempt at a STRICT replica was accepted at TCP and then refused."""
    rows = []
    bad = 0
    for name in sorted(expected):
        outcomes = Counter(p.outcome for p in probes if p.workload == name)
        want_refused = expected[name] == "STRICT"
        ok = (
            set(outcomes) == {"refused-after-connect"}
            if want_refused
            else not outcomes.get("refused-after-connect")
        )
        bad += not ok
        rows.append(f"{name}: mode {expected[name]}, {dict(outcomes)} {'ok' if ok else 'MISMATCH'}")
    return CheckResult(
        name="plaintext_refused_by_strict_sidecars",
        passed=bool(probes) and bad == 0,
        detail=f"plaintext GET {PATH} straight to each replica's inbound sidecar:\n" + "\n".join(rows),
        evidence={"mismatches": bad},
    )


def replicas(mesh) -> list[Workload]:  # type: ignore[no-untyped-def]
    return [w for w in mesh.workloads() if w.role == "app" and w.sidecar_url]


def run_probes(http: httpx.Client, workloads: Sequence[Workload], n: int) -> list[Probe]:
    return [probe(http, w) for w in workloads for _ in range(n)]


def sidecar_port(w: Workload) -> int:
    return int(w.sidecar_url.rsplit(":", 1)[1])


def test_plaintext_to_strict_sidecars_is_refused(mesh_backend, config, design, evidence, admin_http) -> None:
    """Plaintext straight to every STRICT replica's sidecar: connection accepted, then reset."""
    started = time.perf_counter()
    ws = replicas(mesh_backend)
    modes = {w.name: effective_mode(config.applied, w, sidecar_port(w)) for w in ws}
    assert set(modes.values()) == {"STRICT"}, f"the manifests should make every replica STRICT: {modes}"
    n = design.n_exact()
    probes = run_probes(admin_http, ws, n)
    evidence.require(
        plaintext_refused(probes, modes),
        requests=len(probes),
        confidence=f"{design.exact_confidence()} (per replica)",
        wall_s=time.perf_counter() - started,
    )


def server_identities(bundle: Bundle, workloads: Sequence[Workload]) -> dict[str, str]:
    """Each replica's own SPIFFE ID as the manifests define it (the identity oracle over its
    Deployment's ServiceAccount and namespace), never the record its certificate was written from."""
    return {
        w.name: identity.workload_spiffe_id(bundle.documents, w.namespace, w.deployment) for w in workloads
    }


def identity_check(
    mesh_backend, sampler, design, source: str, expected: str, manifests: Bundle
) -> tuple[CheckResult, int, float]:  # type: ignore[no-untyped-def]
    """Every response 200, the server's xfcc names ``expected`` as the caller (URI=...) and the
    serving replica's manifest-derived identity as the server (By=...)."""
    started = time.perf_counter()
    n = design.n_exact()
    result = sampler.sample(mesh_backend, source=source, n=n, concurrency=16)
    want = f"URI={expected}"
    servers = server_identities(manifests, replicas(mesh_backend))
    bad = [
        r
        for r in result.responses
        if not (r.ok and want in r.xfcc.split(";") and f"By={servers.get(r.pod, '?')}" in r.xfcc.split(";"))
    ]
    example = next((r.xfcc for r in result.responses if r.xfcc), "(none)")
    other_identity = sum(1 for r in bad if r.ok and r.xfcc and want not in r.xfcc.split(";"))
    check = CheckResult(
        name=f"mtls_identity({source} -> {expected})",
        passed=not bad and result.total == n,
        detail=(
            f"expected every response 200 with xfcc containing {want} and By=<the serving replica's "
            f"SPIFFE ID from the manifests' ServiceAccount and namespace>; {len(bad)} of "
            f"{result.total} were not; status {result.status_counts()}; e.g. xfcc {example}"
        ),
        evidence={"bad": len(bad), "other_identity": other_identity, "total": result.total},
    )
    return check, n, time.perf_counter() - started


@pytest.mark.parametrize("source", ["other-namespace/client", "ingress"])
def test_in_mesh_callers_carry_their_spiffe_identity(
    mesh_backend, sampler, design, evidence, source, manifests
) -> None:
    """Mesh callers succeed over mTLS, and the server sees the caller's SPIFFE ID (xfcc URI=...).

    The expected ID comes from the manifests (the identity oracle: ServiceAccount and namespace),
    never from the record the certificate was written from.
    """
    check, n, wall = identity_check(
        mesh_backend, sampler, design, source, expected_identity(manifests, source), manifests
    )
    evidence.require(check, requests=n, confidence=design.exact_confidence(), wall_s=wall)


@pytest.mark.negative
def test_negative_other_service_account_fails_the_identity_check(
    mesh_backend, sampler, design, evidence, manifests
) -> None:
    """Negative control: manifests that give the client another ServiceAccount predict another
    SPIFFE ID than the one the running client carries, so the identity check FAILS."""
    source = "other-namespace/client"
    namespace, _, name = source.partition("/")
    doc = next(
        d
        for d in manifests.documents
        if d.kind == "Deployment" and d.name == name and d.namespace == namespace
    )
    body = copy.deepcopy(doc.body)
    body["spec"]["template"]["spec"]["serviceAccountName"] = "impostor"
    wrong = identity.spiffe_id(dataclasses.replace(doc, body=body))
    assert wrong != expected_identity(manifests, source)
    check, n, wall = identity_check(mesh_backend, sampler, design, source, wrong, manifests)
    evidence.require_failure(
        check,
        requests=n,
        confidence=design.exact_confidence(),
        wall_s=wall,
        because=(
            "every response was a 200 carrying another caller identity than predicted",
            lambda c: c.evidence["other_identity"] == c.evidence["total"] > 0,
        ),
    )


@pytest.mark.negative
def test_negative_permissive_mode_fails_the_plaintext_check(
    mesh_backend, config, design, evidence, admin_http
) -> None:
    """Negative control: PeerAuthentication PERMISSIVE lets plaintext in, so the STRICT check FAILS."""
    started = time.perf_counter()
    ws = replicas(mesh_backend)
    asserted = {w.name: effective_mode(config.applied, w, sidecar_port(w)) for w in ws}
    pa = next(p for p in config.applied.peer_authentications() if p.mode == "STRICT")

    def permissive(body: dict) -> None:  # type: ignore[type-arg]
        body["spec"]["mtls"]["mode"] = "PERMISSIVE"

    apply_s = config.apply(
        config.variant("PeerAuthentication", pa.name, pa.namespace, permissive), label="permissive"
    )
    assert {effective_mode(config.applied, w, sidecar_port(w)) for w in ws} == {"PERMISSIVE"}
    wait.until(
        lambda: all(probe(admin_http, w).outcome.startswith("answered") for w in ws),
        what="every sidecar to accept plaintext under PERMISSIVE",
        timeout=30,
        interval=0.05,
        converge=3,
    )
    probes = run_probes(admin_http, ws, design.n_exact())
    evidence.require_failure(
        plaintext_refused(probes, asserted),
        requests=len(probes),
        confidence=f"{design.exact_confidence()} (per replica)",
        wall_s=time.perf_counter() - started,
        notes=f"PERMISSIVE ACK {apply_s:.2f}s",
    )
