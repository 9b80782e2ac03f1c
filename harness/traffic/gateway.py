"""Where requests go to reach a Kubernetes Gateway API Gateway (``meshproof send --gateway NS/NAME``).

Pure: it reads the Gateway objects a backend holds (:meth:`Backend.gateway_api_objects`, with the
status Istio wrote) and decides, from Istio's own conditions, whether and how the Gateway can be
reached:

* the Gateway must exist (else: the ones that do, named);
* Istio must report it ``Programmed=True`` for its current generation (its conditions verbatim when
  not);
* it must be deployed onto the mesh's ingress gateway by Istio's manual deployment:
  ``spec.addresses`` names the ingress gateway's Service (the requests then go to
  :meth:`Backend.ingress_url`); Istio's automated deployment (no addresses) starts a gateway
  Deployment meshproof does not reach;
* its first HTTP listener on the port ``ingress_url`` serves (80) gives the ``Host`` header: its
  hostname, a wildcard's ``*`` replaced by a label (said in :attr:`GatewayTarget.note`), or, with no
  hostname, a name of ours (any host matches such a listener).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError, UserError

GROUP = "gateway.networking.k8s.io"
INGRESS_PORT = 80  # the port Backend.ingress_url() serves on the ingress gateway
# the mesh's ingress gateway Service on every backend (local topology, istioctl's default profile)
INGRESS_SERVICE = "istio-ingressgateway"
WILDCARD_LABEL = "meshproof"  # stands for the "*" of a wildcard listener hostname
ANY_HOST = "gateway.meshproof.test"  # the Host sent to a listener without a hostname


@dataclass(frozen=True)
class GatewayTarget:
    """How to send requests through a Gateway: through the ingress gateway, with this Host."""

    ref: str  # NS/NAME
    address: str  # the ingress gateway Service the Gateway is deployed onto
    listener: str
    port: int
    host: str  # the Host header
    note: str = ""  # how the Host was chosen when the listener names no one host

    def as_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "address": self.address,
            "listener": self.listener,
            "port": self.port,
            "host": self.host,
            "note": self.note,
        }


def ingress_service_host(namespace: str) -> str:
    """The FQDN of the ingress gateway Service in ``namespace`` (the gateway workload's)."""
    return f"{INGRESS_SERVICE}.{namespace}.svc.cluster.local"


def _meta(o: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = o.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def gateways(objects: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """NS/NAME -> Gateway of the Gateway API (Istio's own Gateways are another group)."""
    return {
        f"{_meta(o).get('namespace', 'default')}/{_meta(o).get('name')}": o
        for o in objects
        if o.get("kind") == "Gateway" and str(o.get("apiVersion", "")).split("/")[0] == GROUP
    }


def _conditions_text(conditions: Iterable[Mapping[str, Any]]) -> str:
    return "; ".join(
        f"{c.get('type')}={c.get('status')} (reason {c.get('reason')}: {c.get('message')})"
        for c in conditions
    )


def resolve(objects: Iterable[Mapping[str, Any]], ref: str, ingress_service: str) -> GatewayTarget:
    """The target for Gateway ``ref`` (NS/NAME) among ``objects``; ``ingress_service`` is the FQDN
    of the mesh's ingress gateway Service. UserError (exit 2) for what the user can fix, HarnessError
    (exit 1) while Istio has not reported on the Gateway's current generation."""
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise UserError(
            f"--gateway {ref!r}: name a Gateway as NAMESPACE/NAME, e.g. istio-system/microservice-1"
        )
    found = gateways(objects)
    gw = found.get(ref)
    if gw is None:
        known = ", ".join(sorted(found)) or "none"
        raise UserError(
            f"no Gateway API Gateway {ref} in the mesh (Gateways it holds: {known}). "
            "Fix: name one of those, or apply the Gateway first"
        )
    status = gw.get("status") if isinstance(gw.get("status"), Mapping) else {}
    conditions = [c for c in (status or {}).get("conditions") or [] if isinstance(c, Mapping)]
    programmed = next((c for c in conditions if c.get("type") == "Programmed"), None)
    generation = _meta(gw).get("generation")
    observed = (programmed or {}).get("observedGeneration")
    if programmed is None or (
        isinstance(generation, int) and isinstance(observed, int) and observed < generation
    ):
        raise HarnessError(
            f"Istio has not reported Gateway {ref} Programmed for its generation {generation} yet "
            f"(conditions: {_conditions_text(conditions) or 'none'}). Fix: wait and retry; check istiod's log"
        )
    if programmed.get("status") != "True":
        raise UserError(
            f"Gateway {ref} is not Programmed; Istio says: {_conditions_text(conditions)}. "
            "Fix: correct the Gateway as the condition says (`meshproof status` lists it)"
        )
    spec = gw.get("spec") if isinstance(gw.get("spec"), Mapping) else {}
    addresses = [a for a in (spec or {}).get("addresses") or [] if isinstance(a, Mapping)]
    values = [str(a.get("value", "")) for a in addresses]
    if ingress_service not in values:
        deployed = (
            f"spec.addresses {values}" if values else "no spec.addresses (Istio's automated deployment)"
        )
        raise UserError(
            f"Gateway {ref} has {deployed}: meshproof sends only through Gateways deployed onto the "
            f"mesh's ingress gateway. Fix: set spec.addresses to [{{type: Hostname, value: {ingress_service}}}] "
            "(Istio's manual deployment)"
        )
    listeners = [x for x in (spec or {}).get("listeners") or [] if isinstance(x, Mapping)]
    http = [x for x in listeners if x.get("protocol") == "HTTP" and x.get("port") == INGRESS_PORT]
    if not http:
        have = ", ".join(f"{x.get('name')} {x.get('protocol')}:{x.get('port')}" for x in listeners) or "none"
        raise UserError(
            f"Gateway {ref} has no HTTP listener on port {INGRESS_PORT} (listeners: {have}): meshproof "
            f"sends plain HTTP to the ingress gateway's port {INGRESS_PORT}. Fix: add such a listener"
        )
    listener = http[0]
    hostname = str(listener.get("hostname") or "")
    note = ""
    if not hostname:
        host = ANY_HOST
        note = f"listener {listener.get('name')} has no hostname (it takes any host): sent Host {host}"
    elif hostname.startswith("*."):
        host = f"{WILDCARD_LABEL}{hostname[1:]}"
        note = (
            f"listener {listener.get('name')} takes {hostname}: sent Host {host} (the * replaced by a label)"
        )
    else:
        host = hostname
    return GatewayTarget(
        ref=ref,
        address=ingress_service,
        listener=str(listener.get("name")),
        port=INGRESS_PORT,
        host=host,
        note=note,
    )
