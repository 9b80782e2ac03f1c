"""The conformance suite's Job: its argv, its objects, reading its end and its report, cleaning up."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from harness import wait
from harness.backends.kube import conformance as kc
from harness.backends.kube.api import ObjectRef
from harness.errors import WaitTimeout


def options(**kw: Any) -> kc.SuiteOptions:
    base: dict[str, Any] = {
        "profiles": ("GATEWAY-HTTP", "MESH-HTTP"),
        "supported_features": ("Gateway", "HTTPRoute", "Mesh"),
        "skip_tests": (),
        "namespace_labels": {"istio-injection": "enabled"},
        "istio_version": "1.31-dev",
    }
    return kc.SuiteOptions(**{**base, **kw})


def test_argv_uses_the_suites_own_flags() -> None:
    argv = kc.suite_argv(options())
    assert argv[0] == "/usr/local/bin/conformance.test"
    assert "-gateway-class=istio" in argv
    assert "-conformance-profiles=GATEWAY-HTTP,MESH-HTTP" in argv
    assert "-supported-features=Gateway,HTTPRoute,Mesh" in argv
    assert "-namespace-labels=istio-injection=enabled" in argv
    assert f"-report-output={kc.REPORT_PATH}" in argv
    assert "-usable-address=infra-backend-v1.gateway-conformance-infra.svc.cluster.local" in argv
    assert not any(a.startswith("-skip-tests") for a in argv)
    assert "-skip-tests=A,B" in kc.suite_argv(options(skip_tests=("A", "B")))
    assert "-run-test=A" in kc.suite_argv(options(run_test="A"))
    assert not any(a.startswith("-run-test") for a in argv)


def test_job_runs_the_binary_then_prints_the_report_between_markers() -> None:
    objs = kc.objects("meshproof.local/gateway-conformance:x", ["/bin/t", "-x=it's"], deadline_s=600)
    assert [o["kind"] for o in objs] == [
        "ConfigMap",
        "Namespace",
        "ServiceAccount",
        "ClusterRoleBinding",
        "Job",
    ]
    assert objs[3]["roleRef"]["name"] == "cluster-admin"
    pod = objs[4]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == kc.NAME and pod["restartPolicy"] == "Never"
    script = pod["containers"][0]["command"][2]
    assert script.startswith("'/bin/t' '-x=it'\\''s'; rc=$?;")  # quoted for the shell
    assert kc.REPORT_BEGIN in script and script.endswith("exit $rc")
    assert "istio-injection" not in str(objs[1]["metadata"])  # the runner gets no sidecar


def test_istios_class_defaults_make_the_gateway_services_cluster_ip() -> None:
    cm = kc.class_defaults("istio")
    assert cm["metadata"]["namespace"] == "istio-system"
    assert cm["metadata"]["labels"]["gateway.istio.io/defaults-for-class"] == "istio"
    assert __import__("yaml").safe_load(cm["data"]["service"]) == {"spec": {"type": "ClusterIP"}}


def test_started_tests_are_the_top_level_runs() -> None:
    log = "=== RUN   TestConformance\n=== RUN   TestConformance/A\n=== RUN   TestConformance/A/0_sub\n=== RUN   TestConformance/B\n"
    assert kc.started_tests(log) == ["A", "B"]


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ({}, "running"),
        ({"active": 1}, "running"),
        ({"conditions": [{"type": "Complete", "status": "True"}]}, "succeeded"),
        ({"conditions": [{"type": "Failed", "status": "True"}]}, "failed"),
        ({"conditions": [{"type": "Failed", "status": "False"}], "failed": 1}, "failed"),
        ({"succeeded": 1}, "succeeded"),
    ],
)
def test_job_state(status: dict[str, Any], state: str) -> None:
    assert kc.job_state({"status": status}) == state


def test_report_text_between_the_last_markers() -> None:
    log = f"noise\n{kc.REPORT_BEGIN}\nkind: ConformanceReport\nprofiles: []\n{kc.REPORT_END}\n"
    assert kc.report_text(log) == "kind: ConformanceReport\nprofiles: []\n"
    assert kc.report_text(f"{kc.REPORT_BEGIN}\n{kc.REPORT_END}\n") == ""
    assert kc.report_text("the binary crashed\n") == ""


class Clock(wait.Clock):
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class Api:
    """Just enough of KubeApi: objects by ref; the Job ends after ``polls`` reads of it."""

    def __init__(self, *, polls: int, outcome: str = "Complete", log: str = "") -> None:
        self.objs: dict[ObjectRef, dict[str, Any]] = {}
        self.deleted: list[ObjectRef] = []
        self.polls, self.outcome, self.log = polls, outcome, log

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        self.objs[ObjectRef.of(obj)] = copy.deepcopy(dict(obj))
        return dict(obj)

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        obj = self.objs.get(ref)
        if obj is not None and ref.kind == "Job":
            self.polls -= 1
            if self.polls <= 0:
                obj["status"] = {"conditions": [{"type": self.outcome, "status": "True"}]}
        return obj

    def delete(self, ref: ObjectRef, *, grace_seconds: int | None = None) -> bool:
        self.deleted.append(ref)
        return self.objs.pop(ref, None) is not None

    def list(
        self, api_version: str, kind: str, namespace: str = "", label_selector: str = ""
    ) -> list[dict[str, Any]]:
        if ObjectRef("batch/v1", "Job", kc.NAMESPACE, kc.NAME) not in self.objs:
            return []
        return [{"metadata": {"name": "gateway-conformance-abc"}, "status": {"phase": "Running"}}]

    def pod_log(self, namespace: str, pod: str, container: str, tail_lines: int | None = 400,
                since_seconds: int | None = None) -> str:  # fmt: skip
        return self.log


def test_job_run_reports_progress_returns_the_log_and_cleans_up() -> None:
    log = f"=== RUN   TestConformance/A\n    --- PASS: TestConformance/A (1.00s)\n{kc.REPORT_BEGIN}\nkind: ConformanceReport\n{kc.REPORT_END}\n"
    api = Api(polls=3, log=log)
    said: list[str] = []
    job = kc.SuiteJob(api, "img", ["/t"], timeout=600, say=said.append, clock=Clock())  # type: ignore[arg-type]
    result = job.run()
    assert result.succeeded and result.pod == "gateway-conformance-abc"
    assert kc.report_text(result.log) == "kind: ConformanceReport\n"
    assert said.count("running A (1)") == 1  # each test once, however often polled
    assert not [r for r in api.objs if r.kind in ("Job", "Namespace", "ClusterRoleBinding", "ConfigMap")]


def test_a_failed_job_still_returns_its_log() -> None:
    api = Api(polls=1, outcome="Failed", log="boom\n")
    result = kc.SuiteJob(api, "img", ["/t"], timeout=600, clock=Clock()).run()  # type: ignore[arg-type]
    assert not result.succeeded and result.log == "boom\n"


def test_a_job_that_never_ends_times_out_and_is_cleaned_up() -> None:
    api = Api(polls=10**9)
    with pytest.raises(WaitTimeout, match="the conformance suite"):
        kc.SuiteJob(api, "img", ["/t"], timeout=60, clock=Clock()).run()  # type: ignore[arg-type]
    assert ObjectRef("batch/v1", "Job", kc.NAMESPACE, kc.NAME) not in api.objs


def test_inotify_limit_below_kinds_value_warns_with_the_fix() -> None:
    assert "sysctl -w fs.inotify.max_user_instances=512" in kc.inotify_warning(lambda: "128\n")
    assert kc.inotify_warning(lambda: "512\n") == ""
    assert kc.inotify_warning(lambda: "garbage") == ""


def test_contact_is_one_entry() -> None:
    # the suite's -contact flag splits on commas (conformance/utils/flags)
    assert "," not in kc.CONTACT
