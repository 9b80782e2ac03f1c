"""Helpers shared by the suites (pure where possible; I/O only through the Backend and the sampler).

::

    design    statistical design (alpha, power, min deviation) -> sample sizes, confidence text
    report    per-check records, the session table and suites-report.json
    config    ConfigGuard: apply validated variants of the manifests' objects, restore the originals
    faults    FaultGuard: app faults and killed replicas, always undone
    routing   expected splits from VirtualServices, subset attribution, convergence, split checks
    authz     AuthorizationPolicy evaluation (Istio's semantics) and the request-matrix check
    envoy     reading a proxy's Envoy admin: ejections, cluster config, circuit-breaker counters
"""
