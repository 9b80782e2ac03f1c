"""meshproof's end-to-end suites: prove the mesh does what its Istio configuration says.

Run against a running mesh (``meshproof up --detach``) or let the ``mesh`` fixture bring one up:
``pytest suites/``. Shared helpers live in :mod:`suites._support`; fixtures in ``conftest.py``.
"""
