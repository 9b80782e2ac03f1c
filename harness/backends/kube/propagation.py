"""Has every proxy received and ACKed the current config? Pure logic over istiod's debug output
(read with :mod:`harness.backends.istiod`, shared with the local backend).

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

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.backends.istiod import ProxySync, PushCounters, push_version
from harness.errors import BackendError

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
