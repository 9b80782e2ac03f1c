"""Unit tests for harness.istio.schemas: CRD translation, schema lookup, errors, the schema cache."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from harness import paths
from harness.errors import ToolMissing, UserError
from harness.istio.loader import Document, load_text
from harness.istio.schemas import (
    CACHE_FORMAT,
    KindSchema,
    SchemaSet,
    format_path,
    load_kubernetes_schemas,
    load_schemas,
    parse_crds,
    prune_nulls,
    read_istio_crds,
    resolve_module_version,
    translate_openapi,
)
from harness.versions import DEFAULT_ISTIO, ISTIO_RELEASES


@pytest.fixture(scope="module")
def schemas() -> SchemaSet:
    return load_schemas()


def one(text: str) -> Document:
    (doc,) = load_text(text, "t.yaml")
    return doc


def problems(schemas: SchemaSet, text: str) -> list[tuple[str, str, str]]:
    return [(p.path, p.message, p.fix) for p in schemas.check(one(text)).problems]


DR = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: dr, namespace: sample}
spec:
  host: microservice-1
"""


# -- translation ---------------------------------------------------------------------------------


def test_translate_adds_additional_properties_false_where_properties_are_listed() -> None:
    out = translate_openapi(
        {
            "type": "object",
            "properties": {
                "a": {"type": "integer", "format": "int32"},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "open": {"type": "object", "properties": {"x": {"type": "string"}}},
                "map": {"type": "object", "additionalProperties": {"type": "string"}},
                "ios": {"x-kubernetes-int-or-string": True},
                "maybe": {"type": "integer", "nullable": True, "enum": [1, 2]},
                "cel": {"type": "string", "x-kubernetes-validations": [{"rule": "self != ''"}]},
            },
            "oneOf": [{"not": {"anyOf": [{"required": ["a"]}]}}, {"required": ["a"]}],
        }
    )
    assert out["additionalProperties"] is False
    props = out["properties"]
    assert props["a"] == {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1}
    assert "additionalProperties" not in props["free"]
    assert props["open"]["additionalProperties"] is False
    assert props["map"]["additionalProperties"] == {"type": "string"}
    assert props["ios"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert props["maybe"] == {"type": ["integer", "null"], "enum": [1, 2, None]}
    assert props["cel"] == {"type": "string"}
    assert out["oneOf"][1] == {"required": ["a"]}  # branches never get additionalProperties


def test_parse_crds_reads_versions_and_wraps_metadata() -> None:
    text = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: things.example.io}
spec:
  group: example.io
  names: {kind: Thing, plural: things}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, properties: {spec: {type: object, properties: {n: {type: integer}}}}}}
  - name: v1alpha1
    served: false
    storage: false
    deprecated: true
"""
    crds = parse_crds(text, module_version="v0", source="inline")
    (crd,) = crds.crds
    assert (crd.group, crd.kind, crd.plural, crd.namespaced, crd.preferred) == (
        "example.io",
        "Thing",
        "things",
        True,
        "v1",
    )
    v1 = crd.version("v1")
    assert v1 is not None
    assert set(v1.schema["properties"]) == {"apiVersion", "kind", "metadata", "spec"}
    alpha = crd.version("v1alpha1")
    assert alpha is not None and not alpha.served and alpha.deprecated


def test_prune_nulls_and_format_path() -> None:
    assert prune_nulls({"a": None, "b": [{"c": None, "d": 1}, None]}) == {"b": [{"d": 1}, None]}
    assert format_path(["spec", "http", 0, "route", 1, "weight"]) == "spec.http[0].route[1].weight"
    assert format_path(["metadata", "labels", "sidecar.istio.io/inject"]) == (
        'metadata.labels["sidecar.istio.io/inject"]'
    )


# -- resolution ------------------------------------------------------------------------------------


def test_schema_sources(schemas: SchemaSet) -> None:
    vs = schemas.resolve("networking.istio.io/v1", "VirtualService")
    assert isinstance(vs, KindSchema) and vs.source.startswith("Istio CRD (istio.io/istio@")
    dep = schemas.resolve("apps/v1", "Deployment")
    assert isinstance(dep, KindSchema) and dep.source.startswith("Kubernetes 1.")
    tel = schemas.resolve("telemetry.istio.io/v1", "Telemetry")
    assert isinstance(tel, KindSchema) and tel.warning is None  # v1 served (storage is v1alpha1)


def test_every_istio_api_version_the_crds_serve_is_accepted(schemas: SchemaSet) -> None:
    for api_version in (
        "networking.istio.io/v1",
        "networking.istio.io/v1beta1",
        "networking.istio.io/v1alpha3",
    ):
        resolved = schemas.resolve(api_version, "DestinationRule")
        assert isinstance(resolved, KindSchema), api_version
    old = schemas.resolve("networking.istio.io/v1alpha3", "DestinationRule")
    assert isinstance(old, KindSchema) and old.warning is not None
    assert "superseded by networking.istio.io/v1" in old.warning[0]


def test_old_api_version_is_a_warning_not_a_problem(schemas: SchemaSet) -> None:
    result = schemas.check(one(DR.replace("networking.istio.io/v1", "networking.istio.io/v1alpha3")))
    assert result.problems == ()
    (warning,) = result.warnings
    assert warning.path == "apiVersion" and warning.fix == "use apiVersion: networking.istio.io/v1"


@pytest.mark.parametrize(
    ("api_version", "kind", "field", "message", "fix"),
    [
        (
            "networking.istio.io/v2",
            "Gateway",
            "apiVersion",
            "not served as networking.istio.io/v2",
            "networking.istio.io/v1",
        ),
        (
            "networking.istio.io/v1",
            "VirtualServce",
            "kind",
            "unknown kind VirtualServce",
            "did you mean VirtualService?",
        ),
        ("v1", "Servce", "kind", "unknown kind Servce", "did you mean Service?"),
        (
            "networking.k8s.io/v1",
            "VirtualService",
            "apiVersion",
            "it is an Istio kind",
            "networking.istio.io/v1",
        ),
        ("extensions/v1beta1", "Deployment", "apiVersion", "not served as extensions/v1beta1", "apps/v1"),
        ("example.com/v1", "Widget", "kind", "unknown kind Widget", "Istio's CRD kinds"),
    ],
)
def test_unresolvable_kinds(
    schemas: SchemaSet, api_version: str, kind: str, field: str, message: str, fix: str
) -> None:
    resolved = schemas.resolve(api_version, kind)
    assert isinstance(resolved, tuple)
    assert resolved[0] == field
    assert message in resolved[1]
    assert fix in resolved[2]


# -- validation ------------------------------------------------------------------------------------


def test_unknown_field_suggests_the_closest_name(schemas: SchemaSet) -> None:
    got = problems(schemas, DR + "  trafficPolicy:\n    outlierDetection: {consecutive5xxErrorz: 5}\n")
    ((path, message, fix),) = got
    assert path == "spec.trafficPolicy.outlierDetection.consecutive5xxErrorz"
    assert message == "unknown field consecutive5xxErrorz"
    assert fix.startswith("did you mean consecutive5xxErrors?")


def test_unknown_field_in_metadata_and_top_level(schemas: SchemaSet) -> None:
    text = (
        DR.replace("metadata: {name: dr, namespace: sample}", "metadata: {name: dr, lables: {}}")
        + "sepc: {}\n"
    )
    got = {(p, m) for p, m, _ in problems(schemas, text)}
    assert ("metadata.lables", "unknown field lables") in got
    assert ("sepc", "unknown field sepc") in got


def test_wrong_type_enum_and_required(schemas: SchemaSet) -> None:
    text = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: sample}
spec:
  hosts: [microservice-1]
  http:
  - route:
    - destination: {host: microservice-1}
      weight: ninety
    - destination: {subset: v2}
"""
    got = problems(schemas, text)
    assert got[0] == (
        "spec.http[0].route[0].weight",
        "wrong type: expected an integer, got a string 'ninety'",
        "write a whole number without quotes for weight",
    )
    assert got[1][:2] == ("spec.http[0].route[1].destination.host", "missing required field host")
    lb = problems(schemas, DR + "  trafficPolicy: {loadBalancer: {simple: ROUND_ROBINN}}\n")
    assert lb[0][0] == "spec.trafficPolicy.loadBalancer.simple"
    assert lb[0][2].startswith("did you mean ROUND_ROBIN?")


def test_istio_oneof_fields_are_mutually_exclusive(schemas: SchemaSet) -> None:
    text = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: sample}
spec:
  hosts: [h]
  http:
  - route: [{destination: {host: h}}]
    fault: {abort: {httpStatus: 503, grpcStatus: UNAVAILABLE}}
"""
    ((path, message, fix),) = problems(schemas, text)
    assert path == "spec.http[0].fault.abort"
    assert message == "httpStatus and grpcStatus cannot be set together"
    assert "set only one of httpStatus, grpcStatus" in fix


def test_kubernetes_kinds_are_strict(schemas: SchemaSet) -> None:
    text = """apiVersion: apps/v1
kind: Deployment
metadata: {name: d, namespace: sample}
spec:
  replicas: "3"
  selector: {matchLabels: {app: d}}
  template:
    metadata: {labels: {app: d, version: 1}}
    spec:
      containers:
      - name: c
        image: x
        ports: [{containerPort: 80, protocl: TCP}]
"""
    got = {p: (m, f) for p, m, f in problems(schemas, text)}
    assert got["spec.replicas"][0] == "wrong type: expected an integer, got a string '3'"
    assert (
        got["spec.template.metadata.labels.version"][0] == "wrong type: expected a string, got an integer 1"
    )
    assert got["spec.template.spec.containers[0].ports[0].protocl"][1].startswith("did you mean protocol?")


def test_int_or_string_and_nulls(schemas: SchemaSet) -> None:
    svc = """apiVersion: v1
kind: Service
metadata: {name: s, namespace: sample}
spec:
  selector: null
  ports: [{port: 80, targetPort: http}, {port: 81, targetPort: 8081}]
"""
    assert problems(schemas, svc) == []
    bad = svc.replace("targetPort: http}", "targetPort: 1.5}")
    ((path, message, _),) = problems(schemas, bad)
    assert path == "spec.ports[0].targetPort"
    assert message == "wrong type: expected a string or an integer, got a number 1.5"


def test_manifests_pass_their_schemas(schemas: SchemaSet) -> None:
    from harness.istio.loader import load_paths

    for doc in load_paths([paths.MANIFESTS]):
        result = schemas.check(doc)
        assert result.problems == () and result.warnings == (), doc.ref


# -- where schemas come from -------------------------------------------------------------------------


def test_module_version_comes_from_versions_py() -> None:
    assert resolve_module_version(None) == ISTIO_RELEASES[DEFAULT_ISTIO].module_version
    assert resolve_module_version("v0.0.0-1-abc") == "v0.0.0-1-abc"
    with pytest.raises(UserError, match="unknown Istio version 'nope'"):
        resolve_module_version("nope")


def test_kubernetes_schemas_are_the_newest_bundled() -> None:
    k8s = load_kubernetes_schemas()
    assert tuple(int(x) for x in k8s.version.split(".")[:2]) >= (1, 30)
    assert k8s.index[("apps", "v1", "Deployment")] == "io.k8s.api.apps.v1.Deployment"


def _fake_go(tmp_path: Path, stdout: dict[str, Any], code: int) -> str:
    script = tmp_path / "go"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(stdout)}\nEOF\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_missing_go_without_cache_is_tool_missing(tmp_path: Path) -> None:
    with pytest.raises(ToolMissing) as info:
        read_istio_crds("v0.0.0-test", cache_dir=tmp_path, go=str(tmp_path / "no-go-here"))
    assert info.value.tool == "go"
    assert "./scripts/setup" in str(info.value)


def test_failed_download_is_tool_missing_with_the_go_error(tmp_path: Path) -> None:
    go = _fake_go(tmp_path, {"Path": "istio.io/istio", "Error": "module lookup disabled by GOPROXY=off"}, 1)
    with pytest.raises(ToolMissing) as info:
        read_istio_crds("v0.0.0-test", cache_dir=tmp_path, go=go)
    assert "./scripts/setup" in str(info.value)
    assert any("GOPROXY=off" in note for note in info.value.__notes__)


def test_cache_file_serves_later_loads_without_go(tmp_path: Path) -> None:
    module_version = resolve_module_version(None)
    first = read_istio_crds(module_version, cache_dir=tmp_path)  # real go, module cache
    cache_file = tmp_path / f"{module_version}.json"
    assert json.loads(cache_file.read_text())["format"] == CACHE_FORMAT
    again = read_istio_crds(module_version, cache_dir=tmp_path, go=str(tmp_path / "no-go-here"))
    assert again.source == str(cache_file)
    assert [c.kind for c in again.crds] == [c.kind for c in first.crds]
    assert again.crds == first.crds
    with_cache = load_schemas(cache_dir=tmp_path, go=str(tmp_path / "no-go-here"))
    assert isinstance(with_cache.resolve("networking.istio.io/v1", "VirtualService"), KindSchema)


def test_stale_cache_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "v0.0.0-test.json").write_text(json.dumps({"format": -1, "module_version": "v0.0.0-test"}))
    with pytest.raises(ToolMissing):
        read_istio_crds("v0.0.0-test", cache_dir=tmp_path, go=str(tmp_path / "no-go-here"))
