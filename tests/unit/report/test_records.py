"""suites-report.json records: a stable ``id`` per check (no N, no observed values), the reason a
negative control had to fail, and old reports without ids still readable."""

from __future__ import annotations

import json

from harness.report.records import Recorder
from harness.traffic.checks import CheckResult, all_of

TEST = "suites/test_under_load.py::test_fault_injection_shares_under_load"


def _share(n: int, passed: bool = True) -> CheckResult:
    # the human name carries the verdict's summary (N, observed share); the key does not
    return CheckResult(
        f"abort_share_under_load(555, 0.3): PASS N={n} observed {n * 0.3:.0f}",
        passed,
        "table",
        key="abort_share_under_load(555, 0.3)",
    )


def _record(recorder: Recorder, check: CheckResult, **kw: object) -> str:
    return recorder.record(TEST, check, requests=1, confidence="c", wall_s=0.0, **kw).id  # type: ignore[arg-type]


def test_the_id_is_the_same_for_two_runs_of_differing_n() -> None:
    a, b = Recorder(), Recorder()
    assert _record(a, _share(640)) == _record(b, _share(1280)) == f"{TEST}::abort_share_under_load(555, 0.3)"
    assert a.records[0].check != b.records[0].check  # the human summaries differ


def test_a_check_without_key_is_identified_by_its_name() -> None:
    assert _record(Recorder(), CheckResult("rbac_denied", True, "")) == f"{TEST}::rbac_denied"


def test_composed_checks_are_identified_by_their_parts_keys() -> None:
    flagged = CheckResult("ejected_by_envoy(microservice-1-v1-7d9f)", True, "", key="ejected_by_envoy")
    check = all_of(_share(10), flagged)
    assert check.identity == "all_of(abort_share_under_load(555, 0.3), ejected_by_envoy)"
    assert "microservice-1-v1-7d9f" in check.name


def test_a_check_recorded_twice_by_one_test_gets_an_ordinal() -> None:
    recorder = Recorder()
    ids = [_record(recorder, _share(n)) for n in (10, 20, 30)]
    assert ids == [ids[0], ids[0] + "#2", ids[0] + "#3"]
    assert len({r.id for r in recorder.records}) == 3


def test_a_negative_control_records_why_it_had_to_fail() -> None:
    recorder = Recorder()
    recorder.record(
        TEST,
        _share(10, passed=False),
        requests=1,
        confidence="c",
        wall_s=0.0,
        expect_pass=False,
        because="off",
    )
    (rec,) = recorder.to_json()["checks"]
    assert (rec["expected"], rec["verdict"], rec["because"]) == ("FAIL", "FAIL", "off")


def test_records_round_trip_and_old_reports_get_ids_from_test_and_check() -> None:
    recorder = Recorder()
    _record(recorder, _share(10))
    doc = json.loads(json.dumps(recorder.to_json()))
    assert Recorder.from_json(doc) == list(recorder.records)
    old = {k: v for k, v in doc["checks"][0].items() if k not in ("id", "because")}
    (restored,) = Recorder.from_json({"checks": [old]})
    assert restored.id == f"{TEST}::{old['check']}"


def test_merging_workers_keeps_ids_unique() -> None:
    worker_a, worker_b, controller = Recorder(), Recorder(), Recorder()
    _record(worker_a, _share(10))
    _record(worker_b, CheckResult("rbac_denied", True, ""))
    for w in (worker_a, worker_b):
        controller.extend(Recorder.from_json(w.to_json()))
    assert [r.id for r in controller.records] == [worker_a.records[0].id, worker_b.records[0].id]
