"""Gateway API ConformanceReports: read one, summarise it per profile, and compare two test by test.

A ConformanceReport (``gateway.networking.k8s.io/v1``, kind ConformanceReport) is what the
upstream suite writes: per profile, core and extended results with passed/failed/skipped counts,
the failed and skipped tests by name, and the extended features claimed. It has no list of the
tests that passed, so the per-test view comes from the suite's own ``go test -v`` lines
(``--- PASS: TestConformance/NAME``), and for a published report (whose log is not published) from
the suite's test list: a test of a profile whose features the report claims ran, and passed unless
the report names it failed (:func:`published_outcome`).

Pure: no I/O beyond parsing text handed in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from harness.errors import UserError

KIND = "ConformanceReport"


@dataclass(frozen=True)
class Level:
    """Core or extended results of one profile."""

    result: str
    passed: int
    failed: int
    skipped: int
    failed_tests: tuple[str, ...] = ()
    skipped_tests: tuple[str, ...] = ()
    supported: tuple[str, ...] = ()
    unsupported: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str
    core: Level
    extended: Level | None


@dataclass(frozen=True)
class Report:
    implementation: Mapping[str, Any]
    date: str
    api_version: str  # gatewayAPIVersion
    channel: str
    mode: str
    profiles: tuple[Profile, ...]
    provisional_passed: tuple[str, ...] = ()

    def profile(self, name: str) -> Profile | None:
        return next((p for p in self.profiles if p.name == name), None)


def _level(doc: Mapping[str, Any] | None) -> Level | None:
    if not doc:
        return None
    stats = doc.get("statistics") or {}
    return Level(
        result=str(doc.get("result", "")),
        passed=int(stats.get("Passed", 0)),
        failed=int(stats.get("Failed", 0)),
        skipped=int(stats.get("Skipped", 0)),
        failed_tests=tuple(doc.get("failedTests") or ()),
        skipped_tests=tuple(doc.get("skippedTests") or ()),
        supported=tuple(doc.get("supportedFeatures") or ()),
        unsupported=tuple(doc.get("unsupportedFeatures") or ()),
    )


def parse(text: str, *, source: str = "the report") -> Report:
    """A ConformanceReport's YAML; UserError naming ``source`` and what is wrong when it is not one."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"{source}: not YAML ({e})") from e
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise UserError(
            f"{source}: kind is {(doc or {}).get('kind') if isinstance(doc, dict) else None!r}, not {KIND}"
        )
    profiles = []
    for p in doc.get("profiles") or []:
        core = _level(p.get("core")) or Level("", 0, 0, 0)
        profiles.append(
            Profile(str(p.get("name", "")), str(p.get("summary", "")), core, _level(p.get("extended")))
        )
    return Report(
        implementation=dict(doc.get("implementation") or {}),
        date=str(doc.get("date", "")),
        api_version=str(doc.get("gatewayAPIVersion", "")),
        channel=str(doc.get("gatewayAPIChannel", "")),
        mode=str(doc.get("mode", "")),
        profiles=tuple(profiles),
        provisional_passed=tuple(doc.get("succeededProvisionalTests") or ()),
    )


def summary_rows(report: Report) -> list[dict[str, Any]]:
    """One row per profile and level: profile, level, result, passed, failed, skipped, failed tests."""
    rows = []
    for p in report.profiles:
        for level_name, level in (("core", p.core), ("extended", p.extended)):
            if level is None:
                continue
            rows.append(
                {
                    "profile": p.name,
                    "level": level_name,
                    "result": level.result,
                    "passed": level.passed,
                    "failed": level.failed,
                    "skipped": level.skipped,
                    "failed_tests": list(level.failed_tests),
                    "skipped_tests": list(level.skipped_tests),
                }
            )
    return rows


# ---- the per-test view ---------------------------------------------------------------------------
_RESULT = re.compile(r"^\s*--- (PASS|FAIL|SKIP): TestConformance/([A-Za-z0-9_]+)(?:/\S*)? \(([\d.]+)s\)")


def test_outcomes(log: str) -> dict[str, tuple[str, float]]:
    """``go test -v`` lines of the suite -> {test: (PASS|FAIL|SKIP, seconds)}; sub-tests are ignored."""
    out: dict[str, tuple[str, float]] = {}
    for line in log.splitlines():
        m = _RESULT.match(line)
        if m and "/" not in line.split("TestConformance/", 1)[1].split(" ", 1)[0]:
            out[m.group(2)] = (m.group(1), float(m.group(3)))
    return out


def skip_reasons(log: str) -> dict[str, str]:
    """Why the suite skipped a test, from its own log (``Skipping NAME: REASON``)."""
    out: dict[str, str] = {}
    for m in re.finditer(r"Skipping (\w+): ([^\n]+)", log):
        out.setdefault(m.group(1), m.group(2).strip())
    return out


@dataclass(frozen=True)
class SuiteTest:
    name: str
    features: tuple[str, ...]
    provisional: bool = False
    description: str = ""


@dataclass(frozen=True)
class SuitePlan:
    """What ``conformance-plan`` prints: the suite's profiles, tests, feature channels, and Istio's features."""

    profiles: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]  # name -> (core, extended)
    tests: tuple[SuiteTest, ...]
    istio_supported: tuple[str, ...] = ()
    channels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> SuitePlan:
        return cls(
            profiles={
                n: (tuple(p.get("core") or ()), tuple(p.get("extended") or ()))
                for n, p in (doc.get("profiles") or {}).items()
            },
            tests=tuple(
                SuiteTest(
                    str(t["name"]),
                    tuple(t.get("features") or ()),
                    bool(t.get("provisional")),
                    str(t.get("description", "")),
                )  # fmt: skip
                for t in doc.get("tests") or []
            ),
            istio_supported=tuple(doc.get("istio_supported") or ()),
            channels=dict(doc.get("feature_channels") or {}),
        )

    def in_profile(self, profile: str) -> list[SuiteTest]:
        """Tests all of whose features belong to ``profile`` (the suite's own rule)."""
        core, extended = self.profiles[profile]
        allowed = set(core) | set(extended)
        return [t for t in self.tests if t.features and set(t.features) <= allowed]

    def level(self, profile: str, test: SuiteTest) -> str:
        core, _ = self.profiles[profile]
        return "core" if set(test.features) <= set(core) else "extended"


def supported_features(
    plan: SuitePlan, profiles: Sequence[str], *, exempt: Iterable[str] = (), standard_only: bool = False
) -> list[str]:
    """The features to claim: those Istio declares (``istio_supported``) that the chosen profiles
    hold, minus ``exempt``, minus experimental-channel ones when the cluster serves only the
    standard channel's CRDs (what Istio's own run does with its standard-only setting)."""
    wanted = {f for p in profiles for level in plan.profiles[p] for f in level}
    chosen = (wanted & set(plan.istio_supported)) - set(exempt)
    if standard_only:
        chosen = {f for f in chosen if plan.channels.get(f, "standard") == "standard"}
    return sorted(chosen)


def published_outcome(report: Report, plan: SuitePlan, profile: str, test: SuiteTest) -> str:
    """What a published report says of ``test`` (of the suite version it ran): ``FAIL`` or ``SKIP``
    when it names it so, ``PASS`` when the report claims all its features, else ``not claimed``."""
    p = report.profile(profile)
    if p is None:
        return "profile not run"
    levels = [lv for lv in (p.core, p.extended) if lv is not None]
    if any(test.name in lv.failed_tests for lv in levels):
        return "FAIL"
    if any(test.name in lv.skipped_tests for lv in levels):
        return "SKIP"
    core, _ = plan.profiles[profile]
    claimed = set(core) | set(p.extended.supported if p.extended else ())
    return "PASS" if set(test.features) <= claimed else "not claimed"
