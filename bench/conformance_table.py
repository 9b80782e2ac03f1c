"""docs/CONFORMANCE.md's side-by-side table: our run of the Gateway API conformance suite against
Istio's published ConformanceReport, test by test.

Usage: .venv/bin/python bench/conformance_table.py OURS_DIR PUBLISHED_REPORT PUBLISHED_SUITE_TESTS [--profile P ...]

* OURS_DIR: what ``meshproof conformance`` wrote (``conformance-report.yaml``, ``tests.json``) and
  the plan of our suite (``plan.json``: the output of the ``conformance-plan`` it built);
* PUBLISHED_REPORT: Istio's report in the suite module (``reports/v1.4.0/istio-istio/...yaml``);
* PUBLISHED_SUITE_TESTS: the test list of the suite version that report ran (JSON with ``tests``
  [{name, features, provisional}] and ``profiles``), printed by ``bench/suite_tests`` (a Go
  program listing ``tests.ConformanceTests``; its go.mod requires the suite version to list:
  ``cd bench/suite_tests && GOFLAGS=-mod=mod go run . > tests.json``).

A published report lists failed and skipped tests by name and counts the rest, so its column says
``PASS`` for a test of that suite version whose features the report claims in that profile and that
it does not name failed or skipped (:func:`harness.report.gateway_conformance.published_outcome`).
Prints Markdown. Never run from tests.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.report import gateway_conformance as gc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ours", type=Path)
    ap.add_argument("published", type=Path)
    ap.add_argument("published_tests", type=Path)
    ap.add_argument("--profile", action="append", default=[])
    a = ap.parse_args()
    profiles = a.profile or ["GATEWAY-HTTP", "MESH-HTTP"]
    ours = gc.parse((a.ours / "conformance-report.yaml").read_text())
    run = json.loads((a.ours / "tests.json").read_text())
    plan = gc.SuitePlan.of(json.loads((a.ours / "plan.json").read_text()))
    pub = gc.parse(a.published.read_text(), source=str(a.published))
    pub_plan = gc.SuitePlan.of(json.loads(a.published_tests.read_text()))
    claimed = set(run["features"])
    outcomes = run["tests"]
    reasons = run.get("skip_reasons", {})
    for profile in profiles:
        ours_tests = {t.name: t for t in plan.in_profile(profile)}
        pub_tests = {t.name: t for t in pub_plan.in_profile(profile)} if profile in pub_plan.profiles else {}
        print(f"\n### {profile}\n")
        print("| test | level | ours (1.31-dev, suite v1.6.0) | Istio 1.28.0 published (suite v1.4.0) |")
        print("|---|---|---|---|")
        counts: dict[str, int] = {}
        for name in sorted(set(ours_tests) | set(pub_tests)):
            t = ours_tests.get(name) or pub_tests[name]
            level = plan.level(profile, t) if name in ours_tests else pub_plan.level(profile, t)
            if name not in ours_tests:
                mine = "not in suite v1.6.0"
            elif name in outcomes:
                mine = outcomes[name]["result"]
                if mine == "SKIP":
                    missing = sorted(set(t.features) - claimed)
                    mine = f"SKIP ({reasons.get(name) or 'not claimed: ' + ', '.join(missing)})"
            else:
                mine = "not run"
            theirs = (
                gc.published_outcome(pub, pub_plan, profile, pub_tests[name])
                if name in pub_tests
                else "not in suite v1.4.0"
            )
            key = f"{mine.split(' ')[0]} / {theirs.split(' (')[0]}"
            counts[key] = counts.get(key, 0) + 1
            print(f"| {name}{' (provisional)' if t.provisional else ''} | {level} | {mine} | {theirs} |")
        p, q = ours.profile(profile), pub.profile(profile)
        for label, r in (("ours", p), ("Istio 1.28.0", q)):
            if r is None:
                print(f"\n{label}: profile not in the report")
                continue
            ext = r.extended
            print(
                f"\n{label}: core {r.core.passed} passed / {r.core.failed} failed / {r.core.skipped} skipped"
                + (f"; extended {ext.passed} / {ext.failed} / {ext.skipped}" if ext else "")
            )
        print("\ncounts (ours / theirs): " + "; ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    in_profiles = {t.name for p in profiles for t in plan.in_profile(p)}
    outside = [
        t
        for t in plan.tests
        if t.name not in in_profiles and outcomes.get(t.name, {}).get("result") != "SKIP"
    ]
    if outside:
        print("\n### Ran outside the chosen profiles\n")
        print("Their features span more than one profile, so the suite counts them in none (its rule: a test")
        print("belongs to a profile when all its features do).\n")
        print("| test | features | ours |")
        print("|---|---|---|")
        for t in outside:
            print(
                f"| {t.name} | {', '.join(t.features)} | {outcomes.get(t.name, {}).get('result', 'not run')} |"
            )
    skipped: dict[str, list[str]] = {}
    for name, o in sorted(outcomes.items()):
        if o["result"] == "SKIP":
            skipped.setdefault(reasons.get(name, "no reason logged"), []).append(name)
    print("\n### Every test skipped, by the suite's reason\n")
    print("| reason | tests |")
    print("|---|---|")
    for reason, names in sorted(skipped.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        print(f"| {reason} | {len(names)}: {', '.join(names)} |")


if __name__ == "__main__":
    main()
