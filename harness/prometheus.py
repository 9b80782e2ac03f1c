"""The Prometheus text exposition format (istiod's and Envoy's ``/metrics``), read without I/O."""

from __future__ import annotations

import re
from collections.abc import Mapping

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def metric_sum(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """Sum of the Prometheus samples named ``name`` (or ``name_total``) whose labels include ``labels``.

    None when no sample matches (the metric is absent in this istiod version).
    """
    want = labels or {}
    total, found = 0.0, False
    for line in text.splitlines():
        if not line.lstrip().startswith(name):  # comments, blank lines, other metrics: no regex
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
