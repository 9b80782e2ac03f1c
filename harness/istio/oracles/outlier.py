"""Effective outlier detection of an Envoy cluster: what istiod generated, Envoy's defaults filled in.

The input is the cluster as the proxy runs it (``/config_dump`` ``dynamic_active_clusters``).
A cluster without an ``outlier_detection`` block does no outlier detection. Inside the block,
every field Istio leaves unset takes Envoy's documented default
(envoy.config.cluster.v3.OutlierDetection): ``consecutive_5xx`` 5 enforced at 100%,
``consecutive_gateway_failure`` 5 enforced at 0% (i.e. off), ``interval`` 10s,
``base_ejection_time`` 30s, ``max_ejection_time`` 300s, ``max_ejection_percent`` 10,
``consecutive_local_origin_failure`` 5 enforced at 100% (only with
``split_external_local_origin_errors``), success-rate ejection enforced at 100% with 5 hosts
and 100 requests minimum, failure-percentage ejection enforced at 0%.

So a DestinationRule whose only error threshold is the deprecated ``consecutiveErrors`` (which
Istio no longer translates) still ejects after 5 consecutive 5xx: Envoy's default.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


def _uint(block: Mapping[str, Any], name: str, default: int) -> int:
    value = block.get(name)
    if isinstance(value, Mapping):  # a wrapper written out as {"value": N}
        value = value.get("value")
    if value is None:
        return default
    return int(value)


def _seconds(block: Mapping[str, Any], name: str, default: float) -> float:
    value = block.get(name)
    if value is None:
        return default
    if isinstance(value, str):
        return float(value.rstrip("s"))
    if isinstance(value, Mapping):
        return float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
    return float(value)


#: EffectiveOutlier's fields named otherwise in Envoy's OutlierDetection (every other one is the same)
_ENVOY_NAMES = {
    "interval_s": "interval",
    "base_ejection_time_s": "base_ejection_time",
    "max_ejection_time_s": "max_ejection_time",
}


@dataclass(frozen=True)
class EffectiveOutlier:
    consecutive_5xx: int = 5
    enforcing_consecutive_5xx: int = 100
    consecutive_gateway_failure: int = 5
    enforcing_consecutive_gateway_failure: int = 0
    interval_s: float = 10.0
    base_ejection_time_s: float = 30.0
    max_ejection_time_s: float = 300.0
    max_ejection_percent: int = 10
    split_external_local_origin_errors: bool = False
    consecutive_local_origin_failure: int = 5
    enforcing_consecutive_local_origin_failure: int = 100
    enforcing_success_rate: int = 100
    success_rate_minimum_hosts: int = 5
    success_rate_request_volume: int = 100
    enforcing_failure_percentage: int = 0
    always_eject_one_host: bool = False

    @classmethod
    def from_cluster(cls, cluster: Mapping[str, Any]) -> EffectiveOutlier | None:
        """The cluster's outlier detection, or None when the cluster has none."""
        od = cluster.get("outlier_detection")
        if od is None:
            return None
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name, default = _ENVOY_NAMES.get(f.name, f.name), f.default
            if isinstance(default, bool):
                values[f.name] = bool(od.get(name, default))
            elif isinstance(default, float):
                values[f.name] = _seconds(od, name, default)
            else:
                values[f.name] = _uint(od, name, int(default))  # type: ignore[arg-type]
        return cls(**values)

    @property
    def ejects_after_5xx(self) -> int | None:
        """Consecutive 5xx (500 included) that eject a host, or None when that rule is off."""
        if self.enforcing_consecutive_5xx <= 0 or self.consecutive_5xx <= 0:
            return None
        return self.consecutive_5xx

    @property
    def ejects_after_gateway_errors(self) -> int | None:
        """Consecutive 502/503/504 (and connection failures) that eject, or None when off."""
        if self.enforcing_consecutive_gateway_failure <= 0 or self.consecutive_gateway_failure <= 0:
            return None
        return self.consecutive_gateway_failure

    def max_ejected(self, hosts: int) -> int:
        """Hosts Envoy keeps ejected at once: it ejects another only while
        ``(ejected + 1) * 100 / hosts <= max_ejection_percent`` (at least one host when
        ``always_eject_one_host`` is set)."""
        if hosts <= 0:
            return 0
        cap = math.floor(hosts * self.max_ejection_percent / 100)
        if self.always_eject_one_host:
            cap = max(cap, 1)
        return min(hosts, cap)

    def readmitted_after_s(self, times_ejected: int = 1) -> float:
        """Earliest time an ejected host comes back: base_ejection_time x times ejected, capped."""
        longest = max(self.max_ejection_time_s, self.base_ejection_time_s)
        return min(self.base_ejection_time_s * max(times_ejected, 1), longest)

    def describe(self) -> str:
        parts = []
        c5 = self.ejects_after_5xx
        gw = self.ejects_after_gateway_errors
        parts.append(f"eject after {c5} consecutive 5xx" if c5 else "consecutive 5xx: off")
        parts.append(f"after {gw} consecutive gateway errors" if gw else "gateway errors: off")
        parts.append(f"interval {self.interval_s:g}s")
        parts.append(f"base ejection {self.base_ejection_time_s:g}s")
        parts.append(f"at most {self.max_ejection_percent}% of hosts")
        return ", ".join(parts)
