"""Verdict tables in Markdown (a CI job's summary page): ``meshproof report summary PATH...``.

Under each path (a file or a directory, searched recursively) it finds the runs' JSON reports:
suites (``suites-report.json``: one row per check), upgrade checks (``upgrade-report.json``: one
row per phase, then the reasons) and chaos runs (``summary.json`` beside a ``journal.json``: one
row per experiment). Reports that are not ours are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.report.suites import KIND as SUITES_KIND
from harness.report.suites import observed_text, sample_text, verdict_of


def cell(value: object) -> str:
    text = " ".join(str(value).split())
    return text.replace("|", "\\|")


def table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return lines


def suites_md(path: Path, doc: Mapping[str, Any]) -> list[str]:
    ok, line = verdict_of(doc)
    rows = []
    for r in doc.get("checks") or []:
        as_expected = r.get("verdict") == r.get("expected")
        verdict = str(r["verdict"]) + (" (negative control)" if r.get("expected") == "FAIL" else "")
        if not as_expected:
            verdict = f"**{r['verdict']} (expected {r['expected']})**"
        rows.append(
            [
                str(r["test"]).rsplit("/", 1)[-1],
                r["check"],
                verdict,
                r.get("requests", ""),
                sample_text(r),
                observed_text(r),
                r.get("confidence", ""),
                f"{float(r.get('wall_s', 0.0)):.2f}",
            ]
        )
    failed = [t for t in doc.get("tests") or [] if t.get("outcome") in ("failed", "error")]
    out = [f"### {'✅' if ok else '❌'} suites: `{path}`", "", line, ""]
    out += table(
        [
            "test",
            "check",
            "verdict",
            "requests",
            "N used / fixed-n",
            "observed [interval]",
            "confidence",
            "wall s",
        ],
        rows,
    )
    if failed:
        out += ["", "Failed tests:", ""]
        out += [f"- `{t['id']}`: {t.get('outcome')}" for t in failed]
    return [*out, ""]


def upgrade_md(path: Path, doc: Mapping[str, Any]) -> list[str]:
    passed = doc.get("verdict") == "PASS"
    totals = doc.get("totals") or {}
    out = [
        f"### {'✅' if passed else '❌'} upgrade {doc.get('from')} -> {doc.get('to')} ({doc.get('mode')}): `{path}`",
        "",
        f"{doc.get('verdict')}: {totals.get('failures', 0)} of {totals.get('requests', 0)} requests failed",
        "",
    ]
    out += table(
        ["phase", "requests", "failed", "error-seconds", "longest gap s"],
        [
            [
                p.get("phase"),
                p.get("requests"),
                p.get("failures"),
                p.get("error_seconds"),
                p.get("longest_gap_s"),
            ]
            for p in doc.get("phases") or []
        ],
    )
    out += [f"- {r}" for r in doc.get("reasons") or []]
    return [*out, ""]


def chaos_md(rows: Sequence[tuple[Path, Mapping[str, Any]]]) -> list[str]:
    def held(runs: Iterable[Mapping[str, Any]]) -> str:
        from harness.report.runs import activity_ok

        runs = list(runs)
        return f"{sum(1 for r in runs if activity_ok(r))}/{len(runs)}"

    out = ["### chaos runs", ""]
    out += table(
        [
            "experiment",
            "verdict",
            "hypothesis before",
            "method",
            "hypothesis after",
            "rollbacks",
            "residue",
            "run",
        ],
        [
            [
                s.get("title") or s.get("experiment"),
                {0: "✅ PASSED", 130: "INTERRUPTED"}.get(int(s.get("exit_code", 1)), "❌ FAILED"),
                held(s.get("before") or []),
                held(s.get("during") or []),
                held(s.get("after") or []),
                held(s.get("rollbacks") or []),
                "clean" if (s.get("residue") or {}).get("clean") else "RESIDUE",
                f"`{p.parent}`",
            ]
            for p, s in rows
        ],
    )
    return [*out, ""]


def _load(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def summary(paths: Sequence[Path]) -> str:
    """The Markdown of every report under ``paths``; UserError when there is none."""
    files: list[Path] = []
    for p in paths:
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files += sorted(
                f
                for name in ("suites-report.json", "upgrade-report.json", "summary.json")
                for f in p.rglob(name)
            )
        else:
            raise UserError(
                f"{p}: no such file or directory. Fix: name a report file or a directory of reports"
            )
    lines: list[str] = []
    chaos: list[tuple[Path, Mapping[str, Any]]] = []
    for f in dict.fromkeys(files):
        doc = _load(f)
        if doc is None:
            continue
        if doc.get("kind") == SUITES_KIND or (
            f.name == "suites-report.json" and isinstance(doc.get("checks"), list)
        ):
            lines += suites_md(f, doc)
        elif f.name == "upgrade-report.json" and "phases" in doc:
            lines += upgrade_md(f, doc)
        elif f.name == "summary.json" and (f.parent / "journal.json").exists() and "exit_code" in doc:
            chaos.append((f, doc))
    if chaos:
        lines += chaos_md(chaos)
    if not lines:
        raise UserError(
            "no meshproof report (suites-report.json, upgrade-report.json, a chaos run's summary.json) under "
            + ", ".join(str(p) for p in paths)
        )
    return "\n".join(lines)
