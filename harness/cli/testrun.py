"""``meshproof test``: run the suites with pytest as a child, then summarise its JUnit report."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from rich.text import Text

from harness import proc
from harness.cli.output import Output, table
from harness.errors import UserError
from harness.paths import CHECKOUT
from harness.settings import Settings

CHECK_PROPERTY = "meshproof.check"  # each check as a JUnit property (in the HTML report; not repeated here)


def cmd_test(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    pytest_args = list(args.pytest_args)
    if not any(_is_test_path(a) for a in pytest_args):
        pytest_args.insert(0, str(suites_dir()) + "/")
    workers = _workers(args, settings, pytest_args)
    if workers > 1:
        pytest_args += ["-n", str(workers)]
    manifests = settings.manifests
    if not manifests.exists() and not manifests.is_absolute() and (CHECKOUT / manifests).is_dir():
        manifests = CHECKOUT / manifests  # run from a subdirectory of the checkout
    env = {
        "MESHPROOF_BACKEND": settings.backend,
        "MESHPROOF_STATE": str(settings.state_dir),
        "MESHPROOF_MANIFESTS": str(manifests),
        "MESHPROOF_ISTIO": settings.istio_version,
        "MESHPROOF_KUBE_CONTEXT": settings.kube_context,
        "MESHPROOF_ISTIO_REVISION": settings.istio_revision,
        "MESHPROOF_KEEP_CLUSTER": "1" if settings.keep_cluster else "",
        "MESHPROOF_TRAFFIC_API": settings.traffic_api,
    }
    settings.state_dir.mkdir(parents=True, exist_ok=True)  # the reports go there
    own_junit = not any(a.startswith(("--junitxml", "--junit-xml")) for a in pytest_args)
    junit = settings.state_dir / JUNIT_NAME  # beside suites-report.json; each check a property of its test
    argv = [sys.executable, "-m", "pytest", *pytest_args]
    if own_junit:  # xunit1 keeps each test's record_property values (shown in the summary)
        junit.unlink(missing_ok=True)  # never summarise an earlier run's
        argv += [f"--junitxml={junit}", "-o", "junit_family=xunit1"]
    out.note(
        f"$ MESHPROOF_BACKEND={settings.backend} MESHPROOF_STATE={settings.state_dir} "
        f"MESHPROOF_TRAFFIC_API={settings.traffic_api} {' '.join(argv)}"
    )
    env.update(bytecode_env(compile_checkout()))
    started, wall_started = time.monotonic(), time.time() - 1.0
    code, interrupted = _run_attached(argv, env, out)
    elapsed = time.monotonic() - started
    results = read_junit(junit) if own_junit and junit.is_file() else None
    print_test_summary(out, settings, results, code, elapsed)
    print_report_paths(out, settings.state_dir, junit if own_junit else None, since=wall_started)
    return 130 if interrupted else code


JUNIT_NAME = "suites-junit.xml"


def print_report_paths(out: Output, state_dir: Path, junit: Path | None, *, since: float) -> None:
    """The reports this run wrote into the state dir (the conftest writes them beside suites-report.json)."""
    from harness.report.suites import HTML_NAME, YAML_NAME

    for label, path in (
        ("html report", state_dir / HTML_NAME),
        ("conformance", state_dir / YAML_NAME),
        ("evidence", state_dir / "suites-report.json"),
        ("junit", junit),
    ):
        if path is not None and path.is_file() and path.stat().st_mtime >= since:
            out.print(f"{label}: {path}")


# Two meshes side by side: most of a suite's wall time waits on its mesh (pushes, ejection and
# re-admission windows, trace ingestion, Locust start and stop), which a second mesh fills.
DEFAULT_WORKERS = 2


def _workers(args: argparse.Namespace, settings: Settings, pytest_args: Sequence[str]) -> int:
    """How many pytest processes (each with its own local mesh) the run uses; 1 where they would share one."""
    chosen = any(
        a in ("-n", "--numprocesses", "--dist") or a.startswith(("-n", "--numprocesses=", "--dist="))
        for a in pytest_args
    )
    if chosen or "no:xdist" in pytest_args:
        return 1  # the user decided for pytest: leave it to them
    if find_spec("xdist") is None:  # an environment set up before it was a dependency
        return 1
    running = (settings.state_dir / "backend.json").is_file()
    given = getattr(args, "workers", None)
    wanted = given if given is not None else DEFAULT_WORKERS
    if wanted < 1:
        raise UserError(f"--workers {wanted}: need at least 1. Fix: e.g. --workers 2")
    if settings.backend != "local":
        # the workers share the cluster's mesh, each (after the first) with a copy of the sample in
        # namespaces of its own (harness.namespaces): only when asked, and on a mesh that is up
        if given is None or wanted == 1:
            return 1
        if not running:
            raise UserError(
                f"--workers {wanted}: backend {settings.backend}'s workers share one mesh, which must be up "
                f"first. Fix: `meshproof up --backend {settings.backend} --detach --state {settings.state_dir}`, "
                "then run the suites again"
            )
        if settings.traffic_api != "istio":
            raise UserError(
                f"--workers {wanted}: the workers' copies of the sample route with Istio's API only, not "
                f"{settings.traffic_api}. Fix: --workers 1, or --traffic-api istio"
            )
        return wanted
    if wanted > 1 and running:
        if given is not None:
            raise UserError(
                f"--workers {wanted}: a mesh runs at {settings.state_dir} (meshproof up --detach), which the "
                "workers would share. Fix: --workers 1, or `meshproof down` first so each worker brings up "
                "its own mesh"
            )
        return 1
    return wanted


#: The checkout's packages the run's processes import (each pytest worker, every mesh's supervisor,
#: the chart worker, Locust's locustfile).
COMPILED = tuple(CHECKOUT / name for name in ("harness", "suites", "loadtests"))


def compile_checkout(dirs: Sequence[Path] = COMPILED) -> bool:
    """Compile the checkout's packages into their ``__pycache__`` where Python writes no bytecode.

    Under ``PYTHONDONTWRITEBYTECODE`` (set in this project's containers) no process writes what it
    compiles, so every process of a run compiled the harness from source again: 1.24 CPU-s for a
    pytest worker's imports against 0.37 s from bytecode, paid by each worker, supervisor, chart
    worker and Locust process. Python still reads bytecode there, so ``dirs`` are compiled once
    (later runs compile only the files changed since; the ``__pycache__`` directories are
    git-ignored). Whether it compiled (False where bytecode is written anyway or goes to a
    ``PYTHONPYCACHEPREFIX``: nothing to do)."""
    if not sys.dont_write_bytecode or sys.pycache_prefix:
        return False
    import compileall

    for d in dirs:
        if d.is_dir():  # py_compile writes whatever dont_write_bytecode says
            compileall.compile_dir(d, quiet=2, workers=1)
    return True


def bytecode_env(compiled: bool) -> dict[str, str]:
    """What the pytest run's environment changes once :func:`compile_checkout` has compiled the
    checkout: ``PYTHONDONTWRITEBYTECODE`` cleared, so that pytest keeps its assertion-rewritten copy
    of each module it rewrites (the suites, and the harness: a pytest plugin's distribution is
    rewritten whole) in ``__pycache__`` as it does where bytecode is written, instead of rewriting
    them again in every pytest process of every run. Collecting the suites in one process took
    2.11 CPU-s instead of 2.58 with the rewritten copies cached; ``bench/bench_cpu.py``, alternated:
    pytest's CPU 17.1 and 17.5 CPU-s against 19.8 and 18.6 without. The checkout's other bytecode
    is already there, so nothing else changes."""
    return {"PYTHONDONTWRITEBYTECODE": ""} if compiled else {}


def suites_dir() -> Path:
    """The suites of the checkout this harness was loaded from, whatever the working directory."""
    suites = CHECKOUT / "suites"
    if not suites.is_dir():
        raise UserError(
            f"no suites/ beside the harness package (looked in {CHECKOUT}). Fix: run meshproof from its "
            "source checkout, or name the test files or directories to run"
        )
    return suites


def _run_attached(argv: Sequence[str], env: Mapping[str, str], out: Output) -> tuple[int, bool]:
    """Run a child on this terminal; on Ctrl-C keep waiting so it can tear its mesh down.

    TODO(proc): belongs in harness.proc (a foreground variant of run() that streams output);
    subprocess.run would SIGKILL the child on KeyboardInterrupt and leak mesh processes.
    """
    interrupted = False
    child = subprocess.Popen(argv, env=proc.merged_env(env))
    while True:
        try:
            return child.wait(), interrupted
        except KeyboardInterrupt:  # noqa: PERF203 - waiting loop
            interrupted = True
            out.warn("interrupted: waiting for pytest to tear the mesh down")


def _is_test_path(arg: str) -> bool:
    """Whether a pytest argument selects tests by path (then suites/ is not added)."""
    if arg.startswith("-"):
        return False
    path = arg.split("::", 1)[0]
    return ("::" in arg or path.endswith((".py", "/"))) and Path(path).exists()


@dataclass(frozen=True)
class Case:
    """One test case of a JUnit report."""

    name: str
    outcome: str  # passed, failed, error, skipped
    seconds: float
    message: str
    properties: tuple[tuple[str, str], ...]


def read_junit(path: Path) -> list[Case] | None:
    """The cases of a JUnit XML report (xunit1), or None when it cannot be read."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError):
        return None
    cases = []
    for case in root.iter("testcase"):
        if not case.get("name"):  # e.g. the placeholder of an interrupted session
            continue
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                lines = (el.get("message") or el.text or "").strip().splitlines()
                message = lines[0] if lines else ""
                break
        props = tuple((p.get("name", ""), p.get("value", "")) for p in case.iter("property") if p.get("name"))
        cases.append(
            Case(
                f"{case.get('classname', '')}::{case.get('name', '')}",
                outcome,
                float(case.get("time") or 0.0),
                message,
                props,
            )
        )
    return cases


def skip_reasons(cases: Sequence[Case]) -> dict[str, int]:
    """Each distinct reason a test was skipped -> how many were, in the order first seen."""
    reasons: dict[str, int] = {}
    for c in cases:
        if c.outcome == "skipped":
            why = c.message.removeprefix("Skipped: ") or "(no reason given)"
            reasons[why] = reasons.get(why, 0) + 1
    return reasons


def print_test_summary(
    out: Output, settings: Settings, cases: list[Case] | None, code: int, elapsed: float
) -> None:
    out.print("")
    out.print(
        f"meshproof test summary · backend {settings.backend} · state {settings.state_dir} · {elapsed:.1f} s",
        style="bold",
    )
    if cases:
        t = table("result", "test", "s")
        styles = {"passed": "green", "failed": "red", "error": "red", "skipped": "yellow"}
        for c in cases:
            t.add_row(Text(c.outcome.upper(), style=styles[c.outcome]), Text(c.name), f"{c.seconds:.1f}")
            detail = [c.message] if c.outcome != "passed" and c.message else []
            detail += [f"{k}: {v}" for k, v in c.properties if not k.startswith(CHECK_PROPERTY)]
            for line in detail:
                t.add_row("", Text(f"  ↳ {line}", style="dim"), "")
        out.print(t)
        counts = {
            k: sum(1 for c in cases if c.outcome == k) for k in ("passed", "failed", "skipped", "error")
        }
        out.print(
            f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped, "
            f"{counts['error']} errors"
        )
        for why, n in skip_reasons(cases).items():
            out.print(f"skipped {n}: {why}", style="yellow")
    verdict = {
        0: "PASSED: every check held",
        1: "FAILED: some checks did not hold (see above)",
        2: "INTERRUPTED or aborted (pytest exit 2)",
        3: "INTERNAL ERROR in pytest or the harness (pytest exit 3)",
        4: "USAGE ERROR in the pytest arguments (pytest exit 4)",
        5: "FAILED: no tests ran (pytest exit 5): check the paths and -k/-m selection",
    }.get(code, f"FAILED: pytest exited {code}")
    out.print(verdict, style="bold green" if code == 0 else "bold red")
