"""Chaos game days on the running mesh: every experiment through the `meshproof chaos run` wrapper,
and interruptions (SIGINT, SIGTERM, a SIGKILLed wrapper) in the middle of a fault that must still
roll everything back and leave no residue.

The experiments in :data:`QUICK`, the SIGINT interruption, the bad-input test, the outage proof's
negative control and the no-residue check's control pair (a relabel rolled back, then the same with a
sabotaged rollback) run in the default test command; the rest are marked ``gameday`` and run with
``tox -e chaos`` (nightly).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from harness import wait
from harness.backends.base import Backend
from harness.chaos import residue, runner
from harness.chaos.context import STATE_KEY
from harness.chaos.ledger import Ledger
from harness.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))
#: about 10 s of wall time each on the local mesh (docs/GAMEDAYS.md has the measured times), so they
#: run in the default test command; the rest (20-50 s each, waiting for istiod's return, ejections to
#: end or certificates to rotate) are nightly game days (tox -e chaos, --gamedays)
QUICK = {"authorization-lockdown", "fault-injection-resilience", "replica-network-drops-packets"}

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
    if experiment.stem == "control-plane-loss":
        _outage_figures(result, mesh, record_property)


def _outage_figures(result: runner.ChaosRun, mesh: Backend, record_property) -> None:  # type: ignore[no-untyped-def]
    """control-plane-loss: the outage was proven on every proxy, held for outage_s from the proof,
    and the return proven; the figures go into the JUnit properties (and the journal)."""
    runs = {r["activity"]["name"]: r for r in (result.journal or {}).get("run") or []}
    outage_s = float(((result.journal or {}).get("experiment") or {})["configuration"]["outage_s"])
    stop, start = runs["stop-istiod"]["output"], runs["start-istiod"]["output"]
    proxies = [w for w in mesh.workloads() if w.proxy_admin_url]
    assert stop["proxies_disconnected"] == len(proxies), stop
    assert stop["outage_held_s"] >= outage_s, stop
    assert start["outage_total_s"] >= stop["outage_held_s"], start
    for k in ("istiod_gone_s", "xds_lost_s", "outage_held_s"):
        record_property(k, stop[k])
    for k in ("reconnected_and_acked_s", "envoy_connected_s", "outage_total_s"):
        record_property(k, start[k])


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
        return any(e.kind in ("app-fault", "replica-fault") for e in Ledger.of(conf).entries())

    wait.until(faulted, what="the experiment to have injected its replica fault", timeout=120, interval=0.1)


def _newest_of_runs(settings: Settings, name: str) -> Path | None:
    """The newest ``name`` file (by mtime) among the chaos runs' directories, or None."""
    found = sorted((settings.state_dir / "chaos" / "runs").glob(f"*/{name}"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def _latest_journal(settings: Settings) -> dict[str, object]:
    journal = _newest_of_runs(settings, "journal.json")
    assert journal is not None, "no journal written"
    return json.loads(journal.read_text())


def _interruption_evidence(settings: Settings, journal: Mapping[str, Any], text: str) -> str:
    """What a run that was not marked interrupted did: its status, each activity of its method with
    its status and times, and the ends of Chaos Toolkit's log and of the wrapper's output (a CI run
    at 19e2151 saw status "completed" after SIGINT once; its evidence was gone with its basetemp)."""
    path = _newest_of_runs(settings, "chaostoolkit.log")
    log = path.read_text(errors="replace")[-4000:] if path is not None else "(no chaostoolkit.log)"
    activities = [
        (r["activity"]["name"], r["status"], r.get("start"), r.get("end")) for r in journal.get("run") or []
    ]
    return (
        f"status {journal['status']}; method {activities}\nchaostoolkit.log:\n{log}\noutput:\n{text[-2000:]}"
    )


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
    assert journal["status"] == "interrupted", _interruption_evidence(settings, journal, text)
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


class _StopDoesNothing:
    """The session's mesh, except that stopping its control plane does nothing (istiod keeps
    running): the negative control of control-plane-loss's outage proof."""

    def __init__(self, mesh: Backend) -> None:
        self._mesh = mesh

    def stop_control_plane(self) -> None:
        pass

    def __getattr__(self, name: str) -> object:
        return getattr(self._mesh, name)


@pytest.mark.negative
def test_negative_an_istiod_that_keeps_running_is_no_outage(mesh: Backend, tmp_path: Path) -> None:
    """Negative control: the stop "succeeds" but istiod keeps serving; the outage proof must fail
    within its deadline, saying istiod still accepts connections and every proxy is still connected."""
    from harness.chaos import actions, context
    from harness.errors import WaitTimeout

    conf = {STATE_KEY: str(tmp_path)}  # a ledger of its own; the mesh is the session's
    context.use(tmp_path, _StopDoesNothing(mesh))  # type: ignore[arg-type]
    proxies = [w for w in mesh.workloads() if w.proxy_admin_url]
    try:
        with pytest.raises(WaitTimeout) as failed:
            actions.stop_control_plane(outage_s=1, timeout_s=3, configuration=conf)
        text = str(failed.value)
        assert "\n" not in text, text
        assert "accepts connections on its xDS port" in text, text
        assert f"{len(proxies)} of {len(proxies)} proxies still connected" in text, text
    finally:
        undone, failed_undo = actions.undo_all(conf)  # start_control_plane: istiod runs, proxies connected
        context.forget(tmp_path)
    assert undone == ["istiod started again"] and not failed_undo, (undone, failed_undo)


def _relabel_experiment(
    tmp_path: Path, mesh: Backend, rollback: tuple[str, str]
) -> tuple[Path, dict[str, object]]:
    """A test-only experiment: apply_resource of a running VirtualService with a label and an
    annotation added (its spec unchanged), undone by ``rollback`` (module, func)."""
    import yaml

    original = next(
        o
        for o in mesh.istio_objects()
        if o["kind"] == "VirtualService" and o["metadata"]["name"] == "microservice-1"
    )
    relabelled = json.loads(json.dumps(original))
    # The label key names istio.io: with the spec unchanged, istiod pushes only when a label or
    # annotation key does (Istio's model.NeedsPush), and the local backend's apply waits for that push.
    relabelled["metadata"].setdefault("labels", {})["chaos.istio.io/residue"] = "sabotaged"
    relabelled["metadata"].setdefault("annotations", {})["example.com/game-day"] = "left-behind"
    relabel = tmp_path / "relabel.yaml"
    relabel.write_text(yaml.safe_dump(relabelled))
    module, func = rollback
    doc = {
        "version": "1.0.0",
        "title": "relabel a VirtualService and roll it back",
        "description": "test-only: the no-residue check's control",
        "configuration": {
            "meshproof_state": {"type": "env", "key": "MESHPROOF_STATE", "default": ".meshproof"}
        },
        "controls": [
            {"name": "meshproof", "provider": {"type": "python", "module": "harness.chaos.control"}}
        ],
        "method": [
            {
                "type": "action",
                "name": "relabel-virtual-service",
                "provider": {
                    "type": "python",
                    "module": "harness.chaos.actions",
                    "func": "apply_resource",
                    "arguments": {"path": str(relabel)},
                },
            }
        ],
        "rollbacks": [
            {
                "type": "action",
                "name": "restore-virtual-service",
                "provider": {
                    "type": "python",
                    "module": module,
                    "func": func,
                    "arguments": {"path": str(relabel)},
                },
            }
        ],
    }
    path = tmp_path / "relabel.json"
    path.write_text(json.dumps(doc))
    return path, original


def test_a_relabel_is_rolled_back_without_residue(mesh: Backend, settings: Settings, tmp_path: Path) -> None:
    """The positive side of the residue control: restore_resources puts labels and annotations back
    too (the spec never changed), and the no-residue check finds nothing."""
    experiment, _ = _relabel_experiment(tmp_path, mesh, ("harness.chaos.actions", "restore_resources"))
    result = runner.run(experiment, settings)
    assert result.exit_code == 0, runner.summary_lines(result)
    assert result.residue["clean"], result.residue


@pytest.mark.negative
def test_negative_a_sabotaged_rollback_fails_with_the_residue_named(
    mesh: Backend, settings: Settings, tmp_path: Path
) -> None:
    """Negative control: the rollback marks the relabel undone but undoes nothing; the ledger no
    longer knows, so the run must fail on the no-residue check, naming the object and the fields."""
    import yaml

    experiment, original = _relabel_experiment(
        tmp_path, mesh, ("tests.e2e.chaos_sabotage", "restore_resources_skipping_undo")
    )
    conf = {STATE_KEY: str(settings.state_dir.resolve())}
    try:
        result = runner.run(experiment, settings)
    finally:
        (tmp_path / "original.yaml").write_text(yaml.safe_dump(original))
        mesh.apply([tmp_path / "original.yaml"])  # the residue goes, whatever the run did
    assert result.exit_code == 1, runner.summary_lines(result)
    assert not result.undone_after, result.undone_after  # nothing left in the ledger to find it
    problems = list(result.residue["problems"])
    assert len(problems) == 1, problems
    # the object, and each field with what it now holds (on the local mesh the original has neither
    # labels nor annotations: "metadata.labels added ({...})")
    assert problems[0].startswith("Istio object changed: VirtualService/sample/microservice-1: "), problems
    for field in (
        "metadata.annotations",
        "example.com/game-day",
        "left-behind",
        "metadata.labels",
        "chaos.istio.io/residue",
        "sabotaged",
    ):
        assert field in problems[0], problems
    assert any("no-residue check: RESIDUE: " + problems[0] in line for line in runner.summary_lines(result))
    assert residue.check(conf).clean, "the test's own cleanup left residue"


@pytest.mark.negative
@pytest.mark.gameday
def test_negative_retries_that_do_not_cover_5xx_hide_nothing(mesh: Backend, settings: Settings) -> None:
    """Negative control: retryOn connect-failure (not 5xx); the victim's sidecar still aborts, the
    gateway retries nothing and the load sees the 503s, so retries-hid-the-failures FAILS, for that
    reason."""
    result = runner.run(
        ROOT / "experiments/retries-hide-a-failing-replica.yaml", settings, ["retry_on=connect-failure"]
    )
    assert result.exit_code == 1, runner.summary_lines(result)
    assert "retries-hid-the-failures: did not hold" in _failed_during(result), _failed_during(result)
    runs = {r["activity"]["name"]: r for r in (result.journal or {}).get("run") or []}
    why = runs["retries-hid-the-failures"]["output"]["why_not"]
    assert any(w.startswith("0 retries for ") for w in why), why
    assert result.residue["clean"], result.residue


@pytest.mark.negative
@pytest.mark.gameday
def test_negative_a_long_certificate_lifetime_shows_no_rotation(mesh: Backend, settings: Settings) -> None:
    """Negative control: cert_ttl=1h (pilot-agent renews after 30 min); the action still proves the
    victim's new certificate expires within the hour, but no new serial appears within
    rotations_within_s, so certificates-rotated-under-load FAILS, for that reason."""
    result = runner.run(
        ROOT / "experiments/certificates-rotate-under-load.yaml",
        settings,
        ["cert_ttl=1h", "rotations_within_s=25"],
    )
    assert result.exit_code == 1, runner.summary_lines(result)
    assert "certificates-rotated-under-load: did not hold" in _failed_during(result), _failed_during(result)
    runs = {r["activity"]["name"]: r for r in (result.journal or {}).get("run") or []}
    why = runs["certificates-rotated-under-load"]["output"]["why_not"]
    assert any(w.startswith("0 of 2 rotations seen") for w in why), why
    assert result.residue["clean"], result.residue


@pytest.mark.negative
@pytest.mark.gameday
def test_negative_a_per_try_timeout_beyond_the_route_timeout_hides_nothing(
    mesh: Backend, settings: Settings
) -> None:
    """Negative control: per_try_timeout=20s, longer than the route's 5 s timeout; no try times out on
    its own, so nothing is retried, the route's timeout fires and clients get its 504s:
    timeouts-hid-the-slow-replica FAILS, for that reason."""
    result = runner.run(
        ROOT / "experiments/slow-dependency-behind-timeout.yaml", settings, ["per_try_timeout=20s"]
    )
    assert result.exit_code == 1, runner.summary_lines(result)
    assert "timeouts-hid-the-slow-replica: did not hold" in _failed_during(result), _failed_during(result)
    runs = {r["activity"]["name"]: r for r in (result.journal or {}).get("run") or []}
    out = runs["timeouts-hid-the-slow-replica"]["output"]
    assert any(w.startswith("0 per-try timeouts for ") for w in out["why_not"]), out
    assert out["since_mark"]["timeouts"] >= 1, out  # the clients saw the route's timeout instead
    assert result.residue["clean"], result.residue


@pytest.mark.negative
def test_negative_a_loss_on_a_replica_nobody_calls_drops_nothing(mesh: Backend, settings: Settings) -> None:
    """Negative control: the victim is a client replica, which the load through the ingress never
    reaches; its loss rule drops far fewer packets than the probe's min_dropped (100), so
    clients-did-not-see-the-loss FAILS, for that reason (the count it saw). drop_packets' proof needs
    only one dropped packet: it fails with 0 in most runs, and a stray packet for the replica (seen
    once in CI) can prove it, so either outcome is accepted, and a failure must name the count.
    The rule is gone afterwards."""
    client = next(w for w in mesh.workloads() if w.role == "client")
    result = runner.run(
        ROOT / "experiments/replica-network-drops-packets.yaml",
        settings,
        [f"victim={client.ref}", "loss_within_s=5"],
    )
    assert result.exit_code == 1, runner.summary_lines(result)
    during = _failed_during(result)
    assert "clients-did-not-see-the-loss: did not hold" in during, during
    runs = {r["activity"]["name"]: r for r in (result.journal or {}).get("run") or []}
    why = runs["clients-did-not-see-the-loss"]["output"]["why_not"]
    counts = [re.match(r"within 5 s the loss rule dropped (\d+) packets \(at least 100\)", w) for w in why]
    assert any(m and int(m.group(1)) < 100 for m in counts), why
    action = [d for d in during if d.startswith("drop-packets-on-the-victims-network:")]
    assert all("its rule dropped 0 packets" in d for d in action), action
    assert mesh.network_dropped(client.ref) is None  # the rollback removed the rule
    assert result.residue["clean"], result.residue
