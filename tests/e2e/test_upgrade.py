"""The upgrade check end to end on the local backend, under Locust load.

Default test command (short form, no second build needed): an "upgrade" from the default release
to itself, in place: istiod is replaced on its address and every proxy restarts beside its old
self, under load, with zero failed requests and no config difference; and the same with a broken
TO (a DestinationRule change applied with the new control plane), which must fail naming it.

Nightly (``tox -e upgrade`` = ``pytest tests/e2e/test_upgrade.py --upgrade-from 1.30-dev``): the
full check from the older release, in place and canary, with the suites before and after; and the
negative control of what a restart costs: the short form with every old proxy killed before its
successor starts (no drain) must lose requests and reset the connections held across the
gateway's restart.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.settings import Settings
from harness.upgrade import held, running
from harness.upgrade.local import LocalUpgrade, UpgradeConfig
from harness.versions import DEFAULT_ISTIO, ISTIO_RELEASES

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.backend("local")]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    from harness.settings import from_env

    return from_env().with_overrides(
        backend="local", state_dir=tmp_path / "state", manifests=ROOT / "manifests"
    )


def short(settings: Settings, tmp_path: Path, **kw: object) -> UpgradeConfig:
    return UpgradeConfig(
        from_label=DEFAULT_ISTIO,
        to_label=DEFAULT_ISTIO,
        mode="in-place",
        users=4,
        phase_requests=60,
        run_suites=False,
        out_dir=tmp_path / "report",
        **kw,  # type: ignore[arg-type]
    )


def test_restart_in_place_under_load_loses_no_request(settings: Settings, tmp_path: Path) -> None:
    report = LocalUpgrade(settings, short(settings, tmp_path)).run()
    assert report.passed, report.text()
    names = [p.name for p in report.phases]
    assert names[0] == "baseline" and names[-1] == "after"
    assert any(n.startswith("control-plane") for n in names)
    assert sum(1 for p in report.phases if p.kind == "data-plane") >= 5  # every proxy restarted
    assert all(p.requests >= 60 and p.failures == 0 for p in report.phases)
    assert report.config.proxies >= 5 and not report.config.unexpected
    assert Path(report.chart).is_file()
    # the versions were read from the proxies and istiod, and are the release's own
    expected = running.expected_of(settings, DEFAULT_ISTIO)
    after = report.versions.after
    assert len(after.proxies) >= 5 and {p.envoy_version for p in after.proxies} == {expected.envoy}
    assert {p.istio_version for p in after.proxies} == {DEFAULT_ISTIO}
    assert [c.istio_version for c in after.control_planes] == [DEFAULT_ISTIO]
    assert all("versions" in p.detail for p in report.phases)
    # negative control, on the same readings: judged against another release's expectation for TO
    # (its pinned Envoy release, a build string no binary here has), every proxy and istiod is named
    other = next(rel for label, rel in ISTIO_RELEASES.items() if label != DEFAULT_ISTIO)
    fake_to = running.Expected(other.label, f"0000000/{other.envoy_version}/Clean/RELEASE/BoringSSL")
    judged = running.VersionReport(expected, fake_to, report.versions.before, after)
    assert len(judged.reasons) == len(after.proxies) + len(after.control_planes), judged.reasons
    assert all(fake_to.envoy in r or f"expected {other.label}" in r for r in judged.reasons)


@pytest.mark.negative
def test_a_config_difference_with_the_new_control_plane_fails_naming_it(
    settings: Settings, tmp_path: Path
) -> None:
    dr = next(
        d
        for f in sorted((ROOT / "manifests").glob("*.yaml"))
        for d in yaml.safe_load_all(f.read_text())
        if isinstance(d, dict) and d.get("kind") == "DestinationRule"
    )
    pool = dr["spec"].setdefault("trafficPolicy", {}).setdefault("connectionPool", {})
    pool.setdefault("tcp", {})["connectTimeout"] = "7s"  # a change a "new release" might bring
    broken = tmp_path / "broken-dr.yaml"
    broken.write_text(yaml.safe_dump(dr))
    report = LocalUpgrade(settings, short(settings, tmp_path, to_config=(broken,))).run()
    assert not report.passed
    assert report.config.unexpected, report.text()
    named = " ".join(d.summary for d in report.config.unexpected)
    assert "connect_timeout" in named and "7s" in named, named


def _modes(config: pytest.Config) -> list[str]:
    mode = config.getoption("upgrade_mode")
    return ["in-place", "canary"] if mode == "both" else [mode]


@pytest.mark.parametrize("mode", ["in-place", "canary"])
def test_full_upgrade(mode: str, settings: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    start = request.config.getoption("upgrade_from")
    if not start:
        pytest.skip("the full upgrade check is nightly: pass --upgrade-from VERSION (tox -e upgrade)")
    if mode not in _modes(request.config):
        pytest.skip(f"--upgrade-mode {request.config.getoption('upgrade_mode')}")
    target = request.config.getoption("istio_version") or DEFAULT_ISTIO
    config = UpgradeConfig(start, target, mode=mode, users=10, out_dir=tmp_path / "report")
    report = LocalUpgrade(settings, config).run()
    (tmp_path / "report" / "upgrade.txt").write_text(report.text())
    assert report.passed, report.text()


@pytest.mark.negative
def test_undrained_restart_loses_requests_and_resets_held_connections(
    settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Negative control of the per-phase cost (requests, failures, error-seconds, longest gap, the
    held connections' fate): a restart without drain (UpgradeConfig.drain=False, internal: the old
    proxy SIGKILLed, its successor started after) must fail the phase bound with failed requests
    in the gateway's phase, and the connections held across it must end reset, not closed
    cleanly. Nightly with the full check (about 90 s)."""
    if not request.config.getoption("upgrade_from"):
        pytest.skip("nightly with the full upgrade check: pass --upgrade-from VERSION (tox -e upgrade)")
    report = LocalUpgrade(settings, short(settings, tmp_path, drain=False)).run()
    (tmp_path / "report" / "upgrade.txt").write_text(report.text())
    gw = next(p for p in report.phases if p.kind == "data-plane" and "ingressgateway" in p.name)
    assert all(p.detail.get("drain") is False for p in report.phases if p.kind == "data-plane")
    # the check fails, and for the intended reason: requests lost in the gateway's restart
    reason = f"phase {gw.name}: {gw.failures} of {gw.requests} requests failed"
    assert not report.passed, report.text()
    assert any(r.startswith(reason) for r in report.reasons), (
        f"negative control: the check failed, but not because the gateway's restart lost requests:\n"
        f"{report.text()}"
    )
    assert gw.failures > 0 and gw.error_seconds >= 1 and gw.longest_gap_s > 0
    # ... and the connections held across it were cut without notice: the HTTP/2 stream held open
    # is reset (end of file or RST with it in flight, no GOAWAY), the HTTP/1.1 connection not
    # closed with Connection: close
    fates = {h.protocol: h for h in gw.held}
    assert fates["h2"].fate == held.RESET and fates["h2"].in_flight, report.text()
    assert fates["h2"].evidence.endswith("no GOAWAY"), report.text()
    assert fates["http/1.1"].fate in (held.RESET, held.NO_NOTICE), report.text()
    assert all(h.reconnect == "ok" for h in gw.held), report.text()  # the successor then serves
