"""Upgrade configuration and step order on the local backend (pure parts)."""

from __future__ import annotations

import pytest

from harness.errors import SkewError, UserError
from harness.upgrade.local import UpgradeConfig, proxy_order


def test_config_refuses_bad_input_with_exit_2() -> None:
    with pytest.raises(SkewError):
        UpgradeConfig("1.31-dev", "1.30-dev")
    with pytest.raises(UserError, match="--mode"):
        UpgradeConfig("1.30-dev", "1.31-dev", mode="blue-green")
    with pytest.raises(UserError, match="users"):
        UpgradeConfig("1.30-dev", "1.31-dev", users=0)


def test_order_workloads_first_gateway_last_canary_by_namespace() -> None:
    proxies = {k: {} for k in ("sample.v1-0", "sample.v2-0", "other-namespace.client-0", "istio-system.gw-0")}
    assert proxy_order(proxies, "istio-system.gw-0", "in-place") == [
        ["other-namespace.client-0", "sample.v1-0", "sample.v2-0"],
        ["istio-system.gw-0"],
    ]
    assert proxy_order(proxies, "istio-system.gw-0", "canary") == [
        ["other-namespace.client-0"],
        ["sample.v1-0", "sample.v2-0"],
        ["istio-system.gw-0"],
    ]
