"""The suites' figures before vs after an upgrade (pure).

Input is two ``suites-report.json`` documents (one record per check: a stable ``id`` = pytest node
id + check kind + its parameters, a human ``check`` summary that may carry N and observed values,
verdict, expected verdict, requests, wall time, notes with measured figures). Records pair on
their ``id``; reports written before records had ids pair on (test, check summary) instead, and
the result says so (a summary that carries a measured value then never pairs).

What decides: every check reaches its expected verdict after the upgrade as before (a negative
control must still fail), and every check that ran before ran after. The statistical properties (a
split within its interval, an abort rate, an authorization matrix, an ejection after exactly the
configured errors) are decided by the checks themselves, on counts, with their stated
false-failure rate. Timings (time to ejection, propagation ``ACK`` times, wall times) and request
counts are shown, never decided: on a shared machine they measure the machine as much as the
mesh, and a verdict must not flip on slowness.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_FIGURE = re.compile(r"([A-Za-z][A-Za-z+ ]*?)\s+([0-9]+(?:\.[0-9]+)?)s\b")
BY_ID = "id"
BY_NAME = "test+check"


@dataclass(frozen=True)
class Figure:
    name: str
    before: float | None
    after: float | None
    threshold: str  # human-readable rule, "" when informational
    decides: bool
    ok: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "before": self.before,
            "after": self.after,
            "threshold": self.threshold,
            "decides": self.decides,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class CheckComparison:
    id: str  # the records' stable id ("" when matched on test + check summary)
    test: str
    check: str  # the human summary before the upgrade (after, when it ran only after)
    expected: str
    before: str  # verdict before ("" = not run)
    after: str
    figures: tuple[Figure, ...]
    check_after: str = ""  # the human summary after the upgrade

    @property
    def label(self) -> str:
        return self.id or f"{self.test} :: {self.check}"

    @property
    def ok(self) -> bool:
        return (
            bool(self.before) and self.after == self.expected and all(f.ok for f in self.figures if f.decides)
        )

    @property
    def reasons(self) -> list[str]:
        out = []
        if not self.before:
            out.append(f"{self.label}: not run before the upgrade (verdict {self.after} after)")
        elif self.after != self.expected:
            seen = self.after or "not run"
            out.append(f"{self.label}: verdict {seen} after the upgrade, expected {self.expected}")
        out += [
            f"{self.label}: {f.name} {f.before} -> {f.after} breaks '{f.threshold}'"
            for f in self.figures
            if f.decides and not f.ok
        ]
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "test": self.test,
            "check": self.check,
            "check_after": self.check_after,
            "expected": self.expected,
            "before": self.before,
            "after": self.after,
            "ok": self.ok,
            "figures": [f.as_json() for f in self.figures],
        }


@dataclass(frozen=True)
class SuiteComparison:
    """Every record of both reports, paired; how they were paired; what kept a pairing from holding."""

    checks: tuple[CheckComparison, ...]
    matched_on: str  # BY_ID or BY_NAME
    problems: tuple[str, ...] = ()  # e.g. an id twice in one report

    @property
    def note(self) -> str:
        if self.matched_on == BY_ID:
            return "records paired on their id"
        return (
            "records paired on (test, check summary): a report has records without an id (written before "
            "records had ids); a check whose summary carries a measured value will not pair"
        )

    @property
    def paired(self) -> int:
        return sum(1 for c in self.checks if c.before and c.after)

    @property
    def reasons(self) -> list[str]:
        out = list(self.problems)
        for c in self.checks:
            out += c.reasons
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "matched_on": self.matched_on,
            "note": self.note,
            "paired": self.paired,
            "problems": list(self.problems),
            "checks": [c.as_json() for c in self.checks],
        }


def figures(notes: str) -> dict[str, float]:
    """``"time to ejection 1.23s; DR ACK 0.40s"`` -> ``{"time to ejection": 1.23, "DR ACK": 0.4}``."""
    return {m.group(1).strip(): float(m.group(2)) for m in _FIGURE.finditer(notes or "")}


def _num(record: Mapping[str, Any] | None, field: str) -> float | None:
    return float(record[field]) if record is not None and field in record else None


def _records(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(doc.get("checks", []))


def key_of(record: Mapping[str, Any], matched_on: str) -> str:
    if matched_on == BY_ID:
        return str(record["id"])
    return f"{record['test']} :: {record['check']}"


def compare(before: Mapping[str, Any], after: Mapping[str, Any]) -> SuiteComparison:
    recs_a, recs_b = _records(before), _records(after)
    everything = recs_a + recs_b
    matched_on = BY_ID if everything and all(r.get("id") for r in everything) else BY_NAME
    problems: list[str] = []

    def index(recs: list[Mapping[str, Any]], which: str) -> dict[str, Mapping[str, Any]]:
        out: dict[str, Mapping[str, Any]] = {}
        for r in recs:
            k = key_of(r, matched_on)
            if k in out:
                problems.append(
                    f"the suites' report {which} the upgrade holds {k!r} twice: records cannot pair"
                )
            out[k] = r
        return out

    a, b = index(recs_a, "before"), index(recs_b, "after")
    out = []
    for key in list(a) + [k for k in b if k not in a]:
        ra, rb = a.get(key), b.get(key)
        ref = ra or rb
        assert ref is not None
        fa = figures(str(ra.get("notes", ""))) if ra else {}
        fb = figures(str(rb.get("notes", ""))) if rb else {}
        figs = [
            Figure(n, fa.get(n), fb.get(n), "", False, True)
            for n in list(fa) + [n for n in fb if n not in fa]
        ]
        figs.append(Figure("requests", _num(ra, "requests"), _num(rb, "requests"), "", False, True))
        figs.append(Figure("wall s", _num(ra, "wall_s"), _num(rb, "wall_s"), "", False, True))
        out.append(
            CheckComparison(
                id=key if matched_on == BY_ID else "",
                test=str(ref["test"]),
                check=str(ref["check"]),
                expected=str(ref.get("expected", "PASS")),
                before=str(ra["verdict"]) if ra else "",
                after=str(rb["verdict"]) if rb else "",
                figures=tuple(figs),
                check_after=str(rb["check"]) if rb else "",
            )
        )
    return SuiteComparison(tuple(out), matched_on, tuple(dict.fromkeys(problems)))
