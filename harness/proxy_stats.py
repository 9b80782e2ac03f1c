"""The Envoy statistics every proxy of a meshproof mesh must expose: the suites' evidence.

Istio trims Envoy's stats by default (``proxyStatsMatcher``); the verdicts of the suites rest on
counters Envoy keeps itself, so both backends include these in every proxy's config:

* circuit breaking: ``cluster.<c>.upstream_rq_pending_overflow`` / ``upstream_rq_active_overflow``
  / ``upstream_cx_overflow``;
* outlier detection: ``cluster.<c>.outlier_detection.*`` (``ejections_enforced_total``,
  ``ejections_detected_consecutive_5xx``, ``ejections_active``, ...);
* fault injection: ``http.<prefix>.fault.delays_injected`` / ``aborts_injected`` of the proxy
  whose fault filter applies the route's fault, and ``http.<prefix>.downstream_rq_total`` (the
  requests the filter drew for, the trials of the share under concurrent load);
* retries: ``cluster.<c>.upstream_rq_retry*``;
* route timeouts: ``cluster.<c>.upstream_rq_timeout`` (the route's whole timeout fired) and
  ``upstream_rq_per_try_timeout`` (one try's ``perTryTimeout`` fired);
* tracing: ``http.<prefix>.tracing.random_sampling`` (requests the proxy chose to trace) and
  ``tracing.opentelemetry.spans_sent`` (spans handed to the collector);
* the router's own answers: ``http.<prefix>.no_cluster`` (a route's cluster does not exist: Envoy
  answers with the route's ``cluster_not_found_response_code``, as Istio routes a Gateway API
  backendRef that does not resolve) and ``http.<prefix>.rq_direct_response`` (answered by the
  route itself, e.g. the redirect of an HTTPRoute RequestRedirect filter; Envoy counts its
  redirects there, not in ``rq_redirect``, which stayed 0 when measured);
* the xDS connection: ``control_plane.connected_state`` (1 while the proxy's ADS stream is up):
  the control-plane-loss experiment proves with it that every proxy lost, then regained, its
  config stream (Istio's own inclusion list keeps ``cluster.xds-grpc.*`` but not this gauge).
"""

from __future__ import annotations

from typing import Any

INCLUSION_REGEXPS: tuple[str, ...] = (
    ".*upstream_rq_pending_overflow",
    ".*upstream_rq_active_overflow",
    ".*upstream_cx_overflow",
    ".*outlier_detection\\..*",
    ".*upstream_rq_retry.*",
    ".*upstream_rq_timeout",
    ".*upstream_rq_per_try_timeout",
    ".*\\.fault\\..*",
    "http\\..*\\.downstream_rq_total",
    "(.*\\.)?tracing\\..*",
    "http\\..*\\.(no_cluster|rq_direct_response)",
    "control_plane\\.connected_state",
)


def proxy_stats_matcher() -> dict[str, Any]:
    """The ``proxyStatsMatcher`` (ProxyConfig) that keeps :data:`INCLUSION_REGEXPS`."""
    return {"inclusionRegexps": list(INCLUSION_REGEXPS)}
