"""Suite figures before vs after (pure)."""

from __future__ import annotations

from harness.upgrade.compare import compare, figures


def rec(check: str, verdict: str = "PASS", expected: str = "PASS", notes: str = "") -> dict[str, object]:
    return {
        "test": f"suites/t.py::{check}",
        "check": check,
        "requests": 100,
        "verdict": verdict,
        "expected": expected,
        "wall_s": 1.0,
        "notes": notes,
    }


def test_figures_parse_named_seconds() -> None:
    assert figures("time to ejection 1.23s; DR ACK 0.40s") == {"time to ejection": 1.23, "DR ACK": 0.4}


def test_same_verdicts_pass_and_timings_only_inform() -> None:
    before = {"checks": [rec("split", notes="ACK 0.1s"), rec("neg", "FAIL", "FAIL")]}
    after = {"checks": [rec("split", notes="ACK 9.0s"), rec("neg", "FAIL", "FAIL")]}
    rows = compare(before, after)
    assert all(r.ok for r in rows)
    ack = next(f for f in rows[0].figures if f.name == "ACK")
    assert (ack.before, ack.after, ack.decides) == (0.1, 9.0, False)


def test_a_verdict_change_or_a_lost_check_fails() -> None:
    before = {"checks": [rec("split"), rec("neg", "FAIL", "FAIL")]}
    after = {"checks": [rec("split", "FAIL")]}
    rows = {r.check: r for r in compare(before, after)}
    assert not rows["split"].ok and "verdict FAIL after" in rows["split"].reasons[0]
    assert not rows["neg"].ok and "not run" in rows["neg"].reasons[0]


def test_ejection_time_threshold_is_one_second() -> None:
    ok = compare(
        {"checks": [rec("e", notes="time to ejection 1.0s")]},
        {"checks": [rec("e", notes="time to ejection 1.9s")]},
    )
    bad = compare(
        {"checks": [rec("e", notes="time to ejection 1.0s")]},
        {"checks": [rec("e", notes="time to ejection 2.2s")]},
    )
    assert ok[0].ok and not bad[0].ok
    assert "after <= before + 1 s" in bad[0].reasons[0]
