"""Helpers only the suites use (the ones bench/ and tests/ share live in the package: harness.guards,
harness.envoy, harness.traffic.design and .split, harness.tracing.probes, harness.report.records).

::

    authz     the request-matrix check over the authorization oracle
    load      phases of the background load (Locust) and their checks, for the under-load suites
    outlier   the outlier suite's machinery: the fast variant, driving to an ejection, sampling
              inside it, the return, the ejection cap, and their checks
"""
