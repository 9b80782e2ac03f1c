"""The suites run's HTML page and JUnit properties, from a suites-report.json document (no mesh)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from harness.report import suites
from harness.report.evidence import config_excerpt, stats_excerpt
from harness.report.records import Recorder
from harness.report.suites import observed_of
from harness.traffic import stats
from harness.traffic.checks import CheckResult, all_of

TEST = "suites/test_routing.py::test_ingress_split_matches_virtual_service"
NEG = "suites/test_routing.py::test_negative_swapped_split_fails_the_check"
CB = "suites/test_circuit_breaking.py::test_circuit_breaker_sheds_above_the_limit"

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""")


def split_check(counts: dict[str, int]) -> CheckResult:
    verdict = stats.check_weights({"v1": 90, "v2": 10}, counts)
    return CheckResult("split(v1=90/v2=10)", verdict.passed, verdict.table(), {"verdict": verdict})


def recorded(tmp_path: Path) -> dict[str, Any]:
    """A run: a passing split, its negative control, a failed count check whose test dumped diagnostics."""
    recorder = Recorder()
    recorder.record(
        TEST, split_check({"v1": 905, "v2": 95}), requests=1000, confidence="alpha=0.001", wall_s=2.0
    )
    recorder.record(
        NEG,
        split_check({"v1": 95, "v2": 905}),
        requests=1000,
        confidence="alpha=0.001",
        wall_s=2.0,
        expect_pass=False,
        because="the observed split is the running v1=10/v2=90",
    )
    recorder.record(
        CB,
        CheckResult("overflow <= 8", False, "23 of 100 requests overflowed; allowed 8"),
        requests=100,
        confidence="bound",
        wall_s=1.0,
    )
    diag = tmp_path / "diagnostics"
    diag.mkdir()
    (diag / "microservice-1-v1-0.stats.txt").write_text(
        "cluster.outbound|3000|v1|x.upstream_rq_pending_overflow: 23\ncluster.x.upstream_cx_total: 9\nhttp.rbac.denied: 0\n"
    )
    dump = {
        "configs": [
            {
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                "dynamic_active_clusters": [
                    {
                        "cluster": {
                            "name": "outbound|3000|v1|x",
                            "circuit_breakers": {"thresholds": [{"max_connections": 1}]},
                        }
                    }
                ],
            },
            {
                "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
                "dynamic_route_configs": [
                    {
                        "route_config": {
                            "name": "80",
                            "virtual_hosts": [
                                {
                                    "routes": [
                                        {
                                            "match": {"prefix": "/"},
                                            "route": {
                                                "weighted_clusters": {
                                                    "clusters": [
                                                        {"name": "v1", "weight": 90},
                                                        {"name": "v2", "weight": 10},
                                                    ]
                                                }
                                            },
                                        }
                                    ]
                                }
                            ],
                        }
                    }
                ],
            },
        ]
    }
    (diag / "microservice-1-v1-0.config_dump.txt").write_text(json.dumps(dump))
    (diag / "istiod.log").write_text("\n".join(f"line {i}" for i in range(40)))
    recorder.add_test({"id": TEST, "outcome": "passed", "wall_s": 3.0, "message": "", "properties": {}})
    recorder.add_test({"id": NEG, "outcome": "passed", "wall_s": 3.0, "message": "", "properties": {}})
    recorder.add_test(
        {
            "id": CB,
            "outcome": "failed",
            "wall_s": 2.0,
            "message": "[call] AssertionError: FAIL overflow <= 8",
            "properties": {"diagnostics": f"3 files in {diag}"},
        }
    )
    recorder.add_test(
        {
            "id": "suites/test_mtls.py::test_x",
            "outcome": "skipped",
            "wall_s": 0.0,
            "message": "no mesh",
            "properties": {},
        }
    )
    recorder.add_mesh(
        {
            "backend": "local",
            "istio_release": "1.31-dev",
            "traffic_api": {"api": "istio", "kinds": {"VirtualService (networking.istio.io)": 2}},
            "readings": [
                {
                    "when": "at the start of the session",
                    "istiod": {
                        "default": {"istio_version": "1.31-dev", "version_string": "1.31-dev-unknown-unknown"}
                    },
                    "proxies": {
                        "sample/microservice-1-v1-0": {
                            "envoy_version": "abc/1.39.3/Clean/RELEASE/BoringSSL",
                            "istio_version": "1.31-dev",
                        }
                    },
                }
            ],
        }
    )
    return json.loads(json.dumps(recorder.to_json()))


def test_records_carry_the_observed_shares_with_their_intervals() -> None:
    recorder = Recorder()
    check = all_of(split_check({"v1": 905, "v2": 95}), CheckResult("count", True, "ok"))
    rec = recorder.record(TEST, check, requests=1000, confidence="c", wall_s=1.0)
    (v1, v2) = rec.observed
    assert (v1["name"], v1["n"], v1["of"]) == ("v1", 905, 1000)
    assert v1["low"] < 0.905 < v1["high"] and v1["expected"] == 0.9
    assert v2["share"] == 0.095
    doc = recorder.to_json()
    assert doc["kind"] == "meshproof-suites" and Recorder.from_json(json.loads(json.dumps(doc))) == [rec]


def test_old_records_get_their_shares_from_the_detail_table() -> None:
    detail = split_check({"v1": 905, "v2": 95}).detail
    (v1, v2) = observed_of({"detail": detail})
    assert v1["name"] == "v1" and abs(v1["share"] - 0.905) < 1e-9 and v1["low"] < v1["share"] < v1["high"]
    assert v2["expected"] == 0.1


def test_page_shows_verdicts_controls_charts_and_folded_failure_evidence(tmp_path: Path) -> None:
    doc = recorded(tmp_path)
    page = suites.suites_page(doc)
    assert "<table" in page and not EXTERNAL.search(page) and "<script" not in page
    assert "FAILED: 1 of 3 checks did not reach their expected verdict; 1 of 4 tests failed" in page
    assert "the observed split is the running v1=10/v2=90" in page  # the negative control's reason
    assert "<svg" in page and "observed shares" in page  # the shares chart
    assert "v1 90.5% [" in page  # observed value with its interval
    assert "1.31-dev" in page and "abc/1.39.3/Clean/RELEASE/BoringSSL" in page and "VirtualService" in page
    # the failed check's evidence, folded: its test's diagnostics, excerpted
    assert page.count("<details") >= 4
    assert "upstream_rq_pending_overflow: 23" in page and "upstream_cx_total" not in page
    assert "route 80: / -&gt; v1=90, v2=10" in page
    assert "circuit_breakers" in page and "line 39" in page and "line 10\n" not in page


def test_write_reports_beside_the_json(tmp_path: Path) -> None:
    path = tmp_path / "suites-report.json"
    path.write_text(json.dumps(recorded(tmp_path)))
    written = dict(suites.write_reports(path))
    assert written["html"] == tmp_path / "suites-report.html" and written["html"].stat().st_size > 5000
    assert written["conformance"] == tmp_path / "meshproof-report.yaml"


def test_each_check_is_a_junit_property_of_its_test(tmp_path: Path) -> None:
    doc = recorded(tmp_path)
    name, value = suites.property_of(doc["checks"][1])
    assert name == f"meshproof.check {NEG}::split(v1=90/v2=10)"
    assert value.startswith("verdict FAIL (expected FAIL); requests 1000; observed v1 9.5% [")
    assert "must fail because the observed split is the running v1=10/v2=90" in value
    assert "; detail:\n" in value and "[86.9,93.4]" in value


def test_evidence_excerpts_keep_what_bears_on_the_checks() -> None:
    """Lines seen in a real failure's diagnostics (v2 aborting every request by an admin fault)."""
    stats = "\n".join(
        [
            "cluster.xds-grpc;.default.total_match_count: 1",  # 'default.' is not a fault counter
            "cluster.xds-grpc;.upstream_rq_pending_overflow: 2",  # the proxy's own xDS cluster
            "http.inbound_127.17.1.4_3000;.fault.aborts_injected: 1088",
            "http.inbound_127.17.1.4_3000;.rbac.allowed: 1088",
            "http.inbound_127.17.1.4_3000;.rbac.denied: 0",
            "cluster.outbound|3000|v2|x;.outlier_detection.ejections_consecutive_5xx: 205",
            "cluster.outbound|3000|v2|x;.upstream_cx_total: 9",
        ]
    )
    assert stats_excerpt(stats) == [
        "http.inbound_127.17.1.4_3000;.fault.aborts_injected: 1088",
        "http.inbound_127.17.1.4_3000;.rbac.allowed: 1088",
        "cluster.outbound|3000|v2|x;.outlier_detection.ejections_consecutive_5xx: 205",
    ]
    unlimited = {"max_connections": 4294967295, "max_retries": 4294967295}
    dump = {
        "configs": [
            {
                "@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
                "dynamic_active_clusters": [
                    {
                        "cluster": {
                            "name": "PassthroughCluster",
                            "circuit_breakers": {"thresholds": [unlimited]},
                        }
                    },
                    {
                        "cluster": {
                            "name": "v2",
                            "circuit_breakers": {"thresholds": [{**unlimited, "max_requests": 100}]},
                        }
                    },
                ],
            },
            {
                "@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
                "dynamic_route_configs": [
                    {
                        "route_config": {
                            "name": "3000",
                            "virtual_hosts": [
                                {
                                    "routes": [
                                        {"match": {"prefix": "/"}, "route": {"cluster": "PassthroughCluster"}}
                                    ]
                                }
                            ],
                        }
                    }
                ],
            },
        ]
    }
    assert config_excerpt(json.dumps(dump)) == ['cluster v2: circuit_breakers [{"max_requests":100}]']
    assert config_excerpt("not json") == ["not json"]


def test_a_failed_test_keeps_pytests_error_lines_and_location() -> None:
    class Report:
        nodeid, when, duration, skipped, failed = TEST, "call", 1.5, False, True
        longreprtext = "    def f():\n>       g()\nE   WaitTimeout: timed out\nE     last batch: 13 not 200\n\nsuites/x.py:3: WaitTimeout"
        user_properties = [("diagnostics", "3 files in /tmp/d"), ("load", {"huge": 1})]

    t = suites.fold_test_report(None, Report())
    assert t["outcome"] == "failed" and t["wall_s"] == 1.5
    assert t["message"] == "[call] WaitTimeout: timed out\nlast batch: 13 not 200\nsuites/x.py:3: WaitTimeout"
    Report.when, Report.failed, Report.duration = "teardown", False, 0.5
    t = suites.fold_test_report(t, Report())
    assert (
        t["outcome"] == "failed"
        and t["wall_s"] == 2.0
        and t["properties"] == {"diagnostics": "3 files in /tmp/d"}
    )


def test_a_tests_entry_keeps_its_worker_phase_times_and_spans_for_the_bench() -> None:
    class Report:
        nodeid, when, duration, skipped, failed = TEST, "setup", 2.0, False, False
        start, stop = 100.0, 102.0
        meshproof_worker = "gw1"
        meshproof_cpu_s = 3.5
        meshproof_spans = [["mesh", "up /tmp/s", 100.1, 101.9]]
        user_properties: list[tuple[str, object]] = []

    t = suites.fold_test_report(None, Report())
    Report.when, Report.start, Report.stop = "call", 102.0, 105.0
    Report.meshproof_spans = [
        ["wait", "config change ACKed", 102.5, 102.9],
        ["traffic", "GET /", 103.0, 104.0],
    ]
    t = suites.fold_test_report(t, Report())
    assert t["worker"] == "gw1"
    assert t["phases"] == {"setup": [100.0, 102.0, 3.5], "call": [102.0, 105.0, 3.5]}
    assert [s[:2] for s in t["spans"]] == [
        ["mesh", "up /tmp/s"],
        ["wait", "config change ACKed"],
        ["traffic", "GET /"],
    ]
