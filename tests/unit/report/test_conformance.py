"""meshproof-report.yaml: features supported only when one of their checks ran and passed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from harness import paths
from harness.report import conformance


def rec(test: str, key: str, verdict: str = "PASS", expected: str = "PASS") -> dict[str, Any]:
    return {"id": f"{test}::{key}", "test": test, "check": key, "verdict": verdict, "expected": expected}


SPLIT = "suites/test_routing.py::test_ingress_split_matches_virtual_service"
SPLIT_NEG = "suites/test_routing.py::test_negative_swapped_split_fails_the_check"
HEADER_NEG = "suites/test_routing.py::test_negative_misspelt_header_match_fails_the_header_check"
FAULT = "suites/test_fault_injection.py::test_abort_and_delay_hit_the_configured_shares"
AUTHZ = "suites/test_authorization.py::test_authorization_matrix_matches_policy"
MTLS = "suites/test_mtls.py::test_plaintext_to_strict_sidecars_is_refused"


def features(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{p['name']}/{f['name']}": f for p in doc["profiles"] for f in p["features"]}


def test_support_needs_a_passing_check_and_no_failed_one(tmp_path: Path) -> None:
    doc = {
        "mesh": {
            "backend": "local",
            "istio_release": "1.31-dev",
            "traffic_api": {"api": "istio"},
            "readings": [
                {
                    "istiod": {"default": {"istio_version": "1.31-dev"}},
                    "proxies": {
                        "sample/a-0": {
                            "envoy_version": "x/1.39.3/Clean/RELEASE/BoringSSL",
                            "istio_version": "1.31-dev",
                        }
                    },
                }
            ],
        },
        "checks": [
            rec(SPLIT, "split(v1=90/v2=10)"),
            rec(SPLIT_NEG, "split(v1=90/v2=10)", "FAIL", "FAIL"),
            rec(
                HEADER_NEG, "split(v2=100) [x-canary]", "FAIL", "FAIL"
            ),  # only a negative control: no support
            rec(FAULT, "abort_share(555, 0.3)"),
            rec(FAULT, "delay_share(200ms, 0.5)", "FAIL"),  # missed its verdict
            rec(AUTHZ, "authz_matrix"),
            rec("suites/test_new_feature.py::test_it", "thing"),
        ],
        "tests": [
            {"id": MTLS, "outcome": "skipped"},
            {
                "id": "suites/test_tracing.py::test_two_hop_chain_is_one_trace",
                "outcome": "error",
            },  # no check recorded
        ],
    }
    path = conformance.write(tmp_path / "meshproof-report.yaml", doc)
    out = yaml.safe_load(path.read_text())
    assert out["kind"] == "MeshConformanceReport"
    assert out["implementation"]["version"] == "1.31-dev"
    assert out["implementation"]["envoy"] == ["x/1.39.3/Clean/RELEASE/BoringSSL"]
    assert (out["backend"], out["trafficAPI"]) == ("local", "istio")
    f = features(out)
    split = f["routing/traffic-split"]
    assert split["supported"] and split["statistics"] == {"Passed": 2, "Failed": 0, "Skipped": 0}
    assert split["checks"]["passed"] == [f"{SPLIT}::split(v1=90/v2=10)", f"{SPLIT_NEG}::split(v1=90/v2=10)"]
    assert not f["routing/header-match"]["supported"] and f["routing/header-match"]["result"] == "skipped"
    assert f["resilience/fault-injection-abort"]["supported"]
    delay = f["resilience/fault-injection-delay"]
    assert not delay["supported"] and delay["result"] == "failure"
    assert delay["checks"]["failed"] == [f"{FAULT}::delay_share(200ms, 0.5)"]
    assert f["security/authorization"]["supported"]
    assert (
        f["security/mtls-strict"]["statistics"]["Skipped"] == 1 and not f["security/mtls-strict"]["supported"]
    )
    assert f["observability/tracing-span-tree"]["result"] == "failure"
    assert f["other/new_feature"]["supported"]  # a suite no feature names is kept, not dropped
    profiles = {p["name"]: p for p in out["profiles"]}
    assert profiles["resilience"]["result"] == "failure"
    assert "traffic-split" in profiles["routing"]["supportedFeatures"]
    assert "header-match" in profiles["routing"]["unsupportedFeatures"]
    assert profiles["under-load"]["result"] == "skipped"


def test_every_suite_test_maps_to_a_named_feature() -> None:
    """Each test in suites/ lands in a named feature (not ``other``), so the profiles cover the suites."""
    import ast

    suites = paths.SUITES
    unmapped = []
    for f in sorted(suites.glob("test_*.py")):
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                test_id = f"suites/{f.name}::{node.name}"
                if any(x.profile == "other" for x in conformance.features_of(test_id, None)):
                    unmapped.append(test_id)
    assert not unmapped, unmapped
