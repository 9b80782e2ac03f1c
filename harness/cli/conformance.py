"""``meshproof conformance``: the upstream Gateway API conformance suite against the running kind mesh.

The suite (``sigs.k8s.io/gateway-api/conformance`` at the version the pinned Istio requires) is
built here, with the images its manifests name (:mod:`harness.toolchain.gateway_conformance`,
:mod:`harness.backends.kube.kind.conformance_images`), loaded into the kind cluster, and run
in it as a Job (:mod:`harness.backends.kube.conformance`). The features claimed are the ones Istio
declares (its ``SupportedFeatures``) within the chosen profiles, less the experimental channel's
when the cluster serves only the standard CRDs. The ConformanceReport goes to ``--report``; the
suite's log and the per-test outcomes beside it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from harness.cli.output import Output, row, table
from harness.errors import HarnessError, StateError, UserError
from harness.settings import Settings

# the suite's conformance profiles (conformance/utils/suite/profiles.go); checked again against the
# built suite's own list
PROFILES = (
    "GATEWAY-HTTP",
    "GATEWAY-TLS",
    "GATEWAY-TCP",
    "GATEWAY-UDP",
    "GATEWAY-GRPC",
    "MESH-HTTP",
    "MESH-GRPC",
)
DEFAULT_PROFILES = ("GATEWAY-HTTP", "MESH-HTTP")
NICE = ("nice", "-n", "19", "ionice", "-c3")
# Features Istio's own run of the suite takes out of what Istio declares
# (tests/integration/pilot/gateway_conformance_test.go of the pin): name -> why
ISTIO_EXEMPT = {
    "MeshClusterIPMatching": "Istio's own conformance run removes it from the supported features "
    "(istio/istio#44702: a mesh route on a Service's ClusterIP)",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        dest="profiles",
        action="append",
        default=[],
        metavar="NAME",
        help=f"conformance profile to run (repeatable; default {' and '.join(DEFAULT_PROFILES)}; "
        f"known: {', '.join(PROFILES)})",
    )
    p.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="write the ConformanceReport YAML here (default: STATE/conformance/conformance-report.yaml)",
    )
    p.add_argument(
        "--skip-test", dest="skip_tests", action="append", default=[], metavar="NAME",
        help="a test of the suite not to run (repeatable; the report lists it as skipped)",
    )  # fmt: skip
    p.add_argument(
        "--run-test", metavar="NAME", default="",
        help="run only this test of the suite (its -run-test; the others are reported skipped)",
    )  # fmt: skip
    p.add_argument(
        "--timeout", type=int, default=5400, metavar="S",
        help="the suite's own deadline in seconds (default 5400)",
    )  # fmt: skip


def check_profiles(given: list[str], known: tuple[str, ...] = PROFILES) -> tuple[str, ...]:
    """The chosen profiles, upper-cased, once each; UserError naming the known ones on a bad one."""
    chosen = tuple(dict.fromkeys(p.upper() for p in given)) or DEFAULT_PROFILES
    bad = [p for p in chosen if p not in known]
    if bad:
        raise UserError(
            f"--profile {', '.join(bad)}: unknown conformance profile. Fix: one of {', '.join(known)}"
        )
    return chosen


def check_backend(asked: str, recorded: str) -> None:
    """Only the kind backend runs the suite: exit 2 naming why for the others (``asked``: --backend,
    ``recorded``: the running mesh's backend; either may be "")."""
    backend = asked or recorded
    if not backend:
        return
    if backend == "local":
        raise UserError(
            "meshproof conformance needs a Kubernetes cluster: the suite creates Deployments and Services and "
            "execs into pods, which the local backend (processes on loopback) has none of. "
            "Fix: meshproof up --backend kind --traffic-api gateway-api --detach"
        )
    if backend != "kind":
        raise UserError(
            f"meshproof conformance runs on the kind backend (it loads the images it builds into the cluster), "
            f"not {backend!r}. Fix: meshproof up --backend kind --traffic-api gateway-api --detach"
        )


def _recorded_backend(settings: Settings) -> str:
    marker = settings.state_dir / "backend.json"
    if not marker.is_file():
        return ""
    return str(json.loads(marker.read_text()).get("backend") or "")


def cmd_conformance(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    profiles = check_profiles(args.profiles)
    if args.timeout < 60:
        raise UserError(f"--timeout {args.timeout}: the suite needs at least 60 s")
    recorded = _recorded_backend(settings)
    check_backend(getattr(args, "backend", None) or "", recorded)
    if not recorded:
        raise UserError(
            f"no kind mesh is running with state dir {settings.state_dir}. "
            "Fix: meshproof up --backend kind --traffic-api gateway-api --detach (then run this again)"
        )
    from harness.backends import attach

    try:
        backend = attach(settings.with_overrides(backend="kind"))
    except StateError as e:
        raise UserError(
            f"{e} (meshproof conformance needs `meshproof up --backend kind --detach` first)"
        ) from e

    from harness import proc
    from harness.backends.kube import conformance as kube_run
    from harness.report import gateway_conformance as gc
    from harness.toolchain import gateway_conformance

    def say(m: str) -> None:
        out.note(f"• {m}")

    t0 = time.monotonic()
    if warning := kube_run.inotify_warning():
        out.note(warning)
    info: dict[str, Any] = dict(getattr(backend, "_info", {}) or {})
    label = str(info.get("istio") or settings.istio_version)
    binaries = gateway_conformance.ensure(settings.cache_dir, label, say=say, prefix=NICE)
    plan = gc.SuitePlan.of(json.loads(proc.run([binaries.plan], timeout=120).stdout))
    check_profiles(list(profiles), tuple(plan.profiles))
    runner = kube_run.load_images(info, settings, binaries, say=say)
    api = backend.api  # type: ignore[attr-defined]
    channel = kube_run.crd_channel(api)
    features = gc.supported_features(plan, profiles, exempt=ISTIO_EXEMPT, standard_only=channel == "standard")
    say(f"Gateway API CRDs: channel {channel or '(unannotated)'}; claiming {len(features)} features of "
        f"{', '.join(profiles)} that Istio declares")  # fmt: skip
    options = kube_run.SuiteOptions(
        profiles=profiles,
        supported_features=tuple(features),
        skip_tests=tuple(args.skip_tests),
        run_test=args.run_test,
        namespace_labels=namespace_labels(info),
        istio_version=label,
        timeout_s=args.timeout,
    )
    argv = kube_run.suite_argv(options)
    say(f"running the suite {gateway_conformance.MODULE}@{binaries.suite_version} as Job "
        f"{kube_run.NAMESPACE}/{kube_run.NAME}")  # fmt: skip
    result = kube_run.SuiteJob(api, runner, argv, timeout=args.timeout, say=say).run()
    dest = settings.state_dir / "conformance"
    dest.mkdir(parents=True, exist_ok=True)
    log_path = dest / "suite.log"
    log_path.write_text(result.log)
    text = kube_run.report_text(result.log)
    if not text:
        tail = "\n".join(result.log.splitlines()[-30:])
        raise HarnessError(f"the suite wrote no ConformanceReport (Job {'succeeded' if result.succeeded else 'failed'}; "
                           f"log: {log_path}). Its last lines:\n{tail}")  # fmt: skip
    report_path = args.report or dest / "conformance-report.yaml"
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(text)
    outcomes = gc.test_outcomes(result.log)
    (dest / "tests.json").write_text(json.dumps({
        "argv": argv, "features": features, "channel": channel, "job_seconds": round(result.seconds, 1),
        "tests": {n: {"result": r, "seconds": s} for n, (r, s) in outcomes.items()},
        "skip_reasons": gc.skip_reasons(result.log),
    }, indent=2))  # fmt: skip
    failed_in_log = sorted(n for n, (r, _) in outcomes.items() if r == "FAIL")
    written = {"report": str(report_path), "log": str(log_path)}
    return print_summary(out, written, time.monotonic() - t0, failed_in_log=failed_in_log)


def namespace_labels(info: dict[str, Any]) -> dict[str, str]:
    """The injection label of the mesh's Istio revision (``istio-injection=enabled`` for the default)."""
    revision = str(info.get("revision") or "default")
    return {"istio-injection": "enabled"} if revision == "default" else {"istio.io/rev": revision}


def print_summary(
    out: Output, written: dict[str, Any], wall_s: float, *, failed_in_log: list[str] | None = None
) -> int:
    """The report's counts per profile and level, the failed tests, and the exit code: 1 when the
    report or the suite's own log (``failed_in_log``) has a failure. The suite records a parallel
    test as passed before it has run, so its report misses their failures; its log does not."""
    from harness.report.gateway_conformance import parse, summary_rows

    report = parse(Path(written["report"]).read_text(), source=written["report"])
    t = table("profile", "level", "result", "passed", "failed", "skipped")
    failed = 0
    for r in summary_rows(report):
        row(t, r["profile"], r["level"], r["result"], r["passed"], r["failed"], r["skipped"])
        failed += r["failed"]
    out.print(t)
    for r in summary_rows(report):
        if r["failed_tests"]:
            out.print(f"{r['profile']} {r['level']} failed: {', '.join(r['failed_tests'])}")
    in_report = {n for r in summary_rows(report) for n in r["failed_tests"]}
    missed = [n for n in failed_in_log or () if n not in in_report]
    if missed:
        out.print(
            f"failed in the suite's log, counted passed by its report (parallel tests): {', '.join(missed)}"
        )
    out.print(f"report: {written['report']}  log: {written['log']}  (wall time {wall_s:.0f} s)")
    return 1 if failed or missed else 0
