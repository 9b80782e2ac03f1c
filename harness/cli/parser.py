"""The ``meshproof`` argument parser: verbs, their options, and the handler each one dispatches to."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from harness.cli import chaos, config, conformance, doctor, install, kind, lifecycle, testrun, traffic
from harness.cli import load as load_verb
from harness.cli import report as report_verb
from harness.cli.output import Output
from harness.settings import BACKENDS, TRAFFIC_APIS, Settings
from harness.upgrade import command as upgrade_command
from harness.versions import DEFAULT_ISTIO, ISTIO_RELEASES, MESHPROOF

Handler = Callable[[argparse.Namespace, Settings, Output], int]


def build_parser() -> argparse.ArgumentParser:
    # Options every verb accepts, before or after the verb (SUPPRESS keeps a top-level value).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="state directory of the mesh (default: $MESHPROOF_STATE or .meshproof)",
    )
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks instead of one-line errors (also MESHPROOF_DEBUG=1)",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON (schema in docs/CLI.md)")
    backend = argparse.ArgumentParser(add_help=False)
    backend.add_argument(
        "--backend", choices=BACKENDS, help="where the mesh runs (default: $MESHPROOF_BACKEND or local)"
    )
    mesh = argparse.ArgumentParser(add_help=False)
    mesh.add_argument(
        "--manifests",
        metavar="DIR",
        help="workload and Istio YAML (default: $MESHPROOF_MANIFESTS or manifests)",
    )
    mesh.add_argument(
        "--istio",
        "--istio-version",
        dest="istio_version",
        choices=sorted(ISTIO_RELEASES),
        help=f"pinned Istio release (default: $MESHPROOF_ISTIO or {DEFAULT_ISTIO})",
    )
    # Verbs that reach a cluster. A mesh brought up earlier is attached to on the context it recorded.
    cluster = argparse.ArgumentParser(add_help=False)
    cluster.add_argument(
        "--kube-context",
        metavar="NAME",
        help="kubeconfig context of the cluster (backend existing; default: $MESHPROOF_KUBE_CONTEXT or "
        "the current context)",
    )
    cluster.add_argument(
        "--revision",
        dest="istio_revision",
        metavar="REV",
        help="backend existing: the installed Istio revision or revision tag whose sidecars meshproof's "
        "namespaces get (default: $MESHPROOF_ISTIO_REVISION, or the only one installed)",
    )
    keep = argparse.ArgumentParser(add_help=False)
    keep.add_argument(
        "--keep-cluster",
        action="store_true",
        default=None,
        help="do not delete the kind cluster (or the objects created on an existing one) when the mesh "
        "goes down; faults, port-forwards and processes are still cleaned up ($MESHPROOF_KEEP_CLUSTER)",
    )
    # Verbs that bring a mesh up: which of the manifests' routes it runs (harness.istio.traffic_api).
    routes = argparse.ArgumentParser(add_help=False)
    routes.add_argument(
        "--traffic-api",
        choices=TRAFFIC_APIS,
        help="the manifests' routes the mesh runs: VirtualServices (istio) or HTTPRoutes (gateway-api); "
        "documents annotated meshproof.dev/traffic-api for the other API are left out "
        "(default: $MESHPROOF_TRAFFIC_API or istio)",
    )
    files = argparse.ArgumentParser(add_help=False)
    files.add_argument(
        "-f",
        "--filename",
        dest="files",
        metavar="FILE",
        type=Path,
        action="extend",
        nargs="+",
        required=True,
        help="YAML file or directory (repeatable)",
    )

    parser = argparse.ArgumentParser(
        prog="meshproof",
        description="Prove that a service mesh does what its configuration says.",
        epilog="Run `meshproof VERB --help` for a verb's options. JSON schemas: docs/CLI.md.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"meshproof {MESHPROOF}")
    parser.add_argument("--state", metavar="DIR", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--debug", action="store_true", default=False, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    def verb(
        name: str, handler: Handler, summary: str, *parents: argparse.ArgumentParser
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name, parents=[common, *parents], help=summary, description=summary, allow_abbrev=False
        )
        p.set_defaults(func=handler)
        return p

    p = verb(
        "up",
        lifecycle.cmd_up,
        "bring the mesh up (until Ctrl-C, or in the background with --detach)",
        backend,
        mesh,
        cluster,
        keep,
        routes,
    )
    p.add_argument(
        "--detach", action="store_true", help="leave the mesh running; stop it with `meshproof down`"
    )

    verb(
        "apply",
        config.cmd_apply,
        "validate and apply YAML, wait until every proxy has it",
        files,
        mesh,
        cluster,
        as_json,
    )
    verb(
        "delete",
        config.cmd_delete,
        "validate and delete the objects in YAML files, wait for propagation",
        files,
        mesh,
        cluster,
        as_json,
    )

    p = verb("send", traffic.cmd_send, "send requests into the mesh and count who answered", cluster, as_json)
    p.add_argument(
        "--from",
        dest="source",
        default="ingress",
        metavar="SOURCE",
        help="`ingress` (default) or NS/DEPLOYMENT or NS/POD of a client inside the mesh",
    )
    p.add_argument(
        "--gateway",
        metavar="NS/NAME",
        help="send through this Gateway API Gateway (deployed onto the ingress gateway; it must be "
        "Programmed): to the ingress gateway, with its HTTP listener's hostname as Host",
    )
    p.add_argument("--method", default="GET", help="HTTP method (default GET)")
    p.add_argument("--path", default="/api/greet", help="request path (default /api/greet)")
    p.add_argument(
        "-H", "--header", action="append", default=[], metavar="'K: V'", help="request header (repeatable)"
    )
    p.add_argument("-n", type=int, default=100, help="number of requests (default 100)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")

    p = verb(
        "fault",
        traffic.cmd_fault,
        "make one replica's own sidecar answer with an error status and/or a delay (any HTTP service)",
        cluster,
        as_json,
    )
    p.add_argument("pod", metavar="POD", help="pod name, NS/POD or NS/DEPLOYMENT (see `meshproof status`)")
    p.add_argument("--status", type=int, metavar="CODE", help="HTTP status to answer with, e.g. 503")
    p.add_argument(
        "--rate", type=float, metavar="R", help="share of requests affected, in (0, 1] (default 1)"
    )
    p.add_argument("--delay-ms", type=int, metavar="D", help="delay each affected request by D ms")
    p.add_argument("--clear", action="store_true", help="remove the fault (whichever way it was made)")
    p.add_argument(
        "--via",
        choices=("sidecar", "app"),
        default="sidecar",
        help="sidecar (default): an EnvoyFilter makes the replica's inbound Envoy abort/delay, checked in "
        "its config dump; app: the sample app's /admin/fault endpoint (the sample only)",
    )

    verb(
        "status",
        lifecycle.cmd_status,
        "workloads, proxies and outlier ejections of the running mesh",
        cluster,
        as_json,
    )

    p = verb(
        "traces",
        traffic.cmd_traces,
        "recent traces from Jaeger (lists traced services without --service)",
        cluster,
        as_json,
    )
    p.add_argument("--service", metavar="S", help="service name as Jaeger knows it")
    p.add_argument("--limit", type=int, default=20, help="at most this many traces (default 20)")
    p.add_argument("--trace-id", metavar="ID", help="show one trace's span tree (hex trace id)")

    p = verb(
        "load",
        load_verb.cmd_load,
        "drive load with Locust (a subprocess) against the running mesh; report, per phase, and chart",
        as_json,
    )
    load_verb.add_arguments(p)

    p = verb(
        "test",
        testrun.cmd_test,
        "run the suites with pytest (other arguments go to pytest) and print a summary",
        backend,
        mesh,
        cluster,
        keep,
        routes,
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="N pytest processes (pytest-xdist). local: each with its own mesh; default "
        f"{testrun.DEFAULT_WORKERS}, or 1 when a mesh runs in the state dir (the suites then use it). "
        "kind/existing: default 1; N shares the mesh `up --detach` made, each worker after the first "
        "with a copy of the sample in namespaces of its own",
    )
    verb("down", lifecycle.cmd_down, "take down the mesh recorded in the state dir", cluster, keep)
    verb(
        "doctor",
        doctor.cmd_doctor,
        "which tools each backend needs, which are present, how to get the rest",
        cluster,
        as_json,
    )
    verb(
        "validate",
        config.cmd_validate,
        "validate Istio/Kubernetes YAML with Istio's own validation and analyzers",
        files,
        mesh,
        as_json,
    )
    verb(
        "explain",
        config.cmd_explain,
        "per object, what the mesh will do: route proportions, authz decisions, mTLS modes, "
        "effective outlier detection and pool limits",
        files,
        mesh,
        as_json,
    )

    p = verb("chaos", _chaos_usage, "chaos game days: `meshproof chaos run EXPERIMENT` (always rolled back)")
    chaos_verbs = p.add_subparsers(dest="chaos_verb", metavar="CHAOS_VERB", required=True)
    summary = "run a Chaos Toolkit experiment against the mesh, always rolled back, with a no-residue check"
    p = chaos_verbs.add_parser(
        "run", parents=[common, as_json], help=summary, description=summary, allow_abbrev=False
    )
    p.set_defaults(func=chaos.cmd_chaos_run)
    p.add_argument(
        "experiment",
        metavar="EXPERIMENT",
        help="experiment file (.yaml or .json), e.g. experiments/outlier-ejection.yaml",
    )
    p.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="K=V",
        help="override a configuration value of the experiment (repeatable)",
    )
    p.add_argument("--quiet", action="store_true", help="do not show Chaos Toolkit's log while it runs")

    p = verb(
        "report",
        _report_usage,
        "reports of runs: `meshproof report compare BEFORE AFTER`, `meshproof report summary PATH...`",
    )
    report_verbs = p.add_subparsers(dest="report_verb", metavar="REPORT_VERB", required=True)
    summary = (
        "compare two runs of the suites (suites-report.json): verdict changes, figures, versions; "
        "exit 1 on a regression"
    )
    p = report_verbs.add_parser(
        "compare", parents=[common, as_json], help=summary, description=summary, allow_abbrev=False
    )
    p.set_defaults(func=report_verb.cmd_report_compare)
    report_verb.add_compare_arguments(p)
    summary = "the verdict tables of reports (suites, upgrade checks, chaos runs) under PATH... in Markdown"
    p = report_verbs.add_parser(
        "summary", parents=[common], help=summary, description=summary, allow_abbrev=False
    )
    p.set_defaults(func=report_verb.cmd_report_summary)
    report_verb.add_summary_arguments(p)

    p = verb(
        "install",
        install.cmd_install,
        "build/install the pinned istiod, pilot-agent and Envoy into the cache",
    )
    p.add_argument(
        "--istio",
        "--istio-version",
        dest="istio_version",
        choices=sorted(ISTIO_RELEASES),
        help=f"pinned Istio release (default: $MESHPROOF_ISTIO or {DEFAULT_ISTIO}); others install side by side",
    )
    p.add_argument("--force", action="store_true", help="rebuild even if the same pins are installed")
    p.add_argument("--json", action="store_true", help="print what was installed as JSON")

    p = verb(
        "docker",
        kind.cmd_docker,
        "the kind path's Docker engine: status, install (docker.io, kind), start (only if none answers), "
        "stop (only the one meshproof started)",
        as_json,
    )
    kind.add_docker_arguments(p)
    p = verb(
        "images",
        kind.cmd_images,
        "the kind path's container images, built locally under one prefix: plan, build",
        as_json,
    )
    kind.add_images_arguments(p)

    p = verb(
        "conformance",
        conformance.cmd_conformance,
        "run the upstream Gateway API conformance suite against the running kind mesh; ConformanceReport",
        backend,
    )
    conformance.add_arguments(p)

    p = verb("upgrade-check", upgrade_command.run, upgrade_command.SUMMARY, backend, cluster, keep, as_json)
    upgrade_command.add_arguments(p)
    p.add_argument(
        "--manifests",
        metavar="DIR",
        help="workload and Istio YAML (default: $MESHPROOF_MANIFESTS or manifests)",
    )
    return parser


def _report_usage(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    out.print("usage: meshproof report compare BEFORE AFTER | meshproof report summary PATH...")
    return 2


def _chaos_usage(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    out.print("usage: meshproof chaos run EXPERIMENT [--var K=V]")
    return 2
