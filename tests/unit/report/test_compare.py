"""Suite figures before vs after (pure)."""

from __future__ import annotations

from typing import Any

from harness.report.compare import BY_ID, BY_NAME, compare, figures


def rec(
    check: str, verdict: str = "PASS", expected: str = "PASS", notes: str = "", id: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "test": "suites/t.py::test_x",
        "check": check,
        "requests": 100,
        "verdict": verdict,
        "expected": expected,
        "wall_s": 1.0,
        "notes": notes,
    }
    if id is not None:
        out["id"] = f"suites/t.py::test_x::{id}"
    return out


def test_figures_parse_named_seconds() -> None:
    assert figures("time to ejection 1.23s; DR ACK 0.40s") == {"time to ejection": 1.23, "DR ACK": 0.4}


def test_same_verdicts_pass_and_timings_only_inform() -> None:
    before = {"checks": [rec("split", notes="ACK 0.1s", id="split"), rec("neg", "FAIL", "FAIL", id="neg")]}
    after = {"checks": [rec("split", notes="ACK 9.0s", id="split"), rec("neg", "FAIL", "FAIL", id="neg")]}
    result = compare(before, after)
    assert result.matched_on == BY_ID and result.paired == 2 and not result.reasons
    ack = next(f for f in result.checks[0].figures if f.name == "ACK")
    assert (ack.before, ack.after, ack.decides) == (0.1, 9.0, False)


def test_records_pair_on_id_whatever_their_summaries_say() -> None:
    """The under-load checks put N and observed shares into their summary: ids pair them anyway."""
    before = {"checks": [rec("abort_share_under_load(503, 0.2): 61/320 = 19.1%", id="abort_share[503,0.2]")]}
    after = {"checks": [rec("abort_share_under_load(503, 0.2): 130/640 = 20.3%", id="abort_share[503,0.2]")]}
    result = compare(before, after)
    assert result.paired == 1 and not result.reasons, result.reasons
    row = result.checks[0]
    assert row.id == "suites/t.py::test_x::abort_share[503,0.2]"
    assert row.check.endswith("19.1%") and row.check_after.endswith("20.3%")


def test_without_ids_records_pair_on_names_and_the_result_says_so() -> None:
    before = {"checks": [rec("share: 61/320"), rec("split")]}
    after = {"checks": [rec("share: 130/640"), rec("split", id="split")]}  # one report has no ids
    result = compare(before, after)
    assert result.matched_on == BY_NAME and "without an id" in result.note
    assert result.paired == 1
    reasons = " | ".join(result.reasons)
    assert "share: 61/320: verdict not run after the upgrade" in reasons
    assert "share: 130/640: not run before the upgrade" in reasons


def test_a_verdict_change_or_a_lost_check_fails() -> None:
    before = {"checks": [rec("split", id="split"), rec("neg", "FAIL", "FAIL", id="neg")]}
    after = {"checks": [rec("split", "FAIL", id="split")]}
    rows = {r.check: r for r in compare(before, after).checks}
    assert not rows["split"].ok and "verdict FAIL after" in rows["split"].reasons[0]
    assert not rows["neg"].ok and "not run" in rows["neg"].reasons[0]


def test_an_id_twice_in_one_report_is_a_reason() -> None:
    before = {"checks": [rec("a", id="same"), rec("b", id="same")]}
    after = {"checks": [rec("a", id="same")]}
    assert any("twice" in r for r in compare(before, after).reasons)


def test_time_to_ejection_informs_and_never_decides() -> None:
    """Slowness of a loaded machine must not flip the verdict: the ejection itself is decided by the
    check on Envoy's counts (ejected after exactly the configured errors)."""
    result = compare(
        {"checks": [rec("e", notes="time to ejection 1.0s", id="e")]},
        {"checks": [rec("e", notes="time to ejection 9.9s", id="e")]},
    )
    assert not result.reasons
    t = next(f for f in result.checks[0].figures if f.name == "time to ejection")
    assert (t.before, t.after, t.decides, t.threshold) == (1.0, 9.9, False, "")
