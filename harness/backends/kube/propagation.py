"""Has every proxy received and ACKed the current config? Pure logic over istiod's debug output.

Inputs, per istiod replica (read through a port-forward to its monitoring port 15014, which
serves the debug endpoints to localhost callers, and a port-forward arrives from localhost):

- ``/debug/syncz``: per connected proxy and xDS type, the nonce last sent and last ACKed (the
  data ``istioctl proxy-status`` shows). Sent == ACKed is SYNCED; a different ACK is STALE; a
  STALE type with ``lastError`` was NACKed: the proxy rejected the config.
- ``/debug/configz``: the config objects in istiod's store, with their resourceVersions.
- ``/metrics``: ``pilot_inbound_updates{type="config"}`` (config events received) and
  ``pilot_debounce_time_count`` (debounced pushes started).

The mesh has converged on a change when, on every istiod: the store holds each changed Istio
object at its new resourceVersion (or no longer holds a deleted one); when Istio config changed,
a config event was received and a push has started since the change was made; every expected
proxy is connected; every proxy is SYNCED on every type; and all of that stays unchanged over a
quiet window longer than istiod's debounce (``PILOT_DEBOUNCE_AFTER``, 100 ms by default), so no
push is still queued. Istio's own ``istioctl x wait`` needs config-distribution tracking, which is
off by default and gone from current istiod, hence this composite check.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.errors import BackendError

TYPE_NAMES = {
    "type.googleapis.com/envoy.config.cluster.v3.Cluster": "CDS",
    "type.googleapis.com/envoy.config.listener.v3.Listener": "LDS",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration": "RDS",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment": "EDS",
    "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig": "ECDS",
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret": "SDS",
}
# Older istiod (and the top level of current syncz entries): per-type field prefixes.
_LEGACY = {"cluster": "CDS", "listener": "LDS", "route": "RDS", "endpoint": "EDS", "extensionconfig": "ECDS"}


def short_type(type_url: str) -> str:
    return TYPE_NAMES.get(type_url, type_url.rpartition("/")[2] or type_url)


def push_version(nonce: str) -> str:
    """istiod nonces are ``<push version><uuid>``; the push version is ``<RFC3339 time>/<count>``."""
    return nonce[:-36] if len(nonce) > 36 else nonce


@dataclass(frozen=True)
class TypeSync:
    type: str  # short name, e.g. CDS
    sent: str
    acked: str
    error: str = ""

    @property
    def synced(self) -> bool:
        """Nothing sent (not watched) or the last sent nonce ACKed."""
        return not self.sent or self.sent == self.acked

    @property
    def nacked(self) -> bool:
        return not self.synced and bool(self.error)


@dataclass(frozen=True)
class ProxySync:
    proxy: str  # "<pod>.<namespace>"
    proxy_type: str
    types: tuple[TypeSync, ...]
    istiod: str = ""

    @property
    def pending(self) -> tuple[str, ...]:
        return tuple(t.type for t in self.types if not t.synced)

    @property
    def synced(self) -> bool:
        return not self.pending

    @property
    def status(self) -> str:
        """Like the columns of ``istioctl proxy-status``: SYNCED, or the STALE/NACKED types."""
        if self.synced:
            return "SYNCED"
        return ", ".join(f"{t.type} {'NACKED' if t.nacked else 'STALE'}" for t in self.types if not t.synced)


def parse_syncz(data: Any, istiod: str = "") -> list[ProxySync]:
    """Entries of ``/debug/syncz`` (both the per-type ``resources`` map and the older flat fields)."""
    if not isinstance(data, list):
        raise BackendError(f"istiod {istiod or ''} /debug/syncz did not return a list: {str(data)[:200]}")
    out = []
    for e in data:
        if not isinstance(e, dict) or not e.get("proxy"):
            continue
        types: dict[str, TypeSync] = {}
        for prefix, name in _LEGACY.items():
            sent, acked = str(e.get(f"{prefix}_sent") or ""), str(e.get(f"{prefix}_acked") or "")
            if sent or acked:
                types[name] = TypeSync(name, sent, acked)
        resources = e.get("resources")
        if isinstance(resources, dict):
            for url, r in resources.items():
                if not isinstance(r, dict):
                    continue
                name = short_type(str(url))
                types[name] = TypeSync(
                    name, str(r.get("sent") or ""), str(r.get("acked") or ""), str(r.get("lastError") or "")
                )
        out.append(
            ProxySync(
                str(e["proxy"]),
                str(e.get("proxy_type") or ""),
                tuple(sorted(types.values(), key=lambda t: t.type)),
                istiod,
            )
        )
    return out


ConfigKey = tuple[str, str, str, str]  # (group, kind, namespace, name)


def config_index(data: Any) -> dict[ConfigKey, str]:
    """``/debug/configz`` as {(group, kind, namespace, name): resourceVersion}."""
    out: dict[ConfigKey, str] = {}
    for obj in data if isinstance(data, list) else []:
        if not isinstance(obj, dict):
            continue
        meta = obj.get("metadata") or {}
        group = str(obj.get("apiVersion", "")).rpartition("/")[0]
        key = (group, str(obj.get("kind", "")), str(meta.get("namespace") or ""), str(meta.get("name", "")))
        out[key] = str(meta.get("resourceVersion") or "")
    return out


@dataclass(frozen=True)
class ConfigExpectation:
    """An Istio object istiod must hold at ``resource_version`` (None: must not hold it any more)."""

    group: str
    kind: str
    namespace: str
    name: str
    resource_version: str | None

    @property
    def key(self) -> ConfigKey:
        return (self.group, self.kind, self.namespace, self.name)

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"


def _rv_at_least(seen: str, want: str) -> bool:
    if seen == want:
        return True
    return seen.isdigit() and want.isdigit() and int(seen) > int(want)


def config_lag(index: Mapping[ConfigKey, str], expected: Iterable[ConfigExpectation]) -> list[str]:
    """What istiod's store does not reflect yet."""
    out = []
    for x in expected:
        seen = index.get(x.key)
        if x.resource_version is None:
            if seen is not None:
                out.append(f"{x} still present")
        elif seen is None:
            out.append(f"{x} not seen yet")
        elif not _rv_at_least(seen, x.resource_version):
            out.append(f"{x} at resourceVersion {seen}, want {x.resource_version}")
    return out


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_sum(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """Sum of the Prometheus samples named ``name`` (or ``name_total``) whose labels include ``labels``.

    None when no sample matches (the metric is absent in this istiod version).
    """
    want = labels or {}
    total, found = 0.0, False
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line.strip())
        if not m or m.group(1) not in (name, f"{name}_total"):
            continue
        have = dict(_LABEL.findall(m.group(2) or ""))
        if any(have.get(k) != v for k, v in want.items()):
            continue
        try:
            total += float(m.group(3))
        except ValueError:
            continue
        found = True
    return total if found else None


@dataclass(frozen=True)
class PushCounters:
    config_updates: float | None  # pilot_inbound_updates{type="config"}
    pushes: float | None  # pilot_debounce_time_count

    @classmethod
    def from_metrics(cls, text: str) -> PushCounters:
        return cls(
            metric_sum(text, "pilot_inbound_updates", {"type": "config"}),
            metric_sum(text, "pilot_debounce_time_count"),
        )


@dataclass(frozen=True)
class IstiodSample:
    """One read of one istiod replica."""

    pod: str
    proxies: tuple[ProxySync, ...]
    config: Mapping[ConfigKey, str] = field(default_factory=dict)
    counters: PushCounters = PushCounters(None, None)


@dataclass(frozen=True)
class Verdict:
    problems: tuple[str, ...]  # not converged yet, and why
    nacks: tuple[str, ...]  # proxies that rejected config: waiting will not help

    @property
    def ok(self) -> bool:
        return not self.problems and not self.nacks


def _not_above(now: float | None, before: float | None) -> bool:
    """True when both counters are known and ``now`` has not grown (a missing metric never blocks)."""
    return now is not None and before is not None and now <= before


def evaluate(
    samples: Sequence[IstiodSample],
    *,
    expected_proxies: Iterable[str] = (),
    expectations: Sequence[ConfigExpectation] = (),
    baseline: Mapping[str, PushCounters] | None = None,
) -> Verdict:
    """Whether one round of samples shows a converged mesh (see the module docstring)."""
    problems: list[str] = []
    nacks: list[str] = []
    if not samples:
        return Verdict(("no istiod replica answered",), ())
    for s in samples:
        problems += [f"istiod {s.pod}: {p}" for p in config_lag(s.config, expectations)]
        base = (baseline or {}).get(s.pod)
        if base is not None and expectations:
            if _not_above(s.counters.config_updates, base.config_updates):
                problems.append(f"istiod {s.pod}: no config event received since the change")
            elif _not_above(s.counters.pushes, base.pushes):
                problems.append(f"istiod {s.pod}: no push started since the change")
    connected: dict[str, ProxySync] = {}
    for s in samples:
        for p in s.proxies:
            connected[p.proxy] = p
    missing = sorted(set(expected_proxies) - set(connected))
    if missing:
        problems.append(
            f"not connected to istiod: {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else "")
        )
    for p in sorted(connected.values(), key=lambda p: p.proxy):
        nacks += [
            f"{p.proxy} rejected {t.type} push {push_version(t.sent)}: {t.error}" for t in p.types if t.nacked
        ]
        if not p.synced:
            problems.append(f"{p.proxy}: {p.status}")
    return Verdict(tuple(problems), tuple(nacks))


def fingerprint(samples: Sequence[IstiodSample]) -> tuple[Any, ...]:
    """What must stay unchanged across the quiet window."""
    return tuple(
        (
            s.pod,
            s.counters,
            tuple(sorted((p.proxy, t.type, t.sent, t.acked) for p in s.proxies for t in p.types)),
        )
        for s in sorted(samples, key=lambda s: s.pod)
    )


class Convergence:
    """A ``wait.until`` check: truthy once a round is converged *and* identical to the previous round.

    Use with ``converge=N``: N consecutive truthy rounds are N+1 identical converged samples, which
    span N polling intervals of quiet. A NACK raises BackendError at once.
    """

    def __init__(
        self,
        sample: Callable[[], Sequence[IstiodSample]],
        *,
        expected_proxies: Iterable[str] = (),
        expectations: Sequence[ConfigExpectation] = (),
        baseline: Mapping[str, PushCounters] | None = None,
    ) -> None:
        self._sample = sample
        self._expected = tuple(expected_proxies)
        self._expectations = tuple(expectations)
        self._baseline = dict(baseline or {})
        self._previous: tuple[Any, ...] | None = None
        self.last: Verdict | None = None
        self.proxies = 0

    def __call__(self) -> str | None:
        samples = self._sample()
        verdict = evaluate(
            samples, expected_proxies=self._expected, expectations=self._expectations, baseline=self._baseline
        )
        self.last = verdict
        if verdict.nacks:
            raise BackendError("a proxy rejected the configuration (NACK): " + "; ".join(verdict.nacks))
        if verdict.problems:
            self._previous = None
            return None
        fp = fingerprint(samples)
        stable = fp == self._previous
        self._previous = fp
        self.proxies = len({p.proxy for s in samples for p in s.proxies})
        return f"{self.proxies} proxies SYNCED" if stable else None

    def describe(self) -> str:
        if self.last is None:
            return "(no sample yet)"
        if self.last.ok:
            return "converged, waiting for a quiet window"
        return "; ".join((self.last.nacks + self.last.problems)[:10])
