"""Two real ``suites-report.json`` files pair completely on their record ids.

The data are two runs of ``meshproof test -- suites/test_under_load.py suites/test_fault_injection.py
suites/test_routing.py`` on the local mesh (main at 045abfb, 2026-12-06), unedited: 29 records each,
sequential checks whose N differs between the runs, and under-load abort-share checks whose
summary carries that N and the observed shares.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.report.compare import BY_ID, BY_NAME, compare

DATA = Path(__file__).with_name("data")


def report(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / name).read_text())
    return doc


def test_every_record_of_two_runs_with_differing_n_pairs_on_its_id() -> None:
    first, second = report("suites-report-run1.json"), report("suites-report-run2.json")
    result = compare(first, second)
    assert result.matched_on == BY_ID
    assert result.paired == len(first["checks"]) == len(second["checks"]) == len(result.checks) == 29
    assert not result.reasons, result.reasons
    # the data do what the test claims: N differs, and some summaries differ with it
    n = [next(f for f in c.figures if f.name == "requests") for c in result.checks]
    assert sum(1 for f in n if f.before != f.after) >= 10
    renamed = [c for c in result.checks if c.check != c.check_after]
    assert len(renamed) >= 2 and all("abort_share_under_load" in c.id for c in renamed)


def test_the_same_runs_without_ids_do_not_pair_and_say_so() -> None:
    """What the check did before records had ids: every renamed record reads 'not run after'."""

    def without_ids(doc: dict[str, Any]) -> dict[str, Any]:
        return {"checks": [{k: v for k, v in r.items() if k != "id"} for r in doc["checks"]]}

    result = compare(
        without_ids(report("suites-report-run1.json")), without_ids(report("suites-report-run2.json"))
    )
    assert result.matched_on == BY_NAME and "without an id" in result.note
    lost = [r for r in result.reasons if "verdict not run after the upgrade" in r]
    assert len(lost) >= 2 and result.paired == 29 - len(lost)
