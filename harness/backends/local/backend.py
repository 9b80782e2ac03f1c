"""LocalBackend: the Backend protocol over the embedded mesh run by the supervisor process."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from harness import envoy, httpclient, paths, proc, timeline, wait, yamlio
from harness.backends.local import workloads as kube_objects
from harness.backends.local import xds
from harness.backends.local.layout import Layout, object_filename
from harness.errors import BackendError, StateError, UserError, WaitTimeout
from harness.mesh import AppFault, State, Workload, find_workload
from harness.settings import Settings

if TYPE_CHECKING:  # loaded lazily: attaching to a mesh (`meshproof send`) needs no HTTP client
    import httpx

    from harness.load.config import LoadConfig
    from harness.load.local import LocustRun

Progress = Callable[[str], None]


class LocalBackend:
    name = "local"

    def __init__(self, settings: Settings, progress: Progress | None = None) -> None:
        self.settings = settings
        self.layout = Layout(settings.state_dir)
        self.progress = progress or (lambda _m: None)
        self.state = State.NEW
        self.detached = False
        self._plan: dict[str, Any] = {}
        self._plan_seen: tuple[int, int] | None = None  # (inode, mtime) of the plan file last read
        self._sup: subprocess.Popen[bytes] | None = None
        self._http_client: httpx.Client | None = None

    @property
    def _http(self) -> httpx.Client:
        """The admin/istiod HTTP client, made on first use (attaching to send traffic needs none)."""
        if self._http_client is None:
            self._http_client = httpclient.client(timeout=10.0)
        return self._http_client

    # ---- lifecycle ----------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.detached:
            self.down()

    def up(self, *, detach: bool = False) -> Self:
        with timeline.span("mesh", f"up {self.layout.root}"):
            return self._up(detach)

    def _up(self, detach: bool) -> Self:
        if self.state is not State.NEW:
            raise BackendError(f"this backend is {self.state.value}; create a new one")
        if self.layout.marker.is_file():
            info = json.loads(self.layout.marker.read_text())
            if proc.pid_alive(int(info.get("pid", 0))):
                raise StateError(
                    f"a mesh is already running with state dir {self.layout.root} (pid {info['pid']}). "
                    "Fix: `meshproof down` first, or use another --state"
                )
        from harness.istio import traffic_api
        from harness.istio.loader import load_paths
        from harness.toolchain.istio_local import load

        # fail early, before spawning: on manifests whose traffic API annotation names no known API
        # (ConfigError, exit 2), and when binaries are missing
        traffic_api.select(load_paths([self.settings.manifests]), self.settings.traffic_api)
        load(self.settings)
        self.state = State.STARTING
        self.detached = detach
        self.layout.status.unlink(missing_ok=True)
        argv = [
            sys.executable,
            "-m",
            "harness.backends.local.supervisor",
            "--state",
            str(self.layout.root),
            "--manifests",
            str(self.settings.manifests.resolve()),
            "--istio-version",
            self.settings.istio_version,
            "--traffic-api",
            self.settings.traffic_api,
        ]
        if not detach:
            argv.append("--parent-death")
        sup = proc.spawn(
            argv,
            log_path=self.layout.log("supervisor"),
            new_session=True,
            env={"PYTHONPATH": str(paths.CHECKOUT)},
        )
        self._sup = sup
        self.layout.marker.write_text(
            json.dumps(
                {"backend": "local", "pid": sup.pid, "pgid": sup.pid, "istio": self.settings.istio_version}
            )
        )
        seen = 0

        def ready() -> bool:
            nonlocal seen
            if sup.poll() is not None and not self.layout.status.is_file():
                raise BackendError(
                    f"supervisor exited {sup.returncode}: {proc.tail(self.layout.log('supervisor'))}"
                )
            try:
                st = json.loads(self.layout.status.read_text())
            except (OSError, ValueError):
                return False
            for ev in st.get("events", [])[seen:]:
                self.progress(f"[{ev['t']:6.1f}s] {ev['message']}")
            seen = len(st.get("events", []))
            if st.get("phase") in ("failed", "stopping", "stopped"):
                raise BackendError(
                    f"the local mesh failed to start: {st.get('error') or st['events'][-1]['message']}"
                )
            return bool(st.get("phase") == "ready")

        try:
            wait.until(
                ready,
                what="the local mesh to be ready",
                timeout=self.settings.ready_timeout,
                interval=0.1,
                hint=f"logs in {self.layout.logs}",
            )
        except BaseException as e:
            if isinstance(e, BackendError | WaitTimeout):
                e.add_note(f"logs: {self.layout.logs}")
            self.down()
            raise
        self._plan = json.loads(self.layout.plan.read_text())
        self.state = State.RUNNING
        return self

    def attach(self) -> Self:
        if not self.layout.marker.is_file() or not self.layout.plan.is_file():
            raise StateError(
                f"no local mesh is running with state dir {self.layout.root}. Fix: meshproof up --detach"
            )
        info = json.loads(self.layout.marker.read_text())
        if not proc.pid_alive(int(info.get("pid", 0))):
            raise StateError(
                f"the mesh in {self.layout.root} is not running (supervisor gone). Fix: meshproof down"
            )
        self._plan = json.loads(self.layout.plan.read_text())
        self.state = State.RUNNING
        self.detached = True
        return self

    def down(self) -> None:
        with timeline.span("mesh", f"down {self.layout.root}"):
            self._down()

    def _down(self) -> None:
        self._remove_loss_chain()  # first: the plan names the mesh's block, and the supervisor may remove it
        marker = self.layout.marker
        if marker.is_file():
            info = json.loads(marker.read_text())
            pid, pgid = int(info.get("pid", 0)), int(info.get("pgid", 0))
            if pid and proc.pid_alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                with contextlib.suppress(WaitTimeout):  # the process group is killed below anyway
                    wait.until(
                        lambda: not proc.pid_alive(pid) or _zombie(pid),
                        what=f"supervisor {pid} to exit",
                        timeout=30,
                        interval=0.05,
                    )
            if pgid and proc.group_members(pgid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                wait.until(
                    lambda: not proc.group_members(pgid),
                    what=f"process group {pgid} to be gone",
                    timeout=10,
                    interval=0.05,
                )
        if self._sup is not None:
            try:
                self._sup.wait(10)
            except subprocess.TimeoutExpired:  # seen once on a starved machine: make sure, then reap
                self._sup.kill()
                self._sup.wait(10)
        self.layout.cleanup_runtime()
        if self._http_client is not None:
            self._http_client.close()
            self._http_client = None
        self.state = State.STOPPED

    # ---- helpers ------------------------------------------------------------------------
    def _control(self, req: dict[str, Any], *, timeout: float = 30) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            try:
                s.connect(str(self.layout.control_socket))
            except OSError as e:
                raise StateError(
                    f"cannot reach the mesh supervisor at {self.layout.control_socket}: {e}"
                ) from e
            s.sendall(json.dumps(req).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        reply: dict[str, Any] = json.loads(data or b"{}")
        if not reply.get("ok"):
            raise BackendError(f"supervisor refused {req}: {reply.get('error')}")
        return reply

    def _require_running(self) -> None:
        if self.state is not State.RUNNING:
            raise StateError("the mesh is not running. Fix: meshproof up --detach (or use the mesh fixture)")

    @property
    def plan(self) -> dict[str, Any]:
        """The supervisor's plan, re-read whenever its file changed: another process attached to
        this mesh (a chaos run's child, the suites of an upgrade check) may have replaced proxies
        since, which moves their admin ports."""
        self._require_running()
        try:
            st = self.layout.plan.stat()
        except OSError:
            return self._plan
        seen = (st.st_ino, st.st_mtime_ns)
        if seen != self._plan_seen:
            with contextlib.suppress(OSError, ValueError):  # keep the last plan on a torn read
                self._plan = json.loads(self.layout.plan.read_text())
                self._plan_seen = seen
        return self._plan

    @property
    def traffic_api(self) -> str:
        """Which of the manifests' routes ``up`` applied (:mod:`harness.istio.traffic_api`): the
        running mesh's, as its plan records it; before ``up``, the settings'."""
        if self.state is State.RUNNING:
            return str(self.plan.get("traffic_api") or self.settings.traffic_api)
        return self.settings.traffic_api

    def _proxy_count(self) -> int:
        return len(self.plan["replicas"]) + (1 if self.plan.get("gateway") else 0)

    # ---- upgrades -----------------------------------------------------------------------
    def upgrade_step(self, op: str, *, timeout: float = 300, **args: Any) -> dict[str, Any]:
        """One supervisor upgrade step (``istiod-replace``, ``istiod-add``, ``istiod-remove``,
        ``proxy-upgrade``); returns what it measured and refreshes the plan (ports move)."""
        self._require_running()
        reply = self._control({"op": op, **args}, timeout=timeout)
        self._plan = reply["plan"]
        return {k: v for k, v in reply.items() if k not in ("ok", "plan")}

    def reload_plan(self) -> None:
        """Re-read the plan the supervisor last wrote. Another process attached to this mesh (the
        suites an upgrade check runs) may have restarted proxies since (new admin ports); this
        object's plan only follows the steps it asked for itself."""
        self._require_running()
        self._plan = json.loads(self.layout.plan.read_text())

    def control_planes(self) -> dict[str, dict[str, Any]]:
        """Revision -> {istio, url, ports...} of every running istiod."""
        planes = self.plan.get("control_planes")
        return dict(planes) if planes else {"default": {**self.plan["istiod"], "istio": self.plan["istio"]}}

    def proxy_versions(self) -> dict[str, dict[str, Any]]:
        """``ns.pod`` -> {istio, revision, generation, admin} of every proxy."""
        return dict(self.plan.get("proxies") or {})

    # ---- config -------------------------------------------------------------------------
    def _load(self, paths: Sequence[Path]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The configuration (Istio and Gateway API objects) and the workload objects
        (Deployments, ServiceAccounts) of ``paths``."""
        from harness.backends.local.cluster import namespaced
        from harness.backends.local.topology import is_config
        from harness.istio.loader import load_paths

        docs = [namespaced(d.body) for d in load_paths(list(paths))]
        kube = [d for d in docs if not is_config(d)]
        other = [
            f"{d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
            for d in kube
            if d.get("kind") not in (*kube_objects.WORKLOAD_KINDS, "Service")
        ]
        if other:
            from harness.errors import UnsupportedFeature

            raise UnsupportedFeature(
                "the local backend applies Istio and Gateway API objects, ServiceAccounts, a "
                f"Deployment's ServiceAccount and new Services only, not {', '.join(other)}. "
                "Fix: change workloads in manifests/ and restart the mesh, or use --backend kind"
            )
        return [d for d in docs if is_config(d)], kube

    # ---- Services added to the running mesh ----------------------------------------------
    @property
    def _added_services(self) -> Path:
        """The Services ``apply`` added (the manifests' ones are fixed at start-up)."""
        return self.layout.root / "services"

    def _cluster_services(self) -> dict[tuple[str, str], dict[str, Any]]:
        out = {}
        for f in sorted(self.layout.kube.glob("Service.*.yaml")):
            body = yamlio.load(f.read_text())
            if isinstance(body, dict):
                meta = body.get("metadata") or {}
                out[(str(meta.get("namespace") or "default"), str(meta.get("name")))] = body
        return out

    def _apply_services(self, services: Sequence[Mapping[str, Any]]) -> float:
        """New Services go into istiod's cluster with a ClusterIP of the mesh's block (the
        EndpointSlice reconciler selects their pods); returns once istiod's registry lists each
        with an endpoint per pod it selects and every proxy ACKed. A manifests' Service cannot
        change here: the mesh's listeners were bound for it at start-up."""
        from harness.backends.local import cluster
        from harness.errors import UnsupportedFeature
        from harness.istio.model import fqdn

        existing = self._cluster_services()
        block = int(self.plan["block"])
        prefix = f"127.{block}.5."
        taken = [
            int(ip.removeprefix(prefix))
            for b in existing.values()
            if (ip := str((b.get("spec") or {}).get("clusterIP") or "")).startswith(prefix)
        ]
        wanted: dict[str, int] = {}
        self._added_services.mkdir(exist_ok=True)
        t0 = time.monotonic()
        for svc in services:
            meta = svc.get("metadata") or {}
            key = (str(meta.get("namespace") or "default"), str(meta.get("name")))
            record = self._added_services / object_filename(svc)
            current = existing.get(key)
            if current is not None and not record.is_file():
                raise UnsupportedFeature(
                    f"Service {key[0]}/{key[1]} is the manifests': the local backend adds Services to a "
                    "running mesh but cannot change its own. Fix: change manifests/ and restart the mesh"
                )
            if current is not None:
                ip = str((current.get("spec") or {}).get("clusterIP"))
            else:
                ip = cluster.cluster_ip(block, max(taken, default=0) + 1)
                taken.append(int(ip.removeprefix(prefix)))
            stored = cluster.service(svc, ip)
            if stored == current:
                continue
            self._write_cluster(stored)
            record.write_text(yamlio.dump(dict(svc), sort_keys=False))
            selector = dict((stored.get("spec") or {}).get("selector") or {})
            wanted[fqdn(key[1], key[0])] = sum(
                1
                for w in self.workloads()
                if w.namespace == key[0] and w.role != "gateway" and selector
                if all(w.labels.get(k) == v for k, v in selector.items())
            )
        if wanted:
            self._sync_cluster()
            self._wait_registry(wanted)
        return time.monotonic() - t0 if wanted else 0.0

    def _delete_services(self, services: Sequence[Mapping[str, Any]]) -> float:
        from harness.istio.model import fqdn

        gone: dict[str, int | None] = {}
        for svc in services:
            record = self._added_services / object_filename(svc)
            if not record.is_file():
                raise StateError(f"Service {object_filename(svc)} was not added by apply, cannot delete it")
            record.unlink()
            (self.layout.kube / object_filename(svc)).unlink(missing_ok=True)
            meta = svc.get("metadata") or {}
            gone[fqdn(str(meta.get("name")), str(meta.get("namespace") or "default"))] = None
        if not gone:
            return 0.0
        t0 = time.monotonic()
        self._sync_cluster()
        self._wait_registry(gone)
        return time.monotonic() - t0

    def _wait_registry(self, hosts: Mapping[str, int | None]) -> None:
        """Until istiod's registry lists each host with that many endpoints (None: no longer lists
        it), and every proxy ACKed what it pushed for them."""
        istiod = self.plan["istiod"]

        def check() -> bool:
            listed = {s.get("hostname") for s in self._http.get(f"{istiod['url']}/debug/registryz").json()}
            shards = self._http.get(f"{istiod['url']}/debug/endpointShardz").json() or {}
            for host, endpoints in hosts.items():
                if endpoints is None:
                    if host in listed:
                        check.last = f"{host} still in istiod's registry"  # type: ignore[attr-defined]
                        return False
                    continue
                held = sum(
                    len(eps or [])
                    for by_ns in (shards.get(host) or {}).values()
                    for eps in ((by_ns or {}).get("Shards") or {}).values()
                )
                if host not in listed or held < endpoints:
                    check.last = f"{host}: listed {host in listed}, {held}/{endpoints} endpoints"  # type: ignore[attr-defined]
                    return False
            synced, check.last = xds.all_synced(self._http, istiod["url"], self._proxy_count())  # type: ignore[attr-defined]
            return synced

        import httpx

        wait.until(
            check,
            what=f"istiod's registry to hold {', '.join(f'{h} ({n} endpoints)' if n is not None else f'no {h}' for h, n in hosts.items())} and every proxy to ACK",
            timeout=60,
            interval=0.05,
            retry_on=(httpx.HTTPError,),
            converge=2,
        )

    def _sync_cluster(self) -> dict[str, Any]:
        """Make every istiod's in-memory cluster hold the state dir's objects now; returns what the
        primary istiod's cluster reported (created, updated, deleted, the stored versions)."""
        primary = self.plan["istiod"].get("kube_api_url")
        report: dict[str, Any] = {}
        for plane in self.control_planes().values():
            if plane.get("kube_api_url"):
                got = xds.sync_cluster(self._http, plane["kube_api_url"])
                report = got if plane["kube_api_url"] == primary else report or got
        return report

    def _write_cluster(self, obj: dict[str, Any]) -> None:
        target = self.layout.kube / object_filename(obj)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(yamlio.dump(obj, sort_keys=False))
        tmp.replace(target)

    def _running_workloads(self) -> dict[kube_objects.Key, dict[str, Any]]:
        out = {}
        for f in sorted(self.layout.workloads.glob("*.yaml")):
            body = yamlio.load(f.read_text())
            if isinstance(body, dict):
                out[kube_objects.key_of(body)] = body
        return out

    def _write_workload(self, body: dict[str, Any]) -> None:
        obj = {
            **body,
            "metadata": {**(body.get("metadata") or {}), "namespace": kube_objects.key_of(body)[1]},
        }
        target = self.layout.workloads / object_filename(obj)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(yamlio.dump(obj, sort_keys=False))
        tmp.replace(target)

    def _apply_workloads(self, objs: Sequence[dict[str, Any]]) -> float:
        """ServiceAccounts are recorded; a Deployment's new ServiceAccount restarts its replicas'
        proxies as that ServiceAccount (see :mod:`harness.backends.local.workloads`)."""
        change = kube_objects.plan_apply(self._running_workloads(), objs)
        for sa in change.service_accounts:
            self._write_workload(dict(sa))
            self._write_cluster(dict(sa))
        if change.service_accounts:
            self._sync_cluster()
        t0 = time.monotonic()
        for r in change.rollouts:
            reply = self._control(
                {
                    "op": "set-service-account",
                    "namespace": r.namespace,
                    "deployment": r.deployment,
                    "service_account": r.service_account,
                },
                timeout=300,
            )
            self._plan = reply["plan"]
        for d in change.deployments:
            self._write_workload(dict(d))
        return time.monotonic() - t0

    def _write_and_wait(
        self, change: Callable[[], None], objs: Sequence[Mapping[str, Any]], *, deleted: bool
    ) -> float:
        """Write (or remove) ``objs``, store them in istiod's cluster, and wait until istiod holds
        them at their stored versions (or no longer holds them), pushed what they change and every
        proxy ACKed it. An Istio object always makes istiod push; a Gateway API object only when
        its translation changes some proxy's config (an HTTPRoute of a missing Gateway does not)."""
        from harness.backends.local.topology import is_istio

        istiod = self.plan["istiod"]
        before = xds.push_mark(self._http, istiod["monitoring_url"])
        change()
        versions = dict(self._sync_cluster().get("versions") or {})
        kube_api = istiod.get("kube_api_url")
        for o in () if deleted or not kube_api else objs:
            if xds.cluster_name(o) not in versions:  # the launcher's file watcher stored it before our sync
                versions[xds.cluster_name(o)] = xds.stored_version(self._http, kube_api, o)
        expect = {xds.config_key(o): None if deleted else versions.get(xds.cluster_name(o), "") for o in objs}
        return xds.wait_propagated(
            self._http,
            istiod["url"],
            istiod["monitoring_url"],
            before,
            self._proxy_count(),
            timeout=60,
            expect=expect,
            require_push=any(is_istio(o) for o in objs),
        )

    def apply(self, paths: Sequence[Path]) -> float:
        config, kube = self._load(paths)
        services = [o for o in kube if o.get("kind") == "Service"]
        kube = [o for o in kube if o.get("kind") != "Service"]
        seconds = self._apply_services(services) if services else 0.0  # before the routes naming them
        seconds += self._apply_workloads(kube) if kube else 0.0
        changes: list[tuple[Path, str, dict[str, Any]]] = []
        for obj in config:
            target = self.layout.config / object_filename(obj)
            text = yamlio.dump(obj, sort_keys=False)
            if not target.is_file() or target.read_text() != text:
                changes.append((target, text, obj))
        if not changes:
            return seconds  # nothing changed: istiod will push nothing, and every proxy already has it

        def write() -> None:
            for target, text, _ in changes:
                tmp = target.with_suffix(".tmp")
                tmp.write_text(text)
                tmp.replace(target)

        return seconds + self._write_and_wait(write, [o for _, _, o in changes], deleted=False)

    def delete(self, paths: Sequence[Path]) -> float:
        docs, kube = self._load(paths)
        services = [o for o in kube if o.get("kind") == "Service"]
        kube = [o for o in kube if o.get("kind") != "Service"]
        seconds = self._delete_config_and_accounts(docs, kube)
        return seconds + (self._delete_services(services) if services else 0.0)  # after the routes

    def _delete_config_and_accounts(self, docs: list[dict[str, Any]], kube: list[dict[str, Any]]) -> float:
        accounts = kube_objects.plan_delete(self._running_workloads(), kube)
        targets = [self.layout.config / object_filename(o) for o in docs]
        missing = [t.name for t in targets if not t.is_file()]
        if missing:
            raise StateError(f"not applied, cannot delete: {', '.join(missing)}")
        for kind, ns, name in accounts:  # nothing runs on them: no process to change, no push
            sa = {"apiVersion": "v1", "kind": kind, "metadata": {"namespace": ns, "name": name}}
            (self.layout.workloads / object_filename(sa)).unlink()
            (self.layout.kube / object_filename(sa)).unlink(missing_ok=True)
        if accounts:
            self._sync_cluster()
        if not targets:
            return 0.0

        def remove() -> None:
            for t in targets:
                t.unlink()

        return self._write_and_wait(remove, docs, deleted=True)

    @contextlib.contextmanager
    def with_workloads(self, paths: Sequence[Path], workdir: Path) -> Iterator[LocalBackend]:
        """Workloads are fixed at start-up here: a second mesh from this one's manifests plus
        ``paths`` (copied after them into ``workdir``/manifests; state in ``workdir``/state),
        torn down on exit."""
        manifests = workdir / "manifests"
        manifests.mkdir(parents=True)
        source = self.settings.manifests
        for f in sorted(source.glob("*.y*ml")) if source.is_dir() else [source]:
            shutil.copy(f, manifests / f.name)
        for p in paths:
            shutil.copy(p, manifests / f"90-{p.name}")
        state = workdir / "state"
        state.mkdir()
        changes = {"state_dir": state, "manifests": manifests, "traffic_api": self.traffic_api}
        with LocalBackend(self.settings.with_overrides(**changes)) as mesh:
            mesh.up()
            yield mesh

    def config_dir(self) -> Path | None:
        return self.layout.config

    # ---- workloads ----------------------------------------------------------------------
    def workloads(self) -> Sequence[Workload]:
        out = []
        for r in self.plan["replicas"]:
            port = r["target_ports"][0] if r["target_ports"] else 0
            out.append(
                Workload(
                    name=r["pod"],
                    namespace=r["namespace"],
                    deployment=r["deployment"],
                    labels=r["labels"],
                    address=r["address"],
                    app_url=f"http://{r['address']}:{r['app_port']}",
                    admin_url=f"http://{r['address']}:{r['admin_port']}",
                    sidecar_url=f"http://{r['address']}:{port}" if port else "",
                    proxy_admin_url=f"http://127.0.0.1:{r['ports']['admin']}",
                    service_account=r["service_account"],
                    role=r["role"],
                )
            )
        gw = self.plan.get("gateway")
        if gw:
            out.append(
                Workload(
                    name=gw["pod"],
                    namespace=gw["namespace"],
                    deployment="istio-ingressgateway",
                    labels=gw["labels"],
                    address=gw["address"],
                    app_url="",
                    admin_url="",
                    sidecar_url="",
                    proxy_admin_url=f"http://127.0.0.1:{gw['ports']['admin']}",
                    service_account=gw["service_account"],
                    role="gateway",
                )
            )
        return out

    def workload(self, ref: str) -> Workload:
        return find_workload(self.workloads(), ref)

    def ingress_url(self) -> str:
        gw = self.plan.get("gateway")
        if not gw:
            raise StateError("the manifests define no Gateway, so there is no ingress")
        port = gw["port_map"].get("80") or next(iter(gw["port_map"].values()))
        return f"http://127.0.0.1:{port}"

    def service_url(self, service: str, namespace: str, port: int) -> str:
        return f"http://{service}.{namespace}.svc.cluster.local:{port}"

    def trace_query_url(self) -> str | None:
        """Jaeger's query API when the manifests deploy Jaeger (the supervisor runs it)."""
        jaeger = self.plan.get("jaeger")
        return str(jaeger["query_url"]) if jaeger else None

    def trace_hint(self) -> str:
        """Where to look when Jaeger does not answer: its log file."""
        jaeger = self.plan.get("jaeger")
        return f"Jaeger's log {jaeger['log']}" if jaeger else str(self.plan.get("tracing_off") or "")

    def load_runner(self, config: LoadConfig, *, workdir: Path) -> LocustRun:
        """Locust as a subprocess on this machine, to this mesh's ingress and client workload."""
        from harness.load.config import LoadTarget
        from harness.load.local import LocustRun

        return LocustRun(config, LoadTarget.from_mesh(self), workdir=workdir)

    # ---- faults and chaos ---------------------------------------------------------------
    def inject_fault(self, pod: str, fault: AppFault) -> dict[str, Any]:
        """``via`` sidecar: an EnvoyFilter selecting the replica's own label (every replica's proxy
        carries :data:`~harness.mesh.REPLICA_LABEL` from its start); ``via`` app: the sample's
        ``/admin/fault``. Returns the evidence (see :mod:`harness.sidecar_fault`)."""
        from harness import sidecar_fault

        w = self.workload(pod)
        if fault.via == "sidecar":
            return sidecar_fault.inject(self, self._http, w, fault)
        if not w.admin_url:
            raise UserError(f"{w.ref} has no admin endpoint: use the sidecar fault (via sidecar)")
        body = {"status": fault.status, "rate": fault.rate, "delay_ms": fault.delay_ms}
        r = self._http.post(f"{w.admin_url}/admin/fault", json=body)
        if r.status_code != 200:
            raise BackendError(f"fault on {w.ref} refused: {r.status_code} {r.text}")
        return {"pod": w.ref, "via": "app", "admin": f"{w.admin_url}/admin/fault"}

    def clear_fault(self, pod: str) -> None:
        """Remove both kinds of replica fault (whichever was injected; a no-op for the other)."""
        from harness import sidecar_fault

        w = self.workload(pod)
        sidecar_fault.clear(self, w, self._http)
        if w.admin_url:
            r = self._http.delete(f"{w.admin_url}/admin/fault")
            if r.status_code != 404:  # 404: the app has no fault hook (ADMIN_FAULT=false), nothing to clear
                r.raise_for_status()

    def set_cert_ttl(self, pod: str, ttl: str) -> dict[str, Any]:
        """The supervisor replaces the replica's proxy, without a gap, by one whose pilot-agent has
        ``SECRET_TTL`` = ``ttl`` ("" for its default); the plan follows (new admin port)."""
        from harness.mesh import cert_ttl_seconds

        w = self.workload(pod)
        if not w.proxy_admin_url:
            raise UserError(f"{w.ref} is not in the mesh (no sidecar): it holds no workload certificate")
        if ttl:
            cert_ttl_seconds(ttl)
        return self.upgrade_step("proxy-cert-ttl", proxy=f"{w.namespace}.{w.name}", ttl=ttl)

    def _loss_rule(self, pod: str, probability: float = 0.0) -> tuple[Any, list[str]]:
        from harness import netfault

        w = self.workload(pod)
        if w.role == "gateway":
            raise UserError(f"network loss: {w.ref} is the ingress gateway. Fix: name an app replica")
        block = int(self.plan["block"])
        rule = netfault.LossRule(
            chain=netfault.local_chain(block),
            address=w.address,
            probability=probability,
            comment=f"meshproof loss {w.ref}",
            not_source=netfault.SIDECAR_TO_APP_SOURCE,
        )
        return rule, ["-d", f"127.{block}.0.0/16"]

    def set_network_loss(self, pod: str, probability: float) -> dict[str, Any]:
        """An iptables rule in the host's namespace, in this mesh's own chain (see
        :mod:`harness.netfault`); ``down`` removes the chain whatever it still holds."""
        from harness import netfault

        rule, jump = self._loss_rule(pod, probability)
        ipt, run = netfault.iptables(), netfault.host_runner()
        if probability <= 0:
            removed = netfault.remove(run, ipt, rule.chain, rule.comment, jump)
            return {"pod": pod, "removed": removed}
        netfault.install(run, ipt, rule, jump)
        return {"pod": pod, "chain": rule.chain, "rule": " ".join(rule.spec())}

    def network_dropped(self, pod: str) -> int | None:
        from harness import netfault

        rule, _ = self._loss_rule(pod)
        return netfault.dropped(netfault.host_runner(), netfault.iptables(), rule.chain, rule.comment)

    def _remove_loss_chain(self) -> None:
        """``down``: this mesh's loss chain goes, whatever it holds (Ctrl-C, a killed chaos run)."""
        from harness import netfault

        try:
            block = int(json.loads(self.layout.plan.read_text())["block"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        ipt = shutil.which("iptables")
        if ipt:
            netfault.remove_chain(
                netfault.host_runner(), ipt, netfault.local_chain(block), ["-d", f"127.{block}.0.0/16"]
            )

    def kill(self, pod: str) -> None:
        w = self.workload(pod)
        self._control({"op": "kill", "pod": w.ref})

    def restart(self, pod: str) -> None:
        w = self.workload(pod)
        self._control({"op": "restart", "pod": w.ref})

        import httpx

        def healthy() -> bool:
            try:
                return self._http.get(f"{w.admin_url}/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait.until(healthy, what=f"{w.ref} healthy after restart", timeout=30, interval=0.1)

    def lost(self) -> str | None:
        if self._sup is None or self._sup.poll() is None:
            return None
        return (
            f"the mesh supervisor exited (code {self._sup.returncode}); its log: "
            f"{self.layout.log('supervisor')}\n{proc.tail(self.layout.log('supervisor'), 15)}"
        )

    def stop_control_plane(self) -> None:
        self._control({"op": "istiod-stop"})

    def start_control_plane(self) -> None:
        self._control({"op": "istiod-start"})
        ready = f"{self.plan['istiod']['url']}/ready"
        import httpx

        def up() -> bool:
            try:
                return self._http.get(ready).status_code == 200
            except httpx.HTTPError:
                return False

        wait.until(
            up, what=f"istiod ready again ({ready})", timeout=self.settings.ready_timeout, interval=0.1
        )
        self.wait_synced(timeout=self.settings.ready_timeout)

    def control_plane_serving(self) -> list[str]:
        """Every istiod (each revision) whose xDS gRPC port on loopback still accepts a TCP
        connection: the port the proxies' pilot-agents dial. A refused connection means no process
        listens there any more (the supervisor stops istiod by ending its process)."""
        import socket

        serving = []
        for revision, cp in sorted(self.control_planes().items()):
            port = int(cp.get("grpc") or 0)
            if not port:
                continue
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2.0):
                    pass
            except OSError:
                continue
            serving.append(f"istiod ({revision}) accepts connections on its xDS port 127.0.0.1:{port}")
        return serving

    def wait_synced(self, timeout: float) -> float:
        return xds.wait_synced(self._http, self.plan["istiod"]["url"], self._proxy_count(), timeout=timeout)

    def istio_objects(self) -> list[dict[str, Any]]:
        """The user's Istio objects and the Sidecars the mesh binds its listeners with."""
        from harness.backends.local.topology import is_istio

        out = []
        for f in sorted([*self.layout.config.glob("*.yaml"), *self.layout.kube.glob("*.yaml")]):
            body = yamlio.load(f.read_text())
            if isinstance(body, dict) and is_istio(body):
                out.append(body)
        return out

    def gateway_api_objects(self) -> list[dict[str, Any]]:
        """The Gateway API objects istiod holds, with the status its controllers wrote."""
        from harness.backends.local.cluster import GATEWAY_API_RESOURCES

        url = self.plan["istiod"].get("kube_api_url")
        if not url:
            return []
        import httpx

        out: list[dict[str, Any]] = []
        for resource in GATEWAY_API_RESOURCES:
            try:
                r = self._http.get(f"{url}/apis/{resource}")
                r.raise_for_status()
            except httpx.HTTPError as e:
                raise BackendError(
                    f"istiod's cluster at {url} does not answer ({e}); is istiod running?"
                ) from e
            out.extend(r.json().get("items") or [])
        return out

    # ---- evidence -----------------------------------------------------------------------
    def ejections(self) -> dict[str, dict[str, list[str]]]:
        """Per calling proxy, per upstream cluster, the hosts outlier detection has ejected."""
        return envoy.ejections(self._http, self.workloads())

    def diagnostics(self, dest: Path) -> list[Path]:
        dest.mkdir(parents=True, exist_ok=True)
        import httpx

        written = []
        for w in self.workloads():
            for what in ("config_dump", "clusters", "stats"):
                try:
                    text = self._http.get(f"{w.proxy_admin_url}/{what}").text
                except httpx.HTTPError as e:
                    text = f"unavailable: {e}"
                p = dest / f"{w.name}.{what}.txt"
                p.write_text(text)
                written.append(p)
        for log in sorted(self.layout.logs.glob("*.log")):
            p = dest / log.name
            p.write_text(proc.tail(log, 400))
            written.append(p)
        return written


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
