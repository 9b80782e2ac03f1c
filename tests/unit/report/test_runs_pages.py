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
                "error_seconds": 1,
                "longest_gap_s": 0.417,
                "held": [
                    {
                        "protocol": "h2",
                        "fate": "reset",
                        "clean": False,
                        "requests": 1,
                        "answered": 0,
                        "failed": 0,
                        "evidence": "end of file with the held stream open, no GOAWAY",
                        "last_headers": {"server": "istio-envoy"},
                        "reconnect": "ok",
                    }
                ],
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
        "config_diff": {"proxies_compared": 2, "resources_compared": 40, "allowed": [], "unexpected": []},
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
    assert "2 proxies, 40 resources compared; 0 allowed differences, 0 unexpected" in text
    cases = {c.get("name"): c for c in ET.parse(xml).getroot().iter("testcase")}
    assert cases["phase baseline"].find("failure") is None
    failure = cases["phase proxy sample/a-0"].find("failure")
    assert failure is not None and failure.get("message") == "2 of 300 requests failed (bound 0)"
    props = {p.get("name"): p.get("value") for p in cases["phase proxy sample/a-0"].iter("property")}
    assert props["error_seconds"] == "1" and props["longest_gap_s"] == "0.417"
    assert "longest gap s" in text and "0.42" in text
    assert "end of file with the held stream open, no GOAWAY" in text and "server: istio-envoy" in text
    assert cases["suites t::split"].find("failure") is None
    assert cases["suites t::authz"].find("failure") is not None
    assert "versions read from the mesh" in cases and "config differences all reviewed" in cases
    suite = ET.parse(xml).getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("6", "2")


def test_a_missing_chart_is_named_not_an_error(tmp_path: Path) -> None:
    text = runs.load_page(load_doc(), tmp_path / "absent.png")
    assert "chart" in text and "not readable" in text


def run(
    name: str, kind: str, start: float, seconds: float, *, ok: bool = True, **extra: Any
) -> dict[str, Any]:
    t0 = 1_796_000_000.0
    import datetime as dt

    def iso(t: float) -> str:
        return dt.datetime.fromtimestamp(t0 + t, dt.UTC).isoformat()

    return {
        "activity": {"name": name, "type": kind},
        "status": "succeeded" if ok or kind == "probe" else "failed",
        "start": iso(start),
        "end": iso(start + seconds),
        "duration": seconds,
        "output": extra.get("output", {"holds": ok} if kind == "probe" else None),
        **({"tolerance_met": extra["tolerance_met"]} if "tolerance_met" in extra else {}),
    }


def chaos_files() -> tuple[dict[str, Any], dict[str, Any]]:
    journal = {
        "status": "completed",
        "deviated": True,
        "steady_states": {
            "before": {"probes": [run("error ratio below 2%", "probe", 0.0, 2.0, tolerance_met=True)]},
            "after": {"probes": [run("error ratio below 2%", "probe", 9.0, 2.0, tolerance_met=False)]},
        },
        "run": [
            run("inject 503 into v1-0", "action", 2.5, 0.5),
            run("ejected within 10s", "probe", 3.0, 5.0),
        ],
        "rollbacks": [run("clear the fault", "action", 11.5, 0.3)],
    }

    def summarise(r: dict[str, Any]) -> dict[str, Any]:
        a = r["activity"]
        return {
            "name": a["name"],
            "type": a["type"],
            "status": r["status"],
            "tolerance_met": r.get("tolerance_met"),
            "duration_s": r["duration"],
            "output": r["output"],
            "error": "",
        }

    summary = {
        "experiment": "experiments/outlier-ejection.yaml",
        "title": "A failing replica is ejected",
        "status": "completed",
        "deviated": True,
        "exit_code": 1,
        "wall_s": 12.0,
        "before": [summarise(r) for r in journal["steady_states"]["before"]["probes"]],
        "during": [summarise(r) for r in journal["run"]],
        "after": [summarise(r) for r in journal["steady_states"]["after"]["probes"]],
        "rollbacks": [summarise(r) for r in journal["rollbacks"]],
        "meshproof": {"during": []},
        "undone_after_run": [],
        "residue": {
            "clean": False,
            "problems": ["sample/microservice-1-v1-0 still has an admin fault"],
            "checked": ["objects"],
        },
        "notes": [],
    }
    return summary, journal


def test_chaos_page_timeline_and_junit_per_probe_action_rollback_and_residue(tmp_path: Path) -> None:
    summary, journal = chaos_files()
    page, xml = runs.write_chaos(tmp_path, summary, journal)
    text = page.read_text()
    assert "FAILED: status completed, deviated True" in text and not EXTERNAL.search(text)
    assert "<svg" in text and "method: inject 503 into v1-0" in text and "rollbacks: clear the fault" in text
    assert "still has an admin fault" in text
    spans = runs.chaos_spans(journal)
    assert [(s.lane, round(s.start_s, 3), s.ok) for s in spans] == [
        ("hypothesis before", 0.0, True),
        ("method", 2.5, True),
        ("method", 3.0, True),
        ("hypothesis after", 9.0, False),
        ("rollbacks", 11.5, True),
    ]
    cases = {c.get("name"): c for c in ET.parse(xml).getroot().iter("testcase")}
    assert list(cases) == [
        "hypothesis before: probe error ratio below 2%",
        "method: action inject 503 into v1-0",
        "method: probe ejected within 10s",
        "hypothesis after: probe error ratio below 2%",
        "rollback: action clear the fault",
        "no residue",
    ]
    failed = [n for n, c in cases.items() if c.find("failure") is not None]
    assert failed == ["hypothesis after: probe error ratio below 2%", "no residue"]
    residue = cases["no residue"].find("failure")
    assert residue is not None and "still has an admin fault" in str(residue.get("message"))


def test_markdown_summary_of_every_report_kind_under_a_directory(tmp_path: Path, capsys: Any) -> None:
    import json

    from harness.cli import main

    chart = tmp_path / "u" / "upgrade.png"
    chart.parent.mkdir()
    (tmp_path / "u" / "upgrade-report.json").write_text(json.dumps(upgrade_doc(chart)))
    summary, journal = chaos_files()
    run_dir = tmp_path / "chaos" / "runs" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    (run_dir / "journal.json").write_text(json.dumps(journal))
    suites_doc = {
        "kind": "meshproof-suites",
        "checks": [
            {
                "id": "t::a",
                "test": "suites/test_x.py::t",
                "check": "a|b",
                "verdict": "FAIL",
                "expected": "PASS",
                "requests": 9,
                "confidence": "c",
                "wall_s": 1.0,
            }
        ],
        "tests": [],
    }
    (tmp_path / "suites-report.json").write_text(json.dumps(suites_doc))
    (tmp_path / "summary.json").write_text("{}")  # not a chaos run's (no journal beside it): skipped
    assert main(["report", "summary", str(tmp_path)]) == 0
    md = capsys.readouterr().out
    assert "### ❌ suites:" in md and "| test_x.py::t | a\\|b | **FAIL (expected PASS)** | 9 |" in md
    assert "### ❌ upgrade 1.30-dev -> 1.31-dev (in-place)" in md and "| proxy sample/a-0 | 300 | 2 |" in md
    assert "| A failing replica is ejected | ❌ FAILED | 1/1 | 2/2 | 0/1 | 1/1 | RESIDUE |" in md
    assert main(["report", "summary", str(tmp_path / "u" / "upgrade.png")]) == 2
