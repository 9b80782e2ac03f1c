"""Expectation oracles: what Istio (and the Envoy it configures) will do, decided in one place.

Each oracle encodes Istio's documented semantics, or reads the effective Envoy configuration
istiod generated (``/config_dump``) and fills in Envoy's documented defaults where a field is
unset; never a field's name. The suites and ``meshproof explain`` ask these, and each has unit
tests case by case (tests/unit/istio/oracles/).

::

    authz     AuthorizationPolicy decision for (peer, request) at a workload
    routing   which HTTP route of a VirtualService a request takes; the route's traffic proportions
    httproute which rule of a Gateway API HTTPRoute a request takes (Gateway API's match
              precedence); the rule's proportions by backendRef
    mtls      the PeerAuthentication mode of a workload's port
    identity  the SPIFFE ID a workload gets, from its ServiceAccount and namespace
    outlier   effective outlier detection of an Envoy cluster (Envoy's defaults filled in)
    overflow  effective circuit-breaker limits of an Envoy cluster; bounds on overflow 503s
"""
