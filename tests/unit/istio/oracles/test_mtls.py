"""mTLS mode oracle: workload > namespace > mesh, port-level overrides, UNSET inherits."""

from __future__ import annotations

import pytest

from harness.istio.model import PeerAuthentication
from harness.istio.oracles.mtls import effective_mode

APP = {"app": "microservice-1"}


def pa(
    ns: str, mode: str = "UNSET", selector: dict[str, str] | None = None, ports: dict[int, str] | None = None
) -> PeerAuthentication:
    return PeerAuthentication("pa", ns, selector or {}, mode, ports or {})


@pytest.mark.parametrize(
    ("policies", "port", "want"),
    [
        ([], 3000, "PERMISSIVE"),
        ([pa("istio-system", "STRICT")], 3000, "STRICT"),
        ([pa("istio-system", "UNSET")], 3000, "PERMISSIVE"),
        ([pa("istio-system", "STRICT"), pa("sample", "PERMISSIVE")], 3000, "PERMISSIVE"),
        ([pa("istio-system", "STRICT"), pa("sample", "UNSET")], 3000, "STRICT"),
        ([pa("sample", "STRICT"), pa("sample", "DISABLE", APP)], 3000, "DISABLE"),
        ([pa("sample", "STRICT"), pa("sample", "UNSET", APP)], 3000, "STRICT"),
        ([pa("sample", "STRICT"), pa("sample", "UNSET", APP, {3000: "PERMISSIVE"})], 3000, "PERMISSIVE"),
        ([pa("sample", "STRICT"), pa("sample", "UNSET", APP, {3000: "PERMISSIVE"})], 8080, "STRICT"),
        ([pa("sample", "PERMISSIVE"), pa("sample", "STRICT", APP, {3000: "UNSET"})], 3000, "STRICT"),
        ([pa("sample", "STRICT", {"app": "other"})], 3000, "PERMISSIVE"),  # selector does not match
        ([pa("other-namespace", "STRICT")], 3000, "PERMISSIVE"),  # another namespace's policy
        ([pa("istio-system", "STRICT", APP)], 3000, "PERMISSIVE"),  # root ns with selector: not mesh-wide
        ([pa("sample", "STRICT", ports={3000: "DISABLE"})], 3000, "STRICT"),  # port level needs a selector
    ],
)
def test_effective_mode(policies: list[PeerAuthentication], port: int, want: str) -> None:
    assert effective_mode(policies, "sample", APP, port) == want
