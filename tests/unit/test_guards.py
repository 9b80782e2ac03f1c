"""ConfigGuard varies a workload's Deployment and ServiceAccount like Istio objects, and restores them:
the original Deployment applied back, the added ServiceAccount deleted (in that order)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness.guards import ConfigGuard
from harness.istio import Bundle, load_text

MANIFESTS = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: other-namespace}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: other-namespace}
spec:
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      serviceAccountName: client
      containers: [{name: client, image: meshproof/microservice-1:dev}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: sample}
spec: {mtls: {mode: STRICT}}
"""


class FakeMesh:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, str]]]] = []

    def _record(self, op: str, paths: list[Path]) -> float:
        objs = [o for p in paths for o in yaml.safe_load_all(p.read_text())]
        self.calls.append(
            (
                op,
                [
                    (
                        o["kind"],
                        o["spec"]["template"]["spec"]["serviceAccountName"]
                        if o["kind"] == "Deployment"
                        else o["metadata"]["name"],
                    )
                    for o in objs
                ],
            )
        )
        return 0.5

    def apply(self, paths: list[Path]) -> float:
        return self._record("apply", paths)

    def delete(self, paths: list[Path]) -> float:
        return self._record("delete", paths)


def test_a_deployment_variant_and_a_new_service_account_are_restored(tmp_path: Path) -> None:
    mesh = FakeMesh()
    guard = ConfigGuard(mesh, Bundle(load_text(MANIFESTS)), tmp_path)  # type: ignore[arg-type]
    assert guard.repair() == []  # nothing the backend cannot see is taken for a leftover

    def impostor(body: dict[str, Any]) -> None:
        body["spec"]["template"]["spec"]["serviceAccountName"] = "impostor"

    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "impostor", "namespace": "other-namespace"},
    }
    variant = guard.variant("Deployment", "client", "other-namespace", impostor)
    assert guard.apply(account, variant, label="impostor", unvalidated_because="offline test") == 0.5
    assert mesh.calls == [("apply", [("ServiceAccount", "impostor"), ("Deployment", "impostor")])]
    applied = guard.applied.find("Deployment", "other-namespace", "client")
    assert applied is not None and applied.spec["template"]["spec"]["serviceAccountName"] == "impostor"

    guard.restore()
    assert mesh.calls[1:] == [
        ("apply", [("Deployment", "client")]),
        ("delete", [("ServiceAccount", "impostor")]),
    ]
    assert guard.applied.find("ServiceAccount", "other-namespace", "impostor") is None
