"""Unit tests for harness.istio.validate: manifests/ is valid, every broken case is explained."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from harness import paths
from harness.errors import ConfigError, UserError
from harness.istio import Bundle, validate_documents, validate_paths, validate_text
from harness.istio.loader import load_text
from harness.istio.schemas import SchemaSet, load_schemas

DATA = Path(__file__).parent / "data"
MANIFESTS = paths.MANIFESTS


@pytest.fixture(scope="module")
def schemas() -> SchemaSet:
    return load_schemas()


@pytest.fixture(scope="module")
def applied(schemas: SchemaSet) -> Bundle:
    return validate_paths([MANIFESTS], schemas=schemas)


def test_manifests_validate_clean(applied: Bundle) -> None:
    assert applied.warnings == ()
    kinds = sorted({d.kind for d in applied})
    assert kinds == [
        "AuthorizationPolicy",
        "Deployment",
        "DestinationRule",
        "Gateway",
        "HTTPRoute",
        "Namespace",
        "PeerAuthentication",
        "Service",
        "ServiceAccount",
        "Telemetry",
        "VirtualService",
    ]
    assert {d.api_version for d in applied if d.group.endswith("istio.io")} == {
        "networking.istio.io/v1",
        "security.istio.io/v1",
        "telemetry.istio.io/v1",
    }
    assert {d.api_version for d in applied if d.group.endswith("k8s.io")} == {"gateway.networking.k8s.io/v1"}


def test_manifests_ingress_virtual_service_is_first_with_gateways(applied: Bundle) -> None:
    first = next(d for d in applied if d.kind == "VirtualService" and d.spec.get("gateways"))
    assert first.name == "microservice-1-ingress"
    route = first.spec["http"][0]["route"]
    assert [(r["destination"]["subset"], r["weight"]) for r in route] == [("v1", 90), ("v2", 10)]


def test_manifests_validate_with_the_default_schemas() -> None:
    assert len(validate_paths([str(MANIFESTS)])) == len(
        validate_paths([MANIFESTS / "30-istio.yaml", MANIFESTS])
    )


@pytest.mark.parametrize(
    ("fixture", "document", "path", "message", "fix"),
    [
        (
            "unknown-field.yaml",
            1,
            "spec.trafficPolicy.outlierDetection.consecutive5xxErrorz",
            "unknown field consecutive5xxErrorz",
            "did you mean consecutive5xxErrors?",
        ),
        (
            "missing-subset.yaml",
            2,
            "spec.http[0].route[1].destination.subset",
            'Istio IST0101 error: Referenced host+subset in destinationrule not found: "microservice-1+v3"',
            "define that subset in a DestinationRule",
        ),
        (
            "bad-duration.yaml",
            1,
            "spec.trafficPolicy.outlierDetection.interval",
            'Istio cannot read it: failed parsing JSON for built-in type: bad Duration: time: invalid duration "five seconds"',
            "write a duration such as 5s",
        ),
        ("invalid-yaml.yaml", 1, "", "invalid YAML at line 8, column 7", "correct the YAML syntax"),
        ("missing-name.yaml", 2, "metadata.name", "missing metadata.name", "add metadata.name"),
        ("unknown-kind.yaml", 1, "kind", "unknown kind VirtualServce", "did you mean VirtualService?"),
        (
            "wrong-type.yaml",
            1,
            "spec.http[0].route[0].weight",
            "wrong type: expected an integer, got a string 'ninety'",
            "whole number",
        ),
    ],
)
def test_broken_file_is_explained(
    schemas: SchemaSet, fixture: str, document: int, path: str, message: str, fix: str
) -> None:
    with pytest.raises(ConfigError) as info:
        validate_paths([DATA / fixture], schemas=schemas)
    error = info.value
    assert error.exit_code == 2
    (problem,) = error.problems
    assert Path(problem.file).name == fixture
    assert (problem.document, problem.path) == (document, path)
    assert message in problem.message
    assert fix in problem.fix
    text = str(error)
    assert fixture in text and f"document {document}" in text and message in text and fix in text
    if path:
        assert f"field {path}:" in text


def test_what_istio_accepts_passes_with_istios_or_meshprooofs_warning(schemas: SchemaSet) -> None:
    deprecated = validate_paths([DATA / "removed-field.yaml"], schemas=schemas)
    (warning,) = deprecated.warnings
    assert warning.path == "spec.trafficPolicy.outlierDetection.consecutiveErrors"
    assert warning.message.startswith("Istio IST0133 warning: Schema validation warning: outlier detection")
    assert "deprecated" in warning.message and "Envoy's default" in warning.fix
    weights = validate_paths([DATA / "weights-110.yaml"], schemas=schemas)
    (own,) = weights.warnings
    assert (own.document, own.path) == (2, "spec.http[0].route")
    assert own.message.startswith("meshproof's own check (Istio accepts this): weights sum to 110")


def test_the_seed_reports_exactly_istios_warning(schemas: SchemaSet) -> None:
    seed = DATA / "seed-design.yaml"
    bundle = validate_paths([seed], schemas=schemas)
    istio = [w for w in bundle.warnings if w.message.startswith("Istio ")]
    assert [(w.document, w.message.split(":")[0]) for w in istio] == [(2, "Istio IST0133 warning")]
    assert all(w.message.startswith("meshproof's own check") for w in bundle.warnings if w not in istio)


def test_every_problem_of_every_file_is_raised_at_once(schemas: SchemaSet) -> None:
    valid = {"list-kind.yaml", "weights-110.yaml", "removed-field.yaml", "seed-design.yaml"}
    broken = sorted(p for p in DATA.glob("*.yaml") if p.name not in valid)
    with pytest.raises(ConfigError) as info:
        validate_paths([MANIFESTS, *broken], schemas=schemas)
    files = [Path(p.file).name for p in info.value.problems]
    # missing references (IST0101) wait until the broken documents are fixed
    assert set(files) == {p.name for p in broken} - {"missing-subset.yaml"}
    assert files == sorted(files, key=[p.name for p in broken].index)  # in load order
    assert all(Path(p.file).parent == DATA for p in info.value.problems)


def test_acceptance_style_broken_documents(schemas: SchemaSet) -> None:
    weights = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bad, namespace: default}
spec:
  hosts: [microservice-1]
  http:
  - route:
    - destination: {host: microservice-1, subset: v1}
      weight: 90
    - destination: {host: microservice-1, subset: v2}
      weight: 20
"""
    with pytest.raises(ConfigError) as info:
        validate_text(weights, "weights.yaml", schemas=schemas)
    messages = [p.message for p in info.value.problems]
    assert sum("IST0101" in m and "host+subset in destinationrule not found" in m for m in messages) == 2
    negative = weights.replace("weight: 20", "weight: -20")
    with pytest.raises(ConfigError) as info:
        validate_text(negative, "negative.yaml", schemas=schemas)
    assert any(
        p.path == "spec.http[0].route[1].weight" and "weight -20 < 0" in p.message
        for p in info.value.problems
    )


def test_apply_in_context_resolves_against_the_applied_bundle(applied: Bundle, schemas: SchemaSet) -> None:
    ingress = next(d for d in applied if d.name == "microservice-1-ingress")
    body = copy.deepcopy(ingress.body)
    for route, weight in zip(body["spec"]["http"][0]["route"], (50, 50), strict=True):
        route["weight"] = weight
    new = load_text(yaml.safe_dump(body), "reweight.yaml")
    merged = validate_documents(new, applied, schemas=schemas)
    assert len(merged) == len(applied)
    vs = next(v for v in merged.virtual_services() if v.name == "microservice-1-ingress")
    assert vs.http[0].weights_by_subset() == {"v1": 50, "v2": 50}
    with pytest.raises(ConfigError, match="v3"):
        validate_documents(
            load_text(yaml.safe_dump(body).replace("v2", "v3"), "x.yaml"), applied, schemas=schemas
        )


def test_validate_paths_in_context(applied: Bundle, schemas: SchemaSet, tmp_path: Path) -> None:
    ingress = next(d for d in applied if d.name == "microservice-1-ingress")
    body = copy.deepcopy(ingress.body)
    body["spec"]["http"][0]["route"][0]["weight"] = 60
    body["spec"]["http"][0]["route"][1]["weight"] = 40
    f = tmp_path / "reweight.yaml"
    f.write_text(yaml.safe_dump(body))
    with pytest.raises(ConfigError) as info:  # alone, its gateway and subsets are unknown
        validate_paths([f], schemas=schemas)
    assert {p.path for p in info.value.problems} == {
        "spec.gateways[0]",
        "spec.http[0].route[0].destination.subset",
        "spec.http[0].route[1].destination.subset",
    }
    merged = validate_paths([f], bundle_context=applied, schemas=schemas)
    vs = next(v for v in merged.virtual_services() if v.name == "microservice-1-ingress")
    assert vs.http[0].weights_by_subset() == {"v1": 60, "v2": 40}


def test_apply_reports_what_it_would_break_in_the_context(applied: Bundle, schemas: SchemaSet) -> None:
    only_v1 = """apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: microservice-1, namespace: sample}
spec:
  host: microservice-1.sample.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}]
"""
    with pytest.raises(ConfigError) as info:
        validate_text(only_v1, "dr.yaml", applied, schemas=schemas)
    broken = {(Path(p.file).name, p.name) for p in info.value.problems}
    assert broken == {("30-istio.yaml", "microservice-1-ingress"), ("30-istio.yaml", "microservice-1")}


def test_older_api_versions_validate_with_a_warning(schemas: SchemaSet) -> None:
    text = (DATA / "removed-field.yaml").read_text()
    text = text.replace("networking.istio.io/v1", "networking.istio.io/v1alpha3").replace(
        "consecutiveErrors", "consecutive5xxErrors"
    )
    bundle = validate_text(text, "old.yaml", schemas=schemas)
    (warning,) = bundle.warnings
    assert warning.path == "apiVersion"
    assert "superseded by networking.istio.io/v1" in warning.message


def test_list_documents_validate(schemas: SchemaSet) -> None:
    bundle = validate_paths([DATA / "list-kind.yaml"], schemas=schemas)
    assert [d.name for d in bundle] == ["first", "second"]
    bad = (DATA / "list-kind.yaml").read_text().replace('data: {b: "2"}', "data: {b: 2}")
    with pytest.raises(ConfigError) as info:
        validate_text(bad, "list.yaml", schemas=schemas)
    assert info.value.problems[0].path == "items[1].data.b"


def test_unknown_istio_version_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown Istio version"):
        validate_paths([MANIFESTS], istio_version="0.1")
