"""harness.load: configuration, report building and phase SLOs (pure), shapes; no Locust process here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.load import (
    LoadConfig,
    LoadTarget,
    PhaseMark,
    RequestRecord,
    build_report,
    error_ratio_below,
    latency_at_least,
    parse_duration,
)
from loadtests.shapes import users_at


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("15s", 15.0), ("2m", 120.0), ("1h30m", 5400.0), ("500ms", 0.5), ("1.5s", 1.5), (3, 3.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "15x", "s", "-5", "1m-2s"])
def test_parse_duration_rejects_with_the_fix(text: str) -> None:
    with pytest.raises(UserError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"users": 0}, "at least 1 user"),
        ({"shape": "wave"}, "unknown load shape 'wave'"),
        ({"shape": "ramp"}, "needs a duration"),
        ({"spawn_rate": 0}, "spawn rate"),
        ({"processes": 0}, "processes"),
        ({"user_class": "robot"}, "unknown user class"),
        ({"path": "api"}, "must start with '/'"),
    ],
)
def test_load_config_rejects_bad_input(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(UserError, match=match):
        LoadConfig(**kwargs)  # type: ignore[arg-type]


def test_load_config_is_frozen_and_defaults_spawn_rate_to_users() -> None:
    c = LoadConfig(users=12, headers={"x": "1"})
    assert c.rate == 12.0
    with pytest.raises(TypeError):
        c.headers["y"] = "2"  # type: ignore[index]


@pytest.mark.parametrize(
    ("shape", "t", "users"),
    [
        ("steady", 5, 20),
        ("ramp", 0, 1),
        ("ramp", 30, 10),
        ("ramp", 60, 20),
        ("spike", 10, 5),
        ("spike", 30, 20),
        ("spike", 50, 5),
        ("step", 0, 5),
        ("step", 16, 10),
        ("step", 59, 20),
    ],
)
def test_shapes(shape: str, t: float, users: int) -> None:
    assert users_at(shape, 20, 60.0, t) == users


def test_shapes_without_duration_hold_and_unknown_is_rejected() -> None:
    assert users_at("ramp", 7, 0.0, 100.0) == 7
    with pytest.raises(ValueError, match="unknown shape"):
        users_at("wave", 7, 10.0, 1.0)


def test_locust_is_imported_only_under_loadtests() -> None:
    assert "locust" not in sys.modules  # importing harness.load and the shapes did not import it
    root = Path(__file__).resolve().parents[2]
    for d in ("harness", "suites", "tests"):
        for f in (root / d).rglob("*.py"):
            lines = f.read_text().splitlines()
            assert not any(ln.lstrip().startswith(("import locust", "from locust")) for ln in lines), f


def test_target_from_status_json() -> None:
    doc = {
        "ingress_url": "http://127.10.3.1:8080",
        "workloads": [
            {
                "name": "client-0",
                "namespace": "trusted-namespace",
                "deployment": "client",
                "app_url": "http://a",
            },
            {
                "name": "client-0",
                "namespace": "other-namespace",
                "deployment": "client",
                "app_url": "http://b/",
            },
        ],
    }
    t = LoadTarget.from_status(doc)
    assert t == LoadTarget(
        "http://127.10.3.1:8080", "http://b/api/call", "http://microservice-1.sample.svc.cluster.local:3000"
    )
    with pytest.raises(UserError, match="no client workload"):
        LoadTarget(ingress_url="http://x").check("mesh")
    with pytest.raises(UserError, match="no ingress"):
        LoadTarget().check("ingress")


def _rec(
    start: float, status: int = 200, latency: float = 10.0, pod: str = "p1", version: str = "v1"
) -> RequestRecord:
    return RequestRecord(start, latency, status, "ingress /api/greet", pod if status == 200 else "", version)


def test_report_splits_phases_by_request_start() -> None:
    t0 = 1000.0
    recs = [_rec(t0 + 0.5 + i * 0.1) for i in range(20)]  # 1000.5 .. 1002.4: phase "load"
    recs += [
        _rec(t0 + 3.0 + i * 0.1, status=503 if i % 2 else 200, latency=300) for i in range(10)
    ]  # "fault"
    recs += [_rec(t0 + 4.5, pod="p2", version="v2")]  # "after fault"
    phases = [
        PhaseMark("spawn", t0, t0 + 0.4),
        PhaseMark("load", t0 + 0.4, t0 + 3.0),
        PhaseMark("fault", t0 + 3.0, t0 + 4.0),
        PhaseMark("after fault", t0 + 4.0),
    ]
    r = build_report(LoadConfig(), LoadTarget("http://x"), recs, phases, started_at=t0, ended_at=t0 + 5.0)
    assert (r.requests, r.failures) == (31, 5)
    assert dict(r.by_status) == {200: 26, 503: 5}
    assert [p.requests for p in r.phases] == [0, 20, 10, 1]
    fault = r.phase("fault")
    assert dict(fault.by_status) == {200: 5, 503: 5}
    assert fault.error_ratio == 0.5 and fault.latency.p50_ms == 300.0
    assert dict(r.phase("after fault").versions) == {"v2": 1}
    assert sum(b.requests for b in r.series) == 31  # the time bins: see test_load_bins.py
    assert {b.phase for b in r.series if b.failures} == {"fault"}
    assert len(r.in_phase("fault")) == 10
    doc = r.to_json()
    assert doc["phases"][2]["by_status"] == {"200": 5, "503": 5}
    assert doc["requests"] == 31 and doc["failures"] == 5
    with pytest.raises(KeyError, match="no phase 'nope'"):
        r.phase("nope")
    assert "fault" in r.summary()


def test_error_ratio_below_is_one_sided_on_counts() -> None:
    t0 = 0.0

    def phase(n: int, k: int):  # type: ignore[no-untyped-def]
        recs = [_rec(t0 + i * 0.001, status=503 if i < k else 200) for i in range(n)]
        return build_report(
            LoadConfig(), LoadTarget("http://x"), recs, [PhaseMark("p", t0)], started_at=t0, ended_at=t0 + 1
        ).phase("p")

    assert error_ratio_below(phase(1000, 0), 0.0)
    assert error_ratio_below(phase(1000, 12), 0.01)  # 1.2% observed: not significantly above 1%
    assert not error_ratio_below(phase(1000, 40), 0.01)  # 4%: far above
    assert not error_ratio_below(phase(1000, 1), 0.0)  # any error breaks a zero bound
    assert not error_ratio_below(phase(0, 0), 0.5)  # no requests: no evidence


def test_latency_at_least() -> None:
    slow = [_rec(float(i), latency=210.0 + i) for i in range(10)]
    fast = [_rec(float(i), latency=5.0) for i in range(10)]
    assert latency_at_least(slow, 200)
    assert not latency_at_least(fast, 200)
    assert not latency_at_least([], 200)


def test_request_record_parse_skips_partial_lines() -> None:
    line = "1700000000.5\t12.5\t200\tingress /api/greet\tp1\tv1\tmp-x-1-1\t\n"
    assert RequestRecord.parse(line) == RequestRecord(
        1700000000.5, 12.5, 200, "ingress /api/greet", "p1", "v1", "mp-x-1-1", ""
    )
    assert RequestRecord.parse("1700000000.5\t12") is None
    assert RequestRecord.parse("x\ty\tz\ta\tb\tc\td\te") is None


def test_chart_worker_draws_in_the_background_and_reports_missing_charts(tmp_path: Path) -> None:
    from harness.load.chart import ChartWorker

    t0 = 1000.0
    recs = [_rec(t0 + i * 0.1, status=503 if i % 5 == 0 else 200) for i in range(30)]
    report = build_report(
        LoadConfig(), LoadTarget("http://x"), recs, [PhaseMark("p", t0)], started_at=t0, ended_at=t0 + 3
    )
    with ChartWorker(tmp_path / "w") as worker:
        a = worker.submit(report, tmp_path / "a" / "load.png")
        b = worker.submit(report, tmp_path / "b" / "load.png", title="second")
    assert a.read_bytes()[:4] == b"\x89PNG" and b.is_file()
    assert ChartWorker(tmp_path / "unused").close() == []  # never started: nothing to wait for
    worker = ChartWorker(tmp_path / "w2")
    worker.submit(report, Path("/proc/no/such/dir/load.png"))
    problems = worker.close()
    assert len(problems) == 1 and "load charts not written" in problems[0] and "/proc/no/such" in problems[0]


def test_teardown_hook_puts_a_running_load_into_phase_teardown() -> None:
    """What fixtures undo after the test's body (a fault removed) is charted as phase "teardown"."""
    from types import SimpleNamespace

    from harness.plugin import pytest_runtest_teardown

    class Run:
        def __init__(self, running: bool, fail: bool = False) -> None:
            self.running, self.fail, self.phases = running, fail, []

        def phase(self, name: str) -> None:
            if self.fail:
                raise ValueError("phase name 'teardown' is already used")
            self.phases.append(name)

    running, stopped, broken = Run(True), Run(False), Run(True, fail=True)
    for run in (running, stopped, broken):
        pytest_runtest_teardown(SimpleNamespace(funcargs={"load": run}))  # type: ignore[arg-type]
    pytest_runtest_teardown(SimpleNamespace(funcargs={}))  # type: ignore[arg-type]
    assert (running.phases, stopped.phases, broken.phases) == (["teardown"], [], [])
