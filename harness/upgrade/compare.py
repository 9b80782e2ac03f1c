"""The suites' figures before vs after an upgrade, and the thresholds that decide (pure).

Input is two ``suites-report.json`` documents (one record per check: verdict, expected verdict,
requests, wall time, notes with measured figures). Every check must reach its expected verdict
after the upgrade as before (a negative control must still fail). The statistical properties
(a split within its interval, an abort rate, an authorization matrix) are decided by the checks
themselves, with their stated false-failure rate; this module adds the cross-run thresholds:

- ``time to ejection``: after <= before + 1 s (Envoy's outlier interval dominates it);
- propagation (``ACK``) times, request counts and wall times are shown, not decided: on a
  shared machine they measure the machine as much as the mesh, and a verdict must not flip on
  slowness.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

EJECTION_SLACK_S = 1.0
_FIGURE = re.compile(r"([A-Za-z][A-Za-z+ ]*?)\s+([0-9]+(?:\.[0-9]+)?)s\b")


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
    test: str
    check: str
    expected: str
    before: str  # verdict before ("" = not run)
    after: str
    figures: tuple[Figure, ...]

    @property
    def ok(self) -> bool:
        return self.after == self.expected and all(f.ok for f in self.figures if f.decides)

    @property
    def reasons(self) -> list[str]:
        out = []
        if self.after != self.expected:
            seen = self.after or "not run"
            out.append(f"{self.check}: verdict {seen} after the upgrade, expected {self.expected}")
        out += [
            f"{self.check}: {f.name} {f.before} -> {f.after} breaks '{f.threshold}'"
            for f in self.figures
            if f.decides and not f.ok
        ]
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "check": self.check,
            "expected": self.expected,
            "before": self.before,
            "after": self.after,
            "ok": self.ok,
            "figures": [f.as_json() for f in self.figures],
        }


def figures(notes: str) -> dict[str, float]:
    """``"time to ejection 1.23s; DR ACK 0.40s"`` -> ``{"time to ejection": 1.23, "DR ACK": 0.4}``."""
    return {m.group(1).strip(): float(m.group(2)) for m in _FIGURE.finditer(notes or "")}


def _figure(name: str, before: float | None, after: float | None) -> Figure:
    if name == "time to ejection":
        rule = f"after <= before + {EJECTION_SLACK_S:g} s"
        ok = before is not None and after is not None and after <= before + EJECTION_SLACK_S
        return Figure(name, before, after, rule, True, ok)
    return Figure(name, before, after, "", False, True)


def compare(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[CheckComparison]:
    def index(doc: Mapping[str, Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
        return {(str(r["test"]), str(r["check"])): r for r in doc.get("checks", [])}

    a, b = index(before), index(after)
    out = []
    for key in list(a) + [k for k in b if k not in a]:
        ra, rb = a.get(key), b.get(key)
        ref = ra or rb
        assert ref is not None
        fa = figures(str(ra.get("notes", ""))) if ra else {}
        fb = figures(str(rb.get("notes", ""))) if rb else {}
        figs = [_figure(n, fa.get(n), fb.get(n)) for n in list(fa) + [n for n in fb if n not in fa]]
        figs.append(
            Figure(
                "requests",
                float(ra["requests"]) if ra else None,
                float(rb["requests"]) if rb else None,
                "",
                False,
                True,
            )
        )
        figs.append(
            Figure(
                "wall s",
                float(ra["wall_s"]) if ra else None,
                float(rb["wall_s"]) if rb else None,
                "",
                False,
                True,
            )
        )
        out.append(
            CheckComparison(
                test=key[0],
                check=key[1],
                expected=str(ref.get("expected", "PASS")),
                before=str(ra["verdict"]) if ra else "",
                after=str(rb["verdict"]) if rb else "",
                figures=tuple(figs),
            )
        )
    return out
