"""Failure evidence for a report: excerpts of the diagnostics a failed test dumped (Envoy
``config_dump``, ``stats`` and ``clusters`` per proxy, process logs), small enough to fold under
the failed check. The files themselves stay where they were written; the page names them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.report.html import Markup, details, join, pre, tag

_DIAG_DIR = re.compile(r"files in (\S.*)$")

#: Envoy statistics that explain a routing, resilience or security verdict.
_STATS = re.compile(
    r"(\brbac\.|(?<![a-z_])fault\.|outlier_detection\.|overflow|upstream_rq_5xx|upstream_rq_503|"
    r"upstream_cx_connect_fail|upstream_rq_retry\b|upstream_rq_retry_success|ssl\.handshake|"
    r"ssl\.connection_error|no_route|downstream_rq_5xx|update_rejected|cx_none_healthy)"
)
#: The proxy's own plumbing (its xDS and stats clusters), never evidence for a check.
_PLUMBING = ("xds-grpc", "prometheus_stats", "agent", "sds-grpc")
#: Envoy's "no limit": Istio's default circuit breakers, left out of the excerpt.
_UNLIMITED = 4294967295
_CATCH_ALL = ("PassthroughCluster", "BlackHoleCluster", "InboundPassthroughCluster")
MAX_LINES = 30
MAX_TOTAL = 40000


def diagnostics_dir(text: str) -> Path | None:
    """The directory named by a test's ``diagnostics`` property (``"12 files in /path"``)."""
    m = _DIAG_DIR.search(text or "")
    if not m:
        return None
    p = Path(m.group(1).strip())
    return p if p.is_dir() else None


def stats_excerpt(text: str) -> list[str]:
    """Non-zero counters that bear on the suites' properties."""
    out = []
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if not _STATS.search(name) or any(p in name for p in _PLUMBING):
            continue
        value = value.strip()
        if value in ("0", "") or value.startswith("No recorded values"):
            continue
        out.append(line.strip())
    return out


def _walk_configs(doc: Any, kind: str) -> Iterator[Any]:
    for cfg in (doc or {}).get("configs", []):
        if str(cfg.get("@type", "")).endswith(kind):
            yield cfg


def config_excerpt(text: str) -> list[str]:
    """From a ``config_dump``: each route's match and destination (weighted clusters with weights),
    each cluster's outlier detection and circuit breakers, each listener's RBAC and fault filters."""
    try:
        doc = json.loads(text)
    except ValueError:
        return [text.strip().splitlines()[0][:200]] if text.strip() else []
    out: list[str] = []
    for cfg in _walk_configs(doc, "RoutesConfigDump"):
        for rc in cfg.get("dynamic_route_configs", []):
            rconf = rc.get("route_config", {})
            for vh in rconf.get("virtual_hosts", []):
                for r in vh.get("routes", []):
                    match = r.get("match", {})
                    where = (
                        match.get("prefix")
                        or match.get("path")
                        or match.get("safe_regex", {}).get("regex", "")
                    )
                    headers = [h.get("name", "") for h in match.get("headers", [])]
                    route = r.get("route", {})
                    if "weighted_clusters" in route:
                        dest = ", ".join(
                            f"{c.get('name')}={c.get('weight')}"
                            for c in route["weighted_clusters"].get("clusters", [])
                        )
                    else:
                        dest = str(route.get("cluster") or r.get("direct_response", {}).get("status", ""))
                        if dest in _CATCH_ALL:
                            continue
                    fault = (
                        " fault"
                        if "envoy.filters.http.fault" in json.dumps(r.get("typed_per_filter_config", {}))
                        else ""
                    )
                    hdr = f" headers {headers}" if headers else ""
                    out.append(f"route {rconf.get('name')}: {where}{hdr} -> {dest}{fault}")
    for cfg in _walk_configs(doc, "ClustersConfigDump"):
        for c in cfg.get("dynamic_active_clusters", []):
            cl = c.get("cluster", {})
            bits = []
            if "outlier_detection" in cl:
                bits.append("outlier_detection " + json.dumps(cl["outlier_detection"], separators=(",", ":")))
            limits = [
                {k: v for k, v in t.items() if v != _UNLIMITED}
                for t in (cl.get("circuit_breakers") or {}).get("thresholds", [])
            ]
            if any(limits):
                bits.append("circuit_breakers " + json.dumps(limits, separators=(",", ":")))
            if bits:
                out.append(f"cluster {cl.get('name')}: " + "; ".join(bits))
    for cfg in _walk_configs(doc, "ListenersConfigDump"):
        for lst in cfg.get("dynamic_listeners", []):
            active = lst.get("active_state", {}).get("listener", {})
            text_l = json.dumps(active)
            filters = [f for f in ("envoy.filters.http.rbac", "envoy.filters.network.rbac") if f in text_l]
            if filters:
                out.append(f"listener {active.get('name')}: {', '.join(filters)}")
    return out


def log_excerpt(text: str, lines: int = 15) -> list[str]:
    return [line for line in text.splitlines() if line.strip()][-lines:]


def excerpts(directory: Path) -> Markup:
    """Folded excerpts of every diagnostics file in ``directory`` (each capped), with its path."""
    parts: list[Markup] = [tag("p", "full files: ", tag("code", str(directory)), class_="muted")]
    total = 0

    def order(f: Path) -> tuple[int, int, str]:  # counters first, then config, then logs; the gateway first
        kind = 0 if f.name.endswith(".stats.txt") else 1 if f.name.endswith(".config_dump.txt") else 2
        return kind, 0 if "ingressgateway" in f.name else 1, f.name

    for f in sorted(directory.iterdir(), key=order):
        if not f.is_file():
            continue
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        if f.name.endswith(".stats.txt"):
            what, lines = "proxy stats (non-zero counters that bear on the checks)", stats_excerpt(text)
        elif f.name.endswith(".config_dump.txt"):
            what, lines = (
                "config_dump excerpt (routes, clusters' outlier/pool settings, RBAC)",
                config_excerpt(text),
            )
        elif f.name.endswith(".log"):
            what, lines = "log tail", log_excerpt(text)
        else:
            continue
        if not lines:
            continue
        shown = lines[:MAX_LINES]
        body = "\n".join(shown) + (
            f"\n… {len(lines) - len(shown)} more lines" if len(lines) > len(shown) else ""
        )
        total += len(body)
        if total > MAX_TOTAL:
            parts.append(tag("p", "… further excerpts left out (see the files)", class_="muted"))
            break
        parts.append(details(join(tag("code", f.name), f" · {what}"), pre(body)))
    return join(parts)
