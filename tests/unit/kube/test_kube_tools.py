"""Preflight and doctor for the kind/existing backends, with an injected `which` and runner."""

from __future__ import annotations

import pytest

from harness.backends.kube import tools
from harness.backends.kube.doctor import ClusterInfo, doctor
from harness.backends.kube.tools import parse_version, preflight, same_minor
from harness.doctor import ToolStatus
from harness.errors import ToolMissing
from harness.versions import IstioRelease

from .fakes import ALL_TOOLS, GOOD_REPLIES, FakeRunner, which_from

RELEASE = IstioRelease(label="1.30", module_version="v0.0.0-test", envoy_version="1.38.3")


def test_preflight_kind_names_first_missing_tool_and_notes_the_others() -> None:
    with pytest.raises(ToolMissing) as info:
        preflight("kind", RELEASE, which=which_from({}), run=FakeRunner())
    err = info.value
    assert err.tool == "docker"
    assert "docs.docker.com" in err.how_to_get
    notes = "\n".join(err.__notes__)
    assert "also missing: kind" in notes and "also missing: istioctl" in notes
    assert err.exit_code == 2


@pytest.mark.parametrize("absent", ["docker", "kind", "istioctl"])
def test_preflight_kind_each_tool_is_required(absent: str) -> None:
    found = {k: v for k, v in ALL_TOOLS.items() if k != absent}
    with pytest.raises(ToolMissing) as info:
        preflight("kind", RELEASE, which=which_from(found), run=FakeRunner(GOOD_REPLIES))
    assert info.value.tool == absent
    assert not getattr(info.value, "__notes__", [])


def test_preflight_kind_needs_a_running_docker_engine() -> None:
    replies = {
        **GOOD_REPLIES,
        "/usr/bin/docker info": (1, "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock"),
    }
    with pytest.raises(ToolMissing) as info:
        preflight("kind", RELEASE, which=which_from(ALL_TOOLS), run=FakeRunner(replies))
    assert info.value.tool == "a running Docker engine"
    assert "docker info" in info.value.how_to_get
    assert "Cannot connect" in "\n".join(info.value.__notes__)


def test_preflight_kind_needs_istioctl_of_the_pinned_release() -> None:
    replies = {**GOOD_REPLIES, "/opt/istio/bin/istioctl version": (0, "client version: 1.24.3\n", "")}
    with pytest.raises(ToolMissing) as info:
        preflight("kind", RELEASE, which=which_from(ALL_TOOLS), run=FakeRunner(replies))
    err = info.value
    assert err.tool == "istioctl 1.30.x"
    assert "1.24.3" in err.needed_for and "/opt/istio/bin/istioctl" in err.needed_for
    assert "ISTIO_VERSION=1.30" in err.how_to_get


def test_preflight_kind_ok_returns_paths_and_istioctl_version() -> None:
    run = FakeRunner(GOOD_REPLIES)
    paths = preflight("kind", RELEASE, which=which_from(ALL_TOOLS), run=run)
    assert paths.docker == "/usr/bin/docker" and paths.kind == "/usr/bin/kind"
    assert paths.istioctl_version == "1.30.1"
    assert ["/usr/bin/docker", "info", "--format", "{{.ServerVersion}}"] in run.calls
    assert ["/opt/istio/bin/istioctl", "version", "--remote=false"] in run.calls


def test_preflight_kind_with_the_istioctl_built_from_the_pin_needs_none_on_path() -> None:
    """Locally built images: the istioctl of the pinned module is used; PATH's (absent here) is not
    asked, nor run for its version (the build checked it)."""
    found = {k: v for k, v in ALL_TOOLS.items() if k != "istioctl"}
    run = FakeRunner(GOOD_REPLIES)
    built = "/cache/istio-1.30/cluster/bin/istioctl"
    paths = preflight("kind", RELEASE, which=which_from(found), run=run, istioctl=built)
    assert paths.istioctl == built and paths.istioctl_version == RELEASE.label
    assert not [c for c in run.calls if "istioctl" in c[0]]
    # without it (official images), PATH's istioctl of the --istio-version line is still required
    with pytest.raises(ToolMissing, match="istioctl"):
        preflight("kind", RELEASE, which=which_from(found), run=FakeRunner(GOOD_REPLIES))


def test_preflight_existing_needs_no_local_tools() -> None:
    run = FakeRunner()
    paths = preflight("existing", RELEASE, which=which_from({}), run=run)
    assert paths == tools.ToolPaths()
    assert run.calls == []


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("kind v0.27.0 go1.23.6 linux/amd64", "0.27.0"),
        ("client version: 1.30.1", "1.30.1"),
        ("1.30.0-beta.1", "1.30.0-beta.1"),
        ("Client Version: v1.33.1\nKustomize Version: v5.6.0", "1.33.1"),
        ("no digits here", ""),
    ],
)
def test_parse_version(text: str, version: str) -> None:
    assert parse_version(text) == version


def test_same_minor() -> None:
    assert (
        same_minor("1.30.2", "1.30")
        and same_minor("1.30", "1.30")
        and same_minor("1.30-alpha.9739e10", "1.30")
    )
    assert (
        not same_minor("1.3.0", "1.30") and not same_minor("1.301.0", "1.30") and not same_minor("", "1.30")
    )


def test_release_minor_of_dev_labels() -> None:
    assert tools.minor(IstioRelease("1.31-dev", "v0", "1.39.3")) == "1.31"
    assert tools.minor(RELEASE) == "1.30"


def _by(entries: list[ToolStatus], name: str, backend: str) -> ToolStatus:
    return next(e for e in entries if e.name == name and e.backend == backend)


def test_doctor_all_present() -> None:
    entries = doctor(
        release=RELEASE,
        which=which_from(ALL_TOOLS),
        run=FakeRunner(GOOD_REPLIES),
        probe=lambda ctx: ClusterInfo("v1.33.1", "1.30.1"),
    )
    assert {(e.name, e.backend) for e in entries} >= {
        ("docker", "kind"),
        ("docker engine", "kind"),
        ("kind", "kind"),
        ("istioctl", "kind"),
        ("kubectl", "kind"),
        ("kubectl", "existing"),
        ("cluster", "existing"),
        ("istiod", "existing"),
    }
    assert all(e.found for e in entries)
    assert _by(entries, "docker engine", "kind").version == "27.3.1"
    assert _by(entries, "kind", "kind").version == "0.27.0"
    assert _by(entries, "istioctl", "kind").version == "1.30.1"
    assert _by(entries, "cluster", "existing").version == "v1.33.1"
    assert _by(entries, "istiod", "existing").version == "1.30.1"
    assert _by(entries, "kubectl", "kind").needed_for.startswith("looking at the cluster by hand (optional")


def test_doctor_reports_missing_without_raising() -> None:
    def unreachable(ctx: str) -> ClusterInfo:
        raise RuntimeError("connection refused")

    entries = doctor(
        release=RELEASE, context="prod", which=which_from({}), run=FakeRunner(), probe=unreachable
    )
    assert not any(e.found for e in entries)
    assert not any(e.name == "kubectl" for e in entries)  # optional: never reported missing
    cluster = _by(entries, "cluster", "existing")
    assert "'prod'" in cluster.needed_for and "connection refused" in cluster.needed_for
    assert all(e.how_to_get for e in entries)


def test_doctor_flags_wrong_istioctl_and_stopped_engine_and_missing_istiod() -> None:
    replies = {
        **GOOD_REPLIES,
        "/opt/istio/bin/istioctl version": (0, "client version: 1.29.0\n", ""),
        "/usr/bin/docker info": (1, "", "Cannot connect to the Docker daemon"),
    }
    entries = doctor(
        release=RELEASE,
        which=which_from(ALL_TOOLS),
        run=FakeRunner(replies),
        probe=lambda ctx: ClusterInfo("v1.33.1", ""),
    )
    assert _by(entries, "docker", "kind").found
    engine = _by(entries, "docker engine", "kind")
    assert not engine.found and "Cannot connect" in engine.needed_for
    ictl = _by(entries, "istioctl", "kind")
    assert not ictl.found and "need 1.30.x" in ictl.needed_for and ictl.version == "1.29.0"
    assert _by(entries, "cluster", "existing").found
    assert not _by(entries, "istiod", "existing").found
