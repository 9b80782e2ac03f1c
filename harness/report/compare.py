"""Two runs of the suites compared: verdict changes, figures, versions (pure, but for :func:`load`).

One implementation for ``meshproof upgrade-check`` (the suites before vs after its own upgrade) and
``meshproof report compare BEFORE AFTER`` (any two runs: before and after an upgrade done by other
tools, yesterday's nightly and today's). Input is two ``suites-report.json`` documents (one record
per check: a stable ``id`` = pytest node id + check kind + its parameters, a human ``check``
summary that may carry N and observed values, verdict, expected verdict, requests, wall time,
notes with measured figures; since reports carry it, the mesh's versions read from it). Records
pair on their ``id``; reports written before records had ids pair on (test, check summary)
instead, and the result says so (a summary that carries a measured value then never pairs).

What decides the upgrade check (:attr:`SuiteComparison.reasons`): every check reaches its expected
verdict after the upgrade as before (a negative control must still fail), and every check that ran
before ran after. What ``report compare`` calls a regression (:attr:`SuiteComparison.regressions`):
a check that reached its expected verdict before and does not after, or did not run after. A check
that missed its expected verdict in both runs is shown as still failing, one only in AFTER as new;
neither is a change the second run made.

The statistical properties (a split within its interval, an abort rate, an authorization matrix,
an ejection after exactly the configured errors) are decided by the checks themselves, on counts,
with their stated false-failure rate. Timings (time to ejection, propagation ``ACK`` times, wall
times) and request counts are shown, never decided: on a shared machine they measure the machine
as much as the mesh, and a verdict must not flip on slowness. Version changes are shown, never
decided (an upgrade is one).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.report.suites import observed_of
from harness.report.versions import summary as version_summary

_FIGURE = re.compile(r"([A-Za-z][A-Za-z+ ]*?)\s+([0-9]+(?:\.[0-9]+)?)s\b")
BY_ID = "id"
BY_NAME = "test+check"
UPGRADE = ("before the upgrade", "after the upgrade")
RUNS = ("in BEFORE", "in AFTER")

# How a check's outcome changed from the first run to the second (CheckComparison.change).
SAME = "same"  # as expected in both
REGRESSED = "regressed"  # as expected before; not after, or not run after
FIXED = "fixed"  # not as expected before; as expected after
FAILING = "still failing"  # not as expected in either (or not run after)
NEW = "new"  # only after, as expected
NEW_FAILING = "new, failing"  # only after, not as expected


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
    check: str  # the human summary in the first run (the second, when it ran only there)
    expected: str
    before: str  # verdict in the first run ("" = not run)
    after: str
    figures: tuple[Figure, ...]
    check_after: str = ""  # the human summary in the second run
    when: tuple[str, str] = UPGRADE  # how the reasons name the two runs
    because: str = ""  # a negative control's reason (the second run's, else the first's)
    # a statistical check's categories in each run (share, interval, configured share), for charts
    observed_before: tuple[Mapping[str, Any], ...] = ()
    observed_after: tuple[Mapping[str, Any], ...] = ()

    @property
    def label(self) -> str:
        return self.id or f"{self.test} :: {self.check}"

    @property
    def ok(self) -> bool:
        return (
            bool(self.before) and self.after == self.expected and all(f.ok for f in self.figures if f.decides)
        )

    @property
    def change(self) -> str:
        """:data:`SAME`, :data:`REGRESSED`, :data:`FIXED`, :data:`FAILING`, :data:`NEW` or :data:`NEW_FAILING`."""
        figures_ok = all(f.ok for f in self.figures if f.decides)
        after_ok = self.after == self.expected and figures_ok
        if not self.before:
            return NEW if after_ok else NEW_FAILING
        if self.before == self.expected:
            return SAME if after_ok else REGRESSED
        return FIXED if after_ok else FAILING

    @property
    def reasons(self) -> list[str]:
        first, second = self.when
        out = []
        if not self.before:
            out.append(f"{self.label}: not run {first} (verdict {self.after} {second})")
        elif self.after != self.expected:
            seen = self.after or "not run"
            out.append(f"{self.label}: verdict {seen} {second}, expected {self.expected}")
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
            "change": self.change,
            "because": self.because,
            "figures": [f.as_json() for f in self.figures],
            "observed_before": [dict(o) for o in self.observed_before],
            "observed_after": [dict(o) for o in self.observed_after],
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
        """Why the second run does not hold as the upgrade check requires (every check as expected)."""
        out = list(self.problems)
        for c in self.checks:
            out += c.reasons
        return out

    @property
    def regressions(self) -> list[CheckComparison]:
        """Checks that held in the first run and not in the second."""
        return [c for c in self.checks if c.change == REGRESSED]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys((SAME, REGRESSED, FIXED, FAILING, NEW, NEW_FAILING), 0)
        for c in self.checks:
            out[c.change] += 1
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "matched_on": self.matched_on,
            "note": self.note,
            "paired": self.paired,
            "problems": list(self.problems),
            "changes": self.counts(),
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


def compare(
    before: Mapping[str, Any], after: Mapping[str, Any], *, when: tuple[str, str] = UPGRADE
) -> SuiteComparison:
    """Pair the records of two reports; ``when`` names the two runs in the reasons."""
    recs_a, recs_b = _records(before), _records(after)
    everything = recs_a + recs_b
    matched_on = BY_ID if everything and all(r.get("id") for r in everything) else BY_NAME
    problems: list[str] = []

    def index(recs: list[Mapping[str, Any]], which: str) -> dict[str, Mapping[str, Any]]:
        out: dict[str, Mapping[str, Any]] = {}
        for r in recs:
            k = key_of(r, matched_on)
            if k in out:
                problems.append(f"the suites' report {which} holds {k!r} twice: records cannot pair")
            out[k] = r
        return out

    a, b = index(recs_a, when[0]), index(recs_b, when[1])
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
                when=when,
                because=str((rb or {}).get("because") or (ra or {}).get("because") or ""),
                observed_before=tuple(observed_of(ra)) if ra else (),
                observed_after=tuple(observed_of(rb)) if rb else (),
            )
        )
    return SuiteComparison(tuple(out), matched_on, tuple(dict.fromkeys(problems)))


# --------------------------------------------------------------------------- versions


@dataclass(frozen=True)
class VersionChange:
    what: str  # "istiod", "envoy", "istio_agent", "backend", "istio release"
    before: str
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def as_json(self) -> dict[str, Any]:
        return {"what": self.what, "before": self.before, "after": self.after, "changed": self.changed}


def mesh_of(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """A report's ``mesh`` section (what ran the suites; empty in reports written before it existed)."""
    mesh = doc.get("mesh")
    return mesh if isinstance(mesh, Mapping) else {}


def versions(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[VersionChange]:
    """What each run's mesh ran (read from it), side by side; "" where a report does not say."""
    ma, mb = mesh_of(before), mesh_of(after)
    sa = version_summary(ma.get("readings") or [])
    sb = version_summary(mb.get("readings") or [])
    out = [
        VersionChange("backend", str(ma.get("backend", "")), str(mb.get("backend", ""))),
        VersionChange("istio release", str(ma.get("istio_release", "")), str(mb.get("istio_release", ""))),
    ]
    out += [VersionChange(k, ", ".join(sa[k]), ", ".join(sb[k])) for k in ("istiod", "envoy", "istio_agent")]
    return [v for v in out if v.before or v.after]


# --------------------------------------------------------------------------- files


def load(path: Path) -> dict[str, Any]:
    """A ``suites-report.json`` (or a directory holding one); UserError (exit 2) naming the file and
    the fix when it is missing, not JSON, or not a meshproof suites report."""
    if path.is_dir():
        path = path / "suites-report.json"
    if not path.is_file():
        raise UserError(
            f"{path}: no such file. Fix: name a suites-report.json that `meshproof test` wrote (in its state dir)"
        )
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not a meshproof report: not JSON ({first})") from e
    checks = doc.get("checks") if isinstance(doc, dict) else None
    fields = ("test", "check", "verdict", "expected")
    if (
        not isinstance(checks, list)
        or not checks
        or not all(isinstance(r, dict) and all(f in r for f in fields) for r in checks)
    ):
        raise UserError(
            f"{path}: not a meshproof suites report: field `checks` must be a non-empty list of records "
            f"with {', '.join(fields)}. Fix: name the suites-report.json of a `meshproof test` run"
        )
    return dict(doc)


@dataclass(frozen=True)
class RunComparison:
    """``meshproof report compare``: two reports, their records paired, their versions side by side."""

    before_path: str
    after_path: str
    suites: SuiteComparison
    versions: tuple[VersionChange, ...]

    @property
    def regressed(self) -> bool:
        return bool(self.suites.regressions or self.suites.problems)

    @property
    def verdict(self) -> str:
        return "REGRESSED" if self.regressed else "NO REGRESSION"

    @property
    def reasons(self) -> list[str]:
        out = list(self.suites.problems)
        for c in self.suites.regressions:
            seen = c.after or "not run"
            out.append(f"{c.label}: {c.before} -> {seen} (expected {c.expected})")
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": "meshproof-compare",
            "before": self.before_path,
            "after": self.after_path,
            "verdict": self.verdict,
            "regressions": self.reasons,
            "versions": [v.as_json() for v in self.versions],
            **self.suites.as_json(),
        }


def compare_files(before: Path, after: Path) -> RunComparison:
    """Load and compare two reports; UserError (exit 2) when they have no check in common."""
    a, b = load(before), load(after)
    suites = compare(a, b, when=RUNS)
    if suites.paired == 0:
        raise UserError(
            f"{before} and {after}: no check in common ({len(a['checks'])} and {len(b['checks'])} checks): "
            "reports of different suites. Fix: compare two runs of the same suites"
        )
    return RunComparison(str(before), str(after), suites, tuple(versions(a, b)))
