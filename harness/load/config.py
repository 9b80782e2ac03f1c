"""What a load run sends and where: :class:`LoadConfig` (users, shape, path, ...) and
:class:`LoadTarget` (the running mesh's URLs, never fixed ports); :func:`duration_seconds` for the
durations users type."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from harness import paths
from harness.errors import StateError, UserError
from harness.mesh import Workload

#: The locustfile shipped with meshproof (the only module that imports locust).
LOCUSTFILE = paths.LOCUSTFILE
SHAPES = ("steady", "ramp", "spike", "step")
#: LoadConfig.users_class -> the locustfile's user classes
USER_CLASSES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"ingress": ("IngressUser",), "mesh": ("MeshUser",), "both": ("IngressUser", "MeshUser")}
)
#: The client workload in-mesh load is sent from (``meshproof send --from`` has the same default shape).
DEFAULT_CLIENT = "other-namespace/client"
DEFAULT_SERVICE: tuple[str, str, int] = ("microservice-1", "sample", 3000)


def duration_seconds(text: str | float) -> float:
    """Seconds from a duration a user typed: a bare number of seconds (``90``) or a Go duration in
    any case (``15s``, ``2m``, ``1h30m``, ``500ms``; read by :func:`harness.istio.parse_duration`,
    the harness's one duration parser); UserError with the fix for anything else or a negative."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        from harness.istio.model import parse_duration  # lazily: harness.istio loads its schemas' code

        raw = text.strip().lower()
        try:
            seconds = float(raw) if re.fullmatch(r"\d+(?:\.\d+)?", raw) else parse_duration(raw)
        except ValueError:
            raise UserError(
                f"duration {text!r} does not parse. Fix: use e.g. 30s, 2m, 1h30m or 45 (seconds)"
            ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise UserError(f"duration {text!r} must be a non-negative number of seconds")
    return seconds


@dataclass(frozen=True)
class LoadConfig:
    """What Locust runs. ``duration_s`` 0 means until the run is stopped (the context exits)."""

    users: int = 10
    spawn_rate: float | None = None  # users started per second (default: all within a second)
    duration_s: float = 0.0
    shape: str = "steady"
    processes: int = 1  # > 1: Locust's --processes N (a master plus N forked workers)
    user_class: str = "ingress"  # ingress | mesh | both
    path: str = "/api/greet"
    headers: Mapping[str, str] = field(default_factory=dict)
    spawn_timeout: float = 60.0
    stop_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.users, int) or self.users < 1:
            raise UserError(f"users={self.users!r}: at least 1 user. Fix: --users 10")
        if self.spawn_rate is not None and not self.spawn_rate > 0:
            raise UserError(f"spawn rate {self.spawn_rate!r} must be > 0 users per second")
        if self.shape not in SHAPES:
            raise UserError(f"unknown load shape {self.shape!r}. Fix: use one of {', '.join(SHAPES)}")
        if self.shape != "steady" and self.duration_s <= 0:
            raise UserError(f"shape {self.shape!r} needs a duration to follow. Fix: add --duration, e.g. 60s")
        if self.duration_s < 0:
            raise UserError(f"duration {self.duration_s!r} must not be negative")
        if self.processes < 1:
            raise UserError(f"processes={self.processes!r}: at least 1")
        if self.user_class not in USER_CLASSES:
            raise UserError(
                f"unknown user class {self.user_class!r}. Fix: use one of {', '.join(USER_CLASSES)}"
            )
        if not self.path.startswith("/"):
            raise UserError(f"request path {self.path!r} must start with '/'")
        if not isinstance(self.headers, MappingProxyType):
            object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))

    @property
    def rate(self) -> float:
        return self.spawn_rate if self.spawn_rate is not None else float(self.users)


class MeshTargets(Protocol):
    """The part of the Backend protocol a load target needs."""

    def ingress_url(self) -> str: ...

    def workload(self, ref: str) -> Workload: ...

    def service_url(self, service: str, namespace: str, port: int) -> str: ...


@dataclass(frozen=True)
class LoadTarget:
    """Where the load goes, from the running mesh: never hard-coded ports."""

    ingress_url: str = ""
    call_url: str = ""  # a client workload's /api/call (in-mesh load leaves through its sidecar)
    service_url: str = ""  # the service's in-mesh URL, as that client calls it

    @classmethod
    def from_mesh(
        cls,
        mesh: MeshTargets,
        *,
        client: str = DEFAULT_CLIENT,
        service: tuple[str, str, int] = DEFAULT_SERVICE,
    ) -> LoadTarget:
        """Targets of a running backend: its ingress, and ``client``'s /api/call to ``service``."""
        try:
            ingress = mesh.ingress_url()
        except UserError:
            ingress = ""
        call = ""
        try:
            w = mesh.workload(client)
        except UserError:
            pass
        else:
            call = w.app_url.rstrip("/") + "/api/call" if w.app_url else ""
        return cls(ingress, call, mesh.service_url(*service) if call else "")

    @classmethod
    def from_status(
        cls,
        doc: Mapping[str, Any],
        *,
        client: str = DEFAULT_CLIENT,
        service: tuple[str, str, int] = DEFAULT_SERVICE,
    ) -> LoadTarget:
        """Targets from ``meshproof status --json`` (for callers outside the harness process)."""
        ns, _, deployment = client.partition("/")
        call = ""
        for w in doc.get("workloads") or []:
            if (
                w.get("namespace") == ns
                and deployment in (w.get("deployment"), w.get("name"))
                and w.get("app_url")
            ):
                call = str(w["app_url"]).rstrip("/") + "/api/call"
                break
        name, namespace, port = service
        svc = f"http://{name}.{namespace}.svc.cluster.local:{port}" if call else ""
        return cls(str(doc.get("ingress_url") or ""), call, svc)

    def check(self, user_class: str) -> None:
        if user_class in ("ingress", "both") and not self.ingress_url:
            raise StateError("the mesh has no ingress gateway to send load through. Fix: --user-class mesh")
        if user_class in ("mesh", "both") and not (self.call_url and self.service_url):
            raise StateError(
                f"the mesh has no client workload ({DEFAULT_CLIENT}) to send in-mesh load from. "
                "Fix: --user-class ingress"
            )
