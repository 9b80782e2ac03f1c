"""Upgrade configuration, step order and the mesh view on the local backend (no mesh needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.backends.local.backend import LocalBackend
from harness.errors import SkewError, UserError
from harness.settings import from_env
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


def test_the_upgrades_view_of_the_mesh_follows_a_restart_by_another_process(tmp_path: Path) -> None:
    """The suites run by upgrade-check attach to the mesh in another process; when they restart a
    proxy (a Deployment's ServiceAccount change) the supervisor writes the new admin port to the
    plan, and the upgrade reads the config_dumps and versions from there, not from a stale copy."""
    settings = from_env({}).with_overrides(backend="local", state_dir=tmp_path)
    mesh = LocalBackend(settings)
    mesh.layout.marker.write_text(json.dumps({"backend": "local", "pid": os.getpid(), "pgid": 0}))

    def plan(admin: int) -> str:
        proxy = {"istio": "1.31-dev", "revision": "default", "generation": 1, "admin": admin}
        return json.dumps({"proxies": {"other-namespace.client-0": proxy}})

    mesh.layout.plan.write_text(plan(20031))
    mesh.attach()
    assert mesh.proxy_versions()["other-namespace.client-0"]["admin"] == 20031
    tmp = mesh.layout.plan.with_suffix(".tmp")  # written as the supervisor writes it
    tmp.write_text(plan(20174))  # the suites' process restarted the proxy
    tmp.replace(mesh.layout.plan)
    # the plan follows its file by itself (a chaos child's proxy replacement too); reload_plan stays valid
    assert mesh.proxy_versions()["other-namespace.client-0"]["admin"] == 20174
    mesh.reload_plan()
    assert mesh.proxy_versions()["other-namespace.client-0"]["admin"] == 20174
