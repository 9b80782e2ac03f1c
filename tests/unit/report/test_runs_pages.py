"""Pages and JUnit of load and upgrade-check runs, from the JSON they write (no mesh)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from harness.report import runs

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["'](?:https?:)?//""")
# the smallest valid PNG (1x1): embedded as it is
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def load_doc() -> dict[str, Any]:
    phase = {
        "name": "load",
        "start_s": 0.0,
        "end_s": 10.0,
        "requests": 1000,
        "failures": 3,
        "by_status": {"200": 997, "503": 3},
        "rps": 100.0,
        "error_ratio": 0.003,
        "latency_ms": {"p50_ms": 10.0, "p95_ms": 40.0, "p99_ms": 80.0},
    }
    return {
        "users": 10,
        "shape": "steady",
        "processes": 1,
        "user_class": "ingress",
        "duration_s": 10.0,
        "requests": 1000,
        "failures": 3,
        "rps": 100.0,
        "error_ratio": 0.003,
        "latency_ms": {"p95_ms": 40.0},
        "phases": [phase],
        "errors": {"HTTPError 503": 3},
        "request_id_prefix": "mp-1",
        "locust": {"requests": 1000},
    }


def upgrade_doc(chart: Path) -> dict[str, Any]:
    return {
        "from": "1.30-dev",
        "to": "1.31-dev",
        "mode": "in-place",
        "backend": "local",
        "users": 10,
        "load_tool": "Locust",
        "verdict": "FAIL",
        "reasons": ["phase proxy sample/a-0: 2 of 300 requests failed (bound 0)"],
        "bound": {"max_failures_per_phase": 0},
        "phases": [
            {
                "phase": "baseline",
                "kind": "baseline",
                "start_s": 0,
                "end_s": 3,
                "wall_s": 3,
                "requests": 300,
                "failures": 0,
                "detail": {"p95_ms": 20.0},
            },
            {
                "phase": "proxy sample/a-0",
                "kind": "data-plane",
                "start_s": 3,
                "end_s": 6,
                "wall_s": 3,
                "requests": 300,
                "failures": 2,
                "detail": {},
            },
        ],
        "totals": {"requests": 600, "failures": 2},
        "versions": {
            "expected": {
                "from": {"istio_version": "1.30-dev", "envoy_version": "a"},
                "to": {"istio_version": "1.31-dev", "envoy_version": "b"},
            },
            "before": {
                "when": "before the upgrade",
                "istiod": {"default": {"istio_version": "1.30-dev"}},
                "proxies": {},
            },
            "after": {
                "when": "after the upgrade",
                "istiod": {"default": {"istio_version": "1.31-dev"}},
                "proxies": {},
            },
            "reasons": [],
        },
        "suites": {
            "ran": True,
            "checks": [
                {
                    "id": "t::split",
                    "expected": "PASS",
                    "before": "PASS",
                    "after": "PASS",
                    "ok": True,
                    "change": "same",
                    "figures": [],
                },
                {
                    "id": "t::authz",
                    "expected": "PASS",
                    "before": "PASS",
                    "after": "FAIL",
                    "ok": False,
                    "change": "regressed",
                    "figures": [{"name": "ACK", "before": 0.4, "after": 0.5}],
                },
            ],
        },
        "config_diff": {"proxies": 2, "resources": 40, "allowed": [], "unexpected": []},
        "chart": str(chart),
        "wall_s": 60.0,
        "timings": {"up_s": 10.0},
    }


def test_load_page_embeds_its_chart_and_phases(tmp_path: Path) -> None:
    chart = tmp_path / "load.png"
    chart.write_bytes(PNG)
    js, page = runs.write_load(tmp_path, load_doc(), chart, None)
    text = page.read_text()
    assert js.is_file() and "data:image/png;base64," in text and not EXTERNAL.search(text)
    assert "<table" in text and "HTTPError 503" in text and "1000 requests, 3 failed (0.30%)" in text


def test_upgrade_page_and_junit_one_case_per_phase_and_check(tmp_path: Path) -> None:
    chart = tmp_path / "upgrade.png"
    chart.write_bytes(PNG)
    page, xml = runs.write_upgrade(tmp_path, upgrade_doc(chart))
    text = page.read_text()
    assert "FAILED: 2 of 600 requests failed" in text and "data:image/png;base64," in text
    assert "regressed" in text and not EXTERNAL.search(text)
    cases = {c.get("name"): c for c in ET.parse(xml).getroot().iter("testcase")}
    assert cases["phase baseline"].find("failure") is None
    failure = cases["phase proxy sample/a-0"].find("failure")
    assert failure is not None and failure.get("message") == "2 of 300 requests failed (bound 0)"
    assert cases["suites t::split"].find("failure") is None
    assert cases["suites t::authz"].find("failure") is not None
    assert "versions read from the mesh" in cases and "config differences all reviewed" in cases
    suite = ET.parse(xml).getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("6", "2")


def test_a_missing_chart_is_named_not_an_error(tmp_path: Path) -> None:
    text = runs.load_page(load_doc(), tmp_path / "absent.png")
    assert "chart" in text and "not readable" in text
