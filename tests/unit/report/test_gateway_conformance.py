"""The Gateway API ConformanceReport reader, the per-test view from the suite's log, and the features claimed."""

from __future__ import annotations

import pytest

from harness.errors import UserError
from harness.report import gateway_conformance as gc

# the shape of the suite's report (conformance/apis/v1), as Istio's published 1.28.0 report has it
REPORT = """\
apiVersion: gateway.networking.k8s.io/v1
date: "2025-10-27T22:42:18Z"
gatewayAPIChannel: experimental
gatewayAPIVersion: v1.4.0
implementation: {organization: istio, project: istio, url: https://istio.io/, version: "1.28", contact: [x]}
kind: ConformanceReport
mode: default
profiles:
- core:
    result: success
    statistics: {Failed: 0, Passed: 7, Skipped: 0}
  extended:
    result: failure
    statistics: {Failed: 1, Passed: 6, Skipped: 1}
    failedTests: [MeshHTTPRoute307Redirect]
    skippedTests: [MeshHTTPRouteWeight]
    supportedFeatures: [MeshConsumerRoute, MeshHTTPRouteRedirectPath]
    unsupportedFeatures: [MeshClusterIPMatching]
  name: MESH-HTTP
  summary: Core tests succeeded. Extended tests failed.
succeededProvisionalTests: [MeshHTTPRouteNamedRule]
"""

PLAN = {
    "profiles": {
        "MESH-HTTP": {"core": ["HTTPRoute", "Mesh"], "extended": ["MeshClusterIPMatching", "MeshConsumerRoute",
                                                                 "MeshHTTPRouteRedirectPath"]},
        "GATEWAY-HTTP": {"core": ["Gateway", "HTTPRoute", "ReferenceGrant"],
                         "extended": ["HTTPRouteRetry", "HTTPRouteMethodMatching", "GatewayBackendClientCertificate"]},
    },
    "tests": [
        {"name": "MeshBasic", "features": ["Mesh"]},
        {"name": "MeshConsumerRoute", "features": ["Mesh", "HTTPRoute", "MeshConsumerRoute"]},
        {"name": "MeshClusterIP", "features": ["Mesh", "MeshClusterIPMatching"]},
        {"name": "HTTPRouteSimpleSameNamespace", "features": ["Gateway", "HTTPRoute"]},
        {"name": "TLSRouteSimple", "features": ["Gateway", "TLSRoute"]},
        {"name": "NoFeatures", "features": []},
    ],
    "istio_supported": ["Gateway", "HTTPRoute", "ReferenceGrant", "Mesh", "MeshClusterIPMatching",
                        "MeshConsumerRoute", "MeshHTTPRouteRedirectPath", "HTTPRouteRetry", "HTTPRouteMethodMatching"],
    "feature_channels": {"HTTPRouteRetry": "experimental", "HTTPRouteMethodMatching": "standard"},
}  # fmt: skip


def test_report_levels_counts_and_named_tests() -> None:
    r = gc.parse(REPORT)
    assert (r.api_version, r.channel, r.implementation["version"]) == ("v1.4.0", "experimental", "1.28")
    p = r.profile("MESH-HTTP")
    assert p is not None and p.extended is not None
    assert (p.core.passed, p.core.failed, p.core.skipped) == (7, 0, 0)
    assert (p.extended.failed_tests, p.extended.skipped_tests) == (
        ("MeshHTTPRoute307Redirect",),
        ("MeshHTTPRouteWeight",),
    )
    assert p.extended.unsupported == ("MeshClusterIPMatching",)
    assert r.provisional_passed == ("MeshHTTPRouteNamedRule",)
    rows = gc.summary_rows(r)
    assert [(x["level"], x["passed"], x["failed"], x["skipped"]) for x in rows] == [
        ("core", 7, 0, 0),
        ("extended", 6, 1, 1),
    ]


@pytest.mark.parametrize(("text", "says"), [("a: [", "not YAML"), ("kind: Other\n", "not ConformanceReport"),
                                        ("- 1\n", "not ConformanceReport")])  # fmt: skip
def test_not_a_report_names_the_source(text: str, says: str) -> None:
    with pytest.raises(UserError, match=f"r.yaml: .*{says}"):
        gc.parse(text, source="r.yaml")


def test_outcomes_from_go_test_lines_ignore_subtests() -> None:
    log = "\n".join(
        [
            "=== RUN   TestConformance/HTTPRouteSimpleSameNamespace",
            "    --- PASS: TestConformance/HTTPRouteSimpleSameNamespace/subtest (0.10s)",
            "    --- PASS: TestConformance/HTTPRouteSimpleSameNamespace (1.50s)",
            "    --- FAIL: TestConformance/MeshHTTPRoute307Redirect (30.02s)",
            "    --- SKIP: TestConformance/TLSRouteSimple (0.00s)",
            "        suite.go:1: Skipping TLSRouteSimple: suite does not support TLSRoute",
            "--- FAIL: TestConformance (300.00s)",
        ]
    )
    assert gc.test_outcomes(log) == {
        "HTTPRouteSimpleSameNamespace": ("PASS", 1.5),
        "MeshHTTPRoute307Redirect": ("FAIL", 30.02),
        "TLSRouteSimple": ("SKIP", 0.0),
    }
    assert gc.skip_reasons(log) == {"TLSRouteSimple": "suite does not support TLSRoute"}


def test_claimed_features_are_istios_within_the_profiles() -> None:
    plan = gc.SuitePlan.of(PLAN)
    got = gc.supported_features(plan, ["MESH-HTTP", "GATEWAY-HTTP"], exempt=["MeshClusterIPMatching"])
    # GatewayBackendClientCertificate: in the profile, not declared by Istio; MeshClusterIPMatching: exempt
    assert got == ["Gateway", "HTTPRoute", "HTTPRouteMethodMatching", "HTTPRouteRetry", "Mesh",
                   "MeshConsumerRoute", "MeshHTTPRouteRedirectPath", "ReferenceGrant"]  # fmt: skip
    standard = gc.supported_features(plan, ["GATEWAY-HTTP"], standard_only=True)
    assert "HTTPRouteRetry" not in standard and "HTTPRouteMethodMatching" in standard


def test_tests_of_a_profile_and_their_level() -> None:
    plan = gc.SuitePlan.of(PLAN)
    names = [t.name for t in plan.in_profile("MESH-HTTP")]
    assert names == ["MeshBasic", "MeshConsumerRoute", "MeshClusterIP"]  # no TLSRoute, no feature-less test
    by = {t.name: t for t in plan.tests}
    assert plan.level("MESH-HTTP", by["MeshBasic"]) == "core"
    assert plan.level("MESH-HTTP", by["MeshConsumerRoute"]) == "extended"


def test_published_outcome_of_a_test() -> None:
    r, plan = gc.parse(REPORT), gc.SuitePlan.of(PLAN)
    by = {t.name: t for t in plan.tests}
    assert gc.published_outcome(r, plan, "MESH-HTTP", by["MeshConsumerRoute"]) == "PASS"
    assert gc.published_outcome(r, plan, "MESH-HTTP", by["MeshClusterIP"]) == "not claimed"
    assert (
        gc.published_outcome(r, plan, "GATEWAY-HTTP", by["HTTPRouteSimpleSameNamespace"]) == "profile not run"
    )
    failed = gc.SuiteTest("MeshHTTPRoute307Redirect", ("Mesh",))
    assert gc.published_outcome(r, plan, "MESH-HTTP", failed) == "FAIL"
