"""What the mesh runs, read from the mesh: each proxy's Envoy and Istio agent version, each istiod's.

- a proxy: its Envoy admin ``/server_info``: ``version`` (Envoy's build string,
  ``<sha>/1.39.3/Clean/RELEASE/BoringSSL``, the same string ``envoy --version`` prints),
  ``node.user_agent_build_version`` and ``node.metadata.ISTIO_VERSION`` (the pilot-agent's build);
- an istiod: the body of ``/version`` on its monitoring port (15014 in a cluster; the local
  backend's own port): ``<version>-<git revision>-<build status>`` (Istio's ``BuildInfo.String``;
  the revision is a sha or ``unknown``, the status a word, so the version is what precedes the
  last two dashes). Its ``istio_build`` metric carries the git tag, not the version (``unknown``
  in a build from the Go module), so it is not used;
- a release's expectation: its pinned label (what pilot-agent and istiod are built to report) and
  the Envoy build string of the release's installed binary (``envoy --version``), never a
  hard-coded string.

The upgrade check decides on these readings: a proxy or istiod that does not run TO's build after
the upgrade fails it, one line naming it and both versions. The release a step *meant* to start is
bookkeeping and decides nothing. Readers take an injected httpx client; the comparisons are pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.errors import BackendError

if TYPE_CHECKING:
    import httpx

    from harness.settings import Settings

_ENVOY_VERSION = re.compile(r"version:\s*(\S+)")


def envoy_release(version: str) -> str:
    """``<sha>/1.39.3/Clean/RELEASE/BoringSSL`` -> ``1.39.3`` ("" when not in that form)."""
    parts = version.split("/")
    return parts[1] if len(parts) >= 3 else ""


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
    from harness.backends.local import install

    inst = install.load(settings.with_overrides(istio_version=label))
    out = proc.run([inst.envoy, "--version"], timeout=60)
    return Expected(label, parse_envoy_version_output(out.stdout + out.stderr))


@dataclass(frozen=True)
class ProxyVersion:
    proxy: str  # ns.pod
    envoy_version: str  # server_info.version ("" when unreadable)
    istio_version: str  # server_info.node.metadata.ISTIO_VERSION
    server_info: Mapping[str, Any]  # the identifying part of /server_info (not the extension list)
    error: str = ""  # why it could not be read

    @property
    def short(self) -> str:
        if self.error:
            return f"unreadable: {self.error}"
        return f"Envoy {envoy_release(self.envoy_version) or self.envoy_version}, Istio {self.istio_version}"

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "envoy_version": self.envoy_version,
            "istio_version": self.istio_version,
            "server_info": dict(self.server_info),
        }
        if self.error:
            out["error"] = self.error
        return out


def parse_server_info(proxy: str, doc: Mapping[str, Any]) -> ProxyVersion:
    node = doc.get("node") or {}
    meta = node.get("metadata") or {}
    kept = {
        "version": doc.get("version", ""),
        "state": doc.get("state", ""),
        "node": {
            "id": node.get("id", ""),
            "user_agent_build_version": node.get("user_agent_build_version", {}),
            "metadata": {"ISTIO_VERSION": meta.get("ISTIO_VERSION", "")},
        },
    }
    return ProxyVersion(proxy, str(doc.get("version", "")), str(meta.get("ISTIO_VERSION", "")), kept)


@dataclass(frozen=True)
class ControlPlaneVersion:
    revision: str
    istio_version: str  # the version part of /version ("" when unreadable)
    version_string: str  # the body of /version
    error: str = ""

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"istio_version": self.istio_version, "version_string": self.version_string}
        if self.error:
            out["error"] = self.error
        return out


def parse_istiod(revision: str, version_body: str) -> ControlPlaneVersion:
    """``1.31-dev-unknown-unknown`` (version, git revision, build status) -> version ``1.31-dev``."""
    body = version_body.strip()
    parts = body.rsplit("-", 2)
    if len(parts) != 3 or not parts[0]:
        why = f"/version is not <version>-<git revision>-<build status>: {body!r}"
        return ControlPlaneVersion(revision, "", body, why)
    return ControlPlaneVersion(revision, parts[0], body)


def read_proxy(http: httpx.Client, proxy: str, admin_url: str) -> ProxyVersion:
    import httpx

    try:
        r = http.get(f"{admin_url}/server_info")
        r.raise_for_status()
        return parse_server_info(proxy, r.json())
    except (httpx.HTTPError, ValueError) as e:
        return ProxyVersion(proxy, "", "", {}, f"{admin_url}/server_info: {e}")


def read_istiod(http: httpx.Client, revision: str, monitoring_url: str) -> ControlPlaneVersion:
    import httpx

    try:
        version = http.get(f"{monitoring_url}/version")
        version.raise_for_status()
    except httpx.HTTPError as e:
        return ControlPlaneVersion(revision, "", "", f"{monitoring_url}/version: {e}")
    return parse_istiod(revision, version.text)


@dataclass(frozen=True)
class Snapshot:
    """The versions read from every proxy and istiod at one moment."""

    when: str
    proxies: tuple[ProxyVersion, ...]
    control_planes: tuple[ControlPlaneVersion, ...]

    def proxy(self, key: str) -> ProxyVersion | None:
        return next((p for p in self.proxies if p.proxy == key), None)

    def control_plane(self, revision: str) -> ControlPlaneVersion | None:
        return next((c for c in self.control_planes if c.revision == revision), None)

    def as_json(self) -> dict[str, Any]:
        return {
            "when": self.when,
            "istiod": {c.revision: c.as_json() for c in self.control_planes},
            "proxies": {p.proxy: p.as_json() for p in self.proxies},
        }

    def compact(self) -> dict[str, Any]:
        """For a phase's detail: istiod and proxy versions, one string each."""
        return {
            "istiod": {c.revision: c.istio_version or f"unreadable: {c.error}" for c in self.control_planes},
            "proxies": {p.proxy: p.short for p in self.proxies},
        }


def snapshot(
    http: httpx.Client, when: str, admin_urls: Mapping[str, str], monitoring_urls: Mapping[str, str]
) -> Snapshot:
    """Read every proxy (``key`` -> admin URL) and istiod (revision -> monitoring URL)."""
    return Snapshot(
        when,
        tuple(read_proxy(http, k, admin_urls[k]) for k in sorted(admin_urls)),
        tuple(read_istiod(http, r, monitoring_urls[r]) for r in sorted(monitoring_urls)),
    )


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
