"""Sampler throughput against wrk, side by side on the same mesh and path, in one run.

Usage: .venv/bin/python bench/bench_sampler.py [--rounds 3] [--n 6000] [--ref GIT_REF] [--state DIR]

Brings up the embedded local mesh (or uses the running one of ``--state``) and, round after
round, measures on the same path with the same connection count (16):

* ``wrk -t2 -c16`` through the ingress (``/api/greet``) and against the client workload's
  ``/api/call`` (the in-mesh path: client app -> its outbound sidecar -> mTLS -> sidecar -> app);
* the sampler in this process (``Sampler.sample``), the startup of the CLI left out;
* the whole ``meshproof send -n N --concurrency 16 --json`` CLI process, startup included, as the
  acceptance bar times it;
* with ``--ref``, the same CLI from that git ref (a temporary worktree on this interpreter), for
  before/after figures.

Rounds interleave the measurements so that the shared machine's noise hits all of them alike;
ratios are taken per round and summarised by their median. wrk comes from the Debian package,
installed here with apt-get when missing; it is never a dependency of the harness.
Prints JSON; copy the numbers into docs/BENCHMARKS.md. Never run from tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

from harness import proc
from harness.backends import attach
from harness.backends.local.backend import LocalBackend
from harness.settings import from_env
from harness.traffic.client import CALL_MARGIN_S, DEFAULT_TARGET, Sampler

REPO = Path(__file__).resolve().parents[1]
CONNECTIONS = 16
CLIENT = "other-namespace/client"


def ensure_wrk() -> str:
    found = proc.which("wrk")
    if found:
        return found
    install = proc.run(["apt-get", "install", "-y", "wrk"], check=False, timeout=600)
    if install.returncode != 0:
        proc.run(["apt-get", "update"], timeout=600)
        proc.run(["apt-get", "install", "-y", "wrk"], timeout=600)
    return proc.which("wrk", needed_for="bench/bench_sampler.py", how_to_get="apt-get install wrk")


def wrk_rps(wrk: str, url: str, seconds: int) -> float:
    out = proc.run([wrk, "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", url], timeout=seconds + 60).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise SystemExit(f"wrk printed no Requests/sec:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non_2xx:
        raise SystemExit(f"wrk saw {non_2xx.group(1)} non-2xx responses from {url}:\n{out}")
    return float(m.group(1))


def cli_rps(argv: list[str], n: int, state: Path, source: str, cwd: Path, env: dict[str, str]) -> float:
    t0 = time.monotonic()
    p = proc.run(
        [
            *argv,
            "send",
            "--state",
            str(state),
            "-n",
            str(n),
            "--concurrency",
            str(CONNECTIONS),
            "--from",
            source,
            "--json",
        ],
        cwd=cwd,
        env=env,
        timeout=600,
    )
    seconds = time.monotonic() - t0
    total = json.loads(p.stdout)
    if total["status"].get("200") != n:
        raise SystemExit(f"{' '.join(argv)} send: not every request was a 200: {total['status']}")
    return n / seconds


@contextmanager
def ref_checkout(ref: str | None) -> Iterator[Path | None]:
    """A temporary detached worktree at ``ref`` (removed afterwards), or None."""
    if ref is None:
        yield None
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-ref-"))
    tree = tmp / "tree"
    proc.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), ref])
    try:
        yield tree
    finally:
        proc.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
        proc.run(["git", "-C", str(REPO), "worktree", "prune"], check=False)


@contextmanager
def mesh(state: Path | None) -> Iterator[Path]:
    if state is not None:
        yield state
        return
    with tempfile.TemporaryDirectory(prefix="bench-sampler-") as tmp:
        settings = from_env().with_overrides(state_dir=Path(tmp))
        backend = LocalBackend(settings).up(detach=True)
        try:
            yield Path(tmp)
        finally:
            backend.down()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=6000, help="requests per sampler measurement")
    ap.add_argument("--seconds", type=int, default=6, help="duration of each wrk measurement")
    ap.add_argument("--ref", help="also time the CLI of this git ref (before/after)")
    ap.add_argument("--state", type=Path, help="use the running mesh of this state dir")
    a = ap.parse_args()
    wrk = ensure_wrk()
    cli = [sys.executable, "-m", "harness.cli"]
    rounds: list[dict[str, float]] = []
    with mesh(a.state) as state, ref_checkout(a.ref) as ref_tree:
        backend = attach(from_env().with_overrides(state_dir=state))
        ingress = backend.ingress_url().rstrip("/") + "/api/greet"
        client = backend.workload(CLIENT)
        service = backend.service_url(*DEFAULT_TARGET).rstrip("/") + "/api/greet"
        timeout_s = 10.0
        call = f"{client.app_url.rstrip('/')}/api/call?" + urlencode(
            {"url": service, "method": "GET", "timeout_ms": str(round(timeout_s * 1000))}
        )
        env = {"PYTHONPATH": str(REPO)}
        ref_env = {"PYTHONPATH": str(ref_tree)} if ref_tree else {}
        with Sampler(timeout=timeout_s, max_connections=64) as sampler:
            sampler.sample(backend, n=200, concurrency=CONNECTIONS)  # warm connections and Envoy
            sampler.sample(backend, source=CLIENT, n=100, concurrency=CONNECTIONS)
            for i in range(a.rounds):
                row: dict[str, float] = {}
                row["wrk_ingress_rps"] = wrk_rps(wrk, ingress, a.seconds)
                r = sampler.sample(backend, n=a.n, concurrency=CONNECTIONS)
                assert r.status_counts() == {200: a.n}, r.status_counts()
                row["sampler_ingress_rps"] = a.n / r.wall_s
                row["cli_ingress_rps"] = cli_rps(cli, a.n, state, "ingress", REPO, env)
                if ref_tree is not None:
                    row["ref_cli_ingress_rps"] = cli_rps(cli, a.n, state, "ingress", ref_tree, ref_env)
                row["wrk_in_mesh_rps"] = wrk_rps(wrk, call, a.seconds)
                m = sampler.sample(backend, source=CLIENT, n=a.n // 2, concurrency=CONNECTIONS)
                assert m.status_counts() == {200: a.n // 2}, (m.status_counts(), m.errors())
                row["sampler_in_mesh_rps"] = (a.n // 2) / m.wall_s
                if ref_tree is not None:
                    row["ref_cli_in_mesh_rps"] = cli_rps(cli, a.n // 2, state, CLIENT, ref_tree, ref_env)
                row["ratio_sampler_ingress"] = row["sampler_ingress_rps"] / row["wrk_ingress_rps"]
                row["ratio_cli_ingress"] = row["cli_ingress_rps"] / row["wrk_ingress_rps"]
                row["ratio_sampler_in_mesh"] = row["sampler_in_mesh_rps"] / row["wrk_in_mesh_rps"]
                if ref_tree is not None:
                    row["ratio_ref_cli_ingress"] = row["ref_cli_ingress_rps"] / row["wrk_ingress_rps"]
                    row["ratio_ref_cli_in_mesh"] = row["ref_cli_in_mesh_rps"] / row["wrk_in_mesh_rps"]
                rounds.append({k: round(v, 3) for k, v in row.items()})
                print(f"round {i + 1}: {json.dumps(rounds[-1])}", file=sys.stderr)
    print(
        json.dumps(
            {
                "machine": {"cpus": os.cpu_count(), "load_1m": os.getloadavg()[0]},
                "n": a.n,
                "connections": CONNECTIONS,
                "call_margin_s": CALL_MARGIN_S,
                "ref": a.ref,
                "rounds": rounds,
                "median": {k: round(statistics.median(r[k] for r in rounds), 3) for k in rounds[0]},
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
