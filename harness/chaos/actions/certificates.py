"""Certificate lifetime: make replicas' sidecars get short-lived workload certificates, and give the default back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.chaos.actions.common import NotYet, pods_of, prove, restore_each
from harness.chaos.context import Configuration, mesh
from harness.chaos.ledger import Entry, Ledger, Undo
from harness.errors import BackendError

__all__ = [
    "restore_cert_lifetime",
    "shorten_cert_lifetime",
]


def _remaining_s(cert: Any) -> float:
    import datetime as dt

    return (dt.datetime.fromisoformat(cert.not_after) - dt.datetime.now(dt.UTC)).total_seconds()


def shorten_cert_lifetime(
    pods: str | Sequence[str],
    ttl: str = "20s",
    proof_timeout_s: float = 90.0,
    configuration: Configuration = None,
) -> dict[str, Any]:
    """Make each replica's sidecar ask istiod's CA for workload certificates of lifetime ``ttl``
    (pilot-agent's ``SECRET_TTL``, a Go duration, at least 10s; it renews at half the lifetime), and
    prove it: within ``proof_timeout_s`` the replica's Envoy must hold a certificate that expires
    within ``ttl`` from now (one-sided: slowness only shortens what is left). Local: the proxy is
    replaced without a gap. Only these replicas rotate fast; the rest of the mesh keeps its default."""
    from harness import envoy, sidecar_fault
    from harness.chaos.context import admin_http
    from harness.mesh import cert_ttl_seconds

    seconds = cert_ttl_seconds(ttl)
    backend = mesh(configuration)
    workloads = [backend.workload(p) for p in pods_of(pods)]  # unknown pods fail before anything changes
    with admin_http(configuration) as http:
        for w in workloads:  # bad victims (gateway, no sidecar, no inbound HTTP) fail before any change
            sidecar_fault.check_victim(http, w)
    ledger = Ledger.of(configuration)
    out = []
    for w in workloads:
        ledger.record(f"cert-ttl:{w.ref}", "cert-ttl", {"pod": w.ref, "ttl": ttl})
        replaced = backend.set_cert_ttl(w.ref, ttl)
        seen: dict[str, Any] = {}

        def short(ref: str = w.ref, seen: dict[str, Any] = seen) -> bool:
            now = backend.workload(ref)
            with admin_http(configuration) as http:
                cert = envoy.workload_certificate(http, now.proxy_admin_url)
            seen.update(
                serial=cert.serial, not_after=cert.not_after, remaining_s=round(_remaining_s(cert), 3)
            )
            if _remaining_s(cert) <= seconds:
                return True
            raise NotYet(f"{ref}'s Envoy holds certificate {cert.serial} valid until {cert.not_after}")

        def failure(ref: str = w.ref, seen: dict[str, Any] = seen) -> str:
            return (
                f"shorten_cert_lifetime: {ref}'s sidecar did not get a certificate of lifetime {ttl} within "
                f"{float(proof_timeout_s):g} s: its Envoy holds {seen or 'no certificate'}"
            )

        prove(
            short,
            what=f"{w.ref}'s Envoy to hold a certificate expiring within {ttl}",
            timeout_s=float(proof_timeout_s),
            failure=failure,
            interval=0.2,
            retry_on=(NotYet, BackendError),
        )
        out.append({"pod": w.ref, "ttl": ttl, "replaced": replaced, "certificate": seen})
    return {"pods": [w.ref for w in workloads], "ttl": ttl, "evidence": out}


def restore_cert_lifetime(pods: str | Sequence[str], configuration: Configuration = None) -> dict[str, Any]:
    """Give each replica's sidecar its default certificate lifetime back (no-op when not shortened)."""

    def undo(backend: Any, ref: str) -> str:
        backend.set_cert_ttl(ref, "")
        return ref

    return {"restored": restore_each(pods, configuration, "cert-ttl", undo)}


def _undo_cert_ttl(entry: Entry, configuration: Configuration) -> str:
    restore_cert_lifetime(str(entry.data["pod"]), configuration)
    return f"certificate lifetime of {entry.data['pod']} restored"


#: the rollback's undo of each ledger kind this family writes (see :func:`harness.chaos.ledger.undo_all`)
UNDO: Mapping[str, Undo] = {"cert-ttl": Undo(_undo_cert_ttl)}
