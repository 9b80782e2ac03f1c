"""Gateway API objects are admitted by the Kubernetes API server's own code, then Istio's.

Real CRDs (sigs.k8s.io/gateway-api at the version the pinned Istio requires, from Go's module
cache) and the real meshproof-analyze: each bad input is one the API server would refuse, and the
message asserted is the one its rule carries.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.cli import main
from harness.errors import ConfigError, ConfigProblem
from harness.istio import analyzer, crds, validate_documents, validate_text
from harness.istio.analyzer import Analysis, CrdError
from harness.istio.loader import load_text
from harness.istio.schemas import (
    KindSchema,
    SchemaSet,
    istio_module_dir,
    load_schemas,
    resolve_module_version,
)
from harness.toolchain.istio import GATEWAY_API_MODULE
from harness.versions import DEFAULT_ISTIO

ROUTE: dict[str, Any] = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "split", "namespace": "sample"},
    "spec": {
        "parentRefs": [{"name": "ingress", "namespace": "sample"}],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/api/greet"}}],
                "backendRefs": [
                    {"name": "microservice-1-v1", "port": 3000, "weight": 70},
                    {"name": "microservice-1-v2", "port": 3000, "weight": 30},
                ],
            }
        ],
    },
}


@pytest.fixture(scope="module")
def schemas() -> SchemaSet:
    return load_schemas()


def broken(change: str, value: Any) -> str:
    """ROUTE with one field (a dotted path with list indices) set to ``value``."""
    body = copy.deepcopy(ROUTE)
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", change)]
    node: Any = body
    for p in parts[:-1]:
        node = node[p]
    node[parts[-1]] = value
    return yaml.safe_dump(body)


def refused(text: str, schemas: SchemaSet) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        validate_text(text, "route.yaml", schemas=schemas)
    assert info.value.exit_code == 2
    return list(info.value.problems)


def test_the_crds_are_the_version_istio_requires(schemas: SchemaSet) -> None:
    index = schemas.gateway_api()
    go_mod = (istio_module_dir(resolve_module_version(None)) / "go.mod").read_text()
    assert index.module == f"{GATEWAY_API_MODULE}@{crds.required_version(go_mod)}"
    assert index.groups() == crds.GATEWAY_API_GROUPS
    if DEFAULT_ISTIO == "1.31-dev":  # what docs/CLI.md says
        assert index.module == "sigs.k8s.io/gateway-api@v1.6.0"
    route = index.find("gateway.networking.k8s.io", "HTTPRoute")
    assert route is not None and route.channel == "standard" and route.served[0] == "v1"
    assert Path(route.path).is_file() and route.path.endswith(".json")  # the cache's copy
    only_experimental = [e for e in index.entries if e.channel == "experimental"]
    assert only_experimental and all(e.group == "gateway.networking.x-k8s.io" for e in only_experimental)


def test_resolution_of_gateway_api_kinds(schemas: SchemaSet) -> None:
    ok = schemas.resolve("gateway.networking.k8s.io/v1", "HTTPRoute")
    assert isinstance(ok, KindSchema) and ok.crd.endswith("httproutes.gateway.networking.k8s.io.json")
    field, message, fix = schemas.resolve("gateway.networking.k8s.io/v1", "HTTPRoutes")  # type: ignore[misc]
    assert (field, fix.split("?")[0]) == ("kind", "did you mean HTTPRoute")
    field, message, fix = schemas.resolve("gateway.networking.k8s.io/v2", "HTTPRoute")  # type: ignore[misc]
    assert field == "apiVersion" and "served: v1, v1beta1" in message
    assert fix == "use apiVersion: gateway.networking.k8s.io/v1"
    field, message, fix = schemas.resolve("networking.istio.io/v1", "HTTPRoute")  # type: ignore[misc]
    assert "it is a Gateway API kind" in message and fix == "use apiVersion: gateway.networking.k8s.io/v1"


def test_a_good_http_route_validates_clean(schemas: SchemaSet) -> None:
    bundle = validate_text(yaml.safe_dump(ROUTE), "route.yaml", schemas=schemas)
    assert [d.kind for d in bundle] == ["HTTPRoute"]
    assert bundle.warnings == ()


@pytest.mark.parametrize(
    ("change", "value", "path", "message", "fix"),
    [
        (  # the schema's maximum
            "spec.rules[0].backendRefs[0].weight",
            1000001,
            "spec.rules[0].backendRefs[0].weight",
            "Invalid value: 1000001: should be less than or equal to 1000000",
            "use a weight <= 1000000",
        ),
        (  # the schema's minimum
            "spec.rules[0].backendRefs[0].weight",
            -1,
            "spec.rules[0].backendRefs[0].weight",
            "Invalid value: -1: should be greater than or equal to 0",
            "use a weight >= 0",
        ),
        (  # the schema's enum
            "spec.rules[0].filters",
            [{"type": "Bogus"}],
            "spec.rules[0].filters[0].type",
            'Unsupported value: "Bogus": supported values: "RequestHeaderModifier", ',
            "use one of the supported values for type",
        ),
        (  # a CEL rule of HTTPPathMatch
            "spec.rules[0].matches[0].path.value",
            "api/greet",
            "spec.rules[0].matches[0].path",
            "value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']",
            "so that the CRD's rule holds: (self.type in ['Exact','PathPrefix']) ? self.value.startsWith('/')",
        ),
        (  # a CEL rule of the rule's filters: a redirect with a path, and a rewrite
            "spec.rules[0].filters",
            [
                {
                    "type": "RequestRedirect",
                    "requestRedirect": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/new"}},
                },
                {
                    "type": "URLRewrite",
                    "urlRewrite": {"path": {"type": "ReplaceFullPath", "replaceFullPath": "/x"}},
                },
            ],
            "spec.rules[0].filters",
            "May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, but not both",
            "self.exists(f, f.type == 'RequestRedirect') && self.exists(f, f.type == 'URLRewrite')",
        ),
        (  # pruning with fieldValidation=Strict: an unknown field
            "spec.rules[0].backendRefs[0].wieght",
            5,
            "spec.rules[0].backendRefs[0].wieght",
            'unknown field "spec.rules[0].backendRefs[0].wieght"',
            "did you mean weight?",
        ),
    ],
)
def test_what_the_api_server_refuses_is_refused_with_its_rules_message(
    schemas: SchemaSet, change: str, value: Any, path: str, message: str, fix: str
) -> None:
    problems = refused(broken(change, value), schemas)
    found = next((p for p in problems if p.path == path and message in p.message), None)
    assert found is not None, [str(p) for p in problems]
    assert (found.file, found.document, found.kind, found.name) == ("route.yaml", 1, "HTTPRoute", "split")
    assert found.message.startswith("Kubernetes would refuse it (httproutes.gateway.networking.k8s.io): ")
    assert fix in found.fix


def test_a_cel_rule_needs_the_defaults_the_api_server_fills_in(schemas: SchemaSet) -> None:
    # A path match without a type is a PathPrefix match by the CRD's default, so the CEL rule
    # (which reads self.type) refuses a value without a leading '/': it sees the defaulted object.
    body = copy.deepcopy(ROUTE)
    body["spec"]["rules"][0]["matches"] = [{"path": {"value": "no-slash"}}]
    problems = refused(yaml.safe_dump(body), schemas)
    assert [(p.path, "must be an absolute path" in p.message) for p in problems] == [
        ("spec.rules[0].matches[0].path", True)
    ]


def test_unchecked_cel_rules_are_said_once_after_the_blocking_errors(schemas: SchemaSet) -> None:
    problems = refused(broken("spec.rules[0].filters", [{"type": "Bogus"}]), schemas)
    assert [p.path for p in problems] == ["spec.rules[0].filters[0].type", ""]
    assert "some validation rules were not checked" in problems[1].message


def test_a_refused_object_is_not_given_to_istio(schemas: SchemaSet) -> None:
    # Istio's reader cannot read a string weight either ("Istio cannot read it"): only the API
    # server's refusal is reported, because Istio never sees what the API server refuses.
    problems = refused(broken("spec.rules[0].backendRefs[0].weight", "ten"), schemas)
    assert [p.path for p in problems] == ["spec.rules[0].backendRefs[0].weight", ""]
    assert "must be of type integer" in problems[0].message and problems[0].fix == "write weight as integer"
    assert all(p.message.startswith("Kubernetes would refuse it") for p in problems)


def test_every_document_is_checked_and_each_problem_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "routes.yaml"
    f.write_text(
        "---\n".join(
            [
                broken("spec.rules[0].backendRefs[0].weight", -1),
                yaml.safe_dump(ROUTE),
                broken("spec.rules[0].matches[0].path.value", "api"),
            ]
        )
    )
    assert main(["validate", "-f", str(f)]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith(f"meshproof: error: {f} (document ") for line in lines)
    assert "document 1 HTTPRoute/split): field spec.rules[0].backendRefs[0].weight: " in lines[0]
    assert "document 3 HTTPRoute/split): field spec.rules[0].matches[0].path: " in lines[1]
    assert all(". Fix: " in line for line in lines)


def test_refused_documents_do_not_reach_istio_the_others_do(schemas: SchemaSet) -> None:
    class Fake:
        def __init__(self) -> None:
            self.requests: list[Mapping[str, Any]] = []

        def __call__(self, request: Mapping[str, Any]) -> Analysis:
            self.requests.append(request)
            error = CrdError(
                file="doc-0.yaml", field="spec.x", type="FieldValueUnknown", message="unknown field"
            )
            return Analysis((), (), (error,))

    docs = load_text(yaml.safe_dump(ROUTE), "route.yaml")
    fake = Fake()
    with pytest.raises(ConfigError) as info:
        validate_documents(docs, schemas=schemas, istio=fake)
    (request,) = fake.requests
    assert [s["name"] for s in request["sources"]] == ["doc-0.yaml"]
    assert request["crds"] == [schemas.gateway_api().files([("gateway.networking.k8s.io", "HTTPRoute")])[0]]
    (problem,) = info.value.problems
    assert problem.path == "spec.x" and problem.fix.startswith("remove x")


def test_crd_errors_map_onto_documents_with_fixes() -> None:
    docs = load_text(yaml.safe_dump(ROUTE), "route.yaml")
    errors = (
        CrdError(
            file="doc-0.yaml",
            field="spec.rules[0].filters[0].type",
            type="FieldValueNotSupported",
            message='Unsupported value: "URLRewrites": supported values: "RequestMirror", "URLRewrite"',
        ),
        CrdError(
            file="doc-0.yaml",
            field="spec.rules[0].backendRefs[0].weight",
            type="FieldValueInvalid",
            message="Invalid value: -1: spec.rules[0].backendRefs[0].weight in body should be greater than or equal to 0",
        ),
        CrdError(file="ctx-0.yaml", field="spec", type="FieldValueInvalid", message="about the context"),
    )
    v = analyzer.verdict(lambda _req: Analysis((), (), errors), docs, docs)
    first, second = v.refused
    assert first.fix == "did you mean URLRewrite? use one of the supported values for type"
    assert second.message.endswith("Invalid value: -1: should be greater than or equal to 0")
    assert v.errors == ()
