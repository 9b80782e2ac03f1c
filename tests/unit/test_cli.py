"""The meshproof command, invoked in-process: exit codes, one-line errors, JSON that parses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main, testrun

GOOD = """\
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: Namespace
metadata:
  name: demo2
"""

# Two broken documents: the CLI must report both, each on its own line.
BAD = """\
apiVersion: v1
metadata:
  name: no-kind
---
apiVersion: v1
kind: Namespace
metadata: {}
"""


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer environment leaks in: no debug re-raise, a private state dir."""
    monkeypatch.delenv("MESHPROOF_DEBUG", raising=False)
    monkeypatch.setenv("MESHPROOF_STATE", str(tmp_path / "state"))
    for name in ("MESHPROOF_BACKEND", "MESHPROOF_MANIFESTS", "MESHPROOF_ISTIO"):
        monkeypatch.delenv(name, raising=False)


def no_traceback(text: str) -> None:
    assert "Traceback" not in text


def test_validate_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "good.yaml"
    f.write_text(GOOD)
    assert main(["validate", "-f", str(f)]) == 0
    out, err = capsys.readouterr()
    assert "2 documents valid" in out
    no_traceback(out + err)


def test_validate_good_file_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "good.yaml"
    f.write_text(GOOD)
    assert main(["validate", "--json", "-f", str(f)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is True
    assert doc["documents"] == 2
    assert doc["problems"] == []


def test_validate_bad_file_prints_every_problem_on_its_own_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(BAD)
    assert main(["validate", "-f", str(f)]) == 2
    out, err = capsys.readouterr()
    no_traceback(out + err)
    lines = [line for line in err.splitlines() if line.startswith("meshproof: error: ")]
    assert len(lines) >= 2, err
    assert all("bad.yaml" in line for line in lines)
    assert any("document 1" in line and "kind" in line for line in lines)
    assert any("document 2" in line and "metadata.name" in line for line in lines)


def test_validate_bad_file_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(BAD)
    assert main(["validate", "--json", "-f", str(f)]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is False
    assert {p["document"] for p in doc["problems"]} == {1, 2}
    assert all(p["fix"] for p in doc["problems"])


def test_validate_missing_file_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-f", str(tmp_path / "absent.yaml")]) == 2
    _, err = capsys.readouterr()
    assert err.startswith("meshproof: error: ")
    no_traceback(err)


CLUSTER_VERBS = ("up", "apply", "delete", "send", "fault", "status", "traces", "test", "down", "doctor")


@pytest.mark.parametrize("verb", CLUSTER_VERBS)
def test_every_verb_that_reaches_a_cluster_takes_kube_context(
    verb: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([verb, "--help"]) == 0
    assert "--kube-context" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["up", "--kube-context", "ctx-a", "--keep-cluster"],
        ["down", "--keep-cluster", "--kube-context", "ctx-a"],
        ["test", "--keep-cluster", "--kube-context", "ctx-a"],
    ],
)
def test_kube_context_and_keep_cluster_reach_the_settings(argv: list[str]) -> None:
    from harness.cli import _settings, build_parser

    args, _ = build_parser().parse_known_args(argv)
    settings = _settings(args)
    assert (settings.kube_context, settings.keep_cluster) == ("ctx-a", True)
    args, _ = build_parser().parse_known_args(argv[:1])
    assert _settings(args).keep_cluster is False  # not given: the environment's default


def test_doctor_probes_the_named_kube_context(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json", "--kube-context", "no-such-context"]) == 0
    cluster = next(t for t in json.loads(capsys.readouterr().out)["tools"] if t["name"] == "cluster")
    assert "context 'no-such-context'" in cluster["needed_for"]


def test_validate_missing_file_says_file_not_document_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "-f", str(tmp_path / "absent.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"file {tmp_path / 'absent.yaml'}: no such file" in err
    assert "document 0" not in err


@pytest.mark.parametrize("layout", ["empty file", "comments only", "folder of empty files"])
def test_validate_of_nothing_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], layout: str
) -> None:
    if layout == "folder of empty files":
        target = tmp_path / "conf"
        target.mkdir()
        (target / "a.yaml").write_text("")
        (target / "b.yml").write_text("---\n---\n")
    else:
        target = tmp_path / "x.yaml"
        target.write_text("" if layout == "empty file" else "# nothing yet\n")
    assert main(["validate", "-f", str(target)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"meshproof: error: {'directory' if target.is_dir() else 'file'} {target}: holds no YAML documents "
        "(only empty documents or comments). Fix: pass the file or directory of the Istio/Kubernetes "
        "objects you meant"
    ]


def test_validate_of_nothing_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.yaml").write_text("")
    assert main(["validate", "--json", "-f", str(tmp_path / "x.yaml")]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["valid"] is False and doc["problems"][0]["document"] == 0


def test_unknown_verb_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    _, err = capsys.readouterr()
    assert "invalid choice" in err
    no_traceback(err)


def test_no_verb_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    no_traceback(capsys.readouterr().err)


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--frobnicate"]) == 2
    assert "unrecognized arguments: --frobnicate" in capsys.readouterr().err


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in (
        "up",
        "apply",
        "delete",
        "send",
        "fault",
        "status",
        "traces",
        "test",
        "down",
        "doctor",
        "validate",
        "install",
    ):
        assert verb in out


def test_doctor_json_parses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    names = {t["name"] for t in doc["tools"]}
    assert {"python", "node", "npm", "go", "meshproof-sampler"} <= names
    engine = next(t for t in doc["tools"] if t["name"] == "meshproof-sampler")
    assert engine["backend"] == "all" and engine["optional"] is True
    for t in doc["tools"]:
        assert set(t) >= {"name", "backend", "needed_for", "found", "version", "path", "how_to_get"}
    python = next(t for t in doc["tools"] if t["name"] == "python")
    assert python["found"] is True and python["version"].startswith("3.")
    assert set(doc["ready"]) == {"local", "kind", "existing"}
    assert isinstance(doc["notes"], list)


def test_doctor_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "python" in out and "backend local:" in out


def test_down_with_an_empty_state_dir_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "empty"
    state.mkdir()
    assert main(["down", "--state", str(state)]) == 0
    out, err = capsys.readouterr()
    assert f"no mesh is running with state dir {state}" in out
    no_traceback(out + err)


def test_state_option_before_the_verb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--state", str(tmp_path / "s"), "down"]) == 0
    assert f"state dir {tmp_path / 's'}" in capsys.readouterr().out


def test_send_without_a_mesh_is_a_state_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "-n", "10", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("meshproof: error: no mesh is running with state dir")
    assert len(err.strip().splitlines()) == 1
    no_traceback(err)


@pytest.mark.parametrize("verb", [["status"], ["status", "--json"], ["traces"], ["fault", "x", "--clear"]])
def test_verbs_that_need_a_mesh_fail_cleanly_without_one(
    verb: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(verb) == 2
    _, err = capsys.readouterr()
    assert err.startswith("meshproof: error: no mesh is running")


def test_debug_re_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.errors import StateError

    monkeypatch.setenv("MESHPROOF_DEBUG", "1")
    with pytest.raises(StateError):
        main(["send"])
    monkeypatch.delenv("MESHPROOF_DEBUG")
    with pytest.raises(StateError):
        main(["send", "--debug"])


def test_bad_header_is_rejected_before_looking_for_a_mesh(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["send", "-H", "no-colon"]) == 2
    assert "-H 'no-colon' is not a header" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fault", "p"], "say what to inject"),
        (["fault", "p", "--status", "700"], "between 100 and 599"),
        (["fault", "p", "--status", "503", "--rate", "1.5"], "(0, 1]"),
        (["fault", "p", "--clear", "--status", "503"], "--clear removes the fault"),
    ],
)
def test_fault_arguments_are_checked(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_bad_settings_from_the_environment_are_a_user_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MESHPROOF_ALPHA", "often")
    assert main(["down"]) == 2
    assert "MESHPROOF_ALPHA='often' is not a number" in capsys.readouterr().err


# --- meshproof test: runs pytest in a subprocess, passes backend/state, ends with a summary ---------


def write_suite(root: Path, body: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkout at ``root`` holding one suite file (meshproof test finds suites/ beside harness/)."""
    (root / "suites").mkdir()
    (root / "suites" / "test_demo.py").write_text(body)
    monkeypatch.setattr(testrun, "CHECKOUT", root)


def test_test_verb_runs_the_suites_with_backend_and_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_suite(
        tmp_path,
        "import os\n"
        "def test_env():\n"
        "    assert os.environ['MESHPROOF_BACKEND'] == 'kind'\n"
        "    assert os.environ['MESHPROOF_STATE'] == 'st'\n"
        "def test_other():\n"
        "    pass\n",
        monkeypatch,
    )
    assert main(["test", "--backend", "kind", "--state", "st", "-k", "env", "-p", "no:cacheprovider"]) == 0
    out = capfd.readouterr().out
    assert "1 passed, 0 failed, 0 skipped, 0 errors" in out
    assert "PASSED: every check held" in out
    assert "test_other" not in out.split("meshproof test summary")[1]


def test_test_verb_reports_failures_and_exits_with_pytests_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_suite(
        tmp_path,
        "def test_split():\n    assert 40 == 50, 'v2 got 40% of traffic, configured 50%'\n",
        monkeypatch,
    )
    assert main(["test", "-p", "no:cacheprovider"]) == 1
    summary = capfd.readouterr().out.split("meshproof test summary")[1]
    assert "FAILED" in summary and "test_split" in summary
    assert "v2 got 40% of traffic" in summary


def test_test_verb_with_no_tests_is_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_suite(tmp_path, "", monkeypatch)
    assert main(["test", "-p", "no:cacheprovider"]) == 5
    assert "no tests ran" in capfd.readouterr().out


def test_test_verb_finds_the_suites_of_the_checkout_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # not the checkout: no suites/ here
    assert main(["test", "--collect-only", "-q", "-p", "no:cacheprovider"]) == 0
    out = capfd.readouterr().out
    assert "suites/test_routing.py" in out
    assert testrun.suites_dir() == testrun.CHECKOUT / "suites"


def test_test_verb_passes_kube_context_and_keep_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_suite(
        tmp_path,
        "import os\n"
        "def test_env():\n"
        "    assert os.environ['MESHPROOF_KUBE_CONTEXT'] == 'ctx-a'\n"
        "    assert os.environ['MESHPROOF_KEEP_CLUSTER'] == '1'\n",
        monkeypatch,
    )
    code = main(["test", "--kube-context", "ctx-a", "--keep-cluster", "-p", "no:cacheprovider"])
    assert code == 0, capfd.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [(["traces", "--limit", "0"], "--limit 0"), (["traces", "--trace-id", "xyz"], "is not a trace id")],
)
def test_traces_rejects_bad_options_before_reaching_a_mesh(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    _, err = capsys.readouterr()
    assert message in err


def test_docker_stop_never_touches_an_engine_meshproof_did_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A fresh cache holds no dockerd record: whatever engine runs on this machine is not ours.
    monkeypatch.setenv("MESHPROOF_CACHE", str(tmp_path / "cache"))
    assert main(["docker", "stop", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["stopped"] is False
    assert doc["engine"]["mode"] in ("absent", "foreign")


def test_images_build_of_a_planned_image_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no docker either: still one line, exit 2
    assert main(["images", "build", "--only", "kind-node"]) == 2
    out, err = capsys.readouterr()
    no_traceback(out + err)


def test_test_verb_runs_two_workers_each_in_its_own_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_suite(
        tmp_path,
        "import os\n"
        "def test_worker(settings):\n"
        "    worker = os.environ['PYTEST_XDIST_WORKER']\n"
        "    assert str(settings.state_dir) == os.path.join('st', 'workers', worker)\n",
        monkeypatch,
    )
    assert main(["test", "--state", "st", "-p", "no:cacheprovider"]) == 0, capfd.readouterr().out


@pytest.mark.parametrize(
    ("argv", "backend_json", "expected"),
    [
        (["test"], False, 2),
        (["test", "--workers", "3"], False, 3),
        (["test", "--workers", "1"], False, 1),
        (["test", "-n", "4"], False, 1),  # the user decided for pytest
        (["test", "-p", "no:xdist"], False, 1),
        (["test"], True, 1),  # a detached mesh in the state dir: the suites use it, one process
        (["test", "--backend", "kind"], False, 1),  # one cluster: one worker unless asked
        (["test", "--backend", "kind"], True, 1),
        (["test", "--backend", "kind", "--workers", "3"], True, 3),  # share the mesh, a copy each
        (["test", "--backend", "existing", "--workers", "2"], True, 2),
    ],
)
def test_test_verb_picks_its_workers(
    argv: list[str], backend_json: bool, expected: int, tmp_path: Path
) -> None:
    from harness.cli.parser import build_parser
    from harness.settings import from_env

    args, extra = build_parser().parse_known_args(argv)
    settings = from_env({}).with_overrides(state_dir=tmp_path, backend=getattr(args, "backend", None))
    if backend_json:
        (tmp_path / "backend.json").write_text("{}")
    assert testrun._workers(args, settings, extra) == expected  # noqa: SLF001


@pytest.mark.parametrize(
    "argv",
    [
        ["test", "--workers", "2", "--backend", "kind"],  # no mesh up yet: the workers would race to make one
        ["test", "--workers", "2", "--backend", "kind", "--traffic-api", "gateway-api"],
        ["test", "--workers", "0"],
    ],
)
def test_test_verb_refuses_workers_that_would_share_a_mesh(argv: list[str], tmp_path: Path) -> None:
    from harness.cli.parser import build_parser
    from harness.errors import UserError
    from harness.settings import from_env

    args, extra = build_parser().parse_known_args(argv)
    settings = from_env({}).with_overrides(
        state_dir=tmp_path, backend=getattr(args, "backend", None), traffic_api=args.traffic_api
    )
    if "--traffic-api" in argv:
        (tmp_path / "backend.json").write_text("{}")
    with pytest.raises(UserError, match="--workers"):
        testrun._workers(args, settings, extra)  # noqa: SLF001


@pytest.mark.parametrize("verb", ["up", "test"])
def test_traffic_api_reaches_the_settings_and_an_unknown_one_exits_2(
    verb: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.cli import _settings, build_parser

    args, _ = build_parser().parse_known_args([verb, "--traffic-api", "gateway-api"])
    assert _settings(args).traffic_api == "gateway-api"
    assert main([verb, "--traffic-api", "smi"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'smi'" in err and "'istio', 'gateway-api'" in err


def test_test_verb_passes_the_traffic_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    write_suite(
        tmp_path,
        "import os\ndef test_env(settings):\n"
        "    assert os.environ['MESHPROOF_TRAFFIC_API'] == 'gateway-api'\n"
        "    assert settings.traffic_api == 'gateway-api'\n",
        monkeypatch,
    )
    code = main(["test", "--traffic-api", "gateway-api", "-p", "no:cacheprovider"])
    assert code == 0, capfd.readouterr().out


def test_status_names_the_meshs_traffic_api(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli.lifecycle import print_status
    from harness.cli.output import Output

    doc = {
        "backend": "local",
        "state_dir": ".meshproof",
        "traffic_api": "gateway-api",
        "ingress_url": None,
        "trace_query_url": None,
        "tracing_note": "",
        "workloads": [],
        "ejections": None,
        "gateway_api": [],
    }
    print_status(Output(), doc)
    assert "traffic API gateway-api (the manifests' HTTPRoutes)" in capsys.readouterr().out
