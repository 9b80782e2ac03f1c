"""Istio's report on applied Gateways and routes (harness/istio/conditions.py), and `apply`'s wait
for it (harness/cli/config.py), against the objects with the status Istio's writers produce
(shapes and messages copied from a local mesh's `meshproof status --json`)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cli.config import await_istio_conditions
from harness.cli.output import Output
from harness.errors import ConfigError, WaitTimeout
from harness.istio.conditions import applies_to, judge

GW = {"name": "microservice-1", "namespace": "istio-system"}


def route(route_name: str = "r", **parent: Any) -> dict[str, Any]:
    name = route_name
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "sample"},
        "spec": {"parentRefs": [{**GW, **parent}], "rules": [{"backendRefs": [{"name": "x", "port": 1}]}]},
    }


def cond(
    kind: str, status: str = "True", generation: int = 1, reason: str = "", message: str = ""
) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "observedGeneration": generation,
        "reason": reason or kind,
        "message": message or "ok",
    }


def gateway(generation: int = 1, programmed: str = "True") -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {**GW, "generation": generation},
        "spec": {"gatewayClassName": "istio"},
        "status": {
            "conditions": [
                cond("Accepted", generation=generation),
                cond("Programmed", programmed, generation),
            ]
        },
    }


def held(
    body: dict[str, Any], generation: int, *conditions: dict[str, Any], ref: dict[str, Any] | None = None
) -> dict[str, Any]:
    out = copy.deepcopy(body)
    out["metadata"]["generation"] = generation
    parent = ref if ref is not None else body["spec"]["parentRefs"][0]
    out["status"] = {"parents": [{"parentRef": parent, "conditions": list(conditions)}] if conditions else []}
    return out


def test_only_gateways_and_routes_are_judged() -> None:
    assert applies_to(route()) and applies_to(gateway())
    assert not applies_to({"apiVersion": "networking.istio.io/v1", "kind": "Gateway"})
    assert not applies_to({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant"})
    assert judge([{"apiVersion": "v1", "kind": "Service"}], []).done


def test_a_route_istio_reported_true_on_for_its_generation_is_accepted() -> None:
    body = route()
    j = judge(
        [body], [gateway(), held(body, 2, cond("Accepted", generation=2), cond("ResolvedRefs", generation=2))]
    )
    assert j.done and not j.refused and j.accepted == ("HTTPRoute sample/r",)


def test_conditions_of_an_older_generation_are_waited_for_not_judged() -> None:
    body = route()
    stale = held(
        body, 2, cond("Accepted", "False", 1, "NoMatchingParent"), cond("ResolvedRefs", generation=1)
    )
    j = judge([body], [gateway(), stale])
    assert not j.done and j.pending == (
        "HTTPRoute sample/r for Gateway istio-system/microservice-1: Accepted, ResolvedRefs",
    )
    assert not j.refused
    assert judge([body], [gateway()]).pending == ("HTTPRoute sample/r: not held by the mesh yet",)


def test_a_refused_route_keeps_istios_condition_verbatim() -> None:
    body = route(sectionName="https")
    message = 'sectionName "https" not found'
    j = judge(
        [body],
        [
            gateway(),
            held(
                body,
                1,
                cond("Accepted", "False", reason="NoMatchingParent", message=message),
                cond("ResolvedRefs"),
            ),
        ],
    )
    (r,) = j.refused
    assert j.done and not j.accepted
    assert (r.kind, r.namespace, r.name, r.path) == ("HTTPRoute", "sample", "r", "spec.parentRefs[0]")
    assert r.parent == "Gateway istio-system/microservice-1 (section https)"
    assert r.text == f"Accepted=False, reason NoMatchingParent: {message}"
    assert r.fix.startswith("name a listener the parent has") and "Istio does not route by it" in r.fix


def test_an_unresolved_backend_points_at_the_backend_refs() -> None:
    body = route()
    message = "backend(gone.sample.svc.cluster.local) not found"
    bad = cond("ResolvedRefs", "False", reason="BackendNotFound", message=message)
    (r,) = judge([body], [gateway(), held(body, 1, cond("Accepted"), bad)]).refused
    assert r.path == "spec.rules[].backendRefs" and r.text.endswith(message)
    assert "get a 500 from the gateway" in r.fix


def test_a_parent_the_mesh_does_not_hold_is_noted_not_waited_for() -> None:
    body = route()
    j = judge([body], [held(body, 1)])
    assert j.done and not j.accepted and not j.refused
    assert j.notes == (
        "HTTPRoute sample/r: no Gateway istio-system/microservice-1 in the mesh, so nothing reports on the route for it",
    )


def test_a_service_parent_is_waited_for() -> None:
    body = route(kind="Service", group="", name="microservice-1", namespace="sample", port=3000)
    assert judge([body], [held(body, 1)]).pending
    reported = held(body, 1, cond("Accepted"), cond("ResolvedRefs"))
    assert judge([body], [reported]).accepted == ("HTTPRoute sample/r",)


def test_the_status_entry_must_be_for_the_same_parent() -> None:
    body = route(sectionName="https")
    other = held(body, 1, cond("Accepted"), cond("ResolvedRefs"), ref=dict(GW))  # no sectionName
    assert judge([body], [gateway(), other]).pending


def test_a_gateway_needs_accepted_and_programmed() -> None:
    body = gateway()
    assert judge([body], [gateway(programmed="False")]).refused[0].text.startswith("Programmed=False")
    assert judge([body], [gateway()]).accepted == ("Gateway istio-system/microservice-1",)
    stale = gateway(generation=2)
    stale["status"]["conditions"][1]["observedGeneration"] = 1
    assert judge([body], [stale]).pending == ("Gateway istio-system/microservice-1: Programmed",)


class FakeMesh:
    def __init__(self, *reports: list[dict[str, Any]]) -> None:
        self.reports = list(reports)

    def gateway_api_objects(self) -> list[dict[str, Any]]:
        return self.reports.pop(0) if len(self.reports) > 1 else self.reports[0]


def test_apply_waits_for_istio_then_names_file_field_and_condition(tmp_path: Path) -> None:
    body = route(sectionName="https")
    f = tmp_path / "route.yaml"
    f.write_text(
        yaml.safe_dump_all([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}, body])
    )
    refused = held(
        body,
        1,
        cond("Accepted", "False", reason="NoMatchingParent", message='sectionName "https" not found'),
        cond("ResolvedRefs"),
    )
    mesh = FakeMesh([gateway()], [gateway(), held(body, 1)], [gateway(), refused])
    with pytest.raises(ConfigError) as info:
        await_istio_conditions(mesh, [f], Output(), timeout=10)  # type: ignore[arg-type]
    (problem,) = info.value.problems
    assert info.value.exit_code == 2
    assert str(problem) == (
        f"{f} (document 2 HTTPRoute/r): field spec.parentRefs[0]: Istio's condition for Gateway "
        'istio-system/microservice-1 (section https): Accepted=False, reason NoMatchingParent: sectionName "https" '
        "not found. Fix: name a listener the parent has (parentRefs[].sectionName or port). The object is stored "
        "as it is (Istio does not route by it for that parent): fix the file and apply it again, or "
        "`meshproof delete -f` it"
    )


def test_apply_names_what_istio_never_reported(tmp_path: Path) -> None:
    body = route()
    f = tmp_path / "route.yaml"
    f.write_text(yaml.safe_dump(body))
    with pytest.raises(
        WaitTimeout, match="HTTPRoute sample/r for Gateway istio-system/microservice-1: Accepted"
    ):
        await_istio_conditions(FakeMesh([gateway(), held(body, 1)]), [f], Output(), timeout=0.5)  # type: ignore[arg-type]


def test_apply_of_other_objects_asks_nothing(tmp_path: Path) -> None:
    f = tmp_path / "vs.yaml"
    f.write_text(
        yaml.safe_dump(
            {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "v"}}
        )
    )

    class Untouchable:
        def gateway_api_objects(self) -> list[dict[str, Any]]:
            raise AssertionError("not asked")

    assert await_istio_conditions(Untouchable(), [f], Output()) == ()  # type: ignore[arg-type]
