"""Requests lost right after a config change on the local mesh: policy changes with traffic right behind.

Usage: .venv/bin/python bench/bench_drain.py [--cycles 30] [--n 300] [--state DIR]

Brings up the embedded local mesh and, cycle after cycle, applies an AuthorizationPolicy that
allows everything on the sample (it changes the sample sidecars' inbound listener, as every
policy check of the suites does), waits an offset, sends ``--n`` requests through the ingress at
concurrency 16 (``meshproof send``), deletes the policy, waits an offset, sends again. ``apply``
and ``delete`` return once every proxy ACKed; the offsets (0-0.8 s, in turn) place the traffic's
start at different points of the replaced listener's drain, which is when Envoy closes the
connections it still holds (the proxies' ``drainDuration``). The offsets are the stimulus, not
synchronisation.

Prints JSON: requests, statuses, how many sends saw a non-200 and the ingress access log's lines
for them (response flags and details say why). Until 2026-12-06 the local proxies ran
``drainDuration: 1s``; docs/BENCHMARKS.md has that run against Istio's default beside it.
Never run from tests.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLICY = """apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: bench-drain
  namespace: sample
spec:
  selector:
    matchLabels:
      app: microservice-1
  action: ALLOW
  rules:
  - {}
"""
OFFSETS_S = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def cli(state: Path, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "harness.cli", *args, "--state", str(state)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=30)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--state", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-drain-"))
    state = args.state or work / "state"
    policy = work / "policy.yaml"
    policy.write_text(POLICY)
    statuses: collections.Counter[str] = collections.Counter()
    bad_sends = sends = 0
    t0 = time.monotonic()
    cli(state, "up", "--detach")
    try:
        for i in range(args.cycles):
            for verb in ("apply", "delete"):
                cli(state, verb, "-f", str(policy))
                time.sleep(OFFSETS_S[(2 * i + (verb == "delete")) % len(OFFSETS_S)])
                doc = json.loads(cli(state, "send", "-n", str(args.n), "--concurrency", "16", "--json"))
                statuses.update(doc["status"])
                sends += 1
                bad_sends += any(code != "200" for code in doc["status"])
        log = next((state / "logs").glob("*gateway*"), None)
        lines = [
            ln for ln in (log.read_text().splitlines() if log else []) if '" 503 ' in ln or '" 502 ' in ln
        ]
    finally:
        cli(state, "down")
    print(
        json.dumps(
            {
                "cycles": args.cycles,
                "changes": 2 * args.cycles,
                "sends": sends,
                "sends_with_a_non_200": bad_sends,
                "requests": sum(statuses.values()),
                "statuses": dict(statuses),
                "ingress_5xx_log": lines[:20],
                "wall_s": round(time.monotonic() - t0, 1),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
