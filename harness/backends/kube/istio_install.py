"""Installing Istio with istioctl (kind backend) and checking an installed one (existing backend).

The install is ``istioctl install --set profile=default`` plus an IstioOperator overlay that
- defines the tracing provider ``jaeger`` (OpenTelemetry/OTLP gRPC to the Jaeger collector that
  ``manifests/40-jaeger.yaml`` deploys in istio-system), which the mesh-wide Telemetry resource in
  the same file selects. The legacy ``meshConfig.defaultConfig.tracing`` (Zipkin) is deprecated
  and its implicit default was removed in Istio 1.22, so it is left unset;
- logs every request (``accessLogFile: /dev/stdout``) for diagnostics;
- holds the app container until its sidecar is ready, so an app's first outbound call is meshed;
- for kind, makes the ingress gateway Service a NodePort whose HTTP port is the node port that the
  kind config publishes on 127.0.0.1;
- with locally built images (:class:`LocalImages`): hub/tag of those images and pull policy Never,
  and the settings the local mesh gives istiod for upstream Envoy, whose proxy lacks Istio's own
  filters (metadata exchange, ALPN override, the ``istio.stats`` telemetry filter): istiod's
  ``PILOT_ENABLE_METADATA_EXCHANGE``/``PILOT_ENABLE_ALPN_FILTER`` off and no default Prometheus
  provider (``values.telemetry.enabled: false``; the suites read Envoy's own counters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import proc, wait
from harness.backends.kube.api import KubeApi
from harness.backends.kube.readiness import deployment_status
from harness.errors import ToolMissing
from harness.proxy_stats import proxy_stats_matcher
from harness.versions import IstioRelease

ISTIO_NAMESPACE = "istio-system"
JAEGER_PROVIDER = "jaeger"
JAEGER_COLLECTOR = "jaeger-collector.istio-system.svc.cluster.local"
JAEGER_OTLP_GRPC_PORT = 4317
GATEWAY_SERVICE = "istio-ingressgateway"


# istiod's settings for a proxy that is upstream Envoy (the local backend's ISTIOD_ENV has the same two)
UPSTREAM_ENVOY_PILOT_ENV = {"PILOT_ENABLE_METADATA_EXCHANGE": "false", "PILOT_ENABLE_ALPN_FILTER": "false"}


def upstream_envoy_values() -> dict[str, Any]:
    """The IstioOperator ``spec.values`` an istiod needs whose proxies are meshproof's proxyv2 (upstream
    Envoy, without Istio's own filters): no metadata exchange or ALPN filter, no default Prometheus
    provider (its ``istio.stats`` filter). Without them Envoy rejects the clusters istiod sends
    ("Didn't find a registered implementation for 'istio.metadata_exchange'") and no proxy gets
    Ready. ``up --backend kind`` installs with these; ``images plan --json`` names them for a person
    installing Istio by hand with these images."""
    return {"pilot": {"env": dict(UPSTREAM_ENVOY_PILOT_ENV)}, "telemetry": {"enabled": False}}


@dataclass(frozen=True)
class LocalImages:
    """Istio's images built here (``meshproof images build``): ``<hub>/pilot:<tag>``, ``<hub>/proxyv2:<tag>``."""

    hub: str
    tag: str


# CPU *requests* (scheduling and cgroup weights; limits unchanged) for a kind node on a small
# machine: with the chart's defaults (istiod 500m, every sidecar 100m plus 100m for istio-init,
# the gateway 100m) the manifests' pods do not fit on a 2-core node ("Insufficient cpu").
KIND_CPU_REQUESTS = {"istiod": "50m", "proxy": "10m", "proxy_init": "10m", "gateway": "10m"}


def operator_overlay(
    *,
    ingress_node_port: int | None = None,
    local_images: LocalImages | None = None,
    small_requests: bool = False,
) -> dict[str, Any]:
    """The IstioOperator overlay passed with ``--filename``."""
    spec: dict[str, Any] = {
        "meshConfig": {
            "enableTracing": True,
            "accessLogFile": "/dev/stdout",
            "defaultConfig": {
                "holdApplicationUntilProxyStarts": True,
                # the counters the suites read as evidence (Istio trims Envoy's stats by default)
                "proxyStatsMatcher": proxy_stats_matcher(),
                # flush spans at once instead of every 5 s (the tracing suite waits for them)
                "runtimeValues": {
                    "tracing.opentelemetry.flush_interval_ms": "100",
                    "tracing.opentelemetry.min_flush_spans": "1",
                },
            },
            "extensionProviders": [
                {
                    "name": JAEGER_PROVIDER,
                    "opentelemetry": {"service": JAEGER_COLLECTOR, "port": JAEGER_OTLP_GRPC_PORT},
                }
            ],
        },
    }
    values: dict[str, Any] = {}
    if local_images is not None:
        spec["hub"], spec["tag"] = local_images.hub, local_images.tag
        values = {"global": {"imagePullPolicy": "Never"}, **upstream_envoy_values()}
    if small_requests:
        r = KIND_CPU_REQUESTS
        g = values.setdefault("global", {})
        g["proxy"] = {"resources": {"requests": {"cpu": r["proxy"]}}}
        g["proxy_init"] = {"resources": {"requests": {"cpu": r["proxy_init"]}}}
        values.setdefault("pilot", {})["resources"] = {"requests": {"cpu": r["istiod"]}}
    if values:
        spec["values"] = values
    if ingress_node_port is not None:
        # Replacing the port list replaces all of it: keep the default profile's three ports.
        spec["components"] = {
            "ingressGateways": [
                {
                    "name": GATEWAY_SERVICE,
                    "enabled": True,
                    "k8s": {
                        **(
                            {"resources": {"requests": {"cpu": KIND_CPU_REQUESTS["gateway"]}}}
                            if small_requests
                            else {}
                        ),
                        "service": {
                            "type": "NodePort",
                            "ports": [
                                {
                                    "name": "status-port",
                                    "port": 15021,
                                    "targetPort": 15021,
                                    "protocol": "TCP",
                                },
                                {
                                    "name": "http2",
                                    "port": 80,
                                    "targetPort": 8080,
                                    "protocol": "TCP",
                                    "nodePort": ingress_node_port,
                                },
                                {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"},
                            ],
                        },
                    },
                }
            ]
        }
    return {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator", "spec": spec}


def install_argv(
    istioctl: str,
    overlay: Path,
    *,
    kubeconfig: str,
    context: str,
    readiness_timeout: float = 300.0,
    profile: str = "default",
) -> list[str]:
    argv = [
        istioctl,
        "install",
        "--skip-confirmation",
        "--set",
        f"profile={profile}",
        "--filename",
        str(overlay),
    ]
    if kubeconfig:
        argv += ["--kubeconfig", kubeconfig]
    if context:
        argv += ["--context", context]
    argv += ["--readiness-timeout", f"{int(readiness_timeout)}s"]
    return argv


def install(
    istioctl: str,
    state_dir: Path,
    *,
    kubeconfig: str,
    context: str,
    ingress_node_port: int | None,
    run: proc.Runner = proc.run,
    readiness_timeout: float = 300.0,
    local_images: LocalImages | None = None,
    small_requests: bool = False,
) -> list[str]:
    """Write the overlay to ``state_dir`` and run ``istioctl install``; returns the argv run."""
    overlay = state_dir / "istio-operator.yaml"
    spec = operator_overlay(
        ingress_node_port=ingress_node_port, local_images=local_images, small_requests=small_requests
    )
    overlay.write_text(yaml.safe_dump(spec, sort_keys=False))
    argv = install_argv(
        istioctl, overlay, kubeconfig=kubeconfig, context=context, readiness_timeout=readiness_timeout
    )
    run(argv, timeout=readiness_timeout + 300)
    return argv


# ---- checking an installed Istio ------------------------------------------------------------


@dataclass(frozen=True)
class Istiod:
    namespace: str
    deployment: str
    version: str  # from the image tag; "" when it cannot be told (e.g. a digest)
    ready: bool
    status: str  # why not ready, for messages


_TAG_VERSION = re.compile(r":(\d+\.\d+[0-9A-Za-z.+-]*?)(?:-distroless|-debug)?$")


def image_version(image: str) -> str:
    """``docker.io/istio/pilot:1.30.1-distroless`` -> ``1.30.1``."""
    m = _TAG_VERSION.search(image.split("@", 1)[0])
    return m.group(1) if m else ""


def find_istiod(api: KubeApi, namespace: str = ISTIO_NAMESPACE) -> Istiod | None:
    """The istiod Deployment (any revision) in ``namespace``, or None."""
    deps = sorted(
        api.list("apps/v1", "Deployment", namespace, "app=istiod"),
        key=lambda d: str((d.get("metadata") or {}).get("name", "")),
    )
    if not deps:
        return None
    dep = deps[0]
    containers = (((dep.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    image = next(
        (str(c.get("image", "")) for c in containers if c.get("name") == "discovery"),
        str(containers[0].get("image", "")) if containers else "",
    )
    ready, why = deployment_status(dep)
    return Istiod(namespace, str(dep["metadata"]["name"]), image_version(image), ready, why)


def mesh_providers(mesh_yaml: str) -> list[str]:
    """Names of ``extensionProviders`` in a mesh config (the ``mesh`` key of the ``istio`` ConfigMap)."""
    try:
        mesh = yaml.safe_load(mesh_yaml) or {}
    except yaml.YAMLError:
        return []
    providers = mesh.get("extensionProviders") if isinstance(mesh, dict) else None
    return [str(p.get("name")) for p in providers or [] if isinstance(p, dict) and p.get("name")]


def tracing_provider_configured(api: KubeApi, namespace: str = ISTIO_NAMESPACE) -> bool:
    """Whether any mesh ConfigMap (``istio`` or ``istio-<revision>``) defines the ``jaeger`` provider."""
    for cm in api.list("v1", "ConfigMap", namespace):
        name = str((cm.get("metadata") or {}).get("name", ""))
        mesh = str((cm.get("data") or {}).get("mesh", ""))
        if (name == "istio" or name.startswith("istio-")) and JAEGER_PROVIDER in mesh_providers(mesh):
            return True
    return False


def wait_istiod_ready(api: KubeApi, *, timeout: float, clock: wait.Clock = wait.REAL_CLOCK) -> Istiod:
    def check() -> Istiod | None:
        d = find_istiod(api)
        return d if d and d.ready else None

    return wait.until(
        check,
        what="istiod to be ready in istio-system",
        timeout=timeout,
        interval=1.0,
        hint="look at `kubectl -n istio-system get pods` and the istiod logs",
        clock=clock,
    )


def require_installed(api: KubeApi, release: IstioRelease) -> Istiod:
    """The running istiod of an existing cluster; ToolMissing when Istio is absent or not ready."""
    how = (
        f"install Istio {release.label} first (`istioctl install --set profile=default -y`, with "
        "meshConfig.extensionProviders 'jaeger' for tracing), or use --backend kind"
    )
    if not api.has_kind("networking.istio.io/v1", "VirtualService") and not api.has_kind(
        "networking.istio.io/v1beta1", "VirtualService"
    ):
        raise ToolMissing("Istio (its CRDs)", "backend existing", how)
    istiod = find_istiod(api)
    if istiod is None:
        raise ToolMissing("istiod (Deployment app=istiod in istio-system)", "backend existing", how)
    if not istiod.ready:
        raise ToolMissing(
            f"a ready istiod ({istiod.namespace}/{istiod.deployment}: {istiod.status})",
            "backend existing",
            how,
        )
    return istiod
