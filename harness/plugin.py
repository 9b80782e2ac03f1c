"""meshproof's pytest plugin: the "mesh" options, markers, the ``settings`` and ``mesh`` fixtures,
a makereport hook that lets fixtures know whether their test failed, and a teardown hook that
puts a running ``load`` into phase ``teardown`` before any fixture is torn down.

Registered exactly once, through the ``pytest11`` entry point ``meshproof`` in pyproject.toml (the
root conftest.py does not list it again), so it is active wherever the package is installed.

Fixtures:

``settings`` (session)
    :class:`~harness.settings.Settings` from ``MESHPROOF_*`` variables, then command-line options.
``mesh`` (session)
    A running :class:`~harness.backends.base.Backend`. If the state dir records a running mesh
    (``meshproof up --detach``), the suites attach to it and leave it running; otherwise the
    fixture brings one up and always takes it down at the end (``--keep-cluster`` keeps only the
    kind cluster, see the backend). Either way it reads what the mesh runs (versions from its
    proxies and istiod, the traffic API) once, for the reports (:func:`mesh_info`).
``mesh_diagnostics`` (function)
    Request it (or make it autouse in a suite's conftest) to dump the mesh's diagnostics into
    the test's tmp dir when the test failed.

Marker ``backend(name, ...)`` skips a test on other backends.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness import timeline
from harness.errors import StateError, UserError
from harness.settings import BACKENDS, TRAFFIC_APIS, Settings, from_env
from harness.versions import DEFAULT_ISTIO, ISTIO_RELEASES

if TYPE_CHECKING:
    from harness.backends.base import Backend
    from harness.load import LoadRun
    from harness.load.chart import ChartWorker
    from harness.load.shared import SharedLocust

SETTINGS_KEY = pytest.StashKey[Settings]()
REPORTS_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()

MARKERS = {
    "e2e": "e2e: needs a running mesh (the `mesh` fixture brings one up or attaches to one)",
    "slow": "slow: takes more than a few seconds (statistical sampling, load, chaos)",
    "negative": "negative: negative control: proves the check fails when the configuration is broken",
    "backend": "backend(name, ...): run only on the named backend(s): local, kind, existing",
    "under_load": (
        "under_load(users=N, shape=S, user_class=C, path=P, headers={...}, start=True): run the test while "
        "Locust drives background load (the `load` fixture; defaults from --load-users/--load-shape)"
    ),
    "gameday": "gameday: a long chaos experiment; runs only with --gamedays (tox -e chaos, nightly)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("mesh", "meshproof: the mesh under test")
    group.addoption(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="where the mesh runs (default: $MESHPROOF_BACKEND or local)",
    )
    group.addoption(
        "--state",
        metavar="DIR",
        default=None,
        help="state dir; a mesh running there (meshproof up --detach) is reused (default: $MESHPROOF_STATE or .meshproof)",
    )
    group.addoption(
        "--manifests",
        metavar="DIR",
        default=None,
        help="workload and Istio YAML the mesh starts from (default: $MESHPROOF_MANIFESTS or manifests)",
    )
    group.addoption(
        "--traffic-api",
        choices=TRAFFIC_APIS,
        default=None,
        help="the manifests' routes the mesh runs and the suites prove: VirtualServices (istio) or "
        "HTTPRoutes (gateway-api) (default: $MESHPROOF_TRAFFIC_API or istio)",
    )
    group.addoption(
        "--istio-version",
        choices=sorted(ISTIO_RELEASES),
        default=None,
        help=f"pinned Istio release (default: $MESHPROOF_ISTIO or {DEFAULT_ISTIO})",
    )
    group.addoption(
        "--kube-context",
        metavar="NAME",
        default=None,
        help="kubeconfig context of the cluster (backend existing; default: $MESHPROOF_KUBE_CONTEXT or current)",
    )
    group.addoption(
        "--upgrade-from",
        choices=sorted(ISTIO_RELEASES),
        default=None,
        metavar="VERSION",
        help="run the full upgrade check (tests/e2e/test_upgrade.py) from VERSION to --istio-version",
    )
    group.addoption(
        "--upgrade-mode",
        choices=("in-place", "canary", "both"),
        default="both",
        help="which upgrade flows the full upgrade check runs (default: both)",
    )
    group.addoption(
        "--keep-cluster",
        action="store_true",
        default=None,
        help="do not delete the kind cluster at the end (faults and processes are still cleaned up)",
    )
    group.addoption(
        "--alpha",
        type=float,
        default=None,
        metavar="P",
        help="false-failure rate of each statistical check (default: $MESHPROOF_ALPHA or 0.001)",
    )
    group.addoption(
        "--power",
        type=float,
        default=None,
        metavar="P",
        help="probability of catching the minimum deviation (default: $MESHPROOF_POWER or 0.99)",
    )
    group.addoption(
        "--min-deviation",
        type=float,
        default=None,
        metavar="D",
        help="smallest deviation of a share that must be caught (default: $MESHPROOF_MIN_DEVIATION or 0.05)",
    )
    group.addoption(
        "--load-users",
        type=int,
        default=None,
        metavar="N",
        help="Locust users of the `load` fixture / under_load tests (default: $MESHPROOF_LOAD_USERS or 10)",
    )
    group.addoption(
        "--load-shape",
        default=None,
        metavar="S",
        help="steady, ramp, spike or step (default: $MESHPROOF_LOAD_SHAPE or steady)",
    )
    group.addoption(
        "--load-duration",
        default=None,
        metavar="D",
        help="how long a non-steady shape lasts, e.g. 60s (default: $MESHPROOF_LOAD_DURATION or 60)",
    )
    group.addoption(
        "--load-processes",
        type=int,
        default=None,
        metavar="N",
        help="Locust processes (--processes) of the `load` fixture (default: $MESHPROOF_LOAD_PROCESSES or 1)",
    )
    group.addoption(
        "--gamedays",
        action="store_true",
        default=False,
        help="also run the long chaos experiments (tests marked gameday); the default run has the quick ones",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers that the ini file does not already declare (no duplicates either way);
    with pytest-xdist (``-n N``), refuse a run whose workers would share one mesh."""
    declared = {line.split(":", 1)[0].split("(", 1)[0].strip() for line in config.getini("markers")}
    for name, line in MARKERS.items():
        if name not in declared:
            config.addinivalue_line("markers", line)
    if worker_id(config) is not None:
        settings_for(config)  # a kube worker's copy of the sample: named before the suites are collected
    if parallel_workers(config) > 1 and worker_id(config) is None:
        settings = settings_for(config)
        why = ""
        running = (settings.state_dir / "backend.json").is_file()
        if (
            settings.backend != "local"
        ):  # the workers share the cluster's mesh, each its own copy of the sample
            if not running:
                raise pytest.UsageError(
                    f"-n {parallel_workers(config)}: backend {settings.backend} runs its workers on one mesh, "
                    f"which must be up before they start. Fix: `meshproof up --backend {settings.backend} "
                    f"--detach --state {settings.state_dir}` first, or run without -n"
                )
            if settings.traffic_api != "istio":
                why = (
                    f"the workers' copies of the sample route with Istio's API only, not {settings.traffic_api} "
                    "(its Gateway is in istio-system, shared by every worker)"
                )
        elif running:
            why = (
                f"a mesh runs at {settings.state_dir} (meshproof up --detach), which the workers would share"
            )
        if why:
            raise pytest.UsageError(
                f"-n {parallel_workers(config)}: {why}; the suites change its configuration and need it to "
                "themselves. Fix: run without -n (or -n 0), or stop that mesh with `meshproof down`"
            )


def worker_id(config: pytest.Config) -> str | None:
    """The pytest-xdist worker this process is ("gw0", ...), or None in the controller or a plain run."""
    workerinput = getattr(config, "workerinput", None)
    return str(workerinput["workerid"]) if workerinput else None


def parallel_workers(config: pytest.Config) -> int:
    """How many pytest-xdist workers the run uses (0: none; a worker itself reports 0 too)."""
    if worker_id(config) is not None:
        return 0
    n = getattr(config.option, "numprocesses", None)
    dist = getattr(config.option, "dist", "no")
    return int(n) if isinstance(n, int) and dist != "no" else 0


def settings_for(config: pytest.Config) -> Settings:
    """The run's settings (computed once): environment first, then command-line options."""
    if SETTINGS_KEY not in config.stash:

        def path(value: str | None) -> Path | None:
            return Path(value) if value else None

        opt = config.getoption
        try:
            config.stash[SETTINGS_KEY] = from_env().with_overrides(
                backend=opt("backend"),
                state_dir=path(opt("state")),
                manifests=path(opt("manifests")),
                istio_version=opt("istio_version"),
                kube_context=opt("kube_context"),
                keep_cluster=opt("keep_cluster"),
                alpha=opt("alpha"),
                power=opt("power"),
                min_deviation=opt("min_deviation"),
                load_users=opt("load_users"),
                load_shape=opt("load_shape"),
                load_duration_s=_duration(opt("load_duration")),
                load_processes=opt("load_processes"),
                traffic_api=opt("traffic_api"),
            )
        except UserError as e:
            raise pytest.UsageError(str(e)) from e
        worker = worker_id(config)
        if worker is not None:
            config.stash[SETTINGS_KEY] = _worker_settings(config, config.stash[SETTINGS_KEY], worker)
    return config.stash[SETTINGS_KEY]


def _worker_settings(config: pytest.Config, settings: Settings, worker: str) -> Settings:
    """pytest-xdist worker ``worker``'s settings. Local: a mesh of its own, in its own state dir.
    kind/existing: the cluster's one mesh (the state dir's), and from the second worker on a copy of
    the sample in namespaces of its own (:mod:`harness.namespaces`): its manifests are that copy,
    and its suffix is in the environment before the suites are collected."""
    import os

    from harness import namespaces

    if settings.backend == "local":
        return settings.with_overrides(state_dir=settings.state_dir / "workers" / worker)
    sfx = namespaces.suffix_for(worker)
    if not sfx:
        return settings
    os.environ[namespaces.SUFFIX_ENV] = sfx
    src = settings.manifests
    if not src.is_absolute() and not src.exists():
        src = config.rootpath / src
    dest = settings.state_dir / "workers" / worker / "manifests"
    return settings.with_overrides(manifests=namespaces.render_manifests(src, dest, sfx))


def _duration(raw: str | None) -> float | None:
    if raw is None:
        return None
    from harness.load import duration_seconds

    return duration_seconds(raw)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked ``under_load`` gets the ``load`` fixture even if it does not ask for it.

    In a pytest-xdist worker the ``under_load`` tests come first (a stable sort; every worker
    collects the same order): they are the longest, and handing them out first keeps the
    workers' last tests short, so no worker idles while another finishes a long one."""
    for item in items:
        names = getattr(item, "fixturenames", None)
        if item.get_closest_marker("under_load") is not None and names is not None and "load" not in names:
            names.append("load")
    if worker_id(config) is not None:
        items.sort(key=lambda item: item.get_closest_marker("under_load") is None)


def pytest_runtest_setup(item: pytest.Item) -> None:
    shared = item.config.stash.get(SHARED_LOAD_KEY, None)
    if shared is not None and "load" not in getattr(item, "fixturenames", ()):
        shared.pause()  # a test without load runs without the module's shared Locust's users
    if item.get_closest_marker("gameday") is not None and not item.config.getoption("gamedays"):
        pytest.skip("a long chaos game day: run with --gamedays (tox -e chaos)")
    marker = item.get_closest_marker("backend")
    if marker is None:
        return
    wanted = {str(a) for a in marker.args}
    unknown = wanted - set(BACKENDS)
    if not wanted or unknown:
        pytest.fail(
            f"@pytest.mark.backend{tuple(marker.args)!r}: name one or more of {', '.join(BACKENDS)}",
            pytrace=False,
        )
    current = settings_for(item.config).backend
    if current not in wanted:
        pytest.skip(f"runs only on backend {' or '.join(sorted(wanted))}; this run uses {current}")


#: The phase a test's load is in while its fixtures are torn down (a fault removed, a config restored).
TEARDOWN_PHASE = "teardown"


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Before any fixture is torn down, a still running ``load`` enters phase ``teardown``: what
    the fixtures undo then (a fault removed, a config restored while Locust still runs) is charted
    apart from the test's own phases, never as part of its last one."""
    run = getattr(item, "funcargs", {}).get("load")
    if run is None or not getattr(run, "running", False):
        return
    with contextlib.suppress(Exception):  # a phase mark must never hide the test's verdict
        run.phase(TEARDOWN_PHASE)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, for fixtures that act on failure (see :func:`node_failed`);
    hang the spans of wall time recorded meanwhile (:mod:`harness.timeline`) on it as
    ``timeline.SPANS_ATTR``, with the process's pytest-xdist worker and its CPU seconds so far
    (pytest-xdist sends a report's attributes to the controller)."""
    report = yield
    item.stash.setdefault(REPORTS_KEY, {})[report.when] = report
    setattr(report, timeline.SPANS_ATTR, [list(s) for s in timeline.take()])
    setattr(report, timeline.WORKER_ATTR, worker_id(item.config) or "")
    setattr(report, timeline.CPU_ATTR, round(time.process_time(), 3))
    return report


def node_failed(item: pytest.Item) -> bool:
    """Whether setup or the test call of ``item`` has failed so far (for fixture teardown code)."""
    return any(r.failed for r in item.stash.get(REPORTS_KEY, {}).values())


@pytest.fixture(scope="session")
def settings(request: pytest.FixtureRequest) -> Settings:
    return settings_for(request.config)


@pytest.fixture(scope="session")
def mesh(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Backend]:
    from harness.backends import attach, create

    if (settings.state_dir / "backend.json").is_file():
        try:
            running = attach(settings)
        except StateError:
            pass  # recorded but gone: bring a fresh mesh up below
        else:
            if running.traffic_api != settings.traffic_api:
                pytest.fail(
                    f"the mesh in {settings.state_dir} runs the {running.traffic_api} routes, not the "
                    f"{settings.traffic_api} ones. Fix: pass --traffic-api {running.traffic_api} "
                    f"(or MESHPROOF_TRAFFIC_API), or `meshproof down --state {settings.state_dir}` first",
                    pytrace=False,
                )
            _remember_mesh(request.config, running, settings)
            if start_copy := getattr(running, "start_copy", None):  # kube: a worker's copy of the sample
                start_copy()
            yield running  # someone else's mesh: leave it running
            return
    with create(settings) as backend:
        backend.up()
        _remember_mesh(request.config, backend, settings)
        yield backend


#: What the session's mesh is (see :func:`mesh_info`).
MESH_INFO = pytest.StashKey[dict[str, Any]]()


def _remember_mesh(config: pytest.Config, backend: Backend, settings: Settings) -> None:
    from harness.report.versions import describe

    config.stash[MESH_INFO] = describe(backend, settings.istio_version, "at the start of the session")


def mesh_info(config: pytest.Config) -> dict[str, Any] | None:
    """The session's mesh as reports name it (backend, release, traffic API, versions read from its
    proxies and istiod when the ``mesh`` fixture brought it up or attached to it); None before."""
    return config.stash.get(MESH_INFO, None)


@pytest.fixture
def mesh_diagnostics(request: pytest.FixtureRequest, mesh: Backend, tmp_path: Path) -> Iterator[Path]:
    """Yields the directory that receives config dumps, stats and logs if the test fails."""
    dest = tmp_path / "diagnostics"
    yield dest
    if not node_failed(request.node):
        return
    try:
        written = mesh.diagnostics(dest)
    except Exception as e:  # diagnostics must never hide the test's own failure
        text = f"could not collect diagnostics: {type(e).__name__}: {e}"
    else:
        text = f"{len(written)} files in {dest}"
    request.node.user_properties.append(("diagnostics", text))
    request.node.add_report_section("teardown", "meshproof diagnostics", text)


@pytest.fixture(scope="session")
def load_charts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartWorker]:
    """Draws the ``load`` fixture's charts in one background process (off the tests' teardown);
    every chart is written by the end of the session."""
    from harness.load.chart import ChartWorker

    worker = ChartWorker(tmp_path_factory.getbasetemp() / "load-charts")
    try:
        yield worker
    finally:
        for problem in worker.close():
            warnings.warn(problem, stacklevel=1)


#: The module's shared Locust while it exists (so a test without load can pause it).
SHARED_LOAD_KEY = pytest.StashKey["SharedLocust"]()


@pytest.fixture(scope="module")
def shared_locust(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedLocust]:
    """The one Locust the ``load`` fixture's steady runs share within a module (local backend;
    started by the first test that needs it, stopped after the module's last test): each test's
    load is a :class:`~harness.load.shared.LoadSlice` of it. Between tests its users keep running
    until a test needs quiet (see :func:`pytest_runtest_setup`)."""
    from harness.load.shared import SharedLocust

    shared = SharedLocust(tmp_path_factory.mktemp("shared-load"))
    request.config.stash[SHARED_LOAD_KEY] = shared
    try:
        yield shared
    finally:
        del request.config.stash[SHARED_LOAD_KEY]
        try:
            shared.close()
        except BaseException:
            shared.abort()
            raise


@pytest.fixture
def load(
    request: pytest.FixtureRequest,
    mesh: Backend,
    settings: Settings,
    tmp_path: Path,
    load_charts: ChartWorker,
) -> Iterator[LoadRun]:
    """Background load (Locust) for the duration of the test. On the local backend a steady
    single-process load is a :class:`~harness.load.shared.LoadSlice` of the module's one Locust
    (``shared_locust``: started by the module's first such test, resized to each test's users,
    stopped after its last): the test's own phases and only the requests started inside its
    window. Otherwise (a shape, a duration, ``--processes``, kind/existing) it is a run of its own
    from the mesh's :meth:`~harness.backends.base.Backend.load_runner` (local:
    :class:`~harness.load.LocustRun`, a subprocess; kind/existing: master and workers inside the
    cluster), and the shared Locust is paused meanwhile. Mark phases with ``load.phase(name)``; the
    test's teardown is phase ``teardown``. The report is ``load.report`` after the test, and in the
    test's report sections and ``user_properties``.

    Configured by the ``under_load(...)`` marker's keyword arguments (users, shape, user_class,
    path, headers, spawn_rate, processes, duration_s; ``start=False`` yields it unstarted, for a
    test that must set its scenario up first), else by ``--load-users``/``--load-shape``/
    ``--load-duration``/``--load-processes`` (and their MESHPROOF_LOAD_* variables). A test that
    requests a ``load_headers`` fixture (a dict) has the load send those headers too (the
    marker's ``headers`` win).
    """
    from harness.load import LoadConfig, LocustRun

    marker = request.node.get_closest_marker("under_load")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    autostart = bool(kwargs.pop("start", True))
    for option, key in (("load_users", "users"), ("load_processes", "processes")):
        given = request.config.getoption(option)
        if given is not None:  # on the command line: it wins over the marker (heavier runs, tox -e load)
            kwargs[key] = given
    shape = kwargs.pop("shape", settings.load_shape)
    duration = kwargs.pop("duration_s", settings.load_duration_s if shape != "steady" else 0.0)
    users = kwargs.pop("users", settings.load_users)
    # Background load for a test: all users at once (within about a second), not Locust's gentle
    # default of `users` per second; a test that wants a ramp says so (spawn_rate=..., or a shape).
    if isinstance(users, int) and users > 0:
        kwargs.setdefault("spawn_rate", float(min(max(users, 10 * users), 100)))
    if "load_headers" in request.fixturenames:  # the test's own: e.g. the Host its route needs
        kwargs["headers"] = {**request.getfixturevalue("load_headers"), **dict(kwargs.get("headers") or {})}
    try:
        config = LoadConfig(
            users=users,
            shape=shape,
            duration_s=duration,
            processes=kwargs.pop("processes", settings.load_processes),
            **kwargs,
        )
    except TypeError as e:
        pytest.fail(f"@pytest.mark.under_load: {e}", pytrace=False)
    run = mesh.load_runner(config, workdir=tmp_path / "load")
    shared: SharedLocust = request.getfixturevalue("shared_locust")
    if isinstance(run, LocustRun) and shared.shares(config):
        # one Locust per module (local backend): this test's load is a slice of it, with its own
        # phases and only the requests started inside it (harness.load.shared)
        run = shared.slice(config, run.target, workdir=tmp_path / "load")
        if not autostart:
            shared.pause()  # the test sets its scenario up without load, then starts it
    else:
        shared.pause()  # a run of its own (a shape, a duration, in a cluster): no other load meanwhile
    if autostart:
        with run:
            yield run
    else:  # under_load(start=False): the test starts it (run.start()) once its scenario is set up
        try:
            yield run
        finally:
            if run.running:
                run.stop()
    report = run.report
    if report is None:  # stop() raised: the error is the test's
        return
    text = report.summary()
    request.node.user_properties.append(("load", report.to_json()))
    request.node.add_report_section("teardown", "meshproof load", text)
    try:
        chart = load_charts.submit(report, tmp_path / "load" / "load.png")
    except Exception as e:  # the chart must never hide the test's verdict
        request.node.add_report_section("teardown", "meshproof load chart", f"not queued: {e}")
    else:  # drawn in the background; written by the end of the session
        request.node.user_properties.append(("load_chart", str(chart)))
