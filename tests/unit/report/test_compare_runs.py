"""``meshproof report compare``: verdict changes between two runs, version changes, bad input (exit 2)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from harness.cli import main
from harness.errors import UserError
from harness.report.compare import FAILING, FIXED, NEW, NEW_FAILING, REGRESSED, SAME, compare, compare_files


def rec(key: str, verdict: str = "PASS", expected: str = "PASS") -> dict[str, Any]:
    return {
        "id": f"suites/test_x.py::test_{key}::{key}",
        "test": f"suites/test_x.py::test_{key}",
        "check": key,
        "requests": 100,
        "verdict": verdict,
        "expected": expected,
        "confidence": "alpha=0.001",
        "wall_s": 1.0,
        "notes": "ACK 0.40s",
    }


def mesh(istiod: str, envoy: str) -> dict[str, Any]:
    return {
        "backend": "local",
        "istio_release": istiod,
        "traffic_api": {"api": "istio"},
        "readings": [
            {
                "when": "at the start of the session",
                "istiod": {
                    "default": {"istio_version": istiod, "version_string": f"{istiod}-unknown-unknown"}
                },
                "proxies": {
                    "sample/a-0": {"envoy_version": envoy, "istio_version": istiod, "server_info": {}}
                },
            }
        ],
    }


def report(
    *records: dict[str, Any], istiod: str = "1.30-dev", envoy: str = "a/1.38.3/Clean/RELEASE/BoringSSL"
) -> dict[str, Any]:
    return {"kind": "meshproof-suites", "mesh": mesh(istiod, envoy), "checks": list(records), "tests": []}


def test_every_kind_of_change_is_named_and_only_a_lost_verdict_regresses() -> None:
    before = report(
        rec("same"),
        rec("regressed"),
        rec("fixed", "FAIL"),
        rec("failing", "FAIL"),
        rec("negative", "FAIL", "FAIL"),
        rec("gone"),
    )
    after = report(
        rec("same"),
        rec("regressed", "FAIL"),
        rec("fixed"),
        rec("failing", "FAIL"),
        rec("negative", "PASS", "FAIL"),  # a negative control that passes: its check cannot fail any more
        rec("new"),
        rec("newfail", "FAIL"),
    )
    result = compare(before, after, when=("in BEFORE", "in AFTER"))
    change = {c.check: c.change for c in result.checks}
    assert change == {
        "same": SAME,
        "regressed": REGRESSED,
        "fixed": FIXED,
        "failing": FAILING,
        "negative": REGRESSED,
        "gone": REGRESSED,
        "new": NEW,
        "newfail": NEW_FAILING,
    }
    assert sorted(c.check for c in result.regressions) == ["gone", "negative", "regressed"]
    assert "suites/test_x.py::test_gone::gone: verdict not run in AFTER, expected PASS" in result.reasons


def test_compare_files_reports_version_changes_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, worse = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "worse.json"
    before = report(rec("split"), rec("neg", "FAIL", "FAIL"))
    after = copy.deepcopy(before)
    after["mesh"] = mesh("1.31-dev", "b/1.39.3/Clean/RELEASE/BoringSSL")
    a.write_text(json.dumps(before))
    b.write_text(json.dumps(after))
    result = compare_files(a, b)
    changed = {v.what: (v.before, v.after) for v in result.versions if v.changed}
    assert changed["istiod"] == ("1.30-dev", "1.31-dev")
    assert changed["envoy"] == ("a/1.38.3/Clean/RELEASE/BoringSSL", "b/1.39.3/Clean/RELEASE/BoringSSL")
    assert not result.regressed  # an upgrade is a version change, not a regression

    out = tmp_path / "out"
    assert main(["report", "compare", str(a), str(b), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "istiod: 1.30-dev -> 1.31-dev (changed)" in printed and "NO REGRESSION" in printed
    (page,) = out.glob("compare-*.html")
    assert "<table" in page.read_text() and "1.31-dev" in page.read_text()

    after["checks"][0]["verdict"] = "FAIL"
    worse.write_text(json.dumps(after))
    assert main(["report", "compare", str(a), str(worse), "--out", str(out), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "REGRESSED" and doc["changes"]["regressed"] == 1
    assert (
        len(list(out.glob("compare-*.html"))) == 2
    )  # a second comparison in the same second keeps the first


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("not json {", "not a meshproof report: not JSON"),
        ('{"checks": []}', "not a meshproof suites report: field `checks`"),
        ('{"kind": "upgrade", "phases": []}', "not a meshproof suites report"),
        ('[{"test": 1}]', "not a meshproof suites report"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(report(rec("split"))))
    if content is not None:
        bad.write_text(content)
    assert main(["report", "compare", str(good), str(bad), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(bad) in err[0]


def test_reports_of_different_suites_are_bad_input(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(report(rec("split"))))
    b.write_text(json.dumps(report(rec("authz"))))
    with pytest.raises(UserError, match="no check in common"):
        compare_files(a, b)


def test_a_state_dir_stands_for_its_suites_report(tmp_path: Path) -> None:
    (tmp_path / "suites-report.json").write_text(json.dumps(report(rec("split"))))
    assert compare_files(tmp_path, tmp_path / "suites-report.json").suites.paired == 1
