"""Verbs that start, inspect and stop a mesh: ``up``, ``status``, ``down``."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import signal
from collections.abc import Iterator, Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any

from rich.text import Text

from harness import wait
from harness.cli.output import Output, row, table
from harness.errors import MeshproofError, StateError, UserError
from harness.settings import Settings

if TYPE_CHECKING:
    from harness.backends.base import Backend


def cmd_up(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.backends import create

    backend = create(settings)
    if args.detach:
        with progress(out, backend, "bringing the mesh up"):
            backend.up(detach=True)
        print_status(out, status_doc(backend, settings))
        out.print(
            f"\nThe mesh runs in the background (state dir {settings.state_dir}). "
            f"Try `meshproof send -n 400`; stop it with `meshproof down --state {settings.state_dir}`."
        )
        return 0
    with backend:
        with progress(out, backend, "bringing the mesh up"):
            backend.up()
        print_status(out, status_doc(backend, settings))
        out.print("\nThe mesh is up. Press Ctrl-C to take it down.")
        try:
            why = _wait_for_interrupt(backend)
        except KeyboardInterrupt:
            out.print("taking the mesh down ...")
            why = None
    if why is not None:  # it went away on its own: say so, and fail
        raise StateError(f"the mesh stopped by itself: {why}")
    out.print("The mesh is down.")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.backends import attach

    doc = status_doc(attach(settings), settings)
    if args.json:
        out.json(doc)
    else:
        print_status(out, doc)
    return 0


def cmd_down(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.backends import attach, create

    marker = settings.state_dir / "backend.json"
    try:
        backend = attach(settings)
    except StateError as e:
        if not marker.is_file():
            out.print(f"no mesh is running with state dir {settings.state_dir}; nothing to take down")
            return 0
        # Recorded but not running any more (crashed, killed): a fresh instance cleans up what is left.
        out.note(str(e))
        recorded = str(json.loads(marker.read_text()).get("backend", settings.backend))
        backend = create(settings.with_overrides(backend=recorded))
    backend.down()
    out.print(f"mesh in {settings.state_dir} is down")
    return 0


def status_doc(backend: Backend, settings: Settings) -> dict[str, Any]:
    workloads = [
        {
            "name": w.name,
            "namespace": w.namespace,
            "deployment": w.deployment,
            "version": w.version,
            "address": w.address,
            "ready": w.ready,
            "role": w.role,
            "app_url": w.app_url,
            "proxy_admin_url": w.proxy_admin_url,
        }
        for w in backend.workloads()
    ]
    try:
        ingress: str | None = backend.ingress_url()
    except UserError:
        ingress = None
    doc: dict[str, Any] = {
        "backend": backend.name,
        "state_dir": str(settings.state_dir),
        "traffic_api": backend.traffic_api,
        "ingress_url": ingress,
        "trace_query_url": backend.trace_query_url(),
        "tracing_note": backend.trace_hint(),
        "workloads": workloads,
        "ejections": None,
        "ejections_by_cluster": None,
        "gateway_api": None,
    }
    try:
        doc["gateway_api"] = gateway_api_status(backend.gateway_api_objects())
    except MeshproofError as e:  # the control plane is down: the rest of the status still holds
        doc["gateway_api_note"] = str(e)
    ejections = getattr(backend, "ejections", None)
    if callable(ejections):
        by_proxy: dict[str, list[str]] = {}
        by_cluster: dict[str, dict[str, list[str]]] = {}
        for proxy, hosts in dict(ejections()).items():
            if isinstance(hosts, Mapping):
                by_cluster[str(proxy)] = {str(c): sorted(map(str, hs)) for c, hs in hosts.items() if hs}
                by_proxy[str(proxy)] = sorted({str(h) for hs in hosts.values() for h in hs})
            else:
                by_proxy[str(proxy)] = sorted({str(h) for h in hosts})
        doc["ejections"] = by_proxy
        doc["ejections_by_cluster"] = by_cluster or None
    return doc


def gateway_api_status(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each Gateway API object with Istio's conditions, verbatim: a Gateway's or GatewayClass's
    ``status.conditions``, a route's per parent (``status.parents[].conditions``)."""
    out = []
    for o in objects:
        meta, status = o.get("metadata") or {}, o.get("status") or {}
        entry: dict[str, Any] = {
            "kind": o.get("kind"),
            "namespace": meta.get("namespace", ""),
            "name": meta.get("name"),
            "generation": meta.get("generation"),
            "conditions": list(status.get("conditions") or []),
        }
        if "parents" in status:  # a route's status (absent until Istio wrote one)
            entry["parents"] = [
                {"parentRef": p.get("parentRef"), "conditions": list(p.get("conditions") or [])}
                for p in status.get("parents") or []
            ]
        out.append(entry)
    return out


def _conditions_text(conditions: list[dict[str, Any]]) -> str:
    return ", ".join(
        f"{c.get('type')}={c.get('status')}"
        + ("" if c.get("status") == "True" else f" ({c.get('reason')}: {c.get('message')})")
        for c in conditions
    )


def print_status(out: Output, doc: Mapping[str, Any]) -> None:
    t = table("pod", "namespace", "deployment", "version", "role", "address", "ready", "proxy admin")
    for w in doc["workloads"]:
        row(
            t,
            w["name"],
            w["namespace"],
            w["deployment"],
            w["version"],
            w["role"],
            w["address"],
            "yes" if w["ready"] else "NO",
            w["proxy_admin_url"],
        )
    routes = {"istio": "VirtualServices", "gateway-api": "HTTPRoutes"}.get(str(doc.get("traffic_api")), "")
    out.print(
        f"backend {doc['backend']} · state dir {doc['state_dir']} · traffic API {doc.get('traffic_api')}"
        + (f" (the manifests' {routes})" if routes else ""),
        style="bold",
    )
    out.print(t)
    out.print(f"ingress: {doc['ingress_url'] or '(no gateway)'}")
    note = doc.get("tracing_note") or ""
    if doc["trace_query_url"]:
        out.print(f"tracing: Jaeger query API {doc['trace_query_url']} (`meshproof traces`)")
    else:
        out.print(f"tracing: not deployed{f' ({note})' if note else ''}")
    gateway_api = [g for g in doc.get("gateway_api") or [] if g["kind"] != "GatewayClass"]
    if doc.get("gateway_api_note"):
        out.print(f"Gateway API: not readable ({doc['gateway_api_note']})")
    if gateway_api:
        gtable = table("Gateway API", "namespace", "name", "conditions (Istio's)")
        for g in gateway_api:
            parents = g.get("parents")
            text = (
                "; ".join(
                    f"{(p.get('parentRef') or {}).get('name')}: {_conditions_text(p['conditions'])}"
                    for p in parents
                )
                if parents is not None
                else _conditions_text(g["conditions"])
            )
            if not text:
                text = "(Istio lists no parent)" if parents is not None else "(no status yet)"
            row(gtable, g["kind"], g["namespace"], g["name"], text)
        out.print(gtable)
    ejections = doc.get("ejections")
    if ejections is None:
        out.print("ejections: not reported by this backend")
        return
    ejected = {proxy: hosts for proxy, hosts in ejections.items() if hosts}
    if not ejected:
        out.print("ejections: no proxy has ejected any host")
        return
    out.print("outlier ejections", style="bold")
    etable = table("calling proxy", "ejected hosts")
    for proxy, hosts in ejected.items():
        row(etable, proxy, ", ".join(hosts))
    out.print(etable)


@contextlib.contextmanager
def progress(out: Output, backend: Any, title: str) -> Iterator[None]:
    """Show a backend's progress messages while it works (for backends that report progress)."""
    with out.err.status(title) as status:
        if hasattr(backend, "progress"):

            def show(message: str) -> None:
                status.update(Text(message))
                out.note(message)

            # TODO(backends): let harness.backends.create take progress= instead of setting it here.
            backend.progress = show
        yield


def _wait_for_interrupt(backend: Backend, *, interval: float = 1.0) -> str:
    """Block until Ctrl-C or SIGTERM (both arrive here as KeyboardInterrupt), or until the mesh is
    gone on its own (its supervisor crashed or was killed): then return why (:meth:`Backend.lost`)."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        # no deadline: the user ends it (a signal interrupts the poll's sleep at once)
        return wait.until(
            backend.lost, what="Ctrl-C, or the mesh to stop", timeout=math.inf, interval=interval
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
