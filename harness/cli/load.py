"""``meshproof load``: Locust (a subprocess, see :mod:`harness.load`) against the running mesh.

A live line on stderr while it runs, then the report (or ``--json``), and a PNG chart (requests
per second, error ratio, p95 over time, phases shaded), ``load.json`` and a self-contained
``load.html`` (the report per phase, the chart, the mesh's versions) in ``<state dir>/load/<time>/``,
their paths printed.
Ctrl-C stops Locust at once (its whole process group) and exits 130.

The run is the backend's (:meth:`~harness.backends.base.Backend.load_runner`); on kind/existing a
Locust master and ``--processes`` workers as Deployments in other-namespace (sidecar-injected), so the load enters
through the mesh; Ctrl-C deletes them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.text import Text

from harness import wait
from harness.cli.output import Output, row, table
from harness.cli.traffic import parse_headers
from harness.errors import LoadError, UserError
from harness.settings import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", "-u", type=int, default=10, help="concurrent users (default 10)")
    p.add_argument("--spawn-rate", "-r", type=float, help="users started per second (default: all at once)")
    p.add_argument(
        "--duration", "-t", default="30s", help="how long, e.g. 30s, 2m (default 30s; 0: until Ctrl-C)"
    )
    p.add_argument("--shape", default="steady", help="steady (default), ramp, spike or step")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="Locust processes on this machine; on kind/existing: worker pods in the cluster (default 1)",
    )
    p.add_argument(
        "--user-class",
        default="ingress",
        help="ingress (GET /api/greet through the ingress, default), mesh (from a client workload), both",
    )
    p.add_argument("--path", default="/api/greet", help="request path (default /api/greet)")
    p.add_argument(
        "-H", "--header", action="append", default=[], metavar="'K: V'", help="request header (repeatable)"
    )
    p.add_argument("--no-chart", action="store_true", help="do not write the PNG chart")


def cmd_load(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.load import LoadConfig, duration_seconds

    if not isinstance(args.users, int) or args.users < 1:
        raise UserError(f"--users {args.users}: at least 1 user")
    config = LoadConfig(
        users=args.users,
        spawn_rate=args.spawn_rate,
        duration_s=duration_seconds(args.duration),
        shape=args.shape,
        processes=args.processes,
        user_class=args.user_class,
        path=args.path,
        headers=parse_headers(args.header),
    )
    from harness.backends import attach

    backend = attach(settings)
    workdir = settings.state_dir / "load" / time.strftime("%Y%m%d-%H%M%S")
    run = backend.load_runner(config, workdir=workdir)
    with out.err.status(f"starting Locust {run.where} ({config.users} users)") as status, run:
        deadline = config.duration_s + config.stop_timeout + 30 if config.duration_s else 10 * 365 * 86400

        def finished() -> bool:
            p = run.progress()
            status.update(
                Text(
                    f"load {p.elapsed_s:5.1f}s · {p.requests} requests · {p.failures} failed · "
                    f"{p.rps:.0f} req/s · phase {p.phase}"
                    + (f" / {config.duration_s:g}s" if config.duration_s else " · Ctrl-C to stop")
                )
            )
            return run.exited

        wait.until(finished, what="the load run to end", timeout=deadline, interval=0.5)
    report = run.report
    if report is None:  # pragma: no cover - stop() either returns a report or raises
        raise LoadError("Locust stopped without a report")
    chart: Path | None = None
    if not args.no_chart:
        from harness.load.chart import plot_load

        chart = plot_load(report, workdir / "load.png")
    from harness.report.runs import write_load
    from harness.report.versions import describe

    _, page = write_load(workdir, report.to_json(), chart, describe(backend, settings.istio_version))
    if args.json:
        doc = report.to_json()
        doc["chart"] = str(chart) if chart else None
        doc["html"] = str(page)
        out.json(doc)
        return 0
    out.print(report.summary().splitlines()[0], style="bold")
    t = table("phase", "seconds", "requests", "req/s", "errors", "status", "p50 ms", "p95 ms", "p99 ms")
    for p in report.phases:
        row(
            t,
            p.name,
            f"{p.start_s:.1f}-{p.end_s:.1f}",
            p.requests,
            f"{p.rps:.1f}",
            f"{100 * p.error_ratio:.2f}%",
            ", ".join(f"{k}: {v}" for k, v in sorted(p.by_status.items())),
            f"{p.latency.p50_ms:.1f}",
            f"{p.latency.p95_ms:.1f}",
            f"{p.latency.p99_ms:.1f}",
        )
    out.print(t)
    for message, count in report.errors.items():
        out.print(f"  {count} × {message}")
    out.print(f"request ids start with {report.request_id_prefix}; Locust's files: {workdir}")
    if chart:
        out.print(f"chart: {chart}")
    out.print(f"html: {page}")
    return 0
