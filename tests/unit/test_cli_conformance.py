"""`meshproof conformance`: bad input and the wrong backend exit 2 with one line, before any build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import conformance, main


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_unknown_profile_names_the_known_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", "--state", str(tmp_path), "--profile", "GATEWAY-FTP"]) == 2
    err = one_error(capsys)
    assert "--profile GATEWAY-FTP: unknown conformance profile" in err
    assert "GATEWAY-HTTP" in err and "MESH-HTTP" in err


def test_profiles_default_and_are_case_insensitive() -> None:
    assert conformance.check_profiles([]) == ("GATEWAY-HTTP", "MESH-HTTP")
    assert conformance.check_profiles(["mesh-http", "MESH-HTTP"]) == ("MESH-HTTP",)


def test_the_local_backend_says_why_not(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", "--state", str(tmp_path), "--backend", "local"]) == 2
    err = one_error(capsys)
    assert "local backend" in err and "execs into pods" in err and "--backend kind" in err


def test_a_local_mesh_in_the_state_dir_says_why_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "backend.json").write_text(json.dumps({"backend": "local", "phase": "running"}))
    assert main(["conformance", "--state", str(tmp_path)]) == 2
    assert "local backend" in one_error(capsys)


def test_no_mesh_says_up_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", "--state", str(tmp_path), "--backend", "kind"]) == 2
    err = one_error(capsys)
    assert "no kind mesh is running" in err and "meshproof up --backend kind" in err


def test_existing_backend_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["conformance", "--state", str(tmp_path), "--backend", "existing"]) == 2
    assert "not 'existing'" in one_error(capsys)


def test_namespace_labels_follow_the_revision() -> None:
    assert conformance.namespace_labels({}) == {"istio-injection": "enabled"}
    assert conformance.namespace_labels({"revision": "canary"}) == {"istio.io/rev": "canary"}


REPORT = """\
apiVersion: gateway.networking.k8s.io/v1
kind: ConformanceReport
profiles:
- name: GATEWAY-HTTP
  core: {result: success, statistics: {Failed: 0, Passed: 37, Skipped: 0}}
  extended: {result: failure, statistics: {Failed: 1, Passed: 51, Skipped: 0}, failedTests: [SerialOne]}
"""


def test_summary_fails_on_a_failure_only_the_suites_log_shows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.cli.output import Output

    report = tmp_path / "r.yaml"
    report.write_text(
        REPORT.replace("failure", "success").replace("Failed: 1", "Failed: 0").replace("[SerialOne]", "[]")
    )
    written = {"report": str(report), "log": "suite.log"}
    assert conformance.print_summary(Output(), written, 1.0) == 0
    assert conformance.print_summary(Output(), written, 1.0, failed_in_log=["ParallelOne"]) == 1
    assert "counted passed by its report (parallel tests): ParallelOne" in capsys.readouterr().out
    report.write_text(REPORT)
    assert conformance.print_summary(Output(), written, 1.0, failed_in_log=["SerialOne"]) == 1
    out = capsys.readouterr().out
    assert "GATEWAY-HTTP extended failed: SerialOne" in out and "parallel tests" not in out
