"""What each release should run, and the rules the upgrade check decides with on what the mesh runs.

The readings (each proxy's Envoy ``/server_info``, each istiod's ``/version``) are
:mod:`harness.report.versions`'s, shared with every report; their names are re-exported here.
A release's expectation is its pinned label (what pilot-agent and istiod are built to report) and
the Envoy build string of the release's installed binary (``envoy --version``), never a
hard-coded string.

The upgrade check decides on these readings: a proxy or istiod that does not run TO's build after
the upgrade fails it, one line naming it and both versions. The release a step *meant* to start is
bookkeeping and decides nothing. The comparisons are pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from harness.errors import BackendError
from harness.report.versions import (
    ControlPlaneVersion,
    ProxyVersion,
    Snapshot,
    envoy_release,
    parse_istiod,
    parse_server_info,
    read_istiod,
    read_mesh,
    read_proxy,
    snapshot,
)

if TYPE_CHECKING:
    from harness.settings import Settings

__all__ = [
    "ControlPlaneVersion",
    "Expected",
    "ProxyVersion",
    "Snapshot",
    "VersionReport",
    "control_plane_mismatch",
    "control_plane_runs",
    "envoy_release",
    "expected_of",
    "mismatches",
    "parse_envoy_version_output",
    "parse_istiod",
    "parse_server_info",
    "proxy_mismatch",
    "proxy_runs",
    "read_istiod",
    "read_mesh",
    "read_proxy",
    "snapshot",
]

_ENVOY_VERSION = re.compile(r"version:\s*(\S+)")


@dataclass(frozen=True)
class Expected:
    """What a release runs: pilot-agent and istiod report ``label``; Envoy reports ``envoy``."""

    label: str
    envoy: str  # Envoy's full build string, from the release's installed binary

    def as_json(self) -> dict[str, str]:
        return {"istio_version": self.label, "envoy_version": self.envoy}


def parse_envoy_version_output(text: str) -> str:
    """``envoy --version`` prints ``envoy  version: <build string>``; the build string."""
    m = _ENVOY_VERSION.search(text)
    if not m:
        raise BackendError(f"`envoy --version` printed no version: {text.strip()[:200]!r}")
    return m.group(1)


def expected_of(settings: Settings, label: str) -> Expected:
    """The installed release ``label``'s expectation: its label and its Envoy binary's build string."""
    from harness import proc
    from harness.toolchain import istio_local

    inst = istio_local.load(settings.with_overrides(istio_version=label))
    out = proc.run([inst.envoy, "--version"], timeout=60)
    return Expected(label, parse_envoy_version_output(out.stdout + out.stderr))


def proxy_mismatch(p: ProxyVersion, expected: Expected, when: str) -> str:
    """One line when proxy ``p`` does not run ``expected`` ("" when it does)."""
    if p.error:
        return f"{when}: proxy {p.proxy}: cannot read its version ({p.error})"
    wrong = []
    if p.envoy_version != expected.envoy:
        wrong.append(f"Envoy {p.envoy_version or '?'}, expected {expected.label}'s Envoy {expected.envoy}")
    if p.istio_version != expected.label:
        wrong.append(f"Istio agent {p.istio_version or '?'}, expected {expected.label}")
    return f"{when}: proxy {p.proxy} runs " + "; ".join(wrong) if wrong else ""


def control_plane_mismatch(c: ControlPlaneVersion, expected: Expected, when: str) -> str:
    if c.error:
        return f"{when}: istiod (revision {c.revision}): cannot read its version ({c.error})"
    if c.istio_version != expected.label:
        return (
            f"{when}: istiod (revision {c.revision}) runs Istio {c.istio_version}, expected {expected.label}"
        )
    return ""


Check = Callable[[Snapshot], list[str]]  # a snapshot -> one line per way it is wrong
_Found = TypeVar("_Found", ProxyVersion, ControlPlaneVersion)


def proxy_runs(key: str, expected: Expected) -> Check:
    """A check that proxy ``key`` is in the snapshot and runs ``expected``'s builds."""
    return _runs(lambda s: s.proxy(key), proxy_mismatch, expected, f"proxy {key} is gone")


def control_plane_runs(revision: str, expected: Expected) -> Check:
    """A check that an istiod of ``revision`` is in the snapshot and runs ``expected``'s build."""
    gone = f"no istiod of revision {revision}"
    return _runs(lambda s: s.control_plane(revision), control_plane_mismatch, expected, gone)


def _runs(
    find: Callable[[Snapshot], _Found | None],
    mismatch: Callable[[_Found, Expected, str], str],
    expected: Expected,
    gone: str,
) -> Check:
    def check(read: Snapshot) -> list[str]:
        found = find(read)
        if found is None:
            return [f"{read.when}: {gone}"]
        line = mismatch(found, expected, read.when)
        return [line] if line else []

    return check


def mismatches(snap: Snapshot, expected: Expected, when: str = "") -> list[str]:
    """One line per proxy or istiod in ``snap`` that does not run ``expected``'s builds."""
    when = when or snap.when
    out = [control_plane_mismatch(c, expected, when) for c in snap.control_planes]
    out += [proxy_mismatch(p, expected, when) for p in snap.proxies]
    if not snap.proxies:
        out.append(f"{when}: no proxy was read")
    return [line for line in out if line]


@dataclass(frozen=True)
class VersionReport:
    """The readings before and after the upgrade, what each release runs, and the step checks."""

    expected_from: Expected
    expected_to: Expected
    before: Snapshot
    after: Snapshot
    steps: tuple[str, ...] = ()  # mismatches seen at the end of a step (a restarted proxy, a new istiod)

    @property
    def reasons(self) -> list[str]:
        return [
            *mismatches(self.before, self.expected_from, "before the upgrade"),
            *self.steps,
            *mismatches(self.after, self.expected_to, "after the upgrade"),
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "expected": {"from": self.expected_from.as_json(), "to": self.expected_to.as_json()},
            "before": self.before.as_json(),
            "after": self.after.as_json(),
            "reasons": self.reasons,
        }
