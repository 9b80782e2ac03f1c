"""The PeerAuthentication mode Istio applies to a workload's inbound port.

Istio's documented precedence: a workload-specific policy (selector matching the workload's
labels, in its namespace) over the namespace-wide policy (no selector, in its namespace) over
the mesh-wide policy (no selector, in the root namespace ``istio-system``). ``portLevelMtls``
counts only in a workload-specific policy and overrides that policy's mode for the port. A mode
of ``UNSET`` (or none) inherits from the next level up; with nothing set anywhere the mode is
``PERMISSIVE``. Among several policies at one level Istio takes the oldest; here: the first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from harness.istio.model import PeerAuthentication, labels_match

ROOT_NAMESPACE = "istio-system"
DEFAULT_MODE = "PERMISSIVE"


def effective_mode(
    policies: Sequence[PeerAuthentication], namespace: str, labels: Mapping[str, str], port: int
) -> str:
    """STRICT, PERMISSIVE or DISABLE for ``port`` of a workload with ``labels`` in ``namespace``."""
    mode = DEFAULT_MODE
    mesh = next((p for p in policies if p.namespace == ROOT_NAMESPACE and not p.selector), None)
    if mesh is not None and mesh.mode != "UNSET":
        mode = mesh.mode
    ns = next((p for p in policies if p.namespace == namespace and not p.selector), None)
    if ns is not None and ns.mode != "UNSET":
        mode = ns.mode
    workload = next(
        (p for p in policies if p.namespace == namespace and p.selector and labels_match(p.selector, labels)),
        None,
    )
    if workload is not None:
        if workload.mode != "UNSET":
            mode = workload.mode
        port_mode = workload.port_level.get(port, "UNSET")
        if port_mode != "UNSET":
            mode = port_mode
    return mode
