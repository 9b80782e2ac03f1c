"""Settings: defaults, environment parsing, validation, overrides."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.settings import BACKENDS, Settings, from_env
from harness.versions import DEFAULT_ISTIO, ISTIO_RELEASES


def test_defaults_from_an_empty_environment() -> None:
    s = from_env({"HOME": "/home/u"})
    assert s.backend == "local"
    assert s.state_dir == Path(".meshproof")
    assert s.manifests == Path("manifests")
    assert s.istio_version == DEFAULT_ISTIO
    assert (s.alpha, s.power, s.min_deviation) == (0.001, 0.99, 0.05)
    assert s.keep_cluster is False
    assert s.kube_context == ""
    assert s.kind_cluster == "meshproof"
    assert s.traffic_api == "istio"


def test_every_variable_is_read() -> None:
    env = {
        "MESHPROOF_BACKEND": "existing",
        "MESHPROOF_STATE": "/tmp/st",
        "MESHPROOF_MANIFESTS": "/tmp/m",
        "MESHPROOF_CACHE": "/tmp/cache",
        "MESHPROOF_ISTIO": DEFAULT_ISTIO,
        "MESHPROOF_KUBE_CONTEXT": "prod-like",
        "MESHPROOF_KIND_CLUSTER": "mp2",
        "MESHPROOF_KEEP_CLUSTER": "1",
        "MESHPROOF_ALPHA": "0.01",
        "MESHPROOF_POWER": "0.9",
        "MESHPROOF_MIN_DEVIATION": "0.1",
        "MESHPROOF_READY_TIMEOUT": "30",
        "MESHPROOF_TRAFFIC_API": "gateway-api",
    }
    s = from_env(env)
    assert s.backend == "existing"
    assert s.state_dir == Path("/tmp/st")
    assert s.manifests == Path("/tmp/m")
    assert s.cache_dir == Path("/tmp/cache")
    assert s.kube_context == "prod-like"
    assert s.kind_cluster == "mp2"
    assert s.keep_cluster is True
    assert (s.alpha, s.power, s.min_deviation, s.ready_timeout) == (0.01, 0.9, 0.1, 30.0)
    assert s.traffic_api == "gateway-api"


@pytest.mark.parametrize(
    ("raw", "expected"), [("", False), ("0", False), ("false", False), ("1", True), ("yes", True)]
)
def test_keep_cluster_truthiness(raw: str, expected: bool) -> None:
    assert from_env({"MESHPROOF_KEEP_CLUSTER": raw}).keep_cluster is expected


def test_cache_dir_follows_xdg_then_home() -> None:
    assert from_env({"XDG_CACHE_HOME": "/x"}).cache_dir == Path("/x/meshproof")
    assert from_env({"MESHPROOF_CACHE": "/c", "XDG_CACHE_HOME": "/x"}).cache_dir == Path("/c")
    assert from_env({}).cache_dir == Path.home() / ".cache" / "meshproof"


def test_a_non_number_names_the_variable_and_an_example() -> None:
    with pytest.raises(UserError, match=r"MESHPROOF_ALPHA='often' is not a number.*MESHPROOF_ALPHA=0.001"):
        from_env({"MESHPROOF_ALPHA": "often"})


def test_unknown_backend_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match="unknown backend 'minikube'") as info:
        from_env({"MESHPROOF_BACKEND": "minikube"})
    for name in BACKENDS:
        assert name in str(info.value)


def test_unknown_istio_version_lists_the_pinned_ones() -> None:
    with pytest.raises(UserError, match="unknown Istio version '0.1'") as info:
        Settings(istio_version="0.1")
    for label in ISTIO_RELEASES:
        assert label in str(info.value)


@pytest.mark.parametrize("field", ["alpha", "power", "min_deviation"])
@pytest.mark.parametrize("value", [0.0, 1.0, -0.5, 2.0])
def test_probabilities_must_be_strictly_between_0_and_1(field: str, value: float) -> None:
    with pytest.raises(UserError, match=field):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_settings_are_frozen() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.backend = "kind"  # type: ignore[misc]


def test_with_overrides_applies_only_non_none_values_and_revalidates() -> None:
    s = Settings()
    t = s.with_overrides(backend="kind", state_dir=None, alpha=0.01)
    assert (t.backend, t.state_dir, t.alpha) == ("kind", s.state_dir, 0.01)
    assert s.backend == "local"  # the original is unchanged
    with pytest.raises(UserError):
        s.with_overrides(power=1.5)
