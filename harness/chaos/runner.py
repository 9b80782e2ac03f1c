"""Run a Chaos Toolkit experiment against the mesh of a state dir, always rolled back.

:func:`run` is what ``meshproof chaos run`` and the pytest game days call:

1. parse the experiment (bad YAML/JSON: one line naming the file, exit 2), attach to the mesh,
   undo what an earlier killed run left in the ledger, check every reference of its meshproof
   activities (unknown pod, route, object or file: one line naming the activity, exit 2) and
   record the no-residue baseline;
2. run ``chaos run --rollback-strategy always --journal-path <state>/chaos/runs/<id>/journal.json``
   in a session of its own, so a Ctrl-C reaches the wrapper only: the first SIGINT/SIGTERM is
   passed on as SIGINT (Chaos Toolkit interrupts the method and plays every rollback), later ones
   are ignored while it rolls back. If the wrapper dies, the kernel sends Chaos Toolkit SIGINT
   (also rolled back; see :mod:`harness.chaos._child`);
3. afterwards undo whatever the ledger still holds and run the no-residue check itself;
4. the verdict: 0 when the journal says completed, not deviated, and no residue; 130 when the
   run was interrupted; 1 otherwise;
5. the run's files beside the journal: ``summary.json``, and from it (:mod:`harness.report.runs`)
   ``report.html`` (the hypothesis before/during/after, what was injected and rolled back on a
   timeline, the no-residue check, the mesh's versions read before the method) and ``junit.xml``
   (one testcase per probe, action and rollback, and the no-residue check).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from harness import paths, proc
from harness.chaos.context import STATE_KEY, chaos_dir
from harness.errors import UserError
from harness.settings import Settings

Echo = Callable[[str], None]
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class ChaosRun:
    """One experiment run: where its files are, what the journal said, what was left behind."""

    experiment: Path
    run_dir: Path
    exit_code: int
    journal: Mapping[str, Any] | None
    residue: Mapping[str, Any]
    undone_after: tuple[str, ...] = ()
    wall_s: float = 0.0
    interrupted: bool = False
    notes: tuple[str, ...] = field(default=())
    mesh: Mapping[str, Any] = field(default_factory=dict)  # versions read before the method (reports)

    @property
    def report_paths(self) -> tuple[Path, Path]:
        """The run's HTML page and JUnit XML (:func:`harness.report.runs.write_chaos`)."""
        return self.run_dir / "report.html", self.run_dir / "junit.xml"

    @property
    def journal_path(self) -> Path:
        return self.run_dir / "journal.json"


def load_experiment(path: Path) -> dict[str, Any]:
    """The experiment document; UserError (exit 2) naming the file when it cannot be one."""
    if not path.is_file():
        raise UserError(f"no experiment file {path}. Fix: give the path of a .yaml or .json experiment")
    try:
        text = path.read_text()
        doc = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        where = (
            f"line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1}: " if e.problem_mark else ""
        )
        raise UserError(f"{path}: not valid YAML: {where}{e.problem or e.context}") from e
    except (ValueError, yaml.YAMLError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {first}") from e
    if not isinstance(doc, dict) or "method" not in doc:
        raise UserError(f"{path}: not a Chaos Toolkit experiment (no top-level `method`)")
    return doc


def parse_vars(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise UserError(f"--var {p!r} is not KEY=VALUE. Fix: e.g. --var max_error_ratio=0.02")
        out[k] = v
    return out


def prepare(experiment: Path, settings: Settings, variables: Mapping[str, str]) -> list[str]:
    """Steps 1: undo leftovers, preflight, baseline. Returns what was undone."""
    from chaoslib.configuration import load_configuration
    from chaoslib.exceptions import ChaosException

    from harness.backends import attach
    from harness.chaos import actions, control, residue

    doc = load_experiment(experiment)
    configuration = {STATE_KEY: str(settings.state_dir)}
    attach(settings)  # a clear StateError when no mesh runs there
    undone, failed = actions.undo_all(configuration)
    if failed:
        raise UserError("an earlier chaos run left changes that could not be undone: " + "; ".join(failed))
    try:
        loaded = load_configuration(dict(doc.get("configuration") or {}), {**variables, **configuration})
    except ChaosException as e:
        raise UserError(f"{experiment}: configuration: {e}") from e
    problems = control.preflight(doc, {**loaded, **configuration})
    if problems:
        raise UserError("\n".join(f"{experiment}: {p}" for p in problems))
    residue.snapshot(configuration)
    return undone


def run(
    experiment: Path,
    settings: Settings,
    variables: Sequence[str] = (),
    *,
    echo: Echo | None = None,
    on_started: Callable[[Path, int], None] | None = None,
) -> ChaosRun:
    """Run ``experiment`` (see the module docstring). ``echo`` gets Chaos Toolkit's log lines
    as they come; ``on_started(run_dir, pid)`` is called once the child runs (tests use it)."""
    from harness.chaos import actions, residue

    say = echo or (lambda _line: None)
    extra = parse_vars(variables)
    settings_state = settings.state_dir.resolve()
    settings = settings.with_overrides(state_dir=settings_state)
    configuration = {STATE_KEY: str(settings_state)}
    undone_before = prepare(experiment, settings, extra)
    for u in undone_before:
        say(f"meshproof: undid what an earlier run left: {u}")
    mesh_info = _describe(settings)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_dir = chaos_dir(configuration) / "runs" / f"{stamp}-{experiment.stem}-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "chaostoolkit.log"
    console = run_dir / "console.log"
    argv = [
        sys.executable,
        "-m",
        "harness.chaos._child",
        "--no-version-check",  # it would ask the internet for a newer release
        "--log-file",
        str(log),
        "run",
        "--rollback-strategy",
        "always",
        "--journal-path",
        str(run_dir / "journal.json"),
        "--var",
        f"{STATE_KEY}={settings_state}",
    ]
    for k, v in extra.items():
        argv += ["--var", f"{k}={v}"]
    argv.append(str(experiment))
    started = time.monotonic()
    child = proc.spawn(
        argv,
        log_path=console,
        new_session=True,
        die_with_parent=True,
        env={
            "MESHPROOF_STATE": str(settings_state),
            "PYTHONPATH": str(paths.CHECKOUT),
        },
    )
    signals: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not signals:
            say("meshproof: interrupted: Chaos Toolkit stops the method and rolls everything back ...")
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGINT)
        else:
            say("meshproof: still rolling back; waiting for it to finish")
        signals.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if on_started is not None:
            on_started(run_dir, child.pid)
        offset = 0
        while True:
            try:
                child.wait(0.2)
                break
            except subprocess.TimeoutExpired:  # noqa: PERF203 - show the new lines meanwhile
                offset = _echo_new(console, offset, say)
        _echo_new(console, offset, say)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    wall = time.monotonic() - started
    journal = _read_journal(run_dir / "journal.json")
    undone_after, failed = actions.undo_all(configuration)
    found = residue.check(configuration)
    notes = [f"undo failed: {f}" for f in failed]
    interrupted = bool(signals) or (journal or {}).get("status") == "interrupted"
    ok = (
        journal is not None
        and journal.get("status") == "completed"
        and not journal.get("deviated")
        and found.clean
        and not undone_after
        and not failed
    )
    left_behind = not found.clean or bool(undone_after) or bool(failed)
    code = 1 if left_behind else (130 if interrupted else (0 if ok else 1))
    result = ChaosRun(
        experiment=experiment,
        run_dir=run_dir,
        exit_code=code,
        journal=journal,
        residue=found.as_json(),
        undone_after=tuple(undone_after),
        wall_s=wall,
        interrupted=interrupted,
        notes=tuple(notes),
        mesh=mesh_info,
    )
    doc = summary_doc(result)
    (run_dir / "summary.json").write_text(json.dumps(doc, indent=2, default=str))
    from harness.report.runs import write_chaos

    write_chaos(run_dir, json.loads(json.dumps(doc, default=str)), journal)
    return result


def _describe(settings: Settings) -> dict[str, Any]:
    """The mesh as the run's reports name it (versions read from its proxies and istiod)."""
    from harness.backends import attach
    from harness.report.versions import describe

    return describe(attach(settings), settings.istio_version, "before the experiment")


def _echo_new(path: Path, offset: int, say: Echo) -> int:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return offset
    complete = data.rfind(b"\n") + 1
    for line in data[:complete].decode(errors="replace").splitlines():
        say(_ANSI.sub("", line))
    return offset + complete


def _read_journal(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


# --------------------------------------------------------------------------- summary


def _compact(output: Any, limit: int = 240) -> str:
    if isinstance(output, dict):
        output = {k: v for k, v in output.items() if k not in ("cells",)} | (
            {
                "cells": [
                    f"{c['cell']}: {c['matching']}/{c['requests']} {c['expected']}" for c in output["cells"]
                ]
            }
            if "cells" in output
            else {}
        )
    text = json.dumps(output, default=str, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _runs(runs: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    out = []
    for r in runs or []:
        a = r.get("activity") or {}
        out.append(
            {
                "name": a.get("name"),
                "type": a.get("type"),
                "status": r.get("status"),
                "tolerance_met": r.get("tolerance_met"),
                "duration_s": round(float(r.get("duration") or 0.0), 3),
                "output": r.get("output"),
                "error": (r.get("exception") or [""])[-1].strip() if r.get("exception") else "",
            }
        )
    return out


def summary_doc(result: ChaosRun) -> dict[str, Any]:
    j = result.journal or {}
    ss = j.get("steady_states") or {}
    return {
        "experiment": str(result.experiment),
        "title": (j.get("experiment") or {}).get("title"),
        "journal": str(result.journal_path) if result.journal is not None else None,
        "status": j.get("status", "no journal"),
        "deviated": j.get("deviated"),
        "exit_code": result.exit_code,
        "wall_s": round(result.wall_s, 2),
        "before": _runs((ss.get("before") or {}).get("probes")),
        "during": _runs(j.get("run")),
        "after": _runs((ss.get("after") or {}).get("probes")),
        "rollbacks": _runs(j.get("rollbacks")),
        "meshproof": j.get("meshproof"),
        "undone_after_run": list(result.undone_after),
        "residue": dict(result.residue),
        "notes": list(result.notes),
        "mesh": dict(result.mesh),
        "report": {k: str(v) for k, v in zip(("html", "junit"), result.report_paths, strict=True)},
    }


def summary_lines(result: ChaosRun) -> list[str]:
    """The readable summary: hypothesis before/during/after with values, injections, rollbacks, the
    reports' paths, verdict."""
    from harness.report.runs import activity_ok

    doc = summary_doc(result)
    lines = [
        f"experiment {doc['title'] or result.experiment} · {doc['wall_s']:.1f} s · journal {doc['journal']}"
    ]

    def section(title: str, runs: list[dict[str, Any]]) -> None:
        lines.append(f"{title}:")
        if not runs:
            lines.append("  (none run)")
        for r in runs:
            mark = (
                "    " if activity_ok(r) and r["type"] != "probe" else ("ok  " if activity_ok(r) else "FAIL")
            )
            detail = r["error"] or _compact(r["output"])
            lines.append(f"  {mark} {r['type']:<6} {r['name']} ({r['duration_s']:.2f} s): {detail}")

    section("hypothesis before", doc["before"])
    section("method (during)", doc["during"])
    section("hypothesis after", doc["after"])
    section("rollbacks", doc["rollbacks"])
    mp = doc["meshproof"] or {}
    lines.extend(f"  failed in the method: {d}" for d in mp.get("during") or [])
    if doc["undone_after_run"]:
        lines.append(
            "undone by meshproof after the run (rollbacks missed them): " + "; ".join(doc["undone_after_run"])
        )
    res = doc["residue"]
    lines.append(
        "no-residue check: clean (" + ", ".join(res.get("checked", [])) + ")"
        if res.get("clean")
        else "no-residue check: RESIDUE: " + "; ".join(res.get("problems", []))
    )
    lines.extend(f"note: {n}" for n in doc["notes"])
    lines.extend(f"{what}: {path}" for what, path in doc["report"].items())
    verdict = {
        0: "PASSED: the steady state held before, during and after, and nothing was left behind",
        130: "INTERRUPTED: rolled back",
    }.get(result.exit_code, f"FAILED: status {doc['status']}, deviated {doc['deviated']}")
    lines.append(verdict)
    return lines
