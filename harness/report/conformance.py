"""``meshproof-report.yaml``: a conformance-style summary of a suites run, shaped like Gateway API's
ConformanceReport (one small YAML per implementation and version).

It names the mesh and its version as read from the running istiod and proxies, the backend and
the traffic API, and groups the checks into profiles of features (routing, resilience,
security, observability, under load). Per feature: passed, failed and skipped, and the check ids
behind them. A feature is *supported* only if at least one of its checks that expects PASS ran
and passed and none of its checks missed its expected verdict (a negative control that held
counts as passed, but alone proves no support); a feature none of whose checks ran is skipped.

Checks are assigned to features by their suite module and test name (:data:`FEATURES`); a check
of a module no feature names goes to profile ``other``, so a new suite is never dropped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.report.versions import summary as version_summary
from harness.versions import MESHPROOF

API_VERSION = "meshproof/v1alpha1"
KIND = "MeshConformanceReport"


@dataclass(frozen=True)
class Feature:
    profile: str
    name: str
    modules: tuple[str, ...]  # suite files, e.g. test_routing.py
    tests: tuple[str, ...] = ()  # any of these in the test function's name ("" = every test)
    checks: tuple[str, ...] = ()  # any of these in the check's key ("" = every check)


FEATURES: tuple[Feature, ...] = (
    Feature(
        "routing",
        "traffic-split",
        ("test_routing.py",),
        ("ingress_split", "in_mesh_split", "weight", "three_way", "swapped_split"),
    ),
    Feature("routing", "header-match", ("test_routing.py",), ("header",)),
    Feature("routing", "path-match", ("test_routing.py",), ("uri_prefix",)),
    Feature(
        "routing", "httproute-request-header-modifier", ("test_gateway_api.py",), (), ("header_modifier",)
    ),
    Feature("routing", "httproute-url-rewrite", ("test_gateway_api.py",), (), ("url_rewrite",)),
    Feature("routing", "httproute-request-redirect", ("test_gateway_api.py",), (), ("request_redirect",)),
    Feature("routing", "httproute-backend-not-found", ("test_gateway_api.py",), (), ("backend_not_found",)),
    Feature("resilience", "outlier-detection", ("test_outlier.py", "test_outlier_defaults.py")),
    Feature("resilience", "circuit-breaking", ("test_circuit_breaking.py",)),
    Feature("resilience", "fault-injection-abort", ("test_fault_injection.py",), (), ("abort",)),
    Feature("resilience", "fault-injection-delay", ("test_fault_injection.py",), (), ("delay",)),
    Feature("security", "authorization", ("test_authorization.py",)),
    Feature("security", "mtls-strict", ("test_mtls.py",), ("plaintext", "permissive")),
    Feature("security", "mtls-identity", ("test_mtls.py",), ("identity", "service_account")),
    Feature("observability", "tracing-span-tree", ("test_tracing.py",), ("one_trace", "relay", "two_hop")),
    Feature(
        "observability", "tracing-completeness", ("test_tracing.py",), ("complete_trace", "completeness")
    ),
    Feature(
        "observability", "tracing-sampling-rate", ("test_tracing.py",), ("sampling_share", "share_check")
    ),
    Feature("under-load", "traffic-split", ("test_under_load.py",), ("routing_weights", "swapped_split")),
    Feature("under-load", "outlier-detection", ("test_under_load.py",), ("outlier",)),
    Feature("under-load", "circuit-breaking", ("test_under_load.py",), ("circuit", "raised_limits")),
    Feature("under-load", "fault-injection", ("test_under_load.py",), ("fault", "abort", "delay")),
)
PROFILES = ("routing", "resilience", "security", "observability", "under-load")


def _split(test_id: str) -> tuple[str, str]:
    """``suites/test_routing.py::test_x[80-20]`` -> (``test_routing.py``, ``test_x[80-20]``)."""
    path, _, name = test_id.partition("::")
    return path.rsplit("/", 1)[-1], name.lower()


def features_of(test_id: str, check_key: str | None) -> list[Feature]:
    """The features a check (or, with ``check_key`` None, a test without checks) belongs to."""
    module, name = _split(test_id)
    key = (check_key or "").lower()
    out = []
    for f in FEATURES:
        if module not in f.modules:
            continue
        if f.tests and not any(t in name for t in f.tests):
            continue
        if f.checks and check_key is not None and not any(c in key for c in f.checks):
            continue
        out.append(f)
    if not out:
        out.append(Feature("other", module.removeprefix("test_").removesuffix(".py") or "unknown", (module,)))
    return out


@dataclass
class _Tally:
    passed: list[str]
    failed: list[str]
    skipped: list[str]
    positive_passed: int = 0

    @property
    def result(self) -> str:
        if self.failed:
            return "failure"
        if self.positive_passed:
            return "success"
        return "skipped"

    @property
    def supported(self) -> bool:
        return not self.failed and self.positive_passed > 0


def report(doc: Mapping[str, Any], *, date: str | None = None) -> dict[str, Any]:
    """The summary of a ``suites-report.json`` document."""
    checks: Sequence[Mapping[str, Any]] = doc.get("checks") or []
    tests: Sequence[Mapping[str, Any]] = doc.get("tests") or []
    tallies: dict[tuple[str, str], _Tally] = {}

    def tally(f: Feature) -> _Tally:
        return tallies.setdefault((f.profile, f.name), _Tally([], [], []))

    for f in FEATURES:
        tally(f)
    with_checks = set()
    for r in checks:
        test = str(r.get("test", ""))
        with_checks.add(test)
        rid = str(r.get("id") or f"{test}::{r.get('check')}")
        key = rid[len(test) + 2 :] if rid.startswith(test + "::") else str(r.get("check", ""))
        for f in features_of(test, key):
            t = tally(f)
            if r.get("verdict") == r.get("expected"):
                t.passed.append(rid)
                t.positive_passed += r.get("expected") == "PASS"
            else:
                t.failed.append(rid)
    for test_entry in tests:
        tid, outcome = str(test_entry.get("id", "")), test_entry.get("outcome")
        if outcome == "skipped":
            for f in features_of(tid, None):
                tally(f).skipped.append(tid)
        elif outcome in ("failed", "error") and tid not in with_checks:
            for f in features_of(tid, None):  # failed before it recorded a check
                tally(f).failed.append(tid)
    profiles: list[dict[str, Any]] = []
    for profile in [*PROFILES, *sorted({p for p, _ in tallies if p not in PROFILES})]:
        names = [(n, t) for (p, n), t in tallies.items() if p == profile]
        if not names:
            continue
        stats = {
            "Passed": sum(len(t.passed) for _, t in names),
            "Failed": sum(len(t.failed) for _, t in names),
            "Skipped": sum(len(t.skipped) for _, t in names),
        }
        results = {t.result for _, t in names}
        result = (
            "failure"
            if "failure" in results
            else "success"
            if results == {"success"}
            else "partial"
            if "success" in results
            else "skipped"
        )
        profiles.append(
            {
                "name": profile,
                "result": result,
                "statistics": stats,
                "supportedFeatures": [n for n, t in names if t.supported],
                "unsupportedFeatures": [n for n, t in names if not t.supported],
                "features": [
                    {
                        "name": n,
                        "result": t.result,
                        "supported": t.supported,
                        "statistics": {
                            "Passed": len(t.passed),
                            "Failed": len(t.failed),
                            "Skipped": len(t.skipped),
                        },
                        "checks": {"passed": t.passed, "failed": t.failed, "skipped": t.skipped},
                    }
                    for n, t in names
                ],
            }
        )
    mesh = doc.get("mesh") or {}
    versions = version_summary(mesh.get("readings") or [])
    supported = sum(len(p["supportedFeatures"]) for p in profiles)
    total = sum(len(p["features"]) for p in profiles)
    failed = sum(1 for p in profiles for f in p["features"] if f["result"] == "failure")
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "date": date or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "meshproofVersion": MESHPROOF,
        "implementation": {
            "project": "istio",
            "version": ", ".join(versions["istiod"]) or "unknown (not read)",
            "pinnedRelease": mesh.get("istio_release", ""),
            "istiod": versions["istiod"],
            "envoy": versions["envoy"],
            "istioAgent": versions["istio_agent"],
            "proxiesRead": versions["proxies"],
            **({"unreadable": versions["unreadable"]} if versions["unreadable"] else {}),
        },
        "backend": mesh.get("backend", "unknown"),
        "trafficAPI": (mesh.get("traffic_api") or {}).get("api", "unknown"),
        "mode": "default",
        "summary": f"{supported} of {total} features supported, {failed} failed, "
        f"{total - supported - failed} not shown (skipped or not run)",
        "profiles": profiles,
    }


def write(path: Path, doc: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# meshproof's conformance-style summary of one suites run (shaped like Gateway API's\n"
        "# ConformanceReport). A feature is supported only if one of its checks ran and passed.\n"
        + yaml.safe_dump(report(doc), sort_keys=False, width=4096)
    )
    return path
