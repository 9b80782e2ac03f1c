"""Jaeger for the embedded mesh: pinned build, our own config file, the process's ports.

- Build: ``github.com/jaegertracing/jaeger`` at :data:`harness.versions.JAEGER_VERSION` (the
  Jaeger v2 binary, ``cmd/jaeger``). ``go install module@version`` is refused for it (its go.mod
  has replace directives), so, like istiod, it is built in a small wrapper module:
  ``go get -tool .../cmd/jaeger@VERSION`` then ``go build``. The binary lands in
  ``<cache>/jaeger-<version>/bin/jaeger`` with an ``install.json`` stamp; a second install with
  the same pin is a no-op. The Go build cache is shared with istiod's build.
- Config: :func:`config` writes Jaeger's own collector config: in-memory storage, the OTLP
  (gRPC, HTTP) and Zipkin receivers in the traces pipeline, the query extension (HTTP API and
  gRPC), every listener on the mesh's Jaeger address at a port we allocated, no telemetry
  listener of its own. Without ``--config`` Jaeger would run an embedded config whose query
  port listens on every interface.
- Istio finds the collector the Kubernetes way: ``manifests/40-jaeger.yaml``'s Services become
  ServiceEntries (:mod:`~harness.backends.local.topology`), and the Jaeger process stands in
  for the Deployment's pod as a WorkloadEntry whose ports map each Service port to ours.
  meshConfig ``extensionProviders`` names the collector service (:func:`mesh_providers`); the
  manifests' Telemetry picks the provider and the sampling percentage.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness import proc
from harness.cache import locked_install, sha256_file
from harness.doctor import ToolStatus, probe
from harness.errors import StateError, ToolMissing
from harness.settings import Settings
from harness.versions import JAEGER_MODULE, JAEGER_VERSION

SETUP_HINT = "run ./scripts/setup (or `meshproof install`)"
BUILD_TIMEOUT = 3600  # a cold build on a busy 2-core machine
Progress = Callable[[str], None]

#: The tracing provider the manifests' Telemetry names, and the collector Service it sends to
#: (the same names as Istio's samples/addons and the kube backend's install overlay).
PROVIDER = "jaeger"
COLLECTOR_SERVICE = "jaeger-collector"
NAMESPACE = "istio-system"
OTLP_GRPC_PORT = 4317
#: Container ports of the Jaeger Deployment -> the listener of our config that serves them.
CONTAINER_PORTS = {
    4317: "otlp_grpc",
    4318: "otlp_http",
    9411: "zipkin",
    16686: "query_http",
    16685: "query_grpc",
}


@dataclass(frozen=True)
class JaegerInstalled:
    version: str
    module: str
    binary: str
    sha256: str


@dataclass(frozen=True)
class JaegerPorts:
    """Where the Jaeger process listens (all on ``address``)."""

    address: str
    otlp_grpc: int
    otlp_http: int
    zipkin: int
    query_http: int
    query_grpc: int

    @property
    def query_url(self) -> str:
        return f"http://{self.address}:{self.query_http}"

    def for_container_port(self, port: int) -> int | None:
        name = CONTAINER_PORTS.get(port)
        return int(getattr(self, name)) if name else None


def install_dir(settings: Settings) -> Path:
    return settings.cache_dir / f"jaeger-{JAEGER_VERSION}"


def load(settings: Settings) -> JaegerInstalled:
    """The installed Jaeger of the pinned version; StateError if it is not installed."""
    stamp = install_dir(settings) / "install.json"
    if not stamp.is_file():
        raise StateError(f"Jaeger {JAEGER_VERSION} is not installed in {stamp.parent}. Fix: {SETUP_HINT}")
    inst = JaegerInstalled(**json.loads(stamp.read_text()))
    if inst.version != JAEGER_VERSION or inst.module != JAEGER_MODULE:
        raise StateError(f"{stamp} holds another Jaeger than the pinned {JAEGER_VERSION}. Fix: {SETUP_HINT}")
    if not Path(inst.binary).is_file():
        raise StateError(f"{inst.binary} is missing. Fix: {SETUP_HINT}")
    return inst


def install(settings: Settings, progress: Progress | None = None, *, force: bool = False) -> JaegerInstalled:
    """Build the pinned Jaeger into the cache (a no-op when it is there already). Concurrent
    installs wait on one lock; whoever comes second finds the stamp and returns."""
    say = progress or (lambda _msg: None)
    root = install_dir(settings)
    return locked_install(
        root,
        what=f"Jaeger {JAEGER_VERSION}",
        current=lambda: load(settings),
        build=lambda: _build(root, say),
        say=say,
        force=force,
    )


def _build(root: Path, say: Progress) -> JaegerInstalled:
    go = proc.which("go", needed_for="building Jaeger", how_to_get="install Go >= 1.26 (see README)")
    bin_dir, build = root / "bin", root / "build"
    bin_dir.mkdir(parents=True, exist_ok=True)
    if build.exists():
        shutil.rmtree(build)
    build.mkdir(parents=True)
    (build / "go.mod").write_text("module meshproof.local/jaeger\n\ngo 1.26\n")
    env = {"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    tool = f"{JAEGER_MODULE}/cmd/jaeger"
    say(f"fetching {JAEGER_MODULE}@{JAEGER_VERSION} (Jaeger)")
    proc.run([go, "get", "-tool", f"{tool}@{JAEGER_VERSION}"], cwd=build, env=env, timeout=BUILD_TIMEOUT)
    say("building jaeger — minutes on a cold cache")
    binary = bin_dir / "jaeger"
    ldflags = f"-X {JAEGER_MODULE}/internal/version.latestVersion={JAEGER_VERSION}"
    proc.run(
        [go, "build", "-trimpath", "-ldflags", ldflags, "-o", binary, tool],
        cwd=build,
        env=env,
        timeout=BUILD_TIMEOUT,
    )
    got = proc.run([binary, "version"], timeout=60, check=False)
    if JAEGER_VERSION not in got.stdout + got.stderr:
        raise ToolMissing(
            f"jaeger {JAEGER_VERSION}", "tracing in the embedded mesh", f"{binary} reports {got}"
        )
    inst = JaegerInstalled(JAEGER_VERSION, JAEGER_MODULE, str(binary), sha256_file(binary))
    (root / "install.json").write_text(json.dumps(asdict(inst), indent=2))
    shutil.rmtree(build, ignore_errors=True)
    say(f"installed Jaeger {JAEGER_VERSION} in {root}")
    return inst


def doctor(settings: Settings) -> list[ToolStatus]:
    needed = "tracing in the embedded mesh (Jaeger)"
    try:
        inst = load(settings)
    except StateError:
        return [ToolStatus("jaeger", "local", needed, False, how_to_get=SETUP_HINT)]
    return [
        probe(
            "jaeger", "local", needed, SETUP_HINT, ["version"], path=inst.binary, pattern=r"(v\d+\.\d+\.\d+)"
        )
    ]


def config(ports: JaegerPorts) -> dict[str, Any]:
    """Jaeger's config file (the OpenTelemetry collector format Jaeger v2 reads)."""

    def at(port: int) -> dict[str, str]:
        return {"endpoint": f"{ports.address}:{port}"}

    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp", "zipkin"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            # no metrics listener, and no self-tracing of the collector (it would export to
            # localhost:4317)
            "telemetry": {
                "metrics": {"level": "none"},
                "traces": {"level": "none"},
                "logs": {"level": "info"},
            },
        },
        "extensions": {
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": 100000}}}},
            "jaeger_query": {
                # the query service traces itself by default, to localhost:4317: nothing listens
                # there, and on SIGTERM Jaeger then waits out a 10 s export timeout
                "enable_tracing": False,
                "storage": {"traces": "memstore"},
                "http": at(ports.query_http),
                "grpc": at(ports.query_grpc),
            },
        },
        "receivers": {
            "otlp": {"protocols": {"grpc": at(ports.otlp_grpc), "http": at(ports.otlp_http)}},
            "zipkin": at(ports.zipkin),
        },
        # Small batches, sent at once: the suites measure the delay until a trace is visible.
        "processors": {"batch": {"timeout": "200ms"}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }


def mesh_providers() -> list[dict[str, Any]]:
    """meshConfig ``extensionProviders``: the collector's OTLP gRPC port, by its Service name."""
    host = f"{COLLECTOR_SERVICE}.{NAMESPACE}.svc.cluster.local"
    return [{"name": PROVIDER, "opentelemetry": {"service": host, "port": OTLP_GRPC_PORT}}]


def workload_entry(
    name: str, labels: Mapping[str, str], ports: JaegerPorts, service_ports: Mapping[str, int]
) -> dict[str, Any]:
    """The WorkloadEntry standing in for Jaeger's pod: its address, and for each Service port
    (by name) the port our process listens on."""
    mapped = {
        port_name: local
        for port_name, target in service_ports.items()
        if (local := ports.for_container_port(target)) is not None
    }
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"address": ports.address, "labels": dict(labels), "ports": mapped},
    }
