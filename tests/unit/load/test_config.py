"""harness.load.config: what a load run sends and where (LoadConfig, LoadTarget, duration_seconds),
and the locustfile's shapes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.load.config import LoadConfig, LoadTarget, duration_seconds
from loadtests.shapes import users_at


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("15s", 15.0),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        (3, 3.0),
        (" 2M ", 120.0),
    ],
)
def test_duration_seconds(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "15x", "s", "-5", "1m-2s", "-5s", "1h 30m"])
def test_duration_seconds_rejects_with_the_fix(text: str) -> None:
    with pytest.raises(UserError, match="duration"):
        duration_seconds(text)


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
    root = Path(__file__).resolve().parents[3]
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
