"""Pages and JUnit of the other run kinds, each from the JSON the run writes:

- ``meshproof load``: the report per phase and its chart (``load.html`` beside ``load.json``);
- ``meshproof chaos run``: the hypothesis before/during/after, what was injected and rolled back on
  a timeline, the no-residue check (``report.html`` and ``junit.xml`` beside ``summary.json``);
- ``meshproof upgrade-check``: phases with their failures and chart, versions read before and
  after, the suites compared, config differences (``upgrade-report.html``/``upgrade-junit.xml``);
- ``meshproof report compare``: verdict changes, figures, versions (``compare.html``).
"""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.report import html, junit
from harness.report.html import Markup, details, pre, tag, verdict_badge
from harness.report.suites import mesh_facts, versions_section
from harness.report.svg import ShareRow, Span, shares_chart, timeline_chart

# --------------------------------------------------------------------------- load


def load_page(doc: Mapping[str, Any], chart: str | Path | None, mesh: Mapping[str, Any] | None = None) -> str:
    """A ``LoadReport.to_json()`` document and its chart."""
    title = "meshproof load report"
    line = (
        f"{doc['requests']} requests, {doc['failures']} failed ({100 * float(doc['error_ratio']):.2f}%), "
        f"{float(doc['rps']):.0f} req/s over {float(doc['duration_s']):.1f} s; {doc['users']} users ({doc['shape']})"
    )
    lat = doc.get("latency_ms") or {}
    rows = []
    for p in doc.get("phases") or []:
        pl = p.get("latency_ms") or {}
        rows.append(
            [
                p["name"],
                f"{p['start_s']:.1f}-{p['end_s']:.1f}",
                tag("td", p["requests"], class_="num"),
                tag("td", f"{p['rps']:.1f}", class_="num"),
                tag("td", f"{100 * float(p['error_ratio']):.2f}%", class_="num"),
                ", ".join(f"{k}: {v}" for k, v in (p.get("by_status") or {}).items()),
                tag("td", _ms(_pct(pl, "p50")), class_="num"),
                tag("td", _ms(_pct(pl, "p95")), class_="num"),
                tag("td", _ms(_pct(pl, "p99")), class_="num"),
            ]
        )
    body: list[object] = [
        html.counts(
            {
                "requests": doc["requests"],
                "failed": doc["failures"],
                "req/s": f"{float(doc['rps']):.0f}",
                "p95 ms": _ms(_pct(lat, "p95")),
                "users": doc["users"],
            }
        ),
        html.dl(
            {
                **(mesh_facts(mesh) if mesh else {}),
                "user class": doc.get("user_class", ""),
                "Locust processes": doc.get("processes", ""),
                "request ids start with": doc.get("request_id_prefix", ""),
                "Locust's own count": (doc.get("locust") or {}).get("requests", ""),
            }
        ),
        tag("h2", "Chart"),
        tag(
            "figure",
            tag("figcaption", "requests/s, error ratio and p95 latency over time, phases shaded"),
            html.png(chart, "load chart"),
        ),
        tag("h2", "Phases"),
        html.table(
            ["phase", "seconds", "requests", "req/s", "errors", "status", "p50 ms", "p95 ms", "p99 ms"], rows
        ),
    ]
    errors = doc.get("errors") or {}
    if errors:
        body += [tag("h2", "Errors"), html.table(["count", "error"], [[n, m] for m, n in errors.items()])]
    if mesh:
        body += [tag("h2", "Versions read from the mesh"), versions_section(mesh)]
    state = "fail" if doc["failures"] else "pass"
    return html.page(title, html.banner(title, line, state), *body)


def _pct(latency: Mapping[str, Any], name: str) -> object:
    """A latency percentile of a load report (``p95``; ``p95_ms`` in phase details)."""
    return latency.get(name, latency.get(f"{name}_ms"))


def _ms(value: object) -> str:
    return f"{float(value):.1f}" if isinstance(value, int | float) else ""


def write_load(
    directory: Path, doc: Mapping[str, Any], chart: Path | None, mesh: Mapping[str, Any] | None
) -> list[Path]:
    """``load.json`` and ``load.html`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    js = directory / "load.json"
    js.write_text(json.dumps({**doc, "chart": str(chart) if chart else None, "mesh": mesh or {}}, indent=1))
    return [js, html.write(directory / "load.html", load_page(doc, chart, mesh))]


# --------------------------------------------------------------------------- chaos


def activity_ok(run: Mapping[str, Any]) -> bool:
    """Whether one journal activity (as ``summary.json`` lists it) held: it succeeded, and a probe's
    tolerance was met (a meshproof probe without a tolerance holds when its output says so)."""
    if run.get("status") != "succeeded":
        return False
    if run.get("type") != "probe":
        return True
    if run.get("tolerance_met") is not None:
        return bool(run["tolerance_met"])
    output = run.get("output")
    return bool(output.get("holds", True)) if isinstance(output, dict) else True


def _when(value: object) -> float | None:
    try:
        t = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()


def chaos_spans(journal: Mapping[str, Any]) -> list[Span]:
    """Every activity of a Chaos Toolkit journal on one clock (seconds since the experiment started)."""
    ss = journal.get("steady_states") or {}
    lanes = [
        ("hypothesis before", (ss.get("before") or {}).get("probes") or []),
        ("method", journal.get("run") or []),
        ("hypothesis after", (ss.get("after") or {}).get("probes") or []),
        ("rollbacks", journal.get("rollbacks") or []),
    ]
    runs = [(lane, r) for lane, rs in lanes for r in rs]
    starts = [t for _, r in runs if (t := _when(r.get("start"))) is not None]
    origin = min([t for t in [_when(journal.get("start"))] if t is not None] + starts, default=0.0)
    spans = []
    for lane, r in runs:
        a = r.get("activity") or {}
        start = _when(r.get("start"))
        end = _when(r.get("end"))
        if start is None:
            continue
        if end is None:
            end = start + float(r.get("duration") or 0.0)
        summary = {
            "status": r.get("status"),
            "type": a.get("type"),
            "tolerance_met": r.get("tolerance_met"),
            "output": r.get("output"),
        }
        spans.append(
            Span(
                lane,
                str(a.get("name", "?")),
                str(a.get("type", "")),
                start - origin,
                end - origin,
                activity_ok(summary),
            )
        )
    return spans


def _compact(output: object, limit: int = 300) -> str:
    text = json.dumps(output, default=str, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _activity_rows(runs: Sequence[Mapping[str, Any]]) -> list[Markup]:
    rows = []
    for r in runs:
        ok = activity_ok(r)
        state = "held" if r.get("type") == "probe" else str(r.get("status"))
        badge = tag("span", state if ok else "FAILED", class_="badge pass" if ok else "badge fail")
        rows.append(
            tag(
                "tr",
                tag("td", r.get("type", "")),
                tag("td", r.get("name", "")),
                tag("td", badge),
                tag("td", f"{float(r.get('duration_s') or 0.0):.2f}", class_="num"),
                tag("td", r.get("error") or _compact(r.get("output"))),
                class_=None if ok else "bad",
            )
        )
        if r.get("output") is not None:
            rows.append(
                tag(
                    "tr",
                    tag(
                        "td",
                        details(
                            "output", pre(json.dumps(r.get("output"), indent=1, default=str), limit=8000)
                        ),
                        colspan=5,
                    ),
                    class_="more",
                )
            )
    return rows


def chaos_verdict(summary: Mapping[str, Any]) -> tuple[str, str]:
    code = summary.get("exit_code")
    if code == 0:
        return "pass", "PASSED: the steady state held before, during and after, and nothing was left behind"
    if code == 130:
        return "fail", "INTERRUPTED: rolled back"
    return "fail", f"FAILED: status {summary.get('status')}, deviated {summary.get('deviated')}"


def chaos_page(summary: Mapping[str, Any], journal: Mapping[str, Any] | None) -> str:
    """A run's ``summary.json`` (``harness.chaos.runner.summary_doc``) and its journal."""
    title = f"meshproof game day: {summary.get('title') or summary.get('experiment')}"
    state, line = chaos_verdict(summary)
    residue = summary.get("residue") or {}
    mesh = summary.get("mesh") or {}
    spans = chaos_spans(journal or {})
    body: list[object] = [
        html.dl(
            {
                "experiment": summary.get("experiment"),
                "journal": summary.get("journal"),
                "status": summary.get("status"),
                "deviated": summary.get("deviated"),
                "wall": f"{float(summary.get('wall_s') or 0.0):.1f} s",
                **mesh_facts(mesh),
            }
        ),
        tag("h2", "Timeline"),
        timeline_chart(spans, "what ran when: hypothesis probes, injections, rollbacks")
        if spans
        else tag("p", "no activity ran (no journal)", class_="muted"),
    ]
    for heading, key in (
        ("Hypothesis before", "before"),
        ("Method (what was injected, and the probes during it)", "during"),
        ("Hypothesis after", "after"),
        ("Rollbacks", "rollbacks"),
    ):
        runs = summary.get(key) or []
        body.append(tag("h2", heading))
        body.append(
            html.table(["type", "name", "result", "seconds", "output"], _activity_rows(runs))
            if runs
            else tag("p", "(none ran)", class_="muted")
        )
    during = (summary.get("meshproof") or {}).get("during") or []
    if during:
        body += [
            tag("h3", "probes that failed during the method"),
            tag("ul", [tag("li", d) for d in during], class_="reasons"),
        ]
    body.append(tag("h2", "No-residue check"))
    clean = bool(residue.get("clean")) and not summary.get("undone_after_run") and not summary.get("notes")
    body.append(
        tag(
            "p",
            tag("span", "clean" if clean else "RESIDUE", class_="badge pass" if clean else "badge fail"),
            " checked: " + ", ".join(residue.get("checked") or []),
        )
    )
    problems = list(residue.get("problems") or [])
    problems += [
        f"undone by meshproof after the run (rollbacks missed it): {u}"
        for u in summary.get("undone_after_run") or []
    ]
    problems += list(summary.get("notes") or [])
    if problems:
        body.append(tag("ul", [tag("li", p) for p in problems], class_="reasons"))
    if mesh:
        body += [tag("h2", "Versions read from the mesh"), versions_section(mesh)]
    return html.page(title, html.banner(title, line, state), *body)


def chaos_junit(summary: Mapping[str, Any]) -> ET.Element:
    """One testcase per probe of the hypothesis (before, after), per activity of the method, per
    rollback, and the no-residue check as its own."""
    name = str(summary.get("title") or summary.get("experiment"))
    cases = []
    for lane, key in (
        ("hypothesis before", "before"),
        ("method", "during"),
        ("hypothesis after", "after"),
        ("rollback", "rollbacks"),
    ):
        for r in summary.get(key) or []:
            ok = activity_ok(r)
            detail = r.get("error") or _compact(r.get("output"), 2000)
            cases.append(
                junit.Case(
                    name=f"{lane}: {r.get('type')} {r.get('name')}",
                    classname=f"chaos.{lane.replace(' ', '_')}",
                    seconds=float(r.get("duration_s") or 0.0),
                    failure=None
                    if ok
                    else f"{r.get('type')} {r.get('name')}: {str(detail).splitlines()[0] if detail else r.get('status')}",
                    text=str(detail),
                )
            )
    during = (summary.get("meshproof") or {}).get("during") or []
    if during:
        cases.append(
            junit.Case(
                name="probes during the method",
                classname="chaos.method",
                failure=f"{len(during)} probes failed during the method",
                text="\n".join(map(str, during)),
            )
        )
    residue = summary.get("residue") or {}
    leftovers = (
        list(residue.get("problems") or [])
        + [f"undone after the run: {u}" for u in summary.get("undone_after_run") or []]
        + list(summary.get("notes") or [])
    )
    clean = bool(residue.get("clean")) and not leftovers
    cases.append(
        junit.Case(
            name="no residue",
            classname="chaos.residue",
            failure=None
            if clean
            else f"left behind: {leftovers[0] if leftovers else 'residue check not clean'}",
            text="\n".join(leftovers) or "checked: " + ", ".join(residue.get("checked") or []),
        )
    )
    return junit.suite(
        f"chaos: {name}",
        cases,
        {
            "experiment": str(summary.get("experiment")),
            "status": str(summary.get("status")),
            "deviated": str(summary.get("deviated")),
            "exit_code": str(summary.get("exit_code")),
        },
    )


def write_chaos(run_dir: Path, summary: Mapping[str, Any], journal: Mapping[str, Any] | None) -> list[Path]:
    """``report.html`` and ``junit.xml`` in the run's directory."""
    return [
        html.write(run_dir / "report.html", chaos_page(summary, journal)),
        junit.write(run_dir / "junit.xml", chaos_junit(summary)),
    ]


# --------------------------------------------------------------------------- upgrade


def upgrade_page(doc: Mapping[str, Any]) -> str:
    """An ``upgrade-report.json`` document."""
    title = f"meshproof upgrade check: Istio {doc.get('from')} -> {doc.get('to')} ({doc.get('mode')})"
    passed = doc.get("verdict") == "PASS"
    reasons = list(doc.get("reasons") or [])
    line = "PASSED: " if passed else "FAILED: "
    totals = doc.get("totals") or {}
    line += f"{totals.get('failures', 0)} of {totals.get('requests', 0)} requests failed during the upgrade"
    if reasons:
        line += f"; {len(reasons)} reasons"
    bound = int((doc.get("bound") or {}).get("max_failures_per_phase", 0))
    phase_rows = []
    for p in doc.get("phases") or []:
        d = p.get("detail") or {}
        bad = int(p.get("failures", 0)) > bound
        phase_rows.append(
            tag(
                "tr",
                tag("td", p.get("phase")),
                tag("td", p.get("kind")),
                tag("td", f"{float(p.get('start_s', 0)):.1f}-{float(p.get('end_s', 0)):.1f}", class_="num"),
                tag("td", p.get("requests"), class_="num"),
                tag("td", p.get("failures"), class_="num"),
                tag("td", p.get("error_seconds", ""), class_="num"),
                tag("td", _seconds(p.get("longest_gap_s")), class_="num"),
                tag("td", _ms(d.get("p95_ms")), class_="num"),
                tag("td", ", ".join(f"{k}: {v}" for k, v in (d.get("by_status") or {}).items())),
                class_="bad" if bad else None,
            )
        )
    body: list[object] = [
        html.dl(
            {
                "backend": doc.get("backend"),
                "mode": doc.get("mode"),
                "load": f"{doc.get('users')} users, {doc.get('load_tool')}",
                "bound": f"at most {bound} failed requests per phase",
                "wall": f"{float(doc.get('wall_s') or 0.0):.1f} s",
            }
        )
    ]
    if reasons:
        body += [tag("h2", "Why it failed"), tag("ul", [tag("li", r) for r in reasons], class_="reasons")]
    body += [
        tag("h2", "Chart"),
        tag(
            "figure",
            tag("figcaption", "the load over the upgrade's phases (each phase shaded and named)"),
            html.png(doc.get("chart"), "upgrade chart"),
        ),
        tag("h2", "Phases"),
        html.table(
            [
                "phase",
                "kind",
                "seconds",
                "requests",
                "failed",
                "error-seconds",
                "longest gap s",
                "p95 ms",
                "status",
            ],
            phase_rows,
        ),
        tag(
            "p",
            "error-seconds: distinct wall-clock seconds in which a request failed; longest gap: the longest "
            "stretch of the phase in which no request succeeded",
        ),
    ]
    held_rows = [
        tag(
            "tr",
            tag("td", p.get("phase")),
            tag("td", h.get("protocol")),
            tag("td", h.get("fate")),
            tag("td", f"{h.get('answered')}/{h.get('requests')}", class_="num"),
            tag("td", h.get("failed"), class_="num"),
            tag("td", h.get("evidence")),
            tag("td", ", ".join(f"{k}: {v}" for k, v in (h.get("last_headers") or {}).items())),
            tag("td", h.get("reconnect")),
            class_=None if h.get("clean") else "bad",
        )
        for p in doc.get("phases") or []
        for h in p.get("held") or []
    ]
    if held_rows:
        body += [
            tag("h2", "Connections held across each proxy restart (shown, never decided)"),
            html.table(
                [
                    "phase",
                    "protocol",
                    "fate",
                    "answered",
                    "non-2xx",
                    "evidence",
                    "last response headers",
                    "new connection",
                ],
                held_rows,
            ),
        ]
    versions = doc.get("versions") or {}
    if versions:
        exp = versions.get("expected") or {}
        body += [
            tag("h2", "Versions read from the mesh"),
            html.dl(
                {
                    "expected before": _expected(exp.get("from")),
                    "expected after": _expected(exp.get("to")),
                }
            ),
            versions_section({"readings": [r for r in (versions.get("before"), versions.get("after")) if r]}),
        ]
    suites = doc.get("suites") or {}
    if suites.get("ran"):
        body += [tag("h2", "Suites before vs after"), compare_table(suites)]
    cfg = doc.get("config_diff") or {}
    if cfg:
        unexpected = cfg.get("unexpected") or []
        body += [
            tag("h2", "Envoy config before vs after"),
            tag(
                "p",
                f"{cfg.get('proxies_compared', '?')} proxies, {cfg.get('resources_compared', '?')} resources compared; "
                f"{len(cfg.get('allowed') or [])} allowed differences, {len(unexpected)} unexpected",
            ),
        ]
        if unexpected:
            body.append(pre(json.dumps(unexpected, indent=1, default=str), limit=20000))
    timings = doc.get("timings") or {}
    if timings:
        body += [
            tag("h2", "Timings (shown, never decided)"),
            html.dl({k: f"{v:.1f} s" for k, v in timings.items()}),
        ]
    return html.page(title, html.banner(title, line, "pass" if passed else "fail"), *body)


def _seconds(v: object) -> str:
    return f"{float(v):.2f}" if isinstance(v, int | float) else ""


def _expected(e: Mapping[str, Any] | None) -> str:
    return f"Istio {e.get('istio_version')}, Envoy {e.get('envoy_version')}" if e else ""


def upgrade_junit(doc: Mapping[str, Any]) -> ET.Element:
    """One testcase per phase and per suite check comparison, plus versions, config and load."""
    bound = int((doc.get("bound") or {}).get("max_failures_per_phase", 0))
    cases = []
    for p in doc.get("phases") or []:
        failures, requests = int(p.get("failures", 0)), int(p.get("requests", 0))
        cases.append(
            junit.Case(
                name=f"phase {p.get('phase')}",
                classname="upgrade.phase",
                seconds=float(p.get("wall_s") or 0.0),
                failure=None
                if failures <= bound
                else f"{failures} of {requests} requests failed (bound {bound})",
                text=json.dumps(p.get("detail") or {}, default=str),
                properties={
                    "requests": str(requests),
                    "failures": str(failures),
                    "error_seconds": str(p.get("error_seconds", "")),
                    "longest_gap_s": str(p.get("longest_gap_s", "")),
                },
            )
        )
    totals = doc.get("totals") or {}
    if not totals.get("requests"):
        cases.append(
            junit.Case(
                "load ran", "upgrade.load", failure="no load ran: nothing shows that no request failed"
            )
        )
    version_reasons = list((doc.get("versions") or {}).get("reasons") or [])
    if doc.get("versions"):
        cases.append(
            junit.Case(
                "versions read from the mesh",
                "upgrade.versions",
                failure=version_reasons[0] if version_reasons else None,
                text="\n".join(version_reasons),
            )
        )
    cfg = doc.get("config_diff") or {}
    unexpected = cfg.get("unexpected") or []
    cases.append(
        junit.Case(
            "config differences all reviewed",
            "upgrade.config",
            failure=f"{len(unexpected)} config differences not allowed" if unexpected else None,
            text=json.dumps(unexpected, default=str)[:20000],
        )
    )
    suites = doc.get("suites") or {}
    for c in suites.get("checks") or []:
        label = c.get("id") or f"{c.get('test')} :: {c.get('check')}"
        ok = bool(c.get("ok"))
        cases.append(
            junit.Case(
                f"suites {label}",
                "upgrade.suites",
                failure=None
                if ok
                else f"verdict {c.get('before') or 'not run'} before, {c.get('after') or 'not run'} after, expected {c.get('expected')}",
                text=json.dumps(c.get("figures") or [], default=str),
                properties={
                    "before": str(c.get("before")),
                    "after": str(c.get("after")),
                    "expected": str(c.get("expected")),
                },
            )
        )
    return junit.suite(
        f"upgrade {doc.get('from')} -> {doc.get('to')} ({doc.get('mode')})",
        cases,
        {"verdict": str(doc.get("verdict")), "backend": str(doc.get("backend"))},
    )


def write_upgrade(directory: Path, doc: Mapping[str, Any]) -> list[Path]:
    return [
        html.write(directory / "upgrade-report.html", upgrade_page(doc)),
        junit.write(directory / "upgrade-junit.xml", upgrade_junit(doc)),
    ]


# --------------------------------------------------------------------------- compare


CHANGE_BADGE = {
    "same": "pass",
    "regressed": "fail",
    "fixed": "pass",
    "still failing": "fail",
    "new": "info",
    "new, failing": "fail",
}


def compare_table(doc: Mapping[str, Any], *, only_changed: bool = False) -> Markup:
    """The checks of a comparison (``SuiteComparison.as_json()``), each with its figures folded."""
    rows = []
    for c in doc.get("checks") or []:
        change = str(c.get("change", "same" if c.get("ok") else "regressed"))
        if only_changed and change == "same":
            continue
        figs = c.get("figures") or []
        fig_rows = [
            [
                f["name"],
                _fig(f.get("before")),
                _fig(f.get("after")),
                f.get("threshold") or "shown, never decided",
            ]
            for f in figs
        ]
        bad = change in ("regressed", "still failing", "new, failing")
        rows.append(
            tag(
                "tr",
                tag("td", tag("span", change, class_=f"badge {CHANGE_BADGE.get(change, 'info')}")),
                tag("td", c.get("id") or f"{c.get('test')} :: {c.get('check')}"),
                tag("td", verdict_badge(str(c.get("before") or ""), str(c.get("expected")))),
                tag("td", verdict_badge(str(c.get("after") or ""), str(c.get("expected")))),
                tag(
                    "td",
                    details("figures", html.table(["figure", "before", "after", "rule"], fig_rows))
                    if fig_rows
                    else "",
                ),
                class_="bad" if bad else None,
            )
        )
    if not rows:
        return tag("p", "no check changed", class_="muted")
    return html.table(["change", "check", "before", "after", ""], rows)


def _fig(v: object) -> str:
    return "" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def _shift_chart(doc: Mapping[str, Any]) -> list[Markup]:
    """Each statistical check's observed shares in AFTER, with BEFORE's in grey above them."""
    rows = []
    for c in doc.get("checks") or []:
        before = {o["name"]: o for o in c.get("observed_before") or []}
        for o in c.get("observed_after") or []:
            b = before.get(o["name"])
            rows.append(
                ShareRow(
                    label=str(c.get("id") or c.get("check")).split("::", 1)[-1],
                    category=str(o["name"]),
                    expected=float(o["expected"]),
                    share=float(o["share"]),
                    low=float(o["low"]),
                    high=float(o["high"]),
                    negative=c.get("expected") == "FAIL",
                    as_expected=c.get("after") == c.get("expected"),
                    before=(float(b["share"]), float(b["low"]), float(b["high"])) if b else None,
                )
            )
    if not rows:
        return []
    title = "Observed shares in AFTER (bar, dot) and in BEFORE (grey, above), configured share (tick)"
    return [tag("h2", "Observed shares, before and after"), tag("figure", shares_chart(rows, title=title))]


def compare_page(doc: Mapping[str, Any]) -> str:
    """A ``RunComparison.as_json()`` document."""
    title = "meshproof report compare"
    regressed = doc.get("verdict") == "REGRESSED"
    changes = doc.get("changes") or {}
    line = (
        f"{doc.get('verdict')}: {changes.get('regressed', 0)} regressed, {changes.get('fixed', 0)} fixed, "
        f"{changes.get('still failing', 0)} still failing, {changes.get('new', 0) + changes.get('new, failing', 0)} new, "
        f"{changes.get('same', 0)} unchanged ({doc.get('paired', 0)} checks in both runs)"
    )
    versions = doc.get("versions") or []
    body: list[object] = [
        html.dl({"before": doc.get("before"), "after": doc.get("after"), "records": doc.get("note")}),
        html.counts(dict(changes)),
    ]
    if doc.get("regressions"):
        body += [
            tag("h2", "Regressions"),
            tag("ul", [tag("li", r) for r in doc["regressions"]], class_="reasons"),
        ]
    body += [
        tag("h2", "Versions (read from each run's mesh)"),
        html.table(
            ["", "before", "after", ""],
            [[v["what"], v["before"], v["after"], "changed" if v.get("changed") else ""] for v in versions],
        )
        if versions
        else tag(
            "p", "the reports do not say (written before reports carried the mesh's versions)", class_="muted"
        ),
        tag("h2", "Checks that changed"),
        compare_table(doc, only_changed=True),
        *_shift_chart(doc),
        tag("h2", "Every check"),
        details("all checks, with their figures", compare_table(doc)),
    ]
    return html.page(title, html.banner(title, line, "fail" if regressed else "pass"), *body)
