"""Mesh-upgrade validation: from one pinned Istio release to the next, under load, with evidence.

- :mod:`.skew`: the version-skew rule (pure), checked before the run and before each step;
- :mod:`.configdiff`: normalised Envoy config_dump per proxy and what changed (pure);
- :mod:`harness.report.compare`: the suites' records before vs after (shared with ``meshproof report
  compare``: one implementation);
- :mod:`.report`: the typed report, its JSON, text and chart;
- :mod:`.local`: the flow on the embedded local mesh (in-place and canary);
- :mod:`.kube`: the flow on kind/existing clusters (istioctl revisions, ``istio.io/rev`` labels).
"""
