# Over 500 lines: the one process that owns every local mesh process, its control socket and teardown.
"""The local mesh's supervisor: one process that starts and owns every mesh process.

``python -m harness.backends.local.supervisor --state DIR ...`` is started by
:class:`~harness.backends.local.backend.LocalBackend` in a session of its own, so the supervisor
and all its children share one process group. It brings the mesh up step by step (recording
progress in ``status.json``), then serves a control socket (kill / restart a replica, stop) and
watches its children. On SIGTERM, SIGINT or a ``stop`` request it tears everything down.
Children get PR_SET_PDEATHSIG(SIGKILL), so even a SIGKILLed supervisor leaks nothing; when
not detached, the supervisor itself gets SIGTERM when the process that started it dies.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from harness import httpclient, paths, proc, wait, yamlio
from harness.backends.local import cluster as kube_cluster
from harness.backends.local import jaeger as jaeger_mod
from harness.backends.local import tokens
from harness.backends.local import topology as topo
from harness.backends.local.ca import MeshCA
from harness.backends.local.layout import Layout, Reservations, object_filename
from harness.backends.local.xds import push_mark, sync_cluster, wait_service_accounts
from harness.errors import MeshproofError, StateError, WaitTimeout
from harness.istio.oracles.identity import TRUST_DOMAIN
from harness.proxy_stats import proxy_stats_matcher
from harness.settings import Settings, from_env
from harness.toolchain import jaeger as jaeger_build
from harness.toolchain.istio_local import Installed, crd_paths, load
from harness.versions import KUBERNETES_VERSION

SAMPLE_SERVICE = paths.SAMPLE_SERVICE
ISTIOD_ENV = {
    # upstream Envoy lacks Istio's own filters (metadata exchange, ALPN override, stats)
    "PILOT_ENABLE_METADATA_EXCHANGE": "false",
    "PILOT_ENABLE_ALPN_FILTER": "false",
    "PILOT_DEBOUNCE_AFTER": "50ms",
    "PILOT_DEBOUNCE_MAX": "2s",
    "PILOT_ENABLE_CROSS_CLUSTER_WORKLOAD_ENTRY": "false",
    "PILOT_ENABLE_WORKLOAD_ENTRY_AUTOREGISTRATION": "false",
    "ENABLE_CA_SERVER": "true",
    # nothing would run the Deployments istiod creates for a Gateway API Gateway: Gateways bind
    # the mesh's ingress gateway instead (spec.addresses naming its Service)
    "PILOT_ENABLE_GATEWAY_API_DEPLOYMENT_CONTROLLER": "false",
}
#: Ports of one istiod: xDS (plaintext, TLS), debug/ready HTTP, webhook HTTPS, monitoring, and the
#: launcher's view of its in-memory cluster.
ISTIOD_PORTS = ("grpc", "http", "https", "secure_grpc", "monitoring", "kube_api")

JAEGER = "jaeger"
# Jaeger's own OpenTelemetry SDK would export Jaeger's traces to localhost:4317 (not ours)
JAEGER_ENV = {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "none"}
PRIMARY_REVISION = "default"  # the control plane the mesh starts with


@dataclass(frozen=True)
class ProxySpec:
    """Everything needed to start (or restart, on another release) one pilot-agent + Envoy."""

    pod: str
    namespace: str
    service_account: str
    address: str
    labels: dict[str, str]
    ports: topo.ProxyPorts
    kind: str  # "sidecar" or "router"
    istio: str  # release label of its pilot-agent + Envoy
    revision: str  # control plane it is connected to (a key of plan["control_planes"])
    generation: int = 0  # restarts so far: the work dir and log of generation g > 0 get ".g<g>"
    # the workload certificate lifetime pilot-agent asks istiod's CA for (its SECRET_TTL; "": its
    # default); pilot-agent rotates at SECRET_GRACE_PERIOD_RATIO (0.5) of the lifetime
    secret_ttl: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}.{self.pod}"

    @property
    def child(self) -> str:
        return f"proxy-{self.key}"

    @property
    def log_name(self) -> str:
        return self.child + (f".g{self.generation}" if self.generation else "")


UPGRADE_OPS = {
    "istiod-replace": "op_istiod_replace",
    "istiod-add": "op_istiod_add",
    "istiod-remove": "op_istiod_remove",
    "proxy-upgrade": "op_proxy_upgrade",
}
# control ops that change the plan (answered with the new plan): upgrade steps and workload changes
PLAN_OPS = {
    **UPGRADE_OPS,
    "set-service-account": "op_set_service_account",
    "proxy-cert-ttl": "op_proxy_cert_ttl",
}


class Supervisor:
    def __init__(self, settings: Settings, layout: Layout) -> None:
        self.settings = settings
        self.layout = layout
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self.events: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self.plan: dict[str, Any] = {}
        self.error = ""
        self.istiod_stopped = False  # the primary istiod was stopped on request (chaos)
        self.http = httpclient.client(timeout=5.0)
        # block and ports are claimed machine-wide, so concurrent meshes never pick the same ones
        self.reservations = Reservations(os.getpid())
        self.jaeger_plan: dict[str, Any] | None = None
        self.tracing_off = ""
        self.jaeger_argv: list[str] = []
        self.ca: MeshCA | None = None
        self.issuer: tokens.ServiceAccountIssuer | None = None  # the API server's part: SA tokens
        self.jwks: tokens.JwksServer | None = None
        self.proxy_specs: dict[str, ProxySpec] = {}  # "ns.pod" -> how to (re)start its proxy

    # ---- status -------------------------------------------------------------------------
    def status(self, phase: str, message: str = "", **extra: Any) -> None:
        self.events.append({"t": round(time.monotonic() - self.t0, 3), "phase": phase, "message": message})
        if "error" in extra:
            self.error = str(extra["error"])
        body = {"phase": phase, "pid": os.getpid(), "events": self.events, "error": self.error, **extra}
        tmp = self.layout.status.with_suffix(".tmp")
        tmp.write_text(json.dumps(body, indent=1))
        tmp.replace(self.layout.status)

    def _spawn(
        self, name: str, argv: list[str], *, env: dict[str, str], cwd: Path, log: str = ""
    ) -> subprocess.Popen[bytes]:
        p = proc.spawn(argv, log_path=self.layout.log(log or name), env=env, cwd=cwd, die_with_parent=True)
        self.children[name] = p
        return p

    def _alive(self, name: str, what: str) -> None:
        p = self.children.get(name)
        if p is not None and p.poll() is not None:
            raise WaitTimeout(
                what, 0, f"{name} exited with code {p.returncode}: {proc.tail(self.layout.log(name), 8)}"
            )

    def _get_ok(self, url: str, name: str) -> bool:
        self._alive(name, url)
        try:
            return self.http.get(url).status_code == 200
        except httpx.HTTPError:
            return False

    def _await_ok(self, url: str, name: str, *, timeout: float) -> None:
        """Wait until ``url`` answers 200, failing at once if child ``name`` exits meanwhile."""
        wait.until(
            lambda: self._get_ok(url, name),
            what=f"{name} {url}",
            timeout=timeout,
            interval=0.1,
            hint=f"see {self.layout.log(name)}",
        )

    # ---- bring-up -----------------------------------------------------------------------
    def _port(self) -> int:
        """A free TCP port for this mesh (the one allocator of every port the mesh uses)."""
        return self.reservations.port()

    def _install_of(self, label: str) -> Installed:
        return load(self.settings.with_overrides(istio_version=label))

    def up(self) -> None:
        s, lay = self.settings, self.layout
        inst = load(s)
        self.status("starting", f"Istio {inst.label}, Envoy {inst.envoy_version}")
        ca = self.ca = MeshCA.create()
        ca.write_istiod_cacerts(lay.istiod / "cacerts")
        lay.ca_root.write_bytes(ca.root_pem)

        from harness.istio import traffic_api
        from harness.istio.loader import load_paths

        docs = traffic_api.select(load_paths([s.manifests]), s.traffic_api)
        block = self.reservations.block(lay)
        topology = topo.derive(
            [d.body for d in docs],
            block=block,
            allocate=self._port,
            sources=[d.file for d in docs],
        )
        self.status("starting", f"derived {len(topology.replicas)} replicas on 127.{block}.0.0/16")
        self._write_workload_objects([d.body for d in docs], topology)
        self.issuer = tokens.ServiceAccountIssuer.create()
        self.jwks = tokens.JwksServer(self.issuer, self._port()).start()

        tracing = [n for n in topology.native if n.image.startswith("jaegertracing/")]
        jaeger_address: str | None = None
        self.tracing_off = ""
        if tracing:
            try:
                jaeger_address = self._start_jaeger(tracing[0], block)
            except StateError as e:  # not installed: the mesh runs, without tracing, and says why
                self.tracing_off = str(e)
                tracing = []
                self.status("starting", f"tracing is off: {e}")

        # the in-memory cluster istiod watches: the user's configuration, and the rest of what a
        # cluster would hold (cluster.py), with a Sidecar per replica binding its listeners
        cluster = kube_cluster.objects([d.body for d in docs], topology, jaeger_address=jaeger_address)
        for directory, objs in (
            (lay.config, topology.config),
            (lay.kube, (*cluster, *topology.sidecars)),
        ):
            directory.mkdir(parents=True, exist_ok=True)
            for obj in objs:
                obj = kube_cluster.namespaced(obj)
                (directory / object_filename(obj)).write_text(yamlio.dump(obj, sort_keys=False))

        istiod = self._start_istiod(inst, PRIMARY_REVISION)
        self.status("starting", "istiod ready")
        if tracing:
            self._await_jaeger()

        self.plan = {
            "block": block,
            "istio": inst.label,
            "envoy": inst.envoy_version,
            "istiod": istiod,
            "control_planes": {PRIMARY_REVISION: istiod},
            "proxies": {},
            "replicas": [self._replica_json(r) for r in topology.replicas],
            "gateway": None,
            "service_ports": list(topology.service_ports),
            "jaeger": self.jaeger_plan,
            "tracing_off": self.tracing_off,
            "traffic_api": s.traffic_api,
        }
        for r in topology.replicas:
            self._start_app(r)
        for r in topology.replicas:
            self._await_ok(
                f"http://{r.address}:{r.admin_port}/healthz", f"app-{r.namespace}.{r.pod}", timeout=30
            )
        self.status("starting", f"{len(topology.replicas)} app processes ready")

        specs = [
            ProxySpec(
                r.pod,
                r.namespace,
                r.service_account,
                r.address,
                dict(r.labels),
                r.ports,
                "sidecar",
                inst.label,
                PRIMARY_REVISION,
            )
            for r in topology.replicas
        ]
        gw = topology.gateway
        if gw is not None:
            specs.append(
                ProxySpec(
                    gw.pod,
                    gw.namespace,
                    gw.service_account,
                    gw.address,
                    dict(gw.labels),
                    gw.ports,
                    "router",
                    inst.label,
                    PRIMARY_REVISION,
                )
            )
            self.plan["gateway"] = {
                "pod": gw.pod,
                "namespace": gw.namespace,
                "address": gw.address,
                "service_account": gw.service_account,
                "labels": dict(gw.labels),
                "port_map": {str(k): v for k, v in gw.port_map.items()},
                "ports": asdict(gw.ports),
            }
        for spec in specs:
            self._start_proxy(spec)
        for spec in specs:
            self._await_proxy_ready(spec)
        self.status("starting", f"{len(specs)} proxies ready")
        self._write_plan()
        from harness.backends.local.xds import wait_synced

        wait_synced(self.http, istiod["url"], len(specs), timeout=60)
        self.status("ready", f"mesh ready in {time.monotonic() - self.t0:.1f}s")

    def _write_workload_objects(self, docs: list[dict[str, Any]], topology: topo.Topology) -> None:
        """The Kubernetes objects the mesh runs as processes (its Deployments) and the manifests'
        ServiceAccounts, which :meth:`LocalBackend.apply` compares changes with."""
        lay = self.layout
        lay.workloads.mkdir(parents=True, exist_ok=True)
        run = {(r.namespace, r.deployment) for r in topology.replicas}
        for body in docs:
            meta = body.get("metadata") or {}
            ns = str(meta.get("namespace") or "default")
            kind = body.get("kind")
            if (kind == "Deployment" and (ns, str(meta.get("name"))) in run) or (
                kind == "ServiceAccount" and not topo.is_config(body)
            ):
                obj = {**body, "metadata": {**meta, "namespace": ns}}
                (lay.workloads / object_filename(obj)).write_text(yamlio.dump(obj, sort_keys=False))

    def _write_plan(self) -> None:
        self.plan["proxies"] = {
            k: {
                "istio": p.istio,
                "revision": p.revision,
                "generation": p.generation,
                "admin": p.ports.admin,
                "secret_ttl": p.secret_ttl,
            }
            for k, p in self.proxy_specs.items()
        }
        tmp = self.layout.plan.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.plan, indent=1))
        tmp.replace(self.layout.plan)

    def _istiod_child(self, revision: str) -> str:
        return "istiod" if revision == PRIMARY_REVISION else f"istiod-{revision}"

    def _start_istiod(
        self,
        inst: Installed,
        revision: str,
        ports: dict[str, int] | None = None,
        *,
        log: str = "",
        wait_ready: bool = True,
    ) -> dict[str, Any]:
        """Start an istiod of ``inst`` for ``revision`` (on ``ports``, or fresh ones); wait until
        ready unless ``wait_ready`` is false (then the caller waits)."""
        lay = self.layout
        ports = ports or {k: self._port() for k in ISTIOD_PORTS}
        work = lay.istiod if revision == PRIMARY_REVISION else lay.istiod / f"rev-{revision}"
        work.mkdir(parents=True, exist_ok=True)
        mesh = {
            "defaultConfig": {
                "discoveryAddress": f"127.0.0.1:{ports['grpc']}",
                "controlPlaneAuthPolicy": "NONE",
            },
            "enableTracing": False,
            "trustDomain": TRUST_DOMAIN,
            "accessLogFile": "/dev/stdout",
            "rootNamespace": "istio-system",
        }
        if self.jaeger_plan:  # the manifests' Telemetry selects this provider and decides the sampling
            mesh["extensionProviders"] = jaeger_mod.mesh_providers()
        (work / "mesh.yaml").write_text(yamlio.dump(mesh))
        name = self._istiod_child(revision)
        self._spawn(
            name,
            [
                inst.istiod,
                f"-kubeDir={lay.kube},{lay.config}",
                f"-crds={','.join(str(p) for p in crd_paths(inst))}",
                f"-kubeAPIAddr=127.0.0.1:{ports['kube_api']}",
                f"-kubernetesVersion={KUBERNETES_VERSION}",
                f"-meshConfig={work / 'mesh.yaml'}",
                f"-grpcAddr=127.0.0.1:{ports['grpc']}",
                f"-httpAddr=127.0.0.1:{ports['http']}",
                f"-httpsAddr=127.0.0.1:{ports['https']}",
                f"-secureGRPCAddr=127.0.0.1:{ports['secure_grpc']}",
                f"-monitoringAddr=127.0.0.1:{ports['monitoring']}",
                "-logLevel=default:info,ads:warn,krt:warn",
            ],
            env={
                **ISTIOD_ENV,
                "ROOT_CA_DIR": str(lay.istiod / "cacerts"),
                "POD_NAMESPACE": "istio-system",
                "POD_NAME": name,  # its identity in leader elections (the status writers')
                # the CA authenticates pilot-agent's CSR by its ServiceAccount token (tokens.py)
                "JWT_RULE": self._issuer().jwt_rule(self._jwks().url),
            },
            cwd=work,
            log=log,
        )
        url = f"http://127.0.0.1:{ports['http']}"
        if revision == PRIMARY_REVISION:
            self.istiod_stopped = False
        if wait_ready:
            self._await_ok(f"{url}/ready", name, timeout=90)
        return {
            **ports,
            "url": url,
            "monitoring_url": f"http://127.0.0.1:{ports['monitoring']}",
            "kube_api_url": f"http://127.0.0.1:{ports['kube_api']}",
            "istio": inst.label,
            "revision": revision,
        }

    def _stop_child(self, name: str, *, grace: float = 15.0) -> int | None:
        p = self.children.pop(name, None)
        if p is None:
            return None
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        return p.returncode

    # ---- Jaeger -------------------------------------------------------------------------
    def _start_jaeger(self, native: topo.Native, block: int) -> str:
        """Start Jaeger for the manifests' Jaeger Deployment; return its address (its pod IP)."""
        inst = jaeger_build.load(self.settings.cache_dir)
        address = f"127.{block}.4.1"
        ports = jaeger_mod.pod_ports(address)
        work = self.layout.root / "jaeger"
        work.mkdir(parents=True, exist_ok=True)
        cfg = work / "config.yaml"
        cfg.write_text(yamlio.dump(jaeger_mod.config(ports), sort_keys=False))
        self.jaeger_argv = [inst.binary, f"--config={cfg}"]
        self._spawn(JAEGER, self.jaeger_argv, env=JAEGER_ENV, cwd=work)
        self.jaeger_plan = {
            "query_url": ports.query_url,
            "address": address,
            "ports": asdict(ports),
            "version": inst.version,
            "log": str(self.layout.log(JAEGER)),
            "namespace": native.namespace,
            "deployment": native.name,
        }
        self.status("starting", f"Jaeger {inst.version} starting on {address}")
        return address

    def _await_jaeger(self) -> None:
        url = str((self.jaeger_plan or {})["query_url"])
        self._await_ok(f"{url}/api/services", JAEGER, timeout=60)
        self.status("starting", f"Jaeger ready, query API {url}")

    def _restart_jaeger(self) -> None:
        """Jaeger died (it keeps traces in memory, so they are gone): start it again."""
        code = self.children[JAEGER].returncode
        self._spawn(JAEGER, self.jaeger_argv, env=JAEGER_ENV, cwd=self.layout.root / "jaeger")
        self.status("ready", f"Jaeger exited with code {code}; restarted (earlier traces are lost)")

    @staticmethod
    def _replica_json(r: topo.Replica) -> dict[str, Any]:
        d = asdict(r)
        d["app_port"], d["admin_port"] = r.app_port, r.admin_port
        return d

    def _start_app(self, r: topo.Replica) -> None:
        node = proc.which("node", needed_for="the sample service", how_to_get="install Node.js >= 20")
        env = {
            **r.env,
            "HOST": r.address,
            "PORT": str(r.app_port),
            "ADMIN_HOST": r.address,
            "ADMIN_PORT": str(r.admin_port),
            "POD_NAME": r.pod,
            "POD_NAMESPACE": r.namespace,
            "VERSION": r.env.get("VERSION", r.labels.get("version", "v1")),
            "MESH_OUTBOUND_HOST": r.egress_address,
        }
        self._spawn(
            f"app-{r.namespace}.{r.pod}",
            [node, str(SAMPLE_SERVICE / "service.js")],
            env=env,
            cwd=SAMPLE_SERVICE,
        )

    def _await_proxy_ready(self, spec: ProxySpec, timeout: float = 60) -> None:
        url = f"http://127.0.0.1:{spec.ports.agent_status}/healthz/ready"
        log = self.layout.log(spec.log_name)

        def ready() -> bool:
            if _port_taken(log):
                raise PortTaken(f"{spec.child}: Envoy could not bind one of its ports (see {log})")
            return self._get_ok(url, spec.child)

        wait.until(ready, what=f"{spec.child} {url}", timeout=timeout, interval=0.1, hint=f"see {log}")

    def _issuer(self) -> tokens.ServiceAccountIssuer:
        if self.issuer is None:
            raise StateError("the ServiceAccount token issuer is not set up yet")
        return self.issuer

    def _jwks(self) -> tokens.JwksServer:
        if self.jwks is None:
            raise StateError("the ServiceAccount token issuer's JWKS is not served yet")
        return self.jwks

    def _pod_path(self, ns: str, name: str) -> Path:
        return self.layout.kube / object_filename(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": ns, "name": name}}
        )

    def _pod(self, ns: str, name: str) -> dict[str, Any]:
        """The Pod object of a replica or the gateway, as the in-memory cluster holds it."""
        body = yamlio.load(self._pod_path(ns, name).read_text())
        return body if isinstance(body, dict) else {}

    def _start_proxy(self, spec: ProxySpec) -> None:
        assert self.ca is not None
        inst = self._install_of(spec.istio)
        plane = self.plan["control_planes"][spec.revision]
        grpc_port = plane["grpc"]
        ports, ns, pod, sa = spec.ports, spec.namespace, spec.pod, spec.service_account
        work = self.layout.proxy_dir(spec.key + (f".g{spec.generation}" if spec.generation else ""))
        work.mkdir(parents=True, exist_ok=True)
        # what Kubernetes mounts into a pod: the ServiceAccount token and the mesh's root (to trust
        # istiod). pilot-agent makes the key and CSR; istiod's CA signs it for the SPIFFE ID it
        # derives from the token, so the identity in the certificate is the mesh's, not ours.
        (work / tokens.TOKEN_PATH).parent.mkdir(parents=True, exist_ok=True)
        (work / tokens.TOKEN_PATH).write_text(self._issuer().token(ns, sa))
        (work / tokens.CA_ROOT_PATH).parent.mkdir(parents=True, exist_ok=True)
        (work / tokens.CA_ROOT_PATH).write_bytes(self.ca.root_pem)
        # the injector's podinfo volume: the pod's labels and annotations through the downward API
        pod_obj = self._pod(ns, pod)
        podinfo = work / "etc" / "istio" / "pod"
        podinfo.mkdir(parents=True, exist_ok=True)
        meta = pod_obj.get("metadata") or {}
        (podinfo / "labels").write_text(kube_cluster.downward_api(meta.get("labels")))
        annotations = kube_cluster.podinfo_annotations(
            meta.get("annotations"), (name for _, name in socket.if_nameindex())
        )
        (podinfo / "annotations").write_text(kube_cluster.downward_api(annotations))
        proxy_config = {
            "discoveryAddress": f"127.0.0.1:{grpc_port}",
            "controlPlaneAuthPolicy": "NONE",
            "binaryPath": inst.envoy,
            "proxyAdminPort": ports.admin,
            "statusPort": ports.agent_status,
            "configPath": "./etc/istio/proxy",
            "proxyBootstrapTemplatePath": inst.bootstrap_template,
            "interceptionMode": "NONE",
            # drainDuration stays Istio's (45 s): it is how long a listener or filter chain that a
            # config change replaced keeps its connections before Envoy closes them, requests in
            # flight or not; at 1 s the ingress saw 503 UC (connection_termination) right after a
            # policy change (bench/bench_drain.py). Stopping a proxy is quick anyway:
            "terminationDrainDuration": "1s",
            "concurrency": 1,
            # Envoy sends buffered spans every 5 s unless 5 are waiting; flush at once so a
            # trace is visible in Jaeger within a fraction of a second (the suites wait for it)
            "runtimeValues": {
                "tracing.opentelemetry.flush_interval_ms": "100",
                "tracing.opentelemetry.min_flush_spans": "1",
            },
            # the counters the suites read as evidence (Istio trims Envoy's stats by default)
            "proxyStatsMatcher": proxy_stats_matcher(),
        }
        # what Istio's sidecar injector puts into the istio-proxy container of the pod (its
        # injection template), so istiod attaches the proxy to its Pod
        workload = pod.rsplit("-", 1)[0]  # the Deployment (pods are named <deployment>-<i>)
        owner = f"kubernetes://apis/apps/v1/namespaces/{ns}/deployments/{workload}"
        container_ports = [
            p for c in (pod_obj.get("spec") or {}).get("containers") or [] for p in c.get("ports") or []
        ]
        env = {
            "POD_NAME": pod,
            "POD_NAMESPACE": ns,
            "INSTANCE_IP": spec.address,
            "SERVICE_ACCOUNT": sa,
            "HOST_IP": "127.0.0.1",
            "CLOUD_PLATFORM": "none",
            "ISTIO_META_POD_PORTS": json.dumps(container_ports),
            "ISTIO_META_APP_CONTAINERS": ",".join(
                str(c.get("name")) for c in (pod_obj.get("spec") or {}).get("containers") or []
            ),
            "ISTIO_META_CLUSTER_ID": "Kubernetes",
            "ISTIO_META_NODE_NAME": kube_cluster.NODE_NAME,
            "ISTIO_META_INTERCEPTION_MODE": "NONE",
            "ISTIO_META_WORKLOAD_NAME": workload,
            "ISTIO_META_OWNER": owner,
            "ISTIO_META_MESH_ID": TRUST_DOMAIN,
            "ENVOY_STATUS_PORT": str(ports.envoy_status),
            "ENVOY_PROMETHEUS_PORT": str(ports.prometheus),
            "PROXY_CONFIG": json.dumps(proxy_config),
            "TRUST_DOMAIN": TRUST_DOMAIN,
            # the CSR goes to istiod's CA over TLS (its serving cert names istiod.istio-system.svc)
            "CA_ADDR": f"127.0.0.1:{plane['secure_grpc']}",
            "ISTIOD_SAN": "istiod.istio-system.svc",
            "JWT_POLICY": "third-party-jwt",
        }
        if spec.secret_ttl:
            env["SECRET_TTL"] = spec.secret_ttl
        argv = [
            inst.pilot_agent,
            "proxy",
            spec.kind,
            f"--domain={ns}.svc.cluster.local",
            "--proxyLogLevel=warning",
            "--log_output_level=default:warn",
        ]
        self._spawn(spec.child, argv, env=env, cwd=work, log=spec.log_name)
        self.proxy_specs[spec.key] = spec

    # ---- control ------------------------------------------------------------------------
    def _replica(self, pod: str) -> dict[str, Any]:
        for r in self.plan.get("replicas", []):
            if pod in (r["pod"], f"{r['namespace']}/{r['pod']}"):
                return dict(r)
        raise KeyError(pod)

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "stop":
            self.stopping = True
            return {"ok": True}
        if op == "istiod-stop":
            p = self.children.get("istiod")
            self.istiod_stopped = True  # before it exits: serve() must not take this for a crash
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
            self.status("ready", "istiod stopped on request")
            return {"ok": True}
        if op == "istiod-start":
            p = self.children.get("istiod")
            if p is None or p.poll() is not None:
                cp = self.plan["control_planes"][PRIMARY_REVISION]
                ports = {k: cp[k] for k in ISTIOD_PORTS}
                # the client waits for /ready: this socket has a short timeout
                self._start_istiod(self._install_of(cp["istio"]), PRIMARY_REVISION, ports, wait_ready=False)
                self.status("ready", "istiod started again on request")
            return {"ok": True}
        if op in ("kill", "restart"):
            r = self._replica(str(req.get("pod")))
            name = f"app-{r['namespace']}.{r['pod']}"
            p = self.children.get(name)
            if op == "kill":
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait(10)
                return {"ok": True}
            if p is not None and p.poll() is None:
                return {"ok": True, "note": "already running"}
            rep = topo.Replica(
                **{k: v for k, v in r.items() if k not in ("app_port", "admin_port")}
                | {"ports": topo.ProxyPorts(**r["ports"]), "target_ports": tuple(r["target_ports"])}
            )
            self._start_app(rep)
            return {"ok": True}
        if op == "plan":
            return {"ok": True, "plan": self.plan}
        if op in PLAN_OPS:
            result = getattr(self, PLAN_OPS[op])(req)
            self._write_plan()
            return {"ok": True, "plan": self.plan, **result}
        return {"ok": False, "error": f"unknown op {op!r}"}

    # ---- upgrade steps (each answers with the new plan and what it measured) ----------------
    def _synced(self, revision: str, expected: int, timeout: float = 90) -> float:
        from harness.backends.local.xds import wait_synced

        url = self.plan["control_planes"][revision]["url"]
        return wait_synced(self.http, url, expected, timeout=timeout)

    def _proxies_on(self, revision: str) -> int:
        return sum(1 for p in self.proxy_specs.values() if p.revision == revision)

    def op_istiod_replace(self, req: dict[str, Any]) -> dict[str, Any]:
        """In place: stop the revision's istiod, start the ``istio`` build on the same ports."""
        revision = str(req.get("revision") or PRIMARY_REVISION)
        old = self.plan["control_planes"][revision]
        inst = self._install_of(str(req["istio"]))
        t0 = time.monotonic()
        name = self._istiod_child(revision)
        code = self._stop_child(name)
        t_stopped = time.monotonic()
        ports = {k: old[k] for k in ISTIOD_PORTS}
        new = self._start_istiod(inst, revision, ports, log=f"{name}.{inst.label}")
        self.plan["control_planes"][revision] = new
        if revision == PRIMARY_REVISION:
            self.plan["istiod"], self.plan["istio"] = new, inst.label
        t_ready = time.monotonic()
        sync_s = self._synced(revision, self._proxies_on(revision))
        self.status("ready", f"istiod {revision} replaced by Istio {inst.label}")
        return {
            "old_exit_code": code,
            "stop_s": round(t_stopped - t0, 3),
            "ready_s": round(t_ready - t_stopped, 3),
            "resync_s": round(sync_s, 3),
        }

    def op_istiod_add(self, req: dict[str, Any]) -> dict[str, Any]:
        """Canary: a second istiod of the ``istio`` build, with its own revision and ports."""
        revision = str(req["revision"])
        if revision in self.plan["control_planes"]:
            raise ValueError(f"revision {revision} already has a control plane")
        inst = self._install_of(str(req["istio"]))
        t0 = time.monotonic()
        cp = self._start_istiod(inst, revision, log=f"{self._istiod_child(revision)}.{inst.label}")
        self.plan["control_planes"][revision] = cp
        self.status("ready", f"istiod {revision} (Istio {inst.label}) started")
        return {"ready_s": round(time.monotonic() - t0, 3)}

    def op_istiod_remove(self, req: dict[str, Any]) -> dict[str, Any]:
        revision = str(req["revision"])
        users = [k for k, p in self.proxy_specs.items() if p.revision == revision]
        if users:
            raise ValueError(f"proxies still connected to revision {revision}: {', '.join(users)}")
        if revision not in self.plan["control_planes"]:
            raise ValueError(f"no control plane of revision {revision}")
        code = self._stop_child(self._istiod_child(revision))
        del self.plan["control_planes"][revision]
        if self.plan["istiod"].get("revision") == revision:  # the remaining one becomes primary
            self.plan["istiod"] = next(iter(self.plan["control_planes"].values()))
            self.plan["istio"] = self.plan["istiod"]["istio"]
        self.status("ready", f"istiod {revision} removed")
        return {"old_exit_code": code}

    def op_proxy_upgrade(self, req: dict[str, Any]) -> dict[str, Any]:
        """Restart one proxy on the ``istio`` build, connected to ``revision``, without a gap."""
        old = self.proxy_specs[str(req["proxy"])]
        label = str(req.get("istio") or old.istio)
        revision = str(req.get("revision") or old.revision)
        if revision not in self.plan["control_planes"]:
            raise ValueError(f"no control plane of revision {revision}")
        drain = req.get("drain", True) is not False  # False: the upgrade check's negative control
        result = self._replace_proxy(old, istio=label, revision=revision, drain=drain)
        self.status("ready", f"proxy {old.key} on Istio {label} ({revision})")
        return {"proxy": old.key, "istio": label, "revision": revision, "drain": drain, **result}

    def op_proxy_cert_ttl(self, req: dict[str, Any]) -> dict[str, Any]:
        """Replace proxy ``proxy`` (without a gap) by one whose pilot-agent asks istiod's CA for
        workload certificates of lifetime ``ttl`` (its ``SECRET_TTL``; "" for its default)."""
        old = self.proxy_specs[str(req["proxy"])]
        ttl = str(req.get("ttl") or "")
        if old.secret_ttl == ttl:
            return {"proxy": old.key, "secret_ttl": ttl, "restarted": False}
        result = self._replace_proxy(old, secret_ttl=ttl)
        self.status("ready", f"proxy {old.key} asks for certificates of {ttl or 'the default lifetime'}")
        return {"proxy": old.key, "secret_ttl": ttl, "restarted": True, **result}

    def op_set_service_account(self, req: dict[str, Any]) -> dict[str, Any]:
        """Run Deployment ``namespace/deployment`` as ServiceAccount ``service_account`` from now on.

        What Kubernetes does when a Deployment's ``serviceAccountName`` changes, on the local
        mesh's terms: each replica's Pod names the new ServiceAccount (Kubernetes would replace the
        pods; here the Pod objects change in place, keeping their names), istiod's endpoints of the
        Services selecting them carry the new identity, and each replica's proxy is replaced,
        without a gap, by one that holds a token of the new ServiceAccount, so istiod's CA issues it
        a certificate of the new identity. The app process keeps running (it plays no part in the
        identity). Unlike Kubernetes' rolling update, old and new identity never serve side by
        side: for a Deployment behind a Service, calls between the endpoints' change and its
        proxy's replacement can fail the clients' check of the server's identity.
        """
        ns, deployment, sa = str(req["namespace"]), str(req["deployment"]), str(req["service_account"])
        replicas = [r for r in self.plan["replicas"] if (r["namespace"], r["deployment"]) == (ns, deployment)]
        if not replicas:
            raise ValueError(f"this mesh runs no Deployment {ns}/{deployment}")
        t0 = time.monotonic()
        istiod = self.plan["istiod"]
        before = push_mark(self.http, istiod["monitoring_url"])
        changed = False
        for r in replicas:
            path = self._pod_path(ns, str(r["pod"]))
            pod = yamlio.load(path.read_text())
            if pod["spec"].get("serviceAccountName") != sa:
                pod["spec"]["serviceAccountName"] = sa
                tmp = path.with_suffix(".tmp")
                tmp.write_text(yamlio.dump(pod, sort_keys=False))
                tmp.replace(path)
                changed = True
        if changed:
            for plane in self.plan["control_planes"].values():
                sync_cluster(self.http, plane["kube_api_url"])
            wanted = {(ns, deployment): (sa, f"spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/{sa}")}
            wait_service_accounts(
                self.http,
                istiod["url"],
                istiod["monitoring_url"],
                before,
                len(self.proxy_specs),
                wanted,
                timeout=90,
            )
        t_endpoints = time.monotonic()
        restarted = []
        for r in replicas:
            old = self.proxy_specs[f"{ns}.{r['pod']}"]
            if old.service_account != sa:
                self._replace_proxy(old, service_account=sa)
                restarted.append(old.key)
            r["service_account"] = sa
        self.status("ready", f"Deployment {ns}/{deployment} runs as ServiceAccount {sa}")
        return {
            "restarted": restarted,
            "endpoints_s": round(t_endpoints - t0, 3),
            "restart_s": round(time.monotonic() - t_endpoints, 3),
        }

    def _replace_proxy(self, old: ProxySpec, *, drain: bool = True, **changes: Any) -> dict[str, Any]:
        """Replace proxy ``old`` by a new generation with ``changes`` (release, revision,
        ServiceAccount), without a gap; return what it measured.

        The new pilot-agent + Envoy starts beside the old one (its own admin/status ports and
        work dir; Envoy listeners bind with SO_REUSEPORT, so both serve the same addresses),
        and must be ready and have ACKed its config before the old one drains gracefully
        (``/drain_listeners?graceful``: HTTP/1 responses say ``Connection: close``, then its
        listen sockets close) and stops.

        ``drain=False`` is the negative control of that (never a default): the old pilot-agent is
        SIGKILLed first, with its Envoy, and the new one starts only when the old Envoy's admin port
        is closed, so there is a gap and no notice to its clients.
        """
        revision = str(changes.get("revision", old.revision))
        t0 = time.monotonic()
        old_proc = self.children.pop(old.child)
        if not drain:
            _kill_now(old_proc)
            wait.until(
                lambda: not _accepts(old.ports.admin),
                what=f"the killed proxy {old.key}'s Envoy gone (admin port {old.ports.admin} closed)",
                timeout=15,
                interval=0.05,
            )
        t_killed = time.monotonic()
        collisions = 0
        while True:
            ports = topo.ProxyPorts(*(self._port() for _ in range(4)))
            new = replace(old, **changes, ports=ports, generation=old.generation + 1 + collisions)
            self._start_proxy(new)
            try:
                self._await_proxy_ready(new, timeout=90)
                t_ready = time.monotonic()
                # the old generation is still connected too when it uses the same revision
                still = 1 if drain and old.revision == revision else 0
                self._synced(revision, self._proxies_on(revision) + still)
                break
            except BaseException as e:
                self._stop_child(new.child)
                if not drain:
                    raise  # the old one is dead: nothing to give back
                self.children[old.child] = old_proc
                self.proxy_specs[old.key] = old
                # another process on the machine took one of the new ports between allocation
                # and Envoy's bind: try again with fresh ports (the old proxy still serves)
                if isinstance(e, PortTaken) and collisions < 2:
                    collisions += 1
                    self.children.pop(old.child)
                    continue
                raise
        t_acked = time.monotonic()
        if drain:
            old_admin = f"http://127.0.0.1:{old.ports.admin}"
            drained = self._drain(old_admin)
            t_drained = time.monotonic()
            old_proc.terminate()
            try:
                old_proc.wait(15)
            except subprocess.TimeoutExpired:
                old_proc.kill()
                old_proc.wait(5)
        else:
            drained, t_drained = {"killed_s": round(t_killed - t0, 3)}, t_acked
        t_stopped = time.monotonic()
        for r in self.plan["replicas"]:
            if f"{r['namespace']}.{r['pod']}" == old.key:
                r["ports"] = asdict(ports)
        gw = self.plan.get("gateway")
        if gw and f"{gw['namespace']}.{gw['pod']}" == old.key:
            gw["ports"] = asdict(ports)
        self._synced(revision, self._proxies_on(revision))
        return {
            "ready_s": round(t_ready - t_killed, 3),
            "acked_s": round(t_acked - t_ready, 3),
            "drain_s": round(t_drained - t_acked, 3),
            "stop_s": round(t_stopped - t_drained, 3),
            "old_exit_code": old_proc.returncode,
            "port_collisions": collisions,
            **drained,
        }

    def _drain(self, admin: str) -> dict[str, Any]:
        """Gracefully drain an Envoy and wait (bounded) until it holds no downstream connection.

        ``/drain_listeners?graceful`` starts Envoy's drain (from then on HTTP/1 responses say
        ``Connection: close`` and HTTP/2 connections get GOAWAY) but closes the listen sockets
        only after the drain period (Istio's 45 s); the plain ``/drain_listeners`` that follows
        closes them now, so new connections reach the successor's sockets (SO_REUSEPORT) while
        the old connections finish their requests.
        """
        self.http.post(f"{admin}/drain_listeners", params={"graceful": ""})
        self.http.post(f"{admin}/drain_listeners")

        def stat(name: str) -> float:
            r = self.http.get(f"{admin}/stats", params={"filter": f"^{name}$"})
            for line in r.text.splitlines():
                k, _, v = line.partition(": ")
                if k == name:
                    return float(v)
            return 0.0

        last: dict[str, float] = {}

        def idle() -> bool:
            # every listener stopped (its socket closed after the drain period), no connection left
            last["connections"] = stat("server.total_connections")
            last["listeners_stopped"] = stat("listener_manager.listener_stopped")
            listeners = stat("listener_manager.total_listeners_active")
            return last["listeners_stopped"] >= listeners and last["connections"] == 0

        try:
            wait.until(idle, what=f"{admin} drained", timeout=10, interval=0.05, retry_on=(httpx.HTTPError,))
            clean = True
        except WaitTimeout:
            clean = False  # stopped anyway: callers retry on the connections still open
        return {"drained_clean": clean, "open_connections_at_stop": last.get("connections", -1.0)}

    def serve(self) -> None:
        path = self.layout.control_socket
        if path.exists():
            path.unlink()
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(path))
        srv.listen(8)
        srv.settimeout(0.2)
        try:
            while not self.stopping:
                self._check_children()
                if self.stopping or not _await_request_or_exit(srv, self.children.values()):
                    continue
                try:
                    conn, _ = srv.accept()
                except TimeoutError:
                    continue
                with conn:
                    conn.settimeout(30)
                    data = b""
                    while not data.endswith(b"\n"):
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    try:
                        reply = self.handle(json.loads(data or b"{}"))
                    except Exception as e:  # noqa: BLE001 - reported to the caller
                        reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                    conn.sendall(json.dumps(reply).encode() + b"\n")
        finally:
            srv.close()
            path.unlink(missing_ok=True)

    def _check_children(self) -> None:
        """An istiod that exited (not on request) fails the mesh; a Jaeger that exited is started again."""
        istiods = {self._istiod_child(rev) for rev in self.plan.get("control_planes", {})}
        for name, p in list(self.children.items()):
            stopped = name == "istiod" and self.istiod_stopped  # on request, not a crash
            if p.poll() is not None and name in istiods and not stopped:
                self.status("failed", f"{name} exited with code {p.returncode}")
                self.stopping = True
            elif p.poll() is not None and name == JAEGER and not self.stopping:
                self._restart_jaeger()

    def teardown(self) -> None:
        self.status("stopping", "tearing down")
        deadline = time.monotonic() + QUIT_WAIT_S
        for agent in self._quit_proxies():
            with contextlib.suppress(subprocess.TimeoutExpired):  # terminated below, with its drain
                agent.wait(max(0.05, deadline - time.monotonic()))
        order = (
            [n for n in self.children if n.startswith("proxy-")]
            + [n for n in self.children if n.startswith("app-")]
            + [JAEGER]
            + [n for n in self.children if n.startswith("istiod")]
        )
        for name in order:
            p = self.children.get(name)
            if p is not None and p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 10
        for name in order:
            p = self.children.get(name)
            if p is None:
                continue
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if left := kill_own_group():
            print(f"teardown: killed {len(left)} leftover process(es) of the mesh: {left}", file=sys.stderr)
        if self.jwks is not None:
            self.jwks.stop()
        self.http.close()
        self.layout.cleanup_runtime()
        self.reservations.release()
        self.status("stopped", "all processes stopped")

    def _quit_proxies(self) -> list[subprocess.Popen[bytes]]:
        """Ask every running proxy's Envoy to exit (``POST /quitquitquit`` on its admin port);
        the pilot-agents whose Envoy accepted, which then exit because their Envoy did.

        On SIGTERM alone pilot-agent first drains for ``terminationDrainDuration`` (1 s here) even
        with no traffic, and a teardown has none to protect. The agent's own ``/quitquitquit``
        skips that drain too, but the agent can exit before it has killed its Envoy (which has no
        parent-death signal): Envoy first, then its agent, leaves nothing behind. A proxy that
        does not answer is terminated by the teardown as before."""
        accepted = []
        for spec in self.proxy_specs.values():
            p = self.children.get(spec.child)
            if p is None or p.poll() is not None:
                continue
            try:
                r = self.http.post(f"http://127.0.0.1:{spec.ports.admin}/quitquitquit", timeout=2.0)
            except httpx.HTTPError:
                continue
            if r.status_code == 200:
                accepted.append(p)
        return accepted


#: How long a teardown waits for the pilot-agents whose Envoy quit to exit.
QUIT_WAIT_S = 5.0


def kill_own_group() -> list[int]:
    """SIGKILL what is left of this process's group but itself, when it leads the group (the
    supervisor runs in a session of its own: every child, and theirs, started in its group; an
    Envoy whose pilot-agent died first would be one). The pids killed; none when not the leader."""
    me = os.getpid()
    if os.getpgrp() != me:
        return []
    left = [pid for pid in proc.group_members(me) if pid != me]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


#: How often the supervisor looks at its children where it cannot wait for their exit (no pidfd).
POLL_WITHOUT_PIDFD_S = 0.2


def _await_request_or_exit(srv: socket.socket, children: Iterable[subprocess.Popen[bytes]]) -> bool:
    """Block until a request arrives on ``srv`` (True) or a running child exits (False), without
    polling: each running child's pidfd becomes readable when it exits. Where the kernel has no
    pidfds, wake every :data:`POLL_WITHOUT_PIDFD_S` seconds instead (False)."""
    timeout: float | None = None
    fds: list[int] = []
    with selectors.DefaultSelector() as sel:
        sel.register(srv, selectors.EVENT_READ)
        try:
            for p in children:
                if p.returncode is not None:  # reaped: nothing to wait for
                    continue
                try:
                    fd = os.pidfd_open(p.pid)
                except ProcessLookupError:  # gone already: look at the children again now
                    return False
                except (OSError, AttributeError):
                    timeout = POLL_WITHOUT_PIDFD_S
                    continue
                fds.append(fd)
                sel.register(fd, selectors.EVENT_READ)
            return any(key.fileobj is srv for key, _ in sel.select(timeout))
        finally:
            for fd in fds:
                os.close(fd)


class PortTaken(MeshproofError):
    """Envoy failed to bind a port allocated to it: another process took it meanwhile."""


def _kill_now(p: subprocess.Popen[bytes]) -> None:
    """SIGKILL a child and its own children (pilot-agent's Envoy: it would outlive its agent)."""
    kids = []
    for task in Path(f"/proc/{p.pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            kids += [int(k) for k in task.read_text().split()]
    p.kill()
    for k in kids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(k, signal.SIGKILL)
    p.wait(5)


def _accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _port_taken(log: Path) -> bool:
    """Did Envoy fail to bind one of its own ports (EADDRINUSE) in this proxy log?"""
    try:
        return "errno=98" in log.read_text(errors="replace")
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="meshproof-supervisor")
    ap.add_argument("--state", required=True)
    ap.add_argument("--manifests", required=True)
    ap.add_argument("--istio-version", required=True)
    ap.add_argument("--traffic-api", default="istio")
    ap.add_argument("--parent-death", action="store_true")
    a = ap.parse_args(argv)
    if a.parent_death:
        proc.set_parent_death_signal(signal.SIGTERM)
    settings = from_env().with_overrides(
        state_dir=Path(a.state),
        manifests=Path(a.manifests),
        istio_version=a.istio_version,
        backend="local",
        traffic_api=a.traffic_api,
    )
    sup = Supervisor(settings, Layout(Path(a.state)))

    def on_signal(signum: int, _frame: object) -> None:
        sup.stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    try:
        sup.up()
        sup.serve()
    except KeyboardInterrupt:
        pass
    except MeshproofError as e:
        sup.status("failed", str(e), error=str(e))
        code = 1
    except Exception as e:  # noqa: BLE001 - the client shows this
        sup.status("failed", f"{type(e).__name__}: {e}", error=traceback.format_exc())
        code = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sup.teardown()
    return code


if __name__ == "__main__":
    sys.exit(main())
