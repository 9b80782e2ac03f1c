"""The SPIFFE identity a workload's certificate carries, derived from the manifests.

Istio names a workload by trust domain, namespace and Kubernetes ServiceAccount:
``spiffe://<trust domain>/ns/<namespace>/sa/<service account>``. The ServiceAccount is the pod
template's ``serviceAccountName`` (or the deprecated ``serviceAccount``), ``default`` when
neither is set. This is what the mTLS check expects; the CA that issued the certificate is
never asked.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.istio.loader import Document
from harness.istio.model import DEFAULT_NAMESPACE

TRUST_DOMAIN = "cluster.local"


def service_account(doc: Document) -> str:
    """The ServiceAccount the pods of a Deployment (StatefulSet, ..., or a Pod) run as."""
    spec = doc.spec
    if doc.kind != "Pod":
        template = spec.get("template")
        spec = template.get("spec", {}) if isinstance(template, dict) else {}
        spec = spec if isinstance(spec, dict) else {}
    for key in ("serviceAccountName", "serviceAccount"):
        value = spec.get(key)
        if isinstance(value, str) and value:
            return value
    return "default"


def spiffe_id(doc: Document, trust_domain: str = TRUST_DOMAIN) -> str:
    """``spiffe://cluster.local/ns/<ns>/sa/<sa>`` of the workload ``doc`` describes."""
    return f"spiffe://{trust_domain}/ns/{doc.namespace or DEFAULT_NAMESPACE}/sa/{service_account(doc)}"


def principal(doc: Document, trust_domain: str = TRUST_DOMAIN) -> str:
    """The principal AuthorizationPolicies see: the SPIFFE ID without ``spiffe://``."""
    return spiffe_id(doc, trust_domain).removeprefix("spiffe://")


# The ingress gateway Istio's installation creates: namespace istio-system, ServiceAccount
# istio-ingressgateway-service-account (the default gateway chart's values).
GATEWAY_NAMESPACE = "istio-system"
GATEWAY_SERVICE_ACCOUNT = "istio-ingressgateway-service-account"


def gateway_spiffe_id(trust_domain: str = TRUST_DOMAIN) -> str:
    """The SPIFFE ID of the mesh's default ingress gateway."""
    return f"spiffe://{trust_domain}/ns/{GATEWAY_NAMESPACE}/sa/{GATEWAY_SERVICE_ACCOUNT}"


def workload_spiffe_id(docs: Sequence[Document], namespace: str, deployment: str) -> str:
    """The SPIFFE ID of Deployment ``namespace/deployment`` of the manifests ``docs``."""
    for d in docs:
        if (
            d.kind == "Deployment"
            and d.name == deployment
            and (d.namespace or DEFAULT_NAMESPACE) == namespace
        ):
            return spiffe_id(d)
    raise LookupError(f"no Deployment {namespace}/{deployment} in the manifests")
