"""Frozen settings, read once from CLI options, pytest options and the environment.

This module is the only reader of ``os.environ`` for meshproof's own settings. Subprocess
environments are built in :mod:`harness.proc` from the inherited environment plus overrides.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from harness.errors import UserError
from harness.versions import DEFAULT_ISTIO, ISTIO_RELEASES

BACKENDS = ("local", "kind", "existing")
TRAFFIC_APIS = ("istio", "gateway-api")  # harness.istio.traffic_api: which routes `up` applies


def _cache_home(env: Mapping[str, str]) -> Path:
    if env.get("MESHPROOF_CACHE"):
        return Path(env["MESHPROOF_CACHE"]).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meshproof"


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as e:
        raise UserError(
            f"environment variable {name}={raw!r} is not a number. Fix: set e.g. {name}={default}"
        ) from e


@dataclass(frozen=True)
class Settings:
    backend: str = "local"
    state_dir: Path = Path(".meshproof")
    manifests: Path = Path("manifests")
    cache_dir: Path = field(default_factory=lambda: _cache_home(os.environ))
    istio_version: str = DEFAULT_ISTIO
    kube_context: str = ""  # for backend "existing"
    istio_revision: str = ""  # backend existing: the Istio revision (or tag) to inject ("": the only one)
    image_registry: str = ""  # backend existing: where the cluster pulls meshproof's images ("": load them)
    kind_cluster: str = "meshproof"
    keep_cluster: bool = False
    images: str = "auto"  # kind path: "local" (build every image here), "official" (pull releases), "auto"
    alpha: float = 0.001  # false-failure rate per statistical check
    power: float = 0.99  # probability of catching min_deviation
    min_deviation: float = 0.05  # smallest deviation (absolute share) a check must catch
    ready_timeout: float = 180.0
    # background load (pytest `load` fixture / `under_load` marker); see harness.load
    load_users: int = 10
    load_shape: str = "steady"
    load_duration_s: float = 60.0  # only shapes other than steady follow a duration
    load_processes: int = 1
    locust_image: str = ""  # kind/existing: the in-cluster Locust image ("": the pinned official one)
    traffic_api: str = "istio"  # the routes `up` applies: VirtualServices (istio) or HTTPRoutes (gateway-api)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UserError(f"unknown backend {self.backend!r}. Fix: use one of {', '.join(BACKENDS)}")
        if self.istio_version not in ISTIO_RELEASES:
            known = ", ".join(sorted(ISTIO_RELEASES))
            raise UserError(f"unknown Istio version {self.istio_version!r}. Fix: use one of {known}")
        if self.traffic_api not in TRAFFIC_APIS:
            raise UserError(
                f"unknown traffic API {self.traffic_api!r}. Fix: use one of {', '.join(TRAFFIC_APIS)} "
                "(--traffic-api or MESHPROOF_TRAFFIC_API)"
            )
        if self.images not in ("auto", "local", "official"):
            raise UserError(
                f"MESHPROOF_IMAGES={self.images!r} is not one of auto, local, official. Fix: unset it or pick one"
            )
        for name in ("alpha", "power", "min_deviation"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise UserError(f"{name}={value} must be between 0 and 1 (exclusive)")

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the non-None values of ``changes`` applied."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]


def from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``MESHPROOF_*`` variables; CLI and pytest options override them afterwards."""
    env = os.environ if env is None else env
    return Settings(
        backend=env.get("MESHPROOF_BACKEND", "local"),
        state_dir=Path(env.get("MESHPROOF_STATE", ".meshproof")),
        manifests=Path(env.get("MESHPROOF_MANIFESTS", "manifests")),
        cache_dir=_cache_home(env),
        istio_version=env.get("MESHPROOF_ISTIO", DEFAULT_ISTIO),
        kube_context=env.get("MESHPROOF_KUBE_CONTEXT", ""),
        istio_revision=env.get("MESHPROOF_ISTIO_REVISION", ""),
        image_registry=env.get("MESHPROOF_IMAGE_REGISTRY", ""),
        kind_cluster=env.get("MESHPROOF_KIND_CLUSTER", "meshproof"),
        keep_cluster=env.get("MESHPROOF_KEEP_CLUSTER", "") not in ("", "0", "false"),
        images=env.get("MESHPROOF_IMAGES", "auto"),
        alpha=_float(env, "MESHPROOF_ALPHA", 0.001),
        power=_float(env, "MESHPROOF_POWER", 0.99),
        min_deviation=_float(env, "MESHPROOF_MIN_DEVIATION", 0.05),
        ready_timeout=_float(env, "MESHPROOF_READY_TIMEOUT", 180.0),
        load_users=int(_float(env, "MESHPROOF_LOAD_USERS", 10)),
        load_shape=env.get("MESHPROOF_LOAD_SHAPE", "steady"),
        load_duration_s=_float(env, "MESHPROOF_LOAD_DURATION", 60.0),
        load_processes=int(_float(env, "MESHPROOF_LOAD_PROCESSES", 1)),
        locust_image=env.get("MESHPROOF_LOCUST_IMAGE", ""),
        traffic_api=env.get("MESHPROOF_TRAFFIC_API") or "istio",
    )
