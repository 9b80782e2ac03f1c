"""Reading istiod's and Envoy's debug endpoints: sync state, propagation, ejections."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import httpx

from harness import wait

TYPES = ("cluster", "listener", "route", "endpoint")


def syncz(http: httpx.Client, istiod_url: str) -> list[dict[str, Any]]:
    r = http.get(f"{istiod_url}/debug/syncz")
    r.raise_for_status()
    data = r.json()
    return data if isinstance(data, list) else []


def unsynced(entries: list[dict[str, Any]]) -> list[str]:
    """Proxies whose last sent config (any type) is not ACKed yet, as 'proxy:type'."""
    return [
        f"{e.get('proxy')}:{t}"
        for e in entries
        for t in TYPES
        if e.get(f"{t}_sent", "") != e.get(f"{t}_acked", "")
    ]


def wait_synced(http: httpx.Client, istiod_url: str, expected_proxies: int, *, timeout: float) -> float:
    """Block until ``expected_proxies`` are connected and every one has ACKed what istiod sent."""
    t0 = time.monotonic()

    def check() -> bool | None:
        entries = syncz(http, istiod_url)
        pending = unsynced(entries)
        check.last = f"{len(entries)}/{expected_proxies} proxies connected, unacked: {pending[:6]}"  # type: ignore[attr-defined]
        return len(entries) >= expected_proxies and not pending

    try:
        wait.until(
            check,
            what=f"{expected_proxies} proxies connected and in sync with istiod",
            timeout=timeout,
            interval=0.05,
            retry_on=(httpx.HTTPError,),
        )
    except Exception as e:
        e.add_note(getattr(check, "last", ""))
        raise
    return time.monotonic() - t0


_METRIC = re.compile(r"^(\w+)(\{[^}]*\})?\s+([0-9.eE+-]+)$")


def metrics(http: httpx.Client, monitoring_url: str) -> dict[str, float]:
    r = http.get(f"{monitoring_url}/metrics")
    r.raise_for_status()
    out: dict[str, float] = {}
    for line in r.text.splitlines():
        m = _METRIC.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


@dataclass(frozen=True)
class PushMark:
    config_updates: float
    debounces: float


def push_mark(http: httpx.Client, monitoring_url: str) -> PushMark:
    m = metrics(http, monitoring_url)
    return PushMark(
        m.get('pilot_inbound_updates{type="config"}', 0.0), m.get("pilot_debounce_time_count", 0.0)
    )


def wait_propagated(
    http: httpx.Client,
    istiod_url: str,
    monitoring_url: str,
    before: PushMark,
    expected_proxies: int,
    *,
    timeout: float,
) -> float:
    """After a config write: wait until istiod ingested it, pushed it, and every proxy ACKed."""
    t0 = time.monotonic()
    ingested: dict[str, float] = {}

    def check() -> bool:
        m = push_mark(http, monitoring_url)
        if m.config_updates <= before.config_updates:
            check.last = "istiod has not seen the config change yet"  # type: ignore[attr-defined]
            return False
        if "debounces" not in ingested:
            ingested["debounces"] = m.debounces
        # a push that ran after the change was ingested (or a push since the write, if ingested late)
        if m.debounces <= before.debounces:
            check.last = "istiod has not pushed since the change"  # type: ignore[attr-defined]
            return False
        entries = syncz(http, istiod_url)
        pending = unsynced(entries)
        check.last = f"{len(entries)}/{expected_proxies} connected, unacked: {pending[:6]}"  # type: ignore[attr-defined]
        return len(entries) >= expected_proxies and not pending

    wait.until(
        check,
        what="config change pushed by istiod and ACKed by every proxy",
        timeout=timeout,
        interval=0.05,
        retry_on=(httpx.HTTPError,),
        converge=2,
    )
    return time.monotonic() - t0
