"""A suites run's reports, from its ``suites-report.json``: the HTML page (``suites-report.html``),
the conformance-style summary (``meshproof-report.yaml``, :mod:`.conformance`), and each check as a
JUnit property of its test (pytest writes the JUnit XML).

The page: a verdict banner; the mesh (backend, release, traffic API, versions read from its
istiod and proxies); the verdict table (check, requests, N used and the fixed-n it replaced,
observed value with its interval, confidence, wall time), each row's evidence folded under it,
and under a failed check the excerpts of its test's diagnostics (config_dump, proxy stats, logs);
the negative controls with the reason each had to fail; charts (observed shares with their
intervals, each under-load test's load chart); every test's outcome.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness import timeline
from harness.report import conformance, html
from harness.report.evidence import diagnostics_dir, excerpts
from harness.report.html import Markup, details, join, pre, tag, verdict_badge
from harness.report.svg import ShareRow, shares_chart
from harness.report.versions import summary as version_summary

KIND = "meshproof-suites"
HTML_NAME = "suites-report.html"
YAML_NAME = "meshproof-report.yaml"
PROPERTY = "meshproof.check"


# --------------------------------------------------------------------------- record text


_CI_ROW = re.compile(r"^\s*(\S+)\s+([0-9.]+)\s+([0-9]+)\s+([0-9.]+)\s+\[\s*([0-9.]+),\s*([0-9.]+)\]\s*$")


def observed_of(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A record's categories (share, interval, configured share): its ``observed`` field, or for a
    report written before records carried it, the rows of its detail's interval table."""
    if record.get("observed"):
        return list(record["observed"])
    out: list[Mapping[str, Any]] = []
    for line in str(record.get("detail") or "").splitlines():
        m = _CI_ROW.match(line)
        if m:
            name, expected, n, share, low, high = m.groups()
            out.append(
                {
                    "name": name,
                    "expected": float(expected) / 100,
                    "share": float(share) / 100,
                    "low": float(low) / 100,
                    "high": float(high) / 100,
                    "n": int(n),
                }
            )
    return out


def observed_text(record: Mapping[str, Any]) -> str:
    """``v1 90.9% [84.1, 95.6] (configured 90%)`` per category; else the first line of the detail
    that states something (not a heading ending in a colon)."""
    observed = observed_of(record)
    if observed:
        return "; ".join(
            f"{o['name']} {o['share'] * 100:.1f}% [{o['low'] * 100:.1f}, {o['high'] * 100:.1f}] "
            f"(configured {o['expected'] * 100:.4g}%)"
            for o in observed
        )
    lines = [x.strip(" -") for x in str(record.get("detail") or "").strip().splitlines()]
    first = next((x for x in lines if x and not x.endswith(":")), "")
    return first if len(first) <= 120 else first[:119] + "…"


def sample_text(record: Mapping[str, Any]) -> str:
    if record.get("fixed_n"):
        return f"{record.get('used_n', 0)} / {record['fixed_n']}"
    return ""


def property_of(record: Mapping[str, Any]) -> tuple[str, str]:
    """A check as one JUnit property: name ``meshproof.check <id>``, value its verdict and evidence."""
    parts = [f"verdict {record['verdict']} (expected {record['expected']})", f"requests {record['requests']}"]
    if record.get("fixed_n"):
        parts.append(f"sequential: verdict on {record.get('used_n', 0)} of fixed-n {record['fixed_n']}")
    parts.append(f"observed {observed_text(record)}")
    parts.append(f"confidence {record['confidence']}")
    parts.append(f"wall {float(record.get('wall_s', 0.0)):.2f} s")
    if record.get("because"):
        parts.append(f"must fail because {record['because']}")
    if record.get("notes"):
        parts.append(f"notes {record['notes']}")
    if record.get("detail"):
        parts.append(f"detail:\n{record['detail']}")
    return f"{PROPERTY} {record['id']}", "; ".join(parts)


# --------------------------------------------------------------------------- tests


def fold_test_report(previous: Mapping[str, Any] | None, report: Any) -> dict[str, Any]:
    """One test's entry from its setup/call/teardown reports (a pytest ``TestReport``), folded in order.

    Besides outcome, wall time and message: ``worker`` (the pytest-xdist worker, "" without),
    ``phases`` (per phase its wall-clock start and stop, and the worker's CPU seconds at its end)
    and ``spans`` (what the harness waited
    on or sent meanwhile: ``[kind, what, start, end]``, see :mod:`harness.timeline`), for
    ``bench/bench_cpu.py``'s account of where a run waits."""
    t: dict[str, Any] = (
        dict(previous)
        if previous
        else {
            "id": report.nodeid,
            "outcome": "passed",
            "wall_s": 0.0,
            "message": "",
            "properties": {},
        }
    )
    t["wall_s"] = round(float(t["wall_s"]) + float(getattr(report, "duration", 0.0) or 0.0), 3)
    when = report.when
    _fold_timeline(t, report)
    if report.skipped and when in ("setup", "call"):
        t["outcome"] = "skipped"
        longrepr = report.longrepr
        t["message"] = str(longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr)
    elif report.failed:
        if when == "call":
            t["outcome"] = "failed"
        elif t["outcome"] != "failed":
            t["outcome"] = "error"
        text = _failure_text(str(getattr(report, "longreprtext", "") or ""))
        t["message"] = (t["message"] + "\n" if t["message"] else "") + f"[{when}] " + _tail(text, 4000)
    if when == "teardown":
        for name, value in getattr(report, "user_properties", ()) or ():
            if name in ("load_chart", "diagnostics"):
                t["properties"][name] = str(value)
    return t


def _fold_timeline(t: dict[str, Any], report: Any) -> None:
    start, stop = getattr(report, "start", None), getattr(report, "stop", None)
    if isinstance(start, int | float) and isinstance(stop, int | float):
        phase = [round(start, 3), round(stop, 3)]
        cpu = getattr(report, timeline.CPU_ATTR, None)
        if isinstance(cpu, int | float):
            phase.append(round(cpu, 3))
        t["phases"] = {**t.get("phases", {}), report.when: phase}
    worker = getattr(report, timeline.WORKER_ATTR, None)
    if worker is not None:
        t["worker"] = str(worker)
    spans = getattr(report, timeline.SPANS_ATTR, None)
    if spans:
        t["spans"] = [
            *t.get("spans", []),
            *([str(kind), str(what), round(float(a), 3), round(float(b), 3)] for kind, what, a, b in spans),
        ]


def _failure_text(longrepr: str) -> str:
    """pytest's ``E`` lines (the error and what it said) and the location; the whole text when it has none."""
    lines = longrepr.splitlines()
    errors = [line[1:].strip() for line in lines if line.startswith("E ")]
    if not errors:
        return longrepr
    where = next((line for line in reversed(lines) if line.strip()), "")
    return "\n".join([*errors, where])


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "…" + text[-limit:]


# --------------------------------------------------------------------------- page


def _short(test_id: str) -> str:
    return test_id.rsplit("/", 1)[-1]


def _as_expected(r: Mapping[str, Any]) -> bool:
    return bool(r.get("verdict") == r.get("expected"))


def verdict_of(doc: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether the run holds (every check as expected, no test failed), and the line that says so."""
    checks = doc.get("checks") or []
    tests = doc.get("tests") or []
    bad = [r for r in checks if not _as_expected(r)]
    failed = [t for t in tests if t.get("outcome") in ("failed", "error")]
    negatives = sum(1 for r in checks if r.get("expected") == "FAIL")
    skipped = sum(1 for t in tests if t.get("outcome") == "skipped")
    if not bad and not failed:
        line = f"PASSED: {len(checks)} of {len(checks)} checks reached their expected verdict"
        if negatives:
            line += f" ({negatives} negative controls failed, each for its stated reason)"
        if skipped:
            line += f"; {skipped} tests skipped"
        return True, line
    parts = []
    if bad:
        parts.append(f"{len(bad)} of {len(checks)} checks did not reach their expected verdict")
    if failed:
        parts.append(f"{len(failed)} of {len(tests)} tests failed")
    return False, "FAILED: " + "; ".join(parts)


def mesh_facts(mesh: Mapping[str, Any]) -> dict[str, object]:
    s = version_summary(mesh.get("readings") or [])
    api = mesh.get("traffic_api") or {}
    kinds = ", ".join(f"{k} x{v}" for k, v in (api.get("kinds") or {}).items())
    return {
        "backend": mesh.get("backend", "not recorded"),
        "Istio release (pinned)": mesh.get("istio_release", ""),
        "istiod (read from it)": ", ".join(s["istiod"]) or "not read",
        "Envoy (read from the proxies)": ", ".join(s["envoy"]) or "not read",
        "Istio agent (read from the proxies)": ", ".join(s["istio_agent"]),
        "proxies read": s["proxies"] or "",
        "traffic API": f"{api.get('api', 'not recorded')}" + (f" ({kinds})" if kinds else ""),
        "could not read": "; ".join(s["unreadable"][:5]) + (" …" if len(s["unreadable"]) > 5 else ""),
    }


def versions_section(mesh: Mapping[str, Any]) -> Markup:
    parts: list[Markup] = []
    for reading in mesh.get("readings") or []:
        rows = [
            [f"istiod {rev}", c.get("istio_version") or c.get("error", ""), c.get("version_string", "")]
            for rev, c in (reading.get("istiod") or {}).items()
        ]
        rows += [
            [name, p.get("envoy_version") or p.get("error", ""), p.get("istio_version", "")]
            for name, p in (reading.get("proxies") or {}).items()
        ]
        parts.append(
            details(
                f"read {reading.get('when', '')}: {len(reading.get('proxies') or {})} proxies, "
                f"{len(reading.get('istiod') or {})} istiod",
                html.table(["component", "version (Envoy build / istiod)", "Istio (agent / /version)"], rows),
            )
        )
    return (
        join(parts) if parts else tag("p", "no versions were read (the run did not start or attach a mesh)")
    )


def _check_rows(records: Sequence[Mapping[str, Any]], evidence: Mapping[str, Markup]) -> list[Markup]:
    rows: list[Markup] = []
    module = None
    for i, r in enumerate(records):
        ok = _as_expected(r)
        path, _, name = str(r["test"]).partition("::")
        if path != module:
            module = path
            rows.append(tag("tr", tag("td", path.rsplit("/", 1)[-1], colspan=7), class_="group"))
        rows.append(
            tag(
                "tr",
                tag("td", tag("div", name, class_="testname"), r["check"]),
                tag("td", verdict_badge(str(r["verdict"]), str(r["expected"]))),
                tag("td", r["requests"], class_="num"),
                tag("td", sample_text(r), class_="num"),
                tag("td", _observed_cell(r)),
                tag("td", r["confidence"]),
                tag("td", f"{float(r.get('wall_s', 0.0)):.2f}", class_="num"),
                class_=None if ok else "bad",
                id=f"check-{i}",
            )
        )
        body: list[Markup] = []
        if r.get("because"):
            body.append(tag("p", tag("b", "must fail because: "), r["because"]))
        if r.get("notes"):
            body.append(tag("p", tag("b", "notes: "), r["notes"]))
        body.append(pre(str(r.get("detail") or "(no detail)")))
        body.append(tag("p", "id: ", tag("code", r.get("id", "")), class_="muted"))
        if not ok and str(r["test"]) in evidence:
            body.append(tag("h3", "failure evidence of this test"))
            body.append(evidence[str(r["test"])])
        label = "evidence" if ok else "evidence (this check did not reach its expected verdict)"
        rows.append(tag("tr", tag("td", details(label, *body, class_="evidence"), colspan=7), class_="more"))
    return rows


def _observed_cell(r: Mapping[str, Any]) -> Markup:
    observed = observed_of(r)
    if not observed:
        return join(observed_text(r))
    return join(
        [
            tag(
                "div",
                f"{o['name']} {o['share'] * 100:.1f}% [{o['low'] * 100:.1f}, {o['high'] * 100:.1f}]",
                class_="obs",
            )
            for o in observed
        ]
    )


def _test_evidence(tests: Sequence[Mapping[str, Any]]) -> dict[str, Markup]:
    out: dict[str, Markup] = {}
    for t in tests:
        if t.get("outcome") not in ("failed", "error"):
            continue
        parts = [pre(str(t.get("message") or "(no message)"), limit=6000)]
        diag = (t.get("properties") or {}).get("diagnostics", "")
        where = diagnostics_dir(diag)
        if where is not None:
            parts.append(excerpts(where))
        elif diag:
            parts.append(tag("p", f"diagnostics: {diag}", class_="muted"))
        out[str(t["id"])] = join(parts)
    return out


def share_rows(records: Sequence[Mapping[str, Any]]) -> list[ShareRow]:
    return [
        ShareRow(
            label=f"{_short(str(r['test'])).split('::', 1)[-1]}: {r['check']}",
            category=str(o["name"]),
            expected=float(o["expected"]),
            share=float(o["share"]),
            low=float(o["low"]),
            high=float(o["high"]),
            negative=r.get("expected") == "FAIL",
            as_expected=_as_expected(r),
        )
        for r in records
        for o in observed_of(r)
    ]


def suites_page(doc: Mapping[str, Any], *, title: str = "meshproof suites report") -> str:
    # grouped by suite file, in the order they were recorded within it (workers interleave files)
    records: list[Mapping[str, Any]] = sorted(
        doc.get("checks") or [], key=lambda r: str(r["test"]).split("::")[0]
    )
    tests: list[Mapping[str, Any]] = sorted(doc.get("tests") or [], key=lambda t: str(t["id"]).split("::")[0])
    mesh: Mapping[str, Any] = doc.get("mesh") or {}
    ok, line = verdict_of(doc)
    evidence = _test_evidence(tests)
    outcomes = {
        k: sum(1 for t in tests if t.get("outcome") == k) for k in ("passed", "failed", "error", "skipped")
    }
    negatives = [r for r in records if r.get("expected") == "FAIL"]
    sequential = [r for r in records if r.get("fixed_n")]
    body: list[object] = [
        html.counts(
            {
                "checks": len(records),
                "as expected": sum(1 for r in records if _as_expected(r)),
                "not as expected": sum(1 for r in records if not _as_expected(r)),
                "negative controls": len(negatives),
                "tests passed": outcomes["passed"],
                "tests failed": outcomes["failed"] + outcomes["error"],
                "tests skipped": outcomes["skipped"],
                "requests": sum(int(r.get("requests", 0)) for r in records),
            }
        ),
        html.dl(
            {
                **mesh_facts(mesh),
                "wall time in checks": f"{sum(float(r.get('wall_s', 0.0)) for r in records):.1f} s",
                "sequential checks": (
                    f"{len(sequential)} decided on {sum(int(r.get('used_n', 0)) for r in sequential)} requests "
                    f"where fixed-n checks of the same alpha and power would have used "
                    f"{sum(int(r['fixed_n']) for r in sequential)}"
                    if sequential
                    else ""
                ),
            }
        ),
    ]
    bad = [(i, r) for i, r in enumerate(records) if not _as_expected(r)]
    failed_tests = [t for t in tests if t.get("outcome") in ("failed", "error")]
    if bad or failed_tests:
        items = [
            tag(
                "li",
                tag("a", f"{_short(str(r['test']))} · {r['check']}", href=f"#check-{i}"),
                f": {r['verdict']}, expected {r['expected']}",
            )
            for i, r in bad
        ]
        items += [
            tag("li", tag("a", _short(str(t["id"])), href=f"#test-{j}"), f": {t['outcome']}")
            for j, t in enumerate(tests)
            if t.get("outcome") in ("failed", "error")
        ]
        body += [tag("h2", "Failures"), tag("ul", items, class_="reasons")]
    body += [
        tag("h2", "Verdicts", id="verdicts"),
        html.table(
            [
                "test · check",
                "verdict",
                "requests",
                "N used / fixed-n",
                "observed [interval]",
                "confidence",
                "wall s",
            ],
            _check_rows(records, evidence),
            class_="verdicts",
        )
        if records
        else tag("p", "no check was recorded"),
    ]
    if negatives:
        body += [
            tag("h2", "Negative controls", id="negative-controls"),
            tag(
                "p",
                "Each applies a deliberately broken configuration or fault; its check must fail, for the "
                "stated reason (asserted by the test). A control whose check passed proves the check cannot "
                "tell broken from correct.",
                class_="muted",
            ),
            html.table(
                ["test", "check", "verdict", "the reason it had to fail"],
                [
                    [
                        _short(str(r["test"])),
                        r["check"],
                        verdict_badge(str(r["verdict"]), "FAIL"),
                        r.get("because") or "(not stated)",
                    ]
                    for r in negatives
                ],
                class_="negatives",
            ),
        ]
    rows = share_rows(records)
    charts = [t for t in tests if (t.get("properties") or {}).get("load_chart")]
    if rows or charts:
        body.append(tag("h2", "Charts", id="charts"))
    if rows:
        body.append(
            tag("figure", tag("figcaption", "statistical checks: observed shares"), shares_chart(rows))
        )
    for t in charts:
        body.append(
            tag(
                "figure",
                tag(
                    "figcaption",
                    f"load during {_short(str(t['id']))}: requests/s, errors and p95 latency, phases shaded",
                ),
                html.png(t["properties"]["load_chart"], f"load chart of {t['id']}"),
            )
        )
    if tests:
        test_rows = []
        for j, t in enumerate(tests):
            state = str(t.get("outcome"))
            badge = tag(
                "span", state, class_="badge " + {"passed": "pass", "skipped": "miss"}.get(state, "fail")
            )
            message = ""
            if state == "skipped":
                message = str(t.get("message", ""))
            elif state in ("failed", "error"):
                message = details("failure and diagnostics", evidence.get(str(t["id"]), ""))
            test_rows.append(
                tag(
                    "tr",
                    tag("td", _short(str(t["id"]))),
                    tag("td", badge),
                    tag("td", f"{float(t.get('wall_s', 0.0)):.1f}", class_="num"),
                    tag("td", message),
                    class_="bad" if state in ("failed", "error") else None,
                    id=f"test-{j}",
                )
            )
        body += [
            tag("h2", "Tests", id="tests"),
            html.table(
                ["test", "outcome", "wall s", "failure, diagnostics, skip reason"], test_rows, class_="tests"
            ),
        ]
    body += [tag("h2", "Versions read from the mesh", id="versions"), versions_section(mesh)]
    return html.page(title, html.banner(title, line, "pass" if ok else "fail"), *body)


# --------------------------------------------------------------------------- files


def write_reports(json_path: Path) -> list[tuple[str, Path]]:
    """Beside ``suites-report.json``: the HTML page and ``meshproof-report.yaml``; what was written."""
    doc = json.loads(json_path.read_text())
    page = html.write(json_path.with_name(HTML_NAME), suites_page(doc))
    summary = conformance.write(json_path.with_name(YAML_NAME), doc)
    return [("report", json_path), ("html", page), ("conformance", summary)]
