"""Versions read from the mesh decide the upgrade check (fake proxies and istiod over httpx.MockTransport)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from harness.errors import BackendError
from harness.report.compare import compare
from harness.upgrade import running
from harness.upgrade.configdiff import Classified
from harness.upgrade.report import Phase, UpgradeReport

FROM = running.Expected("1.30-dev", "0d7f1c2/1.38.3/Clean/RELEASE/BoringSSL")
TO = running.Expected("1.31-dev", "9ab33e0/1.39.3/Clean/RELEASE/BoringSSL")


def server_info(release: running.Expected, node_id: str) -> dict[str, Any]:
    """The shape of Envoy's admin /server_info (its extension list cut short)."""
    major, minor, patch = (int(x) for x in running.envoy_release(release.envoy).split("."))
    return {
        "version": release.envoy,
        "state": "LIVE",
        "hot_restart_version": "disabled",
        "command_line_options": {"base_id": "0", "concurrency": 2},
        "node": {
            "id": node_id,
            "cluster": "microservice-1.sample",
            "metadata": {"ISTIO_VERSION": release.label, "NAMESPACE": "sample"},
            "user_agent_name": "envoy",
            "user_agent_build_version": {
                "version": {"major_number": major, "minor_number": minor, "patch": patch},
                "metadata": {"revision.status": "Clean", "build.type": "RELEASE"},
            },
            "extensions": [{"name": "envoy.filters.http.router", "category": "envoy.filters.http"}],
        },
        "uptime_current_epoch": "12s",
    }


def fake_mesh(proxies: dict[str, running.Expected], istiods: dict[str, running.Expected]) -> httpx.Client:
    """Proxy ``key`` answers on host ``key``; istiod of revision ``rev`` on host ``istiod-rev``."""

    def handle(request: httpx.Request) -> httpx.Response:
        host, path = request.url.host, request.url.path
        if host in proxies and path == "/server_info":
            return httpx.Response(200, json=server_info(proxies[host], f"sidecar~127.0.0.1~{host}"))
        rev = host.removeprefix("istiod-")
        if rev in istiods and path == "/version":
            return httpx.Response(200, text=f"{istiods[rev].label}-unknown-unknown")
        return httpx.Response(404)

    return httpx.Client(transport=httpx.MockTransport(handle))


def read(http: httpx.Client, when: str, proxies: list[str], revisions: list[str]) -> running.Snapshot:
    return running.snapshot(
        http, when, {k: f"http://{k}" for k in proxies}, {r: f"http://istiod-{r}" for r in revisions}
    )


PROXIES = ["sample.microservice-1-v1-0", "sample.microservice-1-v2-0", "istio-system.istio-ingressgateway-0"]


def version_report(
    after_proxies: dict[str, running.Expected], after_istiod: running.Expected
) -> running.VersionReport:
    before = read(fake_mesh(dict.fromkeys(PROXIES, FROM), {"default": FROM}), "before", PROXIES, ["default"])
    after = read(fake_mesh(after_proxies, {"default": after_istiod}), "after", PROXIES, ["default"])
    return running.VersionReport(FROM, TO, before, after)


def upgrade_report(versions: running.VersionReport) -> UpgradeReport:
    doc = {"checks": [{"id": "t::c", "test": "t", "check": "c", "verdict": "PASS", "expected": "PASS"}]}
    return UpgradeReport(
        from_label=FROM.label,
        to_label=TO.label,
        mode="in-place",
        backend="local",
        users=1,
        max_failures=0,
        phases=(Phase("baseline", "baseline", 0.0, 1.0, 10, 0),),
        suites=compare(doc, doc),
        config=Classified((), (), 3, 30),
        versions=versions,
    )


def test_a_mesh_on_to_after_the_upgrade_passes_and_the_report_shows_what_was_read() -> None:
    rep = upgrade_report(version_report(dict.fromkeys(PROXIES, TO), TO))
    assert rep.passed, rep.reasons
    doc = json.loads(json.dumps(rep.as_json()))
    after = doc["versions"]["after"]
    gw = after["proxies"]["istio-system.istio-ingressgateway-0"]
    assert gw["envoy_version"] == TO.envoy and gw["istio_version"] == "1.31-dev"
    assert gw["server_info"]["node"]["user_agent_build_version"]["version"]["minor_number"] == 39
    assert "extensions" not in gw["server_info"]["node"]  # the identifying part only
    assert after["istiod"]["default"] == {
        "istio_version": "1.31-dev",
        "version_string": "1.31-dev-unknown-unknown",
    }
    assert doc["versions"]["before"]["proxies"]["sample.microservice-1-v1-0"]["envoy_version"] == FROM.envoy
    assert "Envoy 1.39.3, Istio 1.31-dev" in rep.text()


def test_negative_control_a_proxy_still_on_from_after_the_upgrade_fails_naming_it() -> None:
    stale = "sample.microservice-1-v2-0"
    rep = upgrade_report(version_report({**dict.fromkeys(PROXIES, TO), stale: FROM}, TO))
    assert not rep.passed
    lines = [r for r in rep.reasons if stale in r]
    assert len(rep.reasons) == 1 and len(lines) == 1, rep.reasons
    assert FROM.envoy in lines[0] and TO.envoy in lines[0]  # both versions, one line
    assert lines[0].startswith("after the upgrade: proxy sample.microservice-1-v2-0 runs Envoy")


def test_negative_control_istiod_not_on_to_after_the_upgrade_fails_naming_both_versions() -> None:
    rep = upgrade_report(version_report(dict.fromkeys(PROXIES, TO), FROM))
    assert rep.reasons == [
        "after the upgrade: istiod (revision default) runs Istio 1.30-dev, expected 1.31-dev"
    ]


def test_an_unreadable_proxy_fails_the_check() -> None:
    versions = version_report(dict.fromkeys(PROXIES[1:], TO), TO)  # the first answers 404
    assert any(PROXIES[0] in r and "cannot read" in r for r in versions.reasons), versions.reasons


def test_a_mesh_not_on_from_before_the_upgrade_fails_too() -> None:
    before = read(fake_mesh(dict.fromkeys(PROXIES, TO), {"default": FROM}), "b", PROXIES, ["default"])
    versions = running.VersionReport(FROM, TO, before, before)
    assert any(r.startswith("before the upgrade: proxy") for r in versions.reasons)


def test_envoy_version_output_is_parsed_and_junk_is_an_error() -> None:
    text = "\nenvoy  version: 9ab33e0/1.39.3/Clean/RELEASE/BoringSSL\n\n"
    assert running.parse_envoy_version_output(text) == "9ab33e0/1.39.3/Clean/RELEASE/BoringSSL"
    assert running.envoy_release("9ab33e0/1.39.3/Clean/RELEASE/BoringSSL") == "1.39.3"
    with pytest.raises(BackendError, match="no version"):
        running.parse_envoy_version_output("segfault")


def test_istiod_version_is_what_precedes_git_revision_and_build_status() -> None:
    assert running.parse_istiod("default", "1.31-dev-unknown-unknown\n").istio_version == "1.31-dev"
    assert running.parse_istiod("1-31", "1.31.0-3f1c0a2e-Clean").istio_version == "1.31.0"
    junk = running.parse_istiod("default", "ok")
    assert junk.istio_version == "" and "/version is not" in junk.error
    assert running.mismatches(running.Snapshot("after", (), (junk,)), TO)[0].startswith(
        "after: istiod (revision default): cannot read its version"
    )


def test_step_checks_name_a_component_gone_or_on_the_wrong_build_and_pass_one_on_to() -> None:
    snap = read(
        fake_mesh({PROXIES[1]: TO, PROXIES[2]: FROM}, {"default": TO}), "p", PROXIES[1:3], ["default"]
    )
    assert running.proxy_runs(PROXIES[1], TO)(snap) == []
    (stale,) = running.proxy_runs(PROXIES[2], TO)(snap)
    assert stale.startswith(f"p: proxy {PROXIES[2]} runs Envoy") and FROM.envoy in stale
    assert running.proxy_runs(PROXIES[0], TO)(snap) == [f"p: proxy {PROXIES[0]} is gone"]
    assert running.control_plane_runs("default", TO)(snap) == []
    assert running.control_plane_runs("default", FROM)(snap) == [
        "p: istiod (revision default) runs Istio 1.31-dev, expected 1.30-dev"
    ]
    assert running.control_plane_runs("canary", TO)(snap) == ["p: no istiod of revision canary"]
