"""Chaos game days on the running mesh: every experiment through the `meshproof chaos run` wrapper,
and interruptions (SIGINT, SIGTERM, a SIGKILLed wrapper) in the middle of a fault that must still
roll everything back and leave no residue.

The experiments in :data:`QUICK`, the SIGINT interruption and the bad-input test run in the
default test command; the rest are marked ``gameday`` and run with ``tox -e chaos`` (nightly).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from harness import wait
from harness.backends.base import Backend
from harness.chaos import residue, runner
from harness.chaos.context import STATE_KEY, Ledger
from harness.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))
#: short enough for every CI run (about 30 s); the rest are nightly game days (tox -e chaos)
QUICK = {"authorization-lockdown"}

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _params() -> list[object]:
    return [
        pytest.param(e, id=e.stem, marks=() if e.stem in QUICK else (pytest.mark.gameday,))
        for e in EXPERIMENTS
    ]


@pytest.mark.parametrize("experiment", _params())
def test_experiment(experiment: Path, mesh: Backend, settings: Settings, record_property) -> None:  # type: ignore[no-untyped-def]
    lines: list[str] = []
    result = runner.run(experiment, settings, echo=lines.append)
    if result.interrupted:
        raise KeyboardInterrupt
    summary = runner.summary_lines(result)
    record_property("wall_s", f"{result.wall_s:.1f}")
    record_property("journal", str(result.journal_path))
    print("\n".join(summary))
    assert result.exit_code == 0, "\n".join(summary + ["--- chaos log (tail) ---", *lines[-30:]])
    assert result.residue["clean"], result.residue


def _start(experiment: str, settings: Settings) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "chaos", "run", experiment, "--state", str(settings.state_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _mid_fault(conf: dict[str, str], cli: subprocess.Popen[bytes]) -> None:
    def faulted() -> bool:
        if cli.poll() is not None:
            raise AssertionError(f"the run ended before the fault: {cli.stdout.read().decode()[-2000:]}")  # type: ignore[union-attr]
        return any(e.kind == "app-fault" for e in Ledger.of(conf).entries())

    wait.until(faulted, what="the experiment to have injected its replica fault", timeout=120, interval=0.1)


def _latest_journal(settings: Settings) -> dict[str, object]:
    runs = sorted(
        (settings.state_dir / "chaos" / "runs").glob("*/journal.json"), key=lambda p: p.stat().st_mtime
    )
    assert runs, "no journal written"
    return json.loads(runs[-1].read_text())


@pytest.mark.parametrize(
    "sig",
    [
        pytest.param(signal.SIGINT, id="SIGINT"),
        pytest.param(signal.SIGTERM, id="SIGTERM", marks=pytest.mark.gameday),
    ],
)
def test_interrupted_mid_fault_rolls_back(sig: int, mesh: Backend, settings: Settings) -> None:
    conf = {STATE_KEY: str(settings.state_dir.resolve())}
    cli = _start("experiments/outlier-ejection.yaml", settings)
    try:
        _mid_fault(conf, cli)
        cli.send_signal(sig)
        out, _ = cli.communicate(timeout=180)
    finally:
        if cli.poll() is None:
            cli.kill()
    text = out.decode(errors="replace")
    assert cli.returncode == 130, text[-3000:]
    journal = _latest_journal(settings)
    assert journal["status"] == "interrupted", journal["status"]
    assert [r["activity"]["name"] for r in journal["rollbacks"]] == ["clear-replica-fault", "stop-load"]  # type: ignore[index]
    found = residue.check(conf)
    assert found.clean, found.problems
    assert "no-residue check: clean" in text


@pytest.mark.gameday
def test_killed_wrapper_still_rolls_back(mesh: Backend, settings: Settings) -> None:
    """SIGKILL of the wrapper: the kernel sends Chaos Toolkit SIGINT, and it rolls back."""
    conf = {STATE_KEY: str(settings.state_dir.resolve())}
    before = {p.name for p in (settings.state_dir / "chaos" / "runs").glob("*")}
    cli = _start("experiments/outlier-ejection.yaml", settings)
    try:
        _mid_fault(conf, cli)
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait(10)
    finally:
        if cli.poll() is None:
            cli.kill()
    new = [p for p in (settings.state_dir / "chaos" / "runs").glob("*") if p.name not in before]
    assert len(new) == 1, new
    journal_path = new[0] / "journal.json"
    wait.until(
        journal_path.is_file,
        what=f"Chaos Toolkit to finish its rollbacks and write {journal_path}",
        timeout=120,
    )
    wait.until(lambda: not Ledger.of(conf).entries(), what="the ledger to be empty", timeout=30)
    assert json.loads(journal_path.read_text())["status"] == "interrupted"
    found = residue.check(conf)
    assert found.clean, found.problems


def test_unknown_pod_fails_before_anything_runs(mesh: Backend, settings: Settings, tmp_path: Path) -> None:
    """Bad input: one clear line naming the file, the activity and the pod; exit 2; nothing injected."""
    doc = runner.load_experiment(ROOT / "experiments/outlier-ejection.yaml")
    doc["configuration"]["victim"] = "sample/no-such-pod"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    p = subprocess.run(
        [sys.executable, "-m", "harness.cli", "chaos", "run", str(bad), "--state", str(settings.state_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2, p.stdout + p.stderr
    assert "no-such-pod" not in p.stdout
    assert "method[1] (fail-one-v1-replica): no workload 'sample/no-such-pod'" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert not Ledger.of({STATE_KEY: str(settings.state_dir.resolve())}).entries()


# --------------------------------------------------------------------------- negative controls


def _failed_during(result: runner.ChaosRun) -> list[str]:
    return list(((result.journal or {}).get("meshproof") or {}).get("during") or [])


@pytest.mark.negative
@pytest.mark.gameday
def test_negative_fault_on_the_pinned_route_fails_the_route_scope_check(
    mesh: Backend, settings: Settings
) -> None:
    """Negative control: put the abort on the route that must stay unaffected; that check FAILS."""
    result = runner.run(
        ROOT / "experiments/fault-injection-resilience.yaml", settings, ["faulted_route=v2-pinned"]
    )
    assert result.exit_code == 1, runner.summary_lines(result)
    assert any(d.startswith("route-v2-pinned-unaffected:") for d in _failed_during(result)), _failed_during(
        result
    )
    assert result.residue["clean"], result.residue


@pytest.mark.negative
@pytest.mark.gameday
def test_negative_allow_nothing_policy_is_no_lockdown(
    mesh: Backend, settings: Settings, tmp_path: Path
) -> None:
    """Negative control: an ALLOW policy without rules does not deny what another ALLOW policy
    allows (Istio's semantics), so the lockdown check FAILS."""
    weak = tmp_path / "allow-nothing.yaml"
    weak.write_text(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: chaos-allow-nothing, namespace: sample}\nspec: {}\n"
    )
    result = runner.run(
        ROOT / "experiments/authorization-lockdown.yaml",
        settings,
        [f"lockdown={weak}", "converge_within_s=8"],
    )
    assert result.exit_code == 1, runner.summary_lines(result)
    assert any(d.startswith("everyone-denied:") for d in _failed_during(result)), _failed_during(result)
    assert result.residue["clean"], result.residue


@pytest.mark.negative
@pytest.mark.gameday
def test_negative_without_outlier_detection_the_ejection_checks_fail(
    mesh: Backend, settings: Settings, tmp_path: Path
) -> None:
    """Negative control: with outlierDetection removed from the DestinationRule, the failing
    replica is never ejected and its errors exceed the budget: both checks FAIL."""
    import yaml

    original = next(
        d
        for d in yaml.safe_load_all((ROOT / "manifests/30-istio.yaml").read_text())
        if d and d["kind"] == "DestinationRule" and d["metadata"]["name"] == "microservice-1"
    )
    variant = json.loads(json.dumps(original))
    del variant["spec"]["trafficPolicy"]["outlierDetection"]
    variant["spec"]["trafficPolicy"]["connectionPool"] = original["spec"]["trafficPolicy"]["connectionPool"]
    (tmp_path / "no-od.yaml").write_text(yaml.safe_dump(variant))
    (tmp_path / "original.yaml").write_text(yaml.safe_dump(original))
    mesh.apply([tmp_path / "no-od.yaml"])
    try:
        result = runner.run(
            ROOT / "experiments/outlier-ejection.yaml",
            settings,
            ["settle_within_s=5"],
        )
    finally:
        mesh.apply([tmp_path / "original.yaml"])
    assert result.exit_code == 1, runner.summary_lines(result)
    failed = _failed_during(result)
    assert any(d.startswith("gateway-ejected-the-failing-replica:") for d in failed), failed
    assert result.residue["clean"], result.residue
