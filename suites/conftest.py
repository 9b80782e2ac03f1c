"""Suite-level fixtures: the shared mesh, guards that always undo changes, and the evidence report.

``mesh_backend`` (session)
    The plugin's ``mesh`` fixture (:mod:`harness.plugin`): the suites never know which backend runs.
``config`` / ``faults`` (function)
    :class:`~harness.guards.ConfigGuard` / :class:`~harness.guards.FaultGuard`:
    every configuration variant and app fault a test makes is undone in teardown. On failure
    the mesh's diagnostics are dumped into the test's tmp dir *before* anything is undone, so
    they show the state the test failed in.
``evidence`` (function)
    ``evidence.require(check, ...)`` records the check and fails the test with its
    observed-versus-expected table if it failed; ``evidence.require_failure(check, ...)`` is the
    negative control's mirror image. Records are printed as a table at the end of the run and
    written to ``suites-report.json`` (pytest's basetemp, and the state dir when there is one),
    with ``suites-report.html`` and ``meshproof-report.yaml`` beside it (:mod:`harness.report`);
    each test's checks also become its JUnit properties.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from harness import httpclient
from harness.settings import Settings, from_env

if TYPE_CHECKING:  # loaded by the fixtures: a pytest-xdist controller runs no test and needs none of it
    import httpx

    from harness.backends.base import Backend
    from harness.guards import ConfigGuard, FaultGuard
    from harness.istio import Bundle
    from harness.report.records import Recorder
    from harness.traffic.checks import CheckResult
    from harness.traffic.client import Sampler
    from harness.traffic.design import Design

RECORDER = pytest.StashKey["Recorder"]()
REPORT_PATHS = pytest.StashKey[list[Path]]()
FAILED = pytest.StashKey[bool]()
DUMPED = pytest.StashKey[str]()
WORKER_RECORDS = "meshproof_records"  # pytest-xdist: a worker's records, for the controller


# --------------------------------------------------------------------------- hooks


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    if call.when == "teardown":  # before the report: its user_properties become JUnit properties
        _check_properties(item)
    report = yield
    if report.when == "call" and report.passed and item.get_closest_marker("negative") is not None:
        unreasoned = _negative_without_reason(item)
        if unreasoned:
            report.outcome = "failed"
            report.longrepr = unreasoned
    if report.failed:
        item.stash[FAILED] = True
    return report


def _negative_without_reason(item: pytest.Item) -> str:
    """A passed negative control must have recorded a check that failed as expected, with its reason."""
    recorder = item.config.stash.get(RECORDER, None)
    records = [
        r for r in (recorder.records if recorder else ()) if r.test == item.nodeid and r.expected == "FAIL"
    ]
    if not records:
        return (
            f"negative control {item.nodeid} passed without recording a failed check: use "
            "evidence.require_failure(check, ..., because=(reason, predicate))"
        )
    if not all(r.because for r in records):
        return f"negative control {item.nodeid} recorded a failed check without its reason (because=)"
    return ""


def _check_properties(item: pytest.Item) -> None:
    """Each check the test recorded, as a JUnit property (``meshproof.check <id>``: verdict, N, observed)."""
    from harness.report.suites import property_of

    recorder = item.config.stash.get(RECORDER, None)
    if recorder is None:
        return
    for record in recorder.records:
        if record.test == item.nodeid:
            item.user_properties.append(property_of(asdict(record)))


#: The suites whose tests mostly wait on their mesh, leaving the cores idle (``bench/bench_cpu.py``,
#: each test's wait spans against its wall): outlier ejection windows, a restarted client's new
#: identity and one-at-a-time probes (mTLS, Gateway API), trace ingestion and the tracing suite's
#: second mesh. The rest keep the cores busy: Locust's load, the sampler's concurrent batches.
WAITING_SUITES = frozenset(
    ("test_outlier.py", "test_outlier_defaults.py", "test_mtls.py", "test_gateway_api.py", "test_tracing.py")
)


#: The suites that change what every worker's proxies share on a cluster (the mesh-wide Telemetry
#: in istio-system, its Gateway API Gateway): on kind/existing only the first worker runs them
#: (:mod:`harness.schedule`); each local worker has a mesh of its own.
MESH_WIDE_SUITES = frozenset(("test_tracing.py", "test_gateway_api.py"))


def mesh_wide(nodeid: str) -> bool:
    """Whether a test (by its id) is of a :data:`MESH_WIDE_SUITES` suite."""
    return nodeid.split("::", 1)[0].rsplit("/", 1)[-1] in MESH_WIDE_SUITES


def suite_lane(nodeid: str) -> str:
    """A test's lane for :mod:`harness.schedule`, from its id (``suites/test_x.py::test_y[...]``)."""
    from harness.schedule import BUSY, WAITS

    return WAITS if nodeid.split("::", 1)[0].rsplit("/", 1)[-1] in WAITING_SUITES else BUSY


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):  # type: ignore[no-untyped-def]
    """pytest-xdist's ``load`` distribution (``meshproof test``'s workers), a waiting test beside
    a busy one (:mod:`harness.schedule`); any other ``--dist`` is left to pytest-xdist."""
    if config.getvalue("dist") != "load":
        return None
    from harness.schedule import make_scheduler

    shared = _settings(config).backend != "local"  # one mesh, a copy of the sample per worker
    return make_scheduler(config, log, suite_lane, pinned=mesh_wide if shared else lambda _nodeid: False)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_TestLog(config), "meshproof-suites-testlog")
    config.addinivalue_line(
        "markers",
        "istio_routes(reason): proves the manifests' VirtualServices or the DestinationRule their "
        "routes reach: skipped, with the reason, when the mesh routes with Gateway API HTTPRoutes",
    )


class _TestLog:
    """Each suite test's outcome, wall time, failure message, load chart and diagnostics, for the
    report (in a pytest-xdist run the controller logs every worker's tests)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        try:
            self.prefix = Path(__file__).parent.relative_to(config.rootpath).as_posix() + "/"
        except ValueError:
            self.prefix = ""

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        from harness.report.suites import fold_test_report

        if hasattr(self.config, "workeroutput") or not report.nodeid.startswith(self.prefix):
            return
        recorder = _recorder(
            self.config,
            self.config._tmp_path_factory.getbasetemp(),
            _settings(self.config).state_dir,  # noqa: SLF001
        )
        previous = next((t for t in recorder.tests if t["id"] == report.nodeid), None)
        recorder.add_test(fold_test_report(previous, report))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In a pytest-xdist worker: hand the session's records and mesh to the controller, which reports them."""
    from harness.plugin import mesh_info

    workeroutput = getattr(session.config, "workeroutput", None)
    recorder = session.config.stash.get(RECORDER, None)
    if workeroutput is not None and recorder is not None:
        recorder.add_mesh(mesh_info(session.config))
        workeroutput[WORKER_RECORDS] = json.dumps(recorder.to_json())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # type: ignore[no-untyped-def]
    """pytest-xdist controller: merge a finished worker's records and mesh into the run's one report."""
    raw = getattr(node, "workeroutput", {}).get(WORKER_RECORDS)
    if raw is None:
        return
    config = node.config
    from harness.report.records import Recorder

    recorder = _recorder(config, config._tmp_path_factory.getbasetemp(), _settings(config).state_dir)  # noqa: SLF001
    data = json.loads(raw)
    recorder.extend(Recorder.from_json(data))
    recorder.add_mesh(data.get("mesh"))


def _recorder(config: pytest.Config, basetemp: Path, state_dir: Path) -> Recorder:
    """The run's one Recorder; it writes ``suites-report.json`` into ``basetemp`` and the state dir
    (when there is one) at the end, except in a pytest-xdist worker, whose controller merges and writes."""
    if RECORDER not in config.stash:
        from harness.report.records import Recorder

        config.stash[RECORDER] = Recorder()
        paths = [basetemp / "suites-report.json"]
        if state_dir.is_dir():
            paths.append(state_dir / "suites-report.json")
        config.stash[REPORT_PATHS] = [] if hasattr(config, "workeroutput") else paths
    return config.stash[RECORDER]


def _settings(config: pytest.Config) -> Settings:
    """The plugin's settings when it is loaded (its options exist), else settings from the environment."""
    from harness.plugin import settings_for

    try:
        return settings_for(config)
    except ValueError:  # the plugin's options are not registered: it is not loaded
        return from_env()


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    from harness.plugin import mesh_info
    from harness.report.suites import write_reports

    recorder = config.stash.get(RECORDER, None)
    if recorder is None or not (recorder.records or recorder.tests):
        return
    recorder.add_mesh(mesh_info(config))  # without pytest-xdist: this process's mesh
    if recorder.records:
        terminalreporter.section("meshproof evidence: one line per check")
        terminalreporter.write_line(recorder.table())
    for path in config.stash.get(REPORT_PATHS, []):
        try:
            written = write_reports(recorder.write(path))
        except OSError as e:
            terminalreporter.write_line(f"report: could not write {path}: {e}")
            continue
        for what, p in written:
            terminalreporter.write_line(f"{what}: {p}")


# --------------------------------------------------------------------------- session


@pytest.fixture(scope="session")
def suite_settings(request: pytest.FixtureRequest) -> Settings:
    """The plugin's ``settings`` when it is loaded, else settings from the environment."""
    return _settings(request.config)


@pytest.fixture(scope="session")
def mesh_backend(mesh: Backend) -> Backend:
    """The session's mesh: the plugin's ``mesh`` (brought up through the Backend protocol, or
    attached to a running one)."""
    return mesh


@pytest.fixture(scope="session")
def design(suite_settings: Settings) -> Design:
    from harness.traffic.design import Design

    return Design(suite_settings.alpha, suite_settings.power, suite_settings.min_deviation)


@pytest.fixture(scope="session")
def manifests(request: pytest.FixtureRequest, suite_settings: Settings) -> Bundle:
    from harness.istio import validate_paths

    path = suite_settings.manifests
    if not path.is_absolute() and not path.exists():
        path = request.config.rootpath / path
    return validate_paths([path], istio_version=suite_settings.istio_version)


@pytest.fixture(scope="session")
def baseline(
    mesh_backend: Backend,
    manifests: Bundle,
    suite_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Bundle:
    """The mesh runs the manifests' Istio objects (re-applied if an interrupted run left variants):
    those ``up`` applied for the mesh's traffic API (:mod:`harness.istio.traffic_api`)."""
    from harness.guards import ConfigGuard, observer, running_config
    from harness.istio.traffic_api import select_bundle

    manifests = select_bundle(manifests, mesh_backend.traffic_api)
    guard = ConfigGuard(
        mesh_backend,
        manifests,
        tmp_path_factory.mktemp("baseline"),
        istio_version=suite_settings.istio_version,
        current=running_config(mesh_backend, manifests),
        observe=observer(mesh_backend, manifests),
    )
    repaired = guard.repair()
    if repaired:
        print(f"re-applied the manifests' version of: {', '.join(repaired)}")
    return manifests


@pytest.fixture(scope="session")
def ingress_host(mesh_backend: Backend, baseline: Bundle) -> str | None:
    """The Host requests through the ingress need: a Gateway API listener takes only its hostname
    (``--traffic-api gateway-api``); None for the Istio Gateway's ``*`` (suites/_support/routes.py)."""
    from suites._support.routes import ingress_route

    host = ingress_route(baseline, mesh_backend.traffic_api).request.get("host_header")
    return str(host) if host else None


@pytest.fixture(scope="session")
def sampler() -> Iterator[Sampler]:
    from harness.traffic.client import Sampler

    with Sampler(timeout=10.0, max_connections=64) as s:
        yield s


@pytest.fixture(scope="session")
def admin_http() -> Iterator[httpx.Client]:
    """A plain HTTP client for Envoy admin endpoints and plaintext probes."""

    with httpclient.client(timeout=10.0) as http:
        yield http


@pytest.fixture(scope="session")
def recorder(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, suite_settings: Settings
) -> Recorder:
    return _recorder(request.config, tmp_path_factory.getbasetemp(), suite_settings.state_dir)


# --------------------------------------------------------------------------- per test


def _dump_if_failed(request: pytest.FixtureRequest, mesh: Backend, tmp_path: Path) -> None:
    """Once per failed test: the mesh's diagnostics into its tmp dir, named in the report."""
    node = request.node
    if not node.stash.get(FAILED, False) or DUMPED in node.stash:
        return
    dest = tmp_path / "diagnostics"
    try:
        written = mesh.diagnostics(dest)
        text = f"{len(written)} files in {dest}"
    except Exception as e:  # diagnostics must never hide the test's own failure
        text = f"could not collect diagnostics: {type(e).__name__}: {e}"
    node.stash[DUMPED] = text
    node.user_properties.append(("diagnostics", text))
    node.add_report_section("teardown", "meshproof diagnostics", text)


@pytest.fixture(autouse=True)
def _diagnostics_on_failure(
    request: pytest.FixtureRequest, mesh_backend: Backend, tmp_path: Path
) -> Iterator[None]:
    yield
    _dump_if_failed(request, mesh_backend, tmp_path)


@pytest.fixture(autouse=True)
def _istio_routes_only(request: pytest.FixtureRequest, mesh_backend: Backend) -> None:
    """A test marked ``istio_routes(reason=...)`` needs the manifests' VirtualServices: skipped,
    with its reason, when the mesh runs the HTTPRoutes instead (``--traffic-api gateway-api``)."""
    marker = request.node.get_closest_marker("istio_routes")
    if marker is not None and mesh_backend.traffic_api != "istio":
        pytest.skip(
            f"{marker.kwargs.get('reason', 'proves the VirtualServices')}; the mesh routes with "
            f"{mesh_backend.traffic_api}. Fix: --traffic-api istio"
        )


@pytest.fixture
def config(
    request: pytest.FixtureRequest,
    mesh_backend: Backend,
    baseline: Bundle,
    suite_settings: Settings,
    sampler: Sampler,
    tmp_path: Path,
) -> Iterator[ConfigGuard]:
    from harness.guards import ConfigGuard, observer, running_config

    guard = ConfigGuard(
        mesh_backend,
        baseline,
        tmp_path / "config",
        istio_version=suite_settings.istio_version,
        current=running_config(mesh_backend, baseline),
        observe=observer(mesh_backend, baseline),
        on_change=sampler.reset_connections,
    )
    guard.repair()  # an earlier test's restore failed: start from the manifests anyway
    try:
        yield guard
    finally:
        _dump_if_failed(request, mesh_backend, tmp_path)
        guard.restore()


@pytest.fixture
def faults(request: pytest.FixtureRequest, mesh_backend: Backend, tmp_path: Path) -> Iterator[FaultGuard]:
    from harness.guards import FaultGuard

    guard = FaultGuard(mesh_backend)
    try:
        yield guard
    finally:
        _dump_if_failed(request, mesh_backend, tmp_path)
        problems = guard.undo()
        if problems:
            pytest.fail("could not undo faults: " + "; ".join(problems), pytrace=False)


def trace_pointers(mesh: Backend, since_us: int, limit: int = 3) -> str:
    """Failure evidence: the Jaeger query URL and a few traces recorded since ``since_us``."""
    url = mesh.trace_query_url()
    if url is None:
        return "traces: tracing is not deployed in this mesh"
    from harness.namespaces import ns
    from harness.tracing.jaeger import JaegerClient, now_us

    try:
        with JaegerClient(url, timeout=3.0) as jaeger:
            ids = [
                t.trace_id
                for service in (f"microservice-1.{ns('sample')}", "istio-ingressgateway.istio-system")
                for t in jaeger.find_traces(service, start_us=since_us, end_us=now_us(), limit=limit)
            ][:limit]
    except Exception as e:  # evidence must never hide the test's own failure
        return f"traces: Jaeger at {url} (could not list traces: {type(e).__name__}: {e})"
    shown = ", ".join(ids) if ids else "none recorded during this test"
    return f"traces: Jaeger {url}; e.g. {shown} (`meshproof traces --trace-id ID`)"


class Evidence:
    """Records checks for the report and turns a failed check into a test failure with its table.

    A failure's message ends with the Jaeger query URL and a few trace ids of the test's traffic.
    """

    def __init__(self, recorder: Recorder, test: str, traces: Callable[[], str] = lambda: "") -> None:
        self._recorder = recorder
        self._test = test
        self._traces = traces

    def require(
        self,
        check: CheckResult,
        *,
        requests: int,
        confidence: str,
        wall_s: float,
        notes: str = "",
        used_n: int = 0,
        fixed_n: int = 0,
    ) -> CheckResult:
        if not check.passed:
            notes = f"{notes}\n{self._traces()}".strip()
        self._recorder.record(
            self._test,
            check,
            requests=requests,
            confidence=confidence,
            wall_s=wall_s,
            notes=notes,
            used_n=used_n,
            fixed_n=fixed_n,
        )
        assert check.passed, f"{check}\n{notes}".rstrip()
        return check

    def require_failure(
        self,
        check: CheckResult,
        *,
        requests: int,
        confidence: str,
        wall_s: float,
        notes: str = "",
        used_n: int = 0,
        fixed_n: int = 0,
        because: tuple[str, Callable[[CheckResult], bool]],
    ) -> CheckResult:
        """Negative control: the check must FAIL against the broken configuration.

        ``because`` is ``(reason, predicate)``: the failure must be the intended one (the
        predicate holds on the failed check), not any failure. The reason is recorded.
        """
        if because is None or not because[0]:
            raise TypeError("require_failure needs because=(reason, predicate): why must this check fail?")
        self._recorder.record(
            self._test,
            check,
            requests=requests,
            confidence=confidence,
            wall_s=wall_s,
            expect_pass=False,
            notes=notes,
            used_n=used_n,
            fixed_n=fixed_n,
            because=because[0],
        )
        assert not check.passed, (
            f"negative control: the check passed although the mesh runs a broken configuration, so it "
            f"cannot tell broken from correct:\n{check}"
        )
        reason, holds = because
        assert holds(check), f"negative control: the check failed, but not because {reason}:\n{check}"
        return check


@pytest.fixture
def evidence(request: pytest.FixtureRequest, recorder: Recorder, mesh_backend: Backend) -> Evidence:
    from harness.tracing.jaeger import now_us

    since = now_us()
    return Evidence(recorder, request.node.nodeid, lambda: trace_pointers(mesh_backend, since))
