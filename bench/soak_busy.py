"""Contention soak: the suites, N times, beside a CPU hog; per-check pass counts against stated alphas.

Usage: .venv/bin/python bench/soak_busy.py [--runs 5] [--until-green 5] [-k EXPR] [--no-hog]
           [--out soak.json] [--markdown]

Starts as many busy-looping processes as the machine has cores (the hog), then runs
``pytest suites/`` once per run in a fresh pytest process and reads each run's evidence report
(``suites-report.json``: one record per check, with its verdict, the verdict expected and the
design it states) and its JUnit XML (per-test outcome, so a test that errored before a check is
counted too). The hog is started and stopped here, always: on success, failure, Ctrl-C or
SIGTERM; hog and pytest children die with this process even if it is SIGKILLed (PDEATHSIG).

The report gives, per check: runs in which it was decided, how often it decided as expected,
the observed false-failure rate with its exact (Clopper-Pearson) 95% upper bound, and the
false-failure rate the check states (its alpha; 0 for exact counts and deterministic bounds).
A verdict keeps its promise on a busy machine when its failures stay within that rate.
Never run from tests: this is a benchmark (docs/BENCHMARKS.md has the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

from scipy.stats import binomtest

from harness import proc

ROOT = Path(__file__).resolve().parent.parent
ALPHA = re.compile(r"alpha=([0-9.eE+-]+)")
SPIN = "while True:\n    pass\n"


# --------------------------------------------------------------------------- the hog


@contextmanager
def cpu_hog(cores: int, log_dir: Path) -> Iterator[list[int]]:
    """``cores`` busy-looping processes for the duration of the block; always stopped."""
    procs = []
    try:
        procs.extend(  # one at a time: those started before a failure are stopped below
            proc.spawn([sys.executable, "-c", SPIN], log_path=log_dir / f"hog-{i}.log", die_with_parent=True)
            for i in range(cores)
        )
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except Exception:
                p.kill()
                p.wait(timeout=5)


def _sigterm_to_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------- one run


@dataclass(frozen=True)
class RunResult:
    index: int
    returncode: int
    wall_s: float
    load_avg: tuple[float, float, float]
    tests: dict[str, str]  # nodeid -> passed / failed / error / skipped
    records: list[dict[str, object]]  # suites-report.json checks
    log: str

    @property
    def green(self) -> bool:
        return (
            self.returncode == 0
            and bool(self.tests)
            and "failed" not in self.tests.values()
            and ("error" not in self.tests.values())
        )


def junit_outcomes(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not path.exists():
        return out
    for case in ET.parse(path).getroot().iter("testcase"):
        cls, name = case.get("classname", ""), case.get("name", "")
        nodeid = cls.replace(".", "/") + ".py::" + name
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
        out[nodeid] = outcome
    return out


def run_suites(index: int, work: Path, select: str, timeout: float, extra: Sequence[str]) -> RunResult:
    run_dir = work / f"run-{index}"
    run_dir.mkdir(parents=True)
    basetemp, junit, log = run_dir / "tmp", run_dir / "junit.xml", run_dir / "pytest.log"
    argv = [sys.executable, "-m", "pytest", "suites/", "-q", "-p", "no:cacheprovider"]
    argv += [f"--basetemp={basetemp}", f"--junitxml={junit}", *extra]
    if select:
        argv += ["-k", select]
    t0 = time.perf_counter()
    child = proc.spawn(argv, log_path=log, cwd=ROOT, die_with_parent=True)
    try:
        rc = child.wait(timeout=timeout)
    except BaseException:
        child.terminate()  # pytest tears its mesh down on SIGTERM
        try:
            child.wait(timeout=60)
        except Exception:
            child.kill()
            child.wait()
        raise
    wall = time.perf_counter() - t0
    report = basetemp / "suites-report.json"
    records = json.loads(report.read_text())["checks"] if report.exists() else []
    load = os.getloadavg()
    return RunResult(index, rc, wall, load, junit_outcomes(junit), records, str(log))


# --------------------------------------------------------------------------- aggregate


def stated_rate(confidence: str) -> float:
    """The false-failure rate a check states: its alpha, or 0 for exact counts and bounds."""
    m = ALPHA.search(confidence)
    return float(m.group(1)) if m else 0.0


def check_key(record: dict[str, object]) -> str:
    """A check's identity across runs: its stable ``id`` (node id + check kind + parameters, never N
    or an observed value). Reports written before records had ids: test + check summary with pod
    hashes masked (a summary that carries a measured value then counts as a new check each run)."""
    if record.get("id"):
        return str(record["id"])
    test = str(record["test"]).split("::", 1)[-1]
    name = re.sub(r"-[0-9a-f]{5,10}(-[0-9a-z]{5})?\b", "-*", str(record["check"]))  # pod hashes
    return f"{test} :: {name}"


def keyed_on(runs: Sequence[RunResult]) -> str:
    """How :func:`tally` paired the runs' records, said in the output."""
    records = [r for run in runs for r in run.records]
    missing = sum(1 for r in records if not r.get("id"))
    if not missing:
        return "id"
    return f"test + check summary for {missing} of {len(records)} records without an id (reports before ids)"


@dataclass
class CheckTally:
    key: str
    expected: str
    stated: float
    decided: int = 0
    as_expected: int = 0
    seen_in_runs: list[int] = field(default_factory=list)

    @property
    def false(self) -> int:
        return self.decided - self.as_expected

    def upper95(self) -> float:
        if self.decided == 0:
            return 1.0
        return float(binomtest(self.false, self.decided).proportion_ci(0.95, method="exact").high)


def tally(runs: Sequence[RunResult]) -> list[CheckTally]:
    out: dict[str, CheckTally] = {}
    for run in runs:
        for r in run.records:
            key = check_key(r)
            t = out.setdefault(key, CheckTally(key, str(r["expected"]), stated_rate(str(r["confidence"]))))
            t.decided += 1
            t.as_expected += r["verdict"] == r["expected"]
            t.seen_in_runs.append(run.index)
    return sorted(out.values(), key=lambda t: t.key)


def test_tally(runs: Sequence[RunResult]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for run in runs:
        for nodeid, outcome in run.tests.items():
            out[nodeid][outcome] += 1
    return {k: dict(v) for k, v in sorted(out.items())}


def longest_green_streak(runs: Sequence[RunResult]) -> int:
    best = cur = 0
    for run in runs:
        cur = cur + 1 if run.green else 0
        best = max(best, cur)
    return best


def markdown(runs: Sequence[RunResult], hog: int, select: str) -> str:
    lines = [
        f"{len(runs)} runs of `pytest suites/{' -k ' + repr(select) if select else ''}` beside a CPU hog of "
        f"{hog} busy processes ({os.cpu_count()} cores); green: "
        f"{sum(r.green for r in runs)}/{len(runs)}, longest green streak {longest_green_streak(runs)}; "
        f"wall {min(r.wall_s for r in runs):.0f}-{max(r.wall_s for r in runs):.0f} s per run; "
        f"1-min load average at the end of each run "
        f"{', '.join(f'{r.load_avg[0]:.1f}' for r in runs)}; checks keyed on {keyed_on(runs)}.",
        "",
        "| check | expected | decided | as expected | observed false-failure rate (95% upper) | stated |",
        "|---|---|---|---|---|---|",
    ]
    for t in tally(runs):
        rate = t.false / t.decided if t.decided else 0.0
        lines.append(
            f"| {t.key.replace('|', '/')} | {t.expected} | {t.decided} | {t.as_expected} | "
            f"{rate:.2g} (≤{t.upper95():.2g}) | {t.stated:g} |"
        )
    lines += ["", "| test | outcomes |", "|---|---|"]
    for nodeid, outcomes in test_tally(runs).items():
        lines.append(f"| {nodeid} | {', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))} |")
    return "\n".join(lines)


def write_report(out: Path | None, runs: Sequence[RunResult], hog_n: int, select: str) -> dict[str, object]:
    """The aggregate report; written after every run, so an interrupted soak keeps its figures."""
    report = {
        "hog_processes": hog_n,
        "cores": os.cpu_count(),
        "select": select,
        "runs": [{k: v for k, v in asdict(r).items() if k != "records"} for r in runs],
        "green": sum(r.green for r in runs),
        "longest_green_streak": longest_green_streak(runs),
        "checks_keyed_on": keyed_on(runs),
        "checks": [{**asdict(t), "false": t.false, "upper95": t.upper95()} for t in tally(runs)],
        "tests": test_tally(runs),
    }
    if out:
        out.write_text(json.dumps(report, indent=2) + "\n")
    return report


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--runs", type=int, default=5, help="at most this many runs")
    ap.add_argument("--until-green", type=int, default=0, help="stop after this many green runs in a row")
    ap.add_argument("-k", dest="select", default="", help="pytest -k expression (default: every suite)")
    ap.add_argument("--no-hog", action="store_true", help="no CPU hog (the idle baseline)")
    ap.add_argument("--hog-processes", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    ap.add_argument("--out", type=Path, help="write the JSON report here")
    ap.add_argument("--markdown", action="store_true", help="print the per-check table as Markdown")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm_to_exit)
    hog_n = 0 if args.no_hog else args.hog_processes
    runs: list[RunResult] = []
    with tempfile.TemporaryDirectory(prefix="soak-busy-") as tmp:
        work = Path(tmp)
        with cpu_hog(hog_n, work / "hog") as pids:
            print(f"hog: {len(pids)} busy processes {pids}", file=sys.stderr, flush=True)
            streak = 0
            for i in range(1, args.runs + 1):
                run = run_suites(i, work, args.select, args.timeout, args.pytest_args)
                runs.append(run)
                write_report(args.out, runs, hog_n, args.select)
                streak = streak + 1 if run.green else 0
                bad = {k: v for k, v in run.tests.items() if v in ("failed", "error")}
                print(
                    f"run {i}: {'green' if run.green else 'RED'} rc={run.returncode} {run.wall_s:.0f}s "
                    f"load {run.load_avg[0]:.1f}; {len(run.records)} checks; streak {streak}"
                    + (f"; failed: {sorted(bad)}" if bad else ""),
                    file=sys.stderr,
                    flush=True,
                )
                if not run.green:
                    print(Path(run.log).read_text()[-6000:], file=sys.stderr, flush=True)
                if args.until_green and streak >= args.until_green:
                    break
    report = write_report(args.out, runs, hog_n, args.select)
    print(markdown(runs, hog_n, args.select) if args.markdown else json.dumps(report, indent=2))
    want = args.until_green or args.runs
    return 0 if longest_green_streak(runs) >= want else 1


if __name__ == "__main__":
    sys.exit(main())
