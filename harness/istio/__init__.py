"""Kubernetes and Istio configuration: load YAML, validate it, and read it through typed views.

::

    loader    YAML files -> Document (file, document index, kind, name, raw body)
    schemas   real schemas: kubernetes-validate (built-in kinds), istio.io/istio CRDs (Istio kinds)
    semantic  Istio's rules a schema cannot express (weights, subsets, durations, selectors, ...)
    model     frozen typed views (Bundle, VirtualService, DestinationRule, ...), parse_duration
    validate  validate_paths / validate_documents: all of the above, every problem raised at once
"""

from __future__ import annotations

from harness.istio.loader import Document, load_paths, load_text
from harness.istio.model import (
    AuthorizationPolicy,
    Bundle,
    ConnectionPool,
    Deployment,
    DestinationRule,
    Gateway,
    HttpRoute,
    OutlierDetection,
    PeerAuthentication,
    RouteDestination,
    Service,
    ServicePort,
    Subset,
    VirtualService,
    parse_duration,
)
from harness.istio.validate import validate_documents, validate_paths, validate_text

__all__ = [
    "AuthorizationPolicy",
    "Bundle",
    "ConnectionPool",
    "Deployment",
    "DestinationRule",
    "Document",
    "Gateway",
    "HttpRoute",
    "OutlierDetection",
    "PeerAuthentication",
    "RouteDestination",
    "Service",
    "ServicePort",
    "Subset",
    "VirtualService",
    "load_paths",
    "load_text",
    "parse_duration",
    "validate_documents",
    "validate_paths",
    "validate_text",
]
