"""meshproof's end-to-end suites: prove the mesh does what its Istio configuration says.

Run against a running mesh (``meshproof up --detach``) or let the ``mesh`` fixture bring one up:
``pytest suites/``. Fixtures (guards, evidence) are in ``conftest.py``; helpers only the suites use
live in :mod:`suites._support`, the ones bench/ and tests/ share in the ``harness`` package.
"""
