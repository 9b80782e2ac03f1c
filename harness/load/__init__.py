"""Load with Locust, as a component: what it sends, what it saw, and the runs that drive it.

    config   LoadConfig, LoadTarget (the mesh's URLs), duration_seconds
    report   RequestRecord (one logged request), LoadReport and build_report (pure); per phase
             error_seconds and longest_gap (what an outage cost)
    run      the LoadRun protocol both runners share, PhaseClock, Progress
    local    LocustRun: Locust as a subprocess on this machine (the in-cluster runner is the kube
             backend's)
    bins     time bins of a run; chart: its PNG chart

Locust is never imported into this process (``import locust`` monkey-patches it with gevent); the
locustfile in ``loadtests/`` is the only importer. ::

    with LocustRun(LoadConfig(users=20), LoadTarget.from_mesh(mesh), workdir=tmp) as run:
        run.phase("fault")
    run.report.phase("fault").by_status  # {200: 1800, 503: 12}
"""

from harness.load.bins import Bin
from harness.load.config import (
    DEFAULT_CLIENT,
    DEFAULT_SERVICE,
    LOCUSTFILE,
    SHAPES,
    USER_CLASSES,
    LoadConfig,
    LoadTarget,
    duration_seconds,
)
from harness.load.local import LocustRun
from harness.load.report import (
    Latency,
    LoadReport,
    PhaseMark,
    PhaseStats,
    RequestRecord,
    build_report,
    error_seconds,
    longest_gap,
)
from harness.load.run import FIRST_PHASE, SPAWN_PHASE, LoadRun, PhaseClock, Progress, users_past

__all__ = [
    "DEFAULT_CLIENT",
    "DEFAULT_SERVICE",
    "FIRST_PHASE",
    "LOCUSTFILE",
    "SHAPES",
    "SPAWN_PHASE",
    "USER_CLASSES",
    "Bin",
    "Latency",
    "LoadConfig",
    "LoadReport",
    "LoadRun",
    "LoadTarget",
    "LocustRun",
    "PhaseClock",
    "PhaseMark",
    "PhaseStats",
    "Progress",
    "RequestRecord",
    "build_report",
    "duration_seconds",
    "error_seconds",
    "longest_gap",
    "users_past",
]
