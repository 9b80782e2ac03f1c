"""One record per check: what was sent, what was decided, with what confidence, how long it took.

The suites' conftest keeps a :class:`Recorder` for the session, prints :meth:`Recorder.table`
in the terminal summary and writes :meth:`Recorder.to_json` to ``suites-report.json``.
A negative control's record expects ``FAIL``: the check failing *is* the control passing, and
its ``because`` says the reason it had to fail (asserted by the test).

``observed`` holds, for a statistical check, each category's configured share, observed share and
confidence interval (read from the check's verdict), for the HTML report's table and chart.
The document also carries the run's ``tests`` (each pytest test's outcome, its load chart and
diagnostics) and ``mesh`` (backend, release, traffic API, versions read from the running proxies
and istiod): :mod:`harness.report` renders the HTML page, the conformance-style summary and
``report compare`` from it.

Each record's ``id`` is ``<test node id>::<check key>`` (:attr:`CheckResult.identity`: the check's
kind and design parameters, never N or observed values), unique within a run and the same in
every run of the same check: reports of two runs are matched on it (upgrade-check, bench_suites,
soak_busy). A check recorded twice by one test gets ``#2``, ``#3``... in order.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.report.suites import KIND  # what a suites-report.json says it is

if TYPE_CHECKING:  # the checks load scipy: a pytest-xdist controller merges records without it
    from harness.traffic.checks import CheckResult

_ALPHA = re.compile(r"alpha=([0-9.eE+-]+)")


@dataclass(frozen=True)
class Record:
    id: str  # stable identity across runs: "<test node id>::<check key>"
    test: str  # pytest node id
    check: str  # the check's name
    requests: int  # requests sent for this check (including convergence/gating traffic)
    verdict: str  # PASS or FAIL: what the check decided
    expected: str  # PASS, or FAIL for a negative control
    confidence: str  # the design behind the verdict
    wall_s: float  # seconds spent on the check (traffic + waiting)
    notes: str = ""  # measurements worth reading (propagation time, time to ejection, ...)
    used_n: int = 0  # a sequential check: requests its verdict used (0: a fixed-n check)
    fixed_n: int = 0  # a sequential check: the fixed-n sample size it replaced
    detail: str = field(default="", repr=False)  # observed-versus-expected table
    because: str = ""  # a negative control: the reason the check had to fail (asserted)
    # per category: {"name", "expected", "share", "low", "high", "n", "of"} (shares in [0, 1])
    observed: tuple[dict[str, Any], ...] = ()

    @property
    def as_expected(self) -> bool:
        return self.verdict == self.expected


class Recorder:
    """Thread-safe list of :class:`Record` for one session."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self._tests: dict[str, dict[str, Any]] = {}
        self._meshes: list[dict[str, Any]] = []

    def add(self, record: Record) -> Record:
        with self._lock:
            taken = {r.id for r in self._records}
            if record.id in taken:
                record = replace(record, id=_next_free(record.id, taken))
            self._records.append(record)
        return record

    def record(
        self,
        test: str,
        check: CheckResult,
        *,
        requests: int,
        confidence: str,
        wall_s: float,
        expect_pass: bool = True,
        notes: str = "",
        used_n: int = 0,
        fixed_n: int = 0,
        because: str = "",
    ) -> Record:
        return self.add(
            Record(
                id=f"{test}::{check.identity}",
                test=test,
                check=check.name,
                requests=requests,
                verdict=check.verdict,
                expected="PASS" if expect_pass else "FAIL",
                confidence=confidence,
                wall_s=round(wall_s, 3),
                notes=notes,
                used_n=used_n,
                fixed_n=fixed_n,
                detail=check.detail,
                because=because,
                observed=observed_of(check),
            )
        )

    def add_test(self, test: dict[str, Any]) -> None:
        """One pytest test's outcome (``id``, ``outcome``, ``wall_s``, ``message``, properties)."""
        with self._lock:
            self._tests[str(test["id"])] = test

    def add_mesh(self, mesh: dict[str, Any] | None) -> None:
        """What a mesh of the run was (one per pytest-xdist worker): backend, versions read from it."""
        if not mesh:
            return
        with self._lock:
            if mesh not in self._meshes:
                self._meshes.append(mesh)

    def extend(self, records: list[Record]) -> None:
        for record in records:
            self.add(record)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> list[Record]:
        """The records of :meth:`to_json` (e.g. a pytest-xdist worker's, merged by the controller)."""
        return [
            Record(**{"id": f"{r['test']}::{r['check']}", **r, "observed": tuple(r.get("observed") or ())})
            for r in data.get("checks", [])
        ]

    @property
    def records(self) -> tuple[Record, ...]:
        with self._lock:
            return tuple(self._records)

    def table(self) -> str:
        rows = [("test", "check", "N", "verdict", "confidence", "wall s", "notes")]
        sequential = [r for r in self.records if r.fixed_n]
        for r in self.records:
            verdict = r.verdict if r.as_expected else f"{r.verdict} (expected {r.expected})"
            if r.expected == "FAIL" and r.as_expected:
                verdict += " (negative control)"
            rows.append(
                (
                    r.test.split("::", 1)[-1],
                    _clip(r.check, 48),
                    str(r.requests),
                    verdict,
                    r.confidence,
                    f"{r.wall_s:.2f}",
                    (f"sequential: verdict on {r.used_n} of fixed-n {r.fixed_n}; " if r.fixed_n else "")
                    + r.notes,
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        lines = []
        for row in rows:
            cells = [
                row[i].ljust(widths[i]) if i != 2 else row[i].rjust(widths[i]) for i in range(len(widths))
            ]
            lines.append("  ".join(cells) + "  " + row[-1])
        total_n = sum(r.requests for r in self.records)
        total_s = sum(r.wall_s for r in self.records)
        lines.append(f"{len(self.records)} checks, {total_n} requests, {total_s:.1f}s in checks")
        if sequential:
            used = sum(r.used_n for r in sequential)
            fixed = sum(r.fixed_n for r in sequential)
            lines.append(
                f"{len(sequential)} sequential checks decided on {used} requests where fixed-n checks "
                f"of the same alpha and power would have used {fixed} ({used / fixed:.0%})"
            )
        alphas = [
            float(m.group(1))
            for r in self.records
            if r.expected == "PASS" and (m := _ALPHA.match(r.confidence))
        ]
        if alphas:
            lines.append(
                f"{len(alphas)} statistical checks: a correct mesh fails at least one of them with probability "
                f"<= {sum(alphas):.2g} (sum of their alphas); the others are exact counts or deterministic bounds"
            )
        return "\n".join(lines)

    @property
    def tests(self) -> tuple[dict[str, Any], ...]:
        with self._lock:
            return tuple(self._tests.values())

    def mesh(self) -> dict[str, Any]:
        """The run's mesh: backend, release and traffic API (the first mesh's), and every mesh's
        version readings (with pytest-xdist, one mesh per worker)."""
        with self._lock:
            meshes = list(self._meshes)
        if not meshes:
            return {}
        readings = [r for m in meshes for r in m.get("readings") or []]
        return {**{k: v for k, v in meshes[0].items() if k != "readings"}, "readings": readings}

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "mesh": self.mesh(),
            "checks": [asdict(r) for r in self.records],
            "tests": list(self.tests),
        }

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path


def observed_of(check: CheckResult) -> tuple[dict[str, Any], ...]:
    """Each category's configured share, observed share and interval from a statistical check's
    verdict (a split's or share's categories, a binomial proportion), through ``all_of``'s parts;
    empty for count checks (their ``detail`` says what was observed)."""
    from harness.traffic.checks import CheckResult

    out: list[dict[str, Any]] = []

    def walk(evidence: Any) -> None:
        verdict = evidence.get("verdict")
        total = int(getattr(verdict, "n", 0) or 0)
        out.extend(
            {
                "name": str(c.name),
                "expected": float(c.expected),
                "share": float(c.observed_share),
                "low": float(c.interval.low),
                "high": float(c.interval.high),
                "n": int(c.observed),
                "of": int(total),
            }
            for c in getattr(verdict, "categories", ()) or ()
        )
        if verdict is not None and hasattr(verdict, "successes") and hasattr(verdict, "trials"):
            trials = int(verdict.trials)
            out.append(
                {
                    "name": "share",
                    "expected": float(verdict.expected),
                    "share": verdict.successes / trials if trials else 0.0,
                    "low": float(verdict.interval.low),
                    "high": float(verdict.interval.high),
                    "n": int(verdict.successes),
                    "of": trials,
                }
            )
        for part in evidence.get("checks", ()) or ():
            if isinstance(part, CheckResult):
                walk(part.evidence)

    walk(check.evidence)
    return tuple(out)


def _next_free(record_id: str, taken: set[str]) -> str:
    n = 2
    while f"{record_id}#{n}" in taken:
        n += 1
    return f"{record_id}#{n}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
