"""Background load for chaos experiments, and reading its recent window.

Two engines (:func:`harness.chaos.actions.start_load` ``engine=``): ``locust`` (the default:
:class:`harness.load.LocustRun`, whose locustfile logs every request to ``events/*.tsv``) and
``sampler`` (this module's ``main``: the harness sampler in a loop, in its own process).
:func:`window_of` and :func:`last_error_of` read either from the ledger entry of the load.

The sampler engine:

``python -m harness.chaos.loadgen --state DIR --out FILE [--source S] [--concurrency C] ...``
sends batches of ``--concurrency`` x 4 requests until SIGTERM and appends one JSON line per batch
to ``FILE``: ``{"t0", "t1", "n", "status": {"200": n, ...}, "pods": {...}, "lat": [ms, ...]}``
(wall-clock seconds; ``lat`` of requests that got an HTTP response). Probes sum the batches
that ended inside their window (:func:`window`), so the window's resolution is one batch
(tens of milliseconds). It is started and stopped by :func:`harness.chaos.actions.start_load` /
``stop_load``, recorded in the chaos ledger, and dies with the process that started it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any


@dataclass(frozen=True)
class Window:
    """Requests of the batches that ended in ``[start, end]``."""

    start: float
    end: float
    total: int = 0
    status: dict[str, int] = field(default_factory=dict)
    pods: dict[str, int] = field(default_factory=dict)
    latencies_ms: tuple[float, ...] = ()

    @property
    def errors(self) -> int:
        """Requests without a 2xx/3xx/4xx answer: 5xx and no response at all (status 0)."""
        return sum(n for code, n in self.status.items() if code == "0" or code.startswith("5"))


def batches(path: Path) -> Iterator[dict[str, object]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return
    for line in text.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:  # a line being written right now
            continue
        if isinstance(doc, dict):
            yield doc


def window(path: Path, start: float, end: float) -> Window:
    total = 0
    status: Counter[str] = Counter()
    pods: Counter[str] = Counter()
    lat: list[float] = []
    for b in batches(path):
        t1 = float(b.get("t1", 0.0))  # type: ignore[arg-type]
        if not start <= t1 <= end:
            continue
        total += int(b.get("n", 0))  # type: ignore[call-overload]
        status.update({str(k): int(v) for k, v in dict(b.get("status") or {}).items()})  # type: ignore[call-overload]
        pods.update({str(k): int(v) for k, v in dict(b.get("pods") or {}).items()})  # type: ignore[call-overload]
        lat.extend(float(x) for x in list(b.get("lat") or []))  # type: ignore[call-overload]
    return Window(start, end, total, dict(status), dict(pods), tuple(lat))


def last_error_at(path: Path, start: float, end: float) -> float | None:
    """End time of the last batch in ``[start, end]`` that had an error (5xx or no response)."""
    last = None
    for b in batches(path):
        t1 = float(b.get("t1", 0.0))  # type: ignore[arg-type]
        status = {str(k): int(v) for k, v in dict(b.get("status") or {}).items()}  # type: ignore[call-overload]
        if start <= t1 <= end and any(k == "0" or k.startswith("5") for k, v in status.items() if v):
            last = t1 if last is None else max(last, t1)
    return last


def locust_window(events_dir: Path, start: float, end: float) -> Window:
    """Requests Locust logged that completed in ``[start, end]`` (send time + latency)."""
    total = 0
    status: Counter[str] = Counter()
    pods: Counter[str] = Counter()
    lat: list[float] = []
    for r in locust_records(events_dir):
        done = r.start + r.latency_ms / 1000.0
        if not start <= done <= end:
            continue
        total += 1
        status[str(r.status)] += 1
        if r.pod:
            pods[r.pod] += 1
        if r.status:
            lat.append(r.latency_ms)
    return Window(start, end, total, dict(status), dict(pods), tuple(lat))


def locust_records(events_dir: Path) -> Iterator[Any]:
    from harness.load import RequestRecord

    for path in sorted(events_dir.glob("events-*.tsv")):
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            r = RequestRecord.parse(line)
            if r is not None:
                yield r


def window_of(load: Mapping[str, Any], start: float, end: float) -> Window:
    """The window of the load whose ledger data is ``load``."""
    if load.get("engine") == "locust":
        return locust_window(Path(str(load["workdir"])) / "events", start, end)
    return window(Path(str(load["records"])), start, end)


def last_error_of(load: Mapping[str, Any], start: float, end: float) -> float | None:
    """When the last request that got a 5xx or no answer completed, within ``[start, end]``."""
    if load.get("engine") == "locust":
        last = None
        for r in locust_records(Path(str(load["workdir"])) / "events"):
            done = r.start + r.latency_ms / 1000.0
            if start <= done <= end and (r.status == 0 or r.status >= 500):
                last = done if last is None else max(last, done)
        return last
    return last_error_at(Path(str(load["records"])), start, end)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="meshproof-chaos-load")
    ap.add_argument("--state", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--source", default="ingress")
    ap.add_argument("--path", default="/api/greet")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--header", action="append", default=[])
    a = ap.parse_args(argv)

    from harness.backends import attach
    from harness.settings import from_env
    from harness.traffic.client import Sampler

    stop = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the run's Ctrl-C is for chaos; it stops us by SIGTERM
    backend = attach(from_env().with_overrides(state_dir=Path(a.state)))
    headers = dict(h.split(":", 1) for h in a.header)
    out = Path(a.out)
    batch = a.concurrency * 4
    with Sampler(timeout=5.0, max_connections=max(a.concurrency, 1)) as sampler, open(out, "a") as fh:
        while not stop:
            t0 = time.time()
            result = sampler.sample(
                backend,
                source=a.source,
                path=a.path,
                n=batch,
                concurrency=a.concurrency,
                headers={k.strip(): v.strip() for k, v in headers.items()},
            )
            doc = {
                "t0": t0,
                "t1": time.time(),
                "n": result.total,
                "status": {str(k): v for k, v in result.status_counts().items()},
                "pods": result.pod_counts(None),
                "lat": [round(x, 2) for x in result.latencies_ms()],
            }
            fh.write(json.dumps(doc) + "\n")
            fh.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
