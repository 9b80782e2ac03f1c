"""What the mesh runs, read from the mesh: each proxy's Envoy and Istio agent version, each istiod's.

Every report names the mesh it ran against with these readings (the suites' HTML and
``meshproof-report.yaml``, load and chaos pages, ``report compare``'s version changes); the upgrade
check decides on them (:mod:`harness.upgrade.running` holds its expectations and rules).

- a proxy: its Envoy admin ``/server_info``: ``version`` (Envoy's build string,
  ``<sha>/1.39.3/Clean/RELEASE/BoringSSL``, the same string ``envoy --version`` prints),
  ``node.user_agent_build_version`` and ``node.metadata.ISTIO_VERSION`` (the pilot-agent's build);
- an istiod: the body of ``/version`` on its monitoring port (15014 in a cluster; the local
  backend's own port): ``<version>-<git revision>-<build status>`` (Istio's ``BuildInfo.String``;
  the revision is a sha or ``unknown``, the status a word, so the version is what precedes the
  last two dashes). Its ``istio_build`` metric carries the git tag, not the version (``unknown``
  in a build from the Go module), so it is not used.

Readers take an injected httpx client; parsers and :func:`summary` are pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness import httpclient

if TYPE_CHECKING:
    import httpx

    from harness.backends.base import Backend


def envoy_release(version: str) -> str:
    """``<sha>/1.39.3/Clean/RELEASE/BoringSSL`` -> ``1.39.3`` ("" when not in that form)."""
    parts = version.split("/")
    return parts[1] if len(parts) >= 3 else ""


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


def endpoints(mesh: Backend) -> tuple[dict[str, str], dict[str, str]]:
    """Where to read: proxy ``ns/pod`` -> Envoy admin URL, istiod revision -> monitoring URL.

    istiod's monitoring URL comes from backends that expose it (the local one's
    ``control_planes()``); elsewhere only the proxies are read.
    """
    admins = {w.ref: w.proxy_admin_url for w in mesh.workloads() if w.proxy_admin_url}
    planes = getattr(mesh, "control_planes", None)
    monitoring = (
        {rev: str(cp["monitoring_url"]) for rev, cp in planes().items() if cp.get("monitoring_url")}
        if callable(planes)
        else {}
    )
    return admins, monitoring


def read_mesh(http: httpx.Client, mesh: Backend, when: str) -> Snapshot:
    """Every proxy's and istiod's version of ``mesh``, read from them now."""
    admins, monitoring = endpoints(mesh)
    return snapshot(http, when, admins, monitoring)


def summary(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The distinct versions in :meth:`Snapshot.as_json` documents (one per mesh of a run):
    ``{"istiod": [...], "envoy": [...], "istio_agent": [...], "proxies": N, "unreadable": [...]}``."""
    istiod: dict[str, None] = {}
    envoy: dict[str, None] = {}
    agent: dict[str, None] = {}
    unreadable: list[str] = []
    proxies = 0
    for snap in snapshots:
        for rev, c in (snap.get("istiod") or {}).items():
            if c.get("istio_version"):
                istiod[str(c["istio_version"])] = None
            else:
                unreadable.append(f"istiod {rev}: {c.get('error', 'no version')}")
        for name, p in (snap.get("proxies") or {}).items():
            proxies += 1
            if p.get("error"):
                unreadable.append(f"proxy {name}: {p['error']}")
                continue
            if p.get("envoy_version"):
                envoy[str(p["envoy_version"])] = None
            if p.get("istio_version"):
                agent[str(p["istio_version"])] = None
    return {
        "istiod": sorted(istiod),
        "envoy": sorted(envoy),
        "istio_agent": sorted(agent),
        "proxies": proxies,
        "unreadable": unreadable,
    }


#: The routing kinds that say which traffic API a mesh's configuration uses.
_ISTIO_ROUTING = ("VirtualService", "DestinationRule")
_GATEWAY_API_ROUTING = ("HTTPRoute", "GRPCRoute", "TCPRoute", "TLSRoute")


def traffic_api(objects: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Which traffic API the running configuration routes with: ``istio`` (VirtualService,
    DestinationRule), ``gateway-api`` (HTTPRoute ...), both, or ``none``; with the kinds counted."""
    kinds: dict[str, int] = {}
    used = {"istio": False, "gateway-api": False}
    for o in objects:
        kind, group = str(o.get("kind", "")), str(o.get("apiVersion", "")).split("/")[0]
        if group == "networking.istio.io" and kind in _ISTIO_ROUTING:
            used["istio"] = True
        elif group == "gateway.networking.k8s.io" and kind in _GATEWAY_API_ROUTING:
            used["gateway-api"] = True
        else:
            continue
        kinds[f"{kind} ({group})"] = kinds.get(f"{kind} ({group})", 0) + 1
    name = ", ".join(api for api, yes in used.items() if yes) or "none"
    return {"api": name, "kinds": dict(sorted(kinds.items()))}


def describe(mesh: Backend, release: str, when: str = "during the run") -> dict[str, Any]:
    """What a report says about the mesh it ran against: backend, pinned release, traffic API and
    the versions read from every proxy and istiod now. Never raises: a part that cannot be read
    says why (a report must not fail for its header)."""

    out: dict[str, Any] = {"backend": mesh.name, "istio_release": release}
    try:
        # the routes `up` applied (the mesh's --traffic-api); the routing kinds it holds, counted
        seen = traffic_api([*mesh.istio_objects(), *mesh.gateway_api_objects()])
        out["traffic_api"] = {"api": mesh.traffic_api, "kinds": seen["kinds"], "seen": seen["api"]}
    except Exception as e:  # the report's header must not fail the run
        out["traffic_api"] = {"api": "unknown", "error": f"{type(e).__name__}: {e}"}
    try:
        with httpclient.client(timeout=5.0) as http:
            out["readings"] = [read_mesh(http, mesh, when).as_json()]
    except Exception as e:
        out["readings"] = []
        out["error"] = f"versions not read: {type(e).__name__}: {e}"
    return out
