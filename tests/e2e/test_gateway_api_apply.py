"""`meshproof apply` of HTTPRoutes on a running mesh: what the API server would refuse exits 2 naming
file, field and the rule's own message (nothing is applied); a route Istio does not accept, or
whose backend it cannot resolve, is stored, and apply exits 2 with Istio's condition verbatim, as
the mesh holds it; a good route prints that Istio reported every condition True."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import paths
from harness.backends.base import Backend
from harness.cli import main
from harness.settings import Settings

pytestmark = pytest.mark.e2e

NAME = "meshproof-e2e-apply"
ROUTE: dict[str, Any] = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": NAME, "namespace": "sample"},
    "spec": {
        "parentRefs": [{"name": "microservice-1", "namespace": "istio-system", "sectionName": "http"}],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/e2e-apply"}}],
                "backendRefs": [{"name": "microservice-1", "port": 3000}],
            }
        ],
    },
}


def variant(edit: Any) -> dict[str, Any]:
    body = copy.deepcopy(ROUTE)
    edit(body["spec"])
    return body


def held(mesh: Backend) -> dict[str, Any] | None:
    return next(
        (o for o in mesh.gateway_api_objects() if o["kind"] == "HTTPRoute" and o["metadata"]["name"] == NAME),
        None,
    )


@pytest.fixture
def apply(
    mesh: Backend, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Iterator[Any]:
    """``meshproof apply -f FILE --state <the mesh's>``: (exit code, stdout, stderr, file)."""
    written: list[Path] = []

    def run(body: dict[str, Any]) -> tuple[int, str, str, Path]:
        path = tmp_path / f"route-{len(written)}.yaml"
        path.write_text(yaml.safe_dump(body, sort_keys=False))
        written.append(path)
        capsys.readouterr()
        code = main(["apply", "--state", str(settings.state_dir), "-f", str(path)])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err, path

    try:
        yield run
    finally:
        if held(mesh) is not None:
            mesh.delete([written[-1]])


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (
            lambda s: s["rules"][0]["backendRefs"][0].update(weight=1000001),
            "spec.rules[0].backendRefs[0].weight",
            "Invalid value: 1000001: should be less than or equal to 1000000",
        ),
        (
            lambda s: s["rules"][0]["matches"][0]["path"].update(value="e2e-apply"),
            "spec.rules[0].matches[0].path",
            "value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']",
        ),
        (
            lambda s: s["rules"][0].update(filters=[{"type": "Bogus"}]),
            "spec.rules[0].filters[0].type",
            'Unsupported value: "Bogus"',
        ),
    ],
    ids=["weight-above-maximum", "cel-rule", "unknown-filter-type"],
)
def test_what_the_api_server_refuses_is_not_applied(
    mesh: Backend, apply: Any, edit: Any, field: str, message: str
) -> None:
    code, _, err, path = apply(variant(edit))
    assert code == 2
    first = err.splitlines()[0]
    assert first.startswith(f"meshproof: error: {path} (document 1 HTTPRoute/{NAME}): field {field}: ")
    assert "Kubernetes would refuse it (httproutes.gateway.networking.k8s.io): " in first
    assert message in first and ". Fix: " in first
    assert held(mesh) is None


def _condition(mesh: Backend, kind: str) -> dict[str, Any]:
    route = held(mesh)
    assert route is not None
    (parent,) = route["status"]["parents"]
    return next(c for c in parent["conditions"] if c["type"] == kind)


def test_a_route_its_gateway_does_not_accept_prints_istios_condition(
    mesh: Backend, apply: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = variant(lambda s: s["parentRefs"][0].update(sectionName="https"))
    # validate alone cannot tell: acceptance is Istio's controller's, on a running mesh
    offline = tmp_path / "offline.yaml"
    offline.write_text(yaml.safe_dump(wrong))
    assert main(["validate", "-f", str(offline), "--manifests", str(paths.MANIFESTS)]) == 0
    assert capsys.readouterr().out.strip() == "1 document valid"
    code, out, err, path = apply(wrong)
    assert code == 2
    assert out.startswith(f"applied 1 document from {path}; every proxy had the change")
    c = _condition(mesh, "Accepted")  # what the mesh holds: Istio's own words
    assert (c["status"], c["reason"]) == ("False", "NoMatchingParent")
    assert err.strip() == (
        f"meshproof: error: {path} (document 1 HTTPRoute/{NAME}): field spec.parentRefs[0]: Istio's condition "
        f"for Gateway istio-system/microservice-1 (section https): Accepted=False, reason NoMatchingParent: "
        f"{c['message']}. Fix: name a listener the parent has (parentRefs[].sectionName or port). The object is "
        "stored as it is (Istio does not route by it for that parent): fix the file and apply it again, or "
        "`meshproof delete -f` it"
    )


def test_a_backend_istio_cannot_resolve_prints_istios_condition(mesh: Backend, apply: Any) -> None:
    code, _, err, _ = apply(
        variant(lambda s: s["rules"][0]["backendRefs"][0].update(name="microservice-1-gone"))
    )
    assert code == 2
    c = _condition(mesh, "ResolvedRefs")
    assert (c["status"], c["reason"]) == ("False", "BackendNotFound")
    assert f"ResolvedRefs=False, reason BackendNotFound: {c['message']}. Fix: name an existing Service" in err


def test_a_route_istio_accepts_applies_cleanly(mesh: Backend, apply: Any) -> None:
    code, out, err, _ = apply(ROUTE)
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == f"Istio reports every condition True on: HTTPRoute sample/{NAME}"
    assert _condition(mesh, "Accepted")["status"] == "True"
