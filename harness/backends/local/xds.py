"""Waiting for the embedded istiod: every proxy connected and in sync, a config change pushed and ACKed.

Reads istiod through :mod:`harness.backends.istiod` (shared with the kube backend)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness import wait
from harness.backends.istiod import ProxySync, read_push_counters, read_syncz
from harness.errors import BackendError

if TYPE_CHECKING:  # loaded lazily: attaching to a mesh (`meshproof send`) needs no HTTP client
    import httpx


#: Every Envoy istiod configures watches clusters and listeners; until both were sent and ACKed
#: the proxy runs no config from istiod, although nothing sent to it is unACKed.
CONFIGURED_BY = ("CDS", "LDS")


def unsynced(entries: list[ProxySync]) -> list[str]:
    """Proxies not in sync, as 'proxy:type': config sent and not ACKed yet, or clusters or listeners
    never sent (a proxy that has just connected can be listed before istiod has answered it)."""
    out = []
    for e in entries:
        sent = {t.type for t in e.types if t.sent}
        out += [f"{e.proxy}:{t}" for t in CONFIGURED_BY if t not in sent]
        out += [f"{e.proxy}:{t}" for t in e.pending]
    return out


def all_synced(http: httpx.Client, istiod_url: str, expected_proxies: int) -> tuple[bool, str]:
    """Whether ``expected_proxies`` are connected and every one has ACKed what istiod sent, and what
    was seen (for a wait's last-seen note)."""
    entries = read_syncz(http, istiod_url)
    pending = unsynced(entries)
    seen = f"{len(entries)}/{expected_proxies} proxies connected, unacked: {pending[:6]}"
    return len(entries) >= expected_proxies and not pending, seen


def wait_synced(http: httpx.Client, istiod_url: str, expected_proxies: int, *, timeout: float) -> float:
    """Block until ``expected_proxies`` are connected and every one has ACKed what istiod sent."""
    import httpx  # the caller's client has loaded it

    t0 = time.monotonic()

    def check() -> bool | None:
        synced, check.last = all_synced(http, istiod_url, expected_proxies)  # type: ignore[attr-defined]
        return synced

    try:
        wait.until(
            check,
            what=f"{expected_proxies} proxies connected and in sync with istiod",
            timeout=timeout,
            interval=0.05,
            retry_on=(httpx.HTTPError, BackendError),  # BackendError: syncz not a list yet
        )
    except Exception as e:
        e.add_note(getattr(check, "last", ""))
        raise
    return time.monotonic() - t0


@dataclass(frozen=True)
class PushMark:
    config_updates: float
    debounces: float


def push_mark(http: httpx.Client, monitoring_url: str) -> PushMark:
    c = read_push_counters(http, monitoring_url)
    return PushMark(c.config_updates or 0.0, c.pushes or 0.0)


ConfigKey = tuple[str, str, str, str]  # (group, kind, namespace, name), as istiod's configz lists it


def config_key(obj: Mapping[str, Any]) -> ConfigKey:
    meta = obj.get("metadata") or {}
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    return (group, str(obj.get("kind", "")), str(meta.get("namespace") or ""), str(meta.get("name", "")))


def cluster_name(obj: Mapping[str, Any]) -> str:
    """How istiod's in-memory cluster names an object in its sync reports: ``[GROUP/]KIND/[NS/]NAME``."""
    group, kind, ns, name = config_key(obj)
    return "/".join(p for p in (group, kind, ns, name) if p)


def resource_path(obj: Mapping[str, Any]) -> str:
    """Where istiod's in-memory cluster serves ``obj``: ``/apis/GROUP/VERSION/namespaces/NS/PLURAL/NAME``
    (``/api/v1/...`` for the core group); the plural as Kubernetes' REST mapper guesses it."""
    group, kind, ns, name = config_key(obj)
    version = str(obj.get("apiVersion", "")).rpartition("/")[2]
    lower = kind.lower()
    plural = lower[:-1] + "ies" if lower.endswith("y") and lower[-2:-1] not in "aeiou" else lower + "s"
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    return f"{base}/namespaces/{ns}/{plural}/{name}" if ns else f"{base}/{plural}/{name}"


def stored_version(http: httpx.Client, kube_api_url: str, obj: Mapping[str, Any]) -> str:
    """The resourceVersion istiod's in-memory cluster stores ``obj`` at ("" if it does not)."""
    r = http.get(f"{kube_api_url}{resource_path(obj)}")
    if r.status_code != 200:
        return ""
    return str((r.json().get("metadata") or {}).get("resourceVersion") or "")


def held_versions(configz: Any) -> dict[ConfigKey, str]:
    """``/debug/configz``: the resourceVersion of every object istiod's config store holds."""
    return {config_key(c): str((c.get("metadata") or {}).get("resourceVersion") or "") for c in configz or []}


def _at_least(seen: str, want: str) -> bool:
    """A held resourceVersion is the wanted one or newer (istiod's status writes bump it)."""
    if seen.isdigit() and want.isdigit():
        return int(seen) >= int(want)
    return seen == want


def config_lag(held: Mapping[ConfigKey, str], expect: Mapping[ConfigKey, str | None]) -> list[str]:
    """What istiod's store does not reflect yet: an object not held at its version (None: still
    held after its deletion)."""
    out = []
    for key, want in expect.items():
        seen = held.get(key)
        name = "/".join(p for p in key if p)
        if want is None and seen is not None:
            out.append(f"{name} still held")
        elif want is not None and (seen is None or not _at_least(seen, want)):
            out.append(f"{name} at {want or 'its new version'} (holds {seen})")
    return out


def wait_propagated(
    http: httpx.Client,
    istiod_url: str,
    monitoring_url: str,
    before: PushMark,
    expected_proxies: int,
    *,
    timeout: float,
    expect: Mapping[ConfigKey, str | None] | None = None,
    require_push: bool = True,
) -> float:
    """After a config write: wait until istiod holds the changed objects at their stored versions
    (``expect``; None: deleted), has pushed what changed (``require_push``: the change must make
    istiod push, as every Istio object does; otherwise only a push that was started), every proxy
    ACKed, and istiod's push counters stayed unchanged over the last two reads (no push still
    debounced)."""
    import httpx  # the caller's client has loaded it

    t0 = time.monotonic()
    held = not expect
    pushed = False  # both counters only grow: once seen past the mark, only the ACKs are read again
    previous: list[PushMark] = []

    def check() -> bool:
        nonlocal held, pushed
        if not held:
            r = http.get(f"{istiod_url}/debug/configz")
            r.raise_for_status()
            lag = config_lag(held_versions(r.json()), expect or {})
            if lag:
                check.last = f"istiod does not hold {', '.join(lag[:4])} yet"  # type: ignore[attr-defined]
                return False
            held = True
        quiet = True
        if not pushed:
            m = push_mark(http, monitoring_url)
            seen = m.config_updates > before.config_updates
            if require_push and not seen:
                check.last = "istiod has not seen the config change yet"  # type: ignore[attr-defined]
                return False
            # a push that ran after the change was ingested (or a push since the write, if ingested late)
            if seen and m.debounces <= before.debounces:
                check.last = "istiod has not pushed since the change"  # type: ignore[attr-defined]
                return False
            pushed = seen
            # no push triggered (yet): the counters must hold still between two reads
            quiet = seen or previous == [m]
            previous[:] = [m]
        synced, check.last = all_synced(http, istiod_url, expected_proxies)  # type: ignore[attr-defined]
        return synced and quiet

    wait.until(
        check,
        what="config change held and pushed by istiod and ACKed by every proxy",
        timeout=timeout,
        interval=0.05,
        retry_on=(httpx.HTTPError,),
        converge=2,
    )
    return time.monotonic() - t0


def parse_endpoint_identities(shardz: Any) -> dict[tuple[str, str], set[str]]:
    """From istiod's ``/debug/endpointShardz``: per workload ``(namespace, name)`` that backs a
    service, the SPIFFE IDs istiod gives its endpoints (what clients expect the server to present)."""
    out: dict[tuple[str, str], set[str]] = {}
    for by_namespace in (shardz or {}).values():
        for shard in (by_namespace or {}).values():
            for endpoints in ((shard or {}).get("Shards") or {}).values():
                for ep in endpoints or []:
                    key = (str(ep.get("Namespace", "")), str(ep.get("WorkloadName", "")))
                    out.setdefault(key, set()).add(str(ep.get("ServiceAccount", "")))
    return out


def sync_cluster(http: httpx.Client, kube_api_url: str) -> dict[str, Any]:
    """Make istiod's in-memory cluster hold the state dir's objects now (the launcher's POST /sync;
    it also syncs by itself when files change). Returns what changed; raises BackendError naming
    the objects it could not store."""
    r = http.post(f"{kube_api_url}/sync", timeout=30)
    try:
        report: dict[str, Any] = r.json()
    except ValueError as e:
        raise BackendError(
            f"istiod's cluster sync at {kube_api_url} answered {r.status_code}: {r.text[:300]}"
        ) from e
    if r.status_code != 200 or report.get("errors"):
        raise BackendError(
            f"istiod's in-memory cluster refused objects: {'; '.join(report.get('errors') or [r.text[:300]])}"
        )
    return report


def wait_service_accounts(
    http: httpx.Client,
    istiod_url: str,
    monitoring_url: str,
    before: PushMark,
    expected_proxies: int,
    want: dict[tuple[str, str], tuple[str, str]],
    *,
    timeout: float,
) -> float:
    """After changing the ServiceAccount of Pods (``want``: (namespace, workload name) ->
    (ServiceAccount, its SPIFFE ID)): wait until istiod's endpoints of every service they back carry
    the new identity and, if any does, until istiod pushed that and every proxy ACKed it. Pods that
    back no service change no proxy's config: istiod pushes nothing.
    """
    import httpx  # the caller's client has loaded it

    t0 = time.monotonic()

    def get(path: str) -> Any:
        r = http.get(f"{istiod_url}{path}")
        r.raise_for_status()
        return r.json()

    def check() -> bool:
        endpoints = parse_endpoint_identities(get("/debug/endpointShardz"))
        served = [k for k in want if k in endpoints]
        stale = sorted(
            f"{ns}/{n}: {endpoints[(ns, n)]}" for ns, n in served if endpoints[(ns, n)] != {want[(ns, n)][1]}
        )
        if stale:
            check.last = f"istiod's endpoints still carry the old identity: {stale}"  # type: ignore[attr-defined]
            return False
        if served and push_mark(http, monitoring_url).debounces <= before.debounces:
            check.last = "istiod has not pushed the endpoints' new identity yet"  # type: ignore[attr-defined]
            return False
        synced, check.last = all_synced(http, istiod_url, expected_proxies)  # type: ignore[attr-defined]
        return synced

    try:
        wait.until(
            check,
            what="istiod's endpoints to carry the workloads' new ServiceAccount and every proxy to ACK it",
            timeout=timeout,
            interval=0.05,
            retry_on=(httpx.HTTPError, ValueError),
            converge=2,
        )
    except Exception as e:
        e.add_note(getattr(check, "last", ""))
        raise
    return time.monotonic() - t0
