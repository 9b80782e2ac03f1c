"""Jaeger for the embedded mesh: our own config file for the pinned build, the process's ports.

- Build: :mod:`harness.toolchain.jaeger` (the pinned Jaeger v2 binary, in the cache).
- Config: :func:`config` writes Jaeger's own collector config: in-memory storage, the OTLP
  (gRPC, HTTP) and Zipkin receivers in the traces pipeline, the query extension (HTTP API and
  gRPC), every listener on the mesh's Jaeger address (its pod IP) at the Deployment's container
  port (:func:`pod_ports`), no telemetry listener of its own. Without ``--config`` Jaeger would
  run an embedded config whose query port listens on every interface.
- Istio finds the collector the Kubernetes way: ``manifests/40-jaeger.yaml``'s Services and the
  Jaeger process's Pod are in istiod's in-memory cluster (:mod:`~harness.backends.local.cluster`),
  and EndpointSlices join them. meshConfig ``extensionProviders`` names the collector service
  (:func:`mesh_providers`); the manifests' Telemetry picks the provider and the sampling
  percentage.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from harness.errors import StateError

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


def pod_ports(address: str) -> JaegerPorts:
    """Jaeger listens where its pod would: on its own address, at the container ports. Raises
    StateError when one is taken there (a listener on every interface at that port, say)."""
    ports = JaegerPorts(address, **{name: port for port, name in CONTAINER_PORTS.items()})
    for port in CONTAINER_PORTS:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((address, port))
            except OSError as e:
                raise StateError(
                    f"Jaeger's port {address}:{port} is taken ({e.strerror}): another process listens "
                    f"there or on every interface at port {port}. Fix: stop it, then restart the mesh"
                ) from e
    return ports
