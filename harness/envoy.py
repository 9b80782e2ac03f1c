"""Reading a proxy's Envoy admin API, whichever backend runs it: ejections and cluster counters.

Pure parsers take the admin endpoint's text; the readers fetch it with an injected httpx client.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import httpx

from harness.errors import BackendError
from harness.mesh import Workload


def parse_ejected(clusters_text: str) -> dict[str, list[str]]:
    """From Envoy's ``/clusters`` text: per upstream cluster, hosts flagged by outlier detection."""
    out: dict[str, list[str]] = {}
    for line in clusters_text.splitlines():
        parts = line.split("::")
        if len(parts) >= 4 and parts[2] == "health_flags" and "failed_outlier_check" in parts[3]:
            out.setdefault(parts[0], []).append(parts[1])
    return out


def _get(http: httpx.Client, url: str, **params: str) -> str:
    try:
        r = http.get(url, params=params or None)
        r.raise_for_status()
    except httpx.HTTPError as e:
        raise BackendError(f"cannot read Envoy admin {url}: {e}") from e
    return r.text


def ejected_hosts(http: httpx.Client, admin_url: str) -> dict[str, list[str]]:
    return parse_ejected(_get(http, f"{admin_url}/clusters"))


def ejections(http: httpx.Client, workloads: Iterable[Workload]) -> dict[str, dict[str, list[str]]]:
    """Per calling proxy (``ns/pod``), per upstream cluster, the hosts outlier detection ejected."""
    return {w.ref: ejected_hosts(http, w.proxy_admin_url) for w in workloads if w.proxy_admin_url}


def cluster_stats(http: httpx.Client, admin_url: str, cluster_substring: str) -> Mapping[str, float]:
    """Numeric ``/stats`` entries whose name contains ``cluster_substring``."""
    text = _get(http, f"{admin_url}/stats", filter=re.escape(cluster_substring))
    out: dict[str, float] = {}
    for line in text.splitlines():
        k, _, v = line.partition(": ")
        try:
            out[k] = float(v)
        except ValueError:
            continue
    return out
