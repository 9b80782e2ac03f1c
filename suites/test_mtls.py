"""Mutual TLS: STRICT sidecars refuse plaintext, in-mesh callers get through with their SPIFFE identity.

The expected mode of every replica comes from the PeerAuthentications the mesh runs
(workload selector over namespace over root namespace; port-level overrides for the service
port). A plaintext request straight to a replica's inbound sidecar listener
(``Workload.sidecar_url``, bypassing every client sidecar) must be *refused after connecting*:
the TCP connection is accepted and then reset because no TLS handshake follows. A refused
*connection* (nothing listening) proves nothing and fails the check.

Identity: the expected SPIFFE IDs come from the manifests (trust domain, namespace,
ServiceAccount); the observed ones from the certificates the mesh's CA issued, read from the
sidecars' Envoy (its SDS secret, ``/config_dump?resource=dynamic_active_secrets``). What the
server saw as the caller is the serving sidecar's ``x-forwarded-client-cert`` (the app echoes it
as ``xfcc``): ``URI=`` and ``Hash=`` of the client certificate from the handshake, ``By=`` its own.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from harness import envoy, wait
from harness.backends.base import Workload
from harness.errors import BackendError
from harness.istio import Bundle
from harness.istio.oracles import identity, mtls
from harness.mesh import UNREACHED_HEADER
from harness.namespaces import ref
from harness.traffic.checks import CheckResult

pytestmark = [pytest.mark.e2e]

ROOT_NAMESPACE = "istio-system"
PATH = "/api/greet"


def effective_mode(bundle: Bundle, w: Workload, port: int) -> str:
    """The mTLS mode Istio applies to ``w``'s inbound ``port`` (the mtls oracle)."""
    return mtls.effective_mode(bundle.peer_authentications(), w.namespace, w.labels, port)


def expected_identity(bundle: Bundle, source: str, gateway: Workload | None = None) -> str:
    """The caller's SPIFFE ID as the manifests define it (ServiceAccount and namespace); for the
    ingress, as the gateway's pod names them (``gateway``: the one the backend runs, which on an
    existing cluster is meshproof's own, not istio-system's), else Istio's default gateway."""
    if source == "ingress":
        if gateway is not None and gateway.service_account:
            return f"spiffe://{identity.TRUST_DOMAIN}/ns/{gateway.namespace}/sa/{gateway.service_account}"
        return identity.gateway_spiffe_id()
    namespace, _, deployment = source.partition("/")
    return identity.workload_spiffe_id(bundle.documents, namespace, deployment)


@dataclass(frozen=True)
class Probe:
    workload: str
    outcome: str  # "refused-after-connect", "no-listener", "answered <status>[ via Envoy]", "other: ..."


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
    # Envoy's router stamps what it proxied upstream: the sidecar itself took the plaintext request
    via = " via Envoy" if "x-envoy-upstream-service-time" in r.headers else ""
    return Probe(w.name, f"answered {r.status_code}{via}")


def plaintext_refused(probes: Sequence[Probe], expected: Mapping[str, str]) -> CheckResult:
    """Every plaintext attempt at a STRICT replica was accepted at TCP and then refused."""
    rows = []
    bad = answered = 0
    for name in sorted(expected):
        outcomes = Counter(p.outcome for p in probes if p.workload == name)
        answered += bool(outcomes) and all(
            o.startswith("answered") and o.endswith("via Envoy") for o in outcomes
        )
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
        # answered: replicas whose sidecar took and answered every plaintext request
        evidence={"mismatches": bad, "answered": answered, "replicas": len(expected)},
    )


def replicas(mesh) -> list[Workload]:  # type: ignore[no-untyped-def]
    return [w for w in mesh.workloads() if w.role == "app" and w.sidecar_url]


#: plaintext probes in flight at once: each is independent (its own connection, its own outcome),
#: so running them side by side changes no count; on kind each one crosses a port-forward and the
#: reset takes about a second to come back (380 s for the STRICT check's 360 probes one at a time)
PROBES_AT_ONCE = 8


def run_probes(http: httpx.Client, workloads: Sequence[Workload], n: int) -> list[Probe]:
    with ThreadPoolExecutor(max_workers=PROBES_AT_ONCE, thread_name_prefix="mtls-probe") as pool:
        return list(pool.map(lambda w: probe(http, w), [w for w in workloads for _ in range(n)]))


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
    Deployment's ServiceAccount and namespace)."""
    return {
        w.name: identity.workload_spiffe_id(bundle.documents, w.namespace, w.deployment) for w in workloads
    }


def server_element(xfcc: str) -> dict[str, list[str]]:
    """The x-forwarded-client-cert element the serving sidecar added (the last one: it appends)."""
    elements = envoy.parse_xfcc(xfcc) if xfcc else []
    return elements[-1] if elements else {}


def identity_check(
    mesh_backend,
    sampler,
    design,
    admin_http,
    source: str,
    expected: str,
    bundle: Bundle,
    host: str | None = None,
) -> tuple[CheckResult, int, float]:  # type: ignore[no-untyped-def]
    """The identities the mesh issued, read from the certificates its sidecars present, are the
    ones the manifests predict, and the server saw every request come with the caller's.

    - the calling sidecar's certificate (Envoy's SDS secret, ``/config_dump``) carries ``expected``
      as its SPIFFE ID, and every serving replica's carries the ID its Deployment predicts;
    - every response is a 200 whose ``x-forwarded-client-cert``, set by the serving sidecar from
      the handshake, names the caller's certificate (``URI=`` its SPIFFE ID, ``Hash=`` its SHA-256)
      and the serving replica's own (``By=``).
    """
    started = time.perf_counter()
    n = design.n_exact()
    caller = mesh_backend.workload(source)
    client = envoy.workload_certificate(admin_http, caller.proxy_admin_url)
    servers = replicas(mesh_backend)
    predicted = server_identities(bundle, servers)
    held = {w.name: envoy.workload_certificate(admin_http, w.proxy_admin_url).spiffe_id for w in servers}
    server_mismatch = sorted(f"{k}: {held[k]} (predicted {v})" for k, v in predicted.items() if held[k] != v)
    # from the ingress with ``host`` as Host (a Gateway API listener's hostname)
    result = sampler.sample(
        mesh_backend, source=source, n=n, concurrency=16, host_header=host if source == "ingress" else None
    )
    seen = [(r, server_element(r.xfcc)) for r in result.responses]
    from_client = sum(
        1 for r, e in seen if r.ok and e.get("uri") == [client.spiffe_id] and e.get("hash") == [client.sha256]
    )
    bad = [
        r
        for r, e in seen
        if not (
            r.ok
            and e.get("uri") == [expected]
            and e.get("hash") == [client.sha256]
            and e.get("by") == [held.get(r.pod, "?")]
        )
    ]
    example = next((r.xfcc for r in result.responses if r.xfcc), "(none)")
    passed = client.spiffe_id == expected and not server_mismatch and not bad and result.total == n
    check = CheckResult(
        name=f"mtls_identity({source} -> {expected})",
        passed=passed,
        detail=(
            f"the calling sidecar ({caller.ref}) presents {client.spiffe_id or client.uri_sans} "
            f"(serial {client.serial}, issuer {client.issuer}); predicted {expected}\n"
            f"serving sidecars presenting another ID than predicted: {server_mismatch or 'none'}\n"
            f"expected every response 200 with xfcc URI={expected}, Hash=<that certificate's SHA-256> "
            f"and By=<the serving replica's certificate>; {len(bad)} of {result.total} were not; "
            f"{from_client} came with the caller's certificate; status {result.status_counts()}; "
            f"e.g. xfcc {example}"
        ),
        evidence={
            "client_cert": client.spiffe_id,
            "server_cert_mismatches": len(server_mismatch),
            "from_client_cert": from_client,
            "bad": len(bad),
            "total": result.total,
        },
    )
    return check, n, time.perf_counter() - started


@pytest.mark.parametrize("source", ["other-namespace/client", "ingress"])
def test_in_mesh_callers_carry_their_spiffe_identity(
    mesh_backend, sampler, design, evidence, source, manifests, admin_http, ingress_host
) -> None:
    """The mesh issued each caller and server the SPIFFE ID its manifests predict (read from the
    certificate each sidecar presents), and the server saw every request come with the caller's.

    The expected IDs come from the manifests (the identity oracle: trust domain, namespace and
    ServiceAccount); the observed ones from the certificates the mesh's CA issued.
    """
    source = ref(source)  # the id names the manifests' source; a worker's copy runs its own
    gateway = mesh_backend.workload("ingress") if source == "ingress" else None
    expected = expected_identity(manifests, source, gateway)
    check, n, wall = identity_check(
        mesh_backend, sampler, design, admin_http, source, expected, manifests, ingress_host
    )
    evidence.require(check, requests=n, confidence=design.exact_confidence(), wall_s=wall)


IMPOSTOR = "impostor"


@pytest.mark.negative
def test_negative_other_service_account_fails_the_identity_check(
    mesh_backend, config, sampler, design, evidence, admin_http
) -> None:
    """Negative control: the client runs under another ServiceAccount, so the mesh issues it
    another identity, and the identity check (still asserting the manifests') FAILS.

    A new ServiceAccount and a variant of the client's Deployment naming it are applied through
    the backend, which replaces the client's pods (locally: its proxy) with ones holding that
    ServiceAccount's token; istiod then signs them a certificate of that identity. The check must
    fail because the certificate the client's sidecar presents, and every request the server
    saw, carry the other ServiceAccount's SPIFFE ID.
    """
    source = ref("other-namespace/client")
    namespace, _, name = source.partition("/")
    asserted = expected_identity(config.manifests, source)
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": IMPOSTOR, "namespace": namespace},
    }

    def impostor(body: dict) -> None:  # type: ignore[type-arg]
        body["spec"]["template"]["spec"]["serviceAccountName"] = IMPOSTOR

    apply_s = config.apply(account, config.variant("Deployment", name, namespace, impostor), label=IMPOSTOR)
    issued = expected_identity(config.applied, source)
    assert issued != asserted, f"the variant should predict another identity than {asserted}"
    check, n, wall = identity_check(
        mesh_backend, sampler, design, admin_http, source, asserted, config.applied
    )
    evidence.require_failure(
        check,
        requests=n,
        confidence=design.exact_confidence(),
        wall_s=wall,
        notes=f"client restarted as ServiceAccount {IMPOSTOR} in {apply_s:.2f}s",
        because=(
            f"the client's sidecar presents the certificate the mesh issued for {issued}, and every "
            "request the server saw came with that certificate",
            lambda c: (
                c.evidence["client_cert"] == issued
                and c.evidence["from_client_cert"] == c.evidence["total"] == c.evidence["bad"] > 0
                and c.evidence["server_cert_mismatches"] == 0
            ),
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
        because=(
            "every replica's sidecar answered the plaintext requests (PERMISSIVE accepts plaintext)",
            lambda c: c.evidence["mismatches"] == c.evidence["answered"] == c.evidence["replicas"] > 0,
        ),
    )
