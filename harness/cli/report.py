"""``meshproof report compare BEFORE AFTER``: two runs of the suites compared; ``meshproof report
summary PATH...``: the runs' verdict tables in Markdown (a CI job's summary).

BEFORE and AFTER are ``suites-report.json`` files (or state dirs holding one), e.g. the same
suites on one cluster before and after an upgrade done by other tools, or yesterday's nightly and
today's. Records pair on their stable id; the comparison is :mod:`harness.report.compare`'s, the
one ``upgrade-check`` uses. It prints the verdict changes and version changes, writes an HTML page
and the JSON into ``--out`` (default ``<state>/compare``), and exits 1 when a check that reached its
expected verdict in BEFORE does not in AFTER (or did not run), 0 otherwise; 2 for a missing file,
a file that is not a meshproof suites report, or two reports with no check in common.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from harness.cli.output import Output
from harness.settings import Settings


def add_summary_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "paths",
        metavar="PATH",
        type=Path,
        nargs="+",
        help="report files, or directories searched for suites-report.json, upgrade-report.json and chaos runs",
    )


def cmd_report_summary(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    """Markdown verdict tables of the reports under PATH... (a CI job summary); exit 2 when there is none."""
    from harness.report.markdown import summary

    print(summary(args.paths))
    return 0


def add_compare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "before", metavar="BEFORE", type=Path, help="the first run's suites-report.json (or its state dir)"
    )
    p.add_argument(
        "after", metavar="AFTER", type=Path, help="the second run's suites-report.json (or its state dir)"
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        help="where compare-<time>.html and .json go (default: <state dir>/compare)",
    )


def cmd_report_compare(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.report import html
    from harness.report.compare import compare_files
    from harness.report.runs import compare_page

    result = compare_files(args.before, args.after)
    doc = result.as_json()
    directory = args.out or settings.state_dir / "compare"
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    n = 1
    while (directory / f"compare-{stamp}.json").exists():  # two comparisons within a second
        n += 1
        stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{n}"
    js = directory / f"compare-{stamp}.json"
    js.write_text(json.dumps(doc, indent=2) + "\n")
    page = html.write(directory / f"compare-{stamp}.html", compare_page(doc))
    code = 1 if result.regressed else 0
    if args.json:
        out.json({**doc, "html": str(page), "json": str(js)})
        return code
    changes = result.suites.counts()
    out.print(f"report compare: {result.before_path} -> {result.after_path}", style="bold")
    for v in result.versions:
        out.print(f"  {v.what}: {v.before or '?'} -> {v.after or '?'}" + (" (changed)" if v.changed else ""))
    out.print(
        f"  {result.suites.paired} checks in both runs: {changes['regressed']} regressed, {changes['fixed']} fixed, "
        f"{changes['still failing']} still failing, {changes['new'] + changes['new, failing']} new "
        f"({changes['new, failing']} failing), {changes['same']} unchanged; {result.suites.note}"
    )
    for c in result.suites.checks:
        if c.change in ("fixed", "still failing", "new, failing"):
            out.print(
                f"  {c.change}: {c.label}: {c.before or 'not run'} -> {c.after or 'not run'} (expected {c.expected})"
            )
    out.print(f"html: {page}")
    out.print(f"json: {js}")
    out.print(result.verdict, style="bold red" if code else "bold green")
    for reason in result.reasons:
        out.print(f"  {reason}")
    return code
