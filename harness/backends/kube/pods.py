"""Pure helpers over Kubernetes Pod, Service and Event dicts (what the kube backend reads), unit-tested."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

SIDECAR = "istio-proxy"


def selects(selector: Mapping[str, Any], labels: Mapping[str, Any]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def deployment_of(pod: Mapping[str, Any]) -> str:
    """The Deployment that owns a pod: its ReplicaSet's name without the pod-template-hash suffix."""
    meta = pod.get("metadata") or {}
    pth = str((meta.get("labels") or {}).get("pod-template-hash", ""))
    for o in meta.get("ownerReferences") or []:
        if o.get("kind") == "ReplicaSet":
            name = str(o.get("name", ""))
            return name[: -len(pth) - 1] if pth and name.endswith("-" + pth) else name
    return str(meta.get("name", ""))


def has_sidecar(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return any(
        c.get("name") == SIDECAR
        for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    )


def container_ports(pod: Mapping[str, Any]) -> dict[str, int]:
    """Ports of the app containers (not the sidecar): name (or the number as text) -> port."""
    out: dict[str, int] = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        if c.get("name") == SIDECAR:
            continue
        for p in c.get("ports") or []:
            if p.get("containerPort") is not None:
                out.setdefault(str(p.get("name") or p["containerPort"]), int(p["containerPort"]))
    return out


def is_gateway(pod: Mapping[str, Any]) -> bool:
    """Istio's ingress gateway (``istio: ingressgateway``), or one of meshproof's own (its label
    ``meshproof.dev/ingress``: on existing, and each pytest-xdist worker's copy)."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return labels.get("istio") == "ingressgateway" or "meshproof.dev/ingress" in labels


def pod_ready(pod: Mapping[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def live(pod: Mapping[str, Any]) -> bool:
    """Running, with an IP, and not being deleted."""
    meta, st = pod.get("metadata") or {}, pod.get("status") or {}
    return not meta.get("deletionTimestamp") and st.get("phase") == "Running" and bool(st.get("podIP"))


def service_target_port(services: Iterable[Mapping[str, Any]], pod: Mapping[str, Any]) -> int:
    """The first target port of a Service that selects the pod (0 when none does)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    ports = container_ports(pod)
    for s in services:
        if ((s.get("metadata") or {}).get("namespace") or "default") != meta.get("namespace"):
            continue
        spec = s.get("spec") or {}
        if not selects(spec.get("selector") or {}, labels):
            continue
        for p in spec.get("ports") or []:
            t = p.get("targetPort", p.get("port"))
            if isinstance(t, int):
                return t
            if isinstance(t, str) and t.isdigit():
                return int(t)
            if isinstance(t, str) and t in ports:
                return ports[t]
    return 0


def name_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def namespace_of(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace", ""))


def container_ports_all(pod: Mapping[str, Any]) -> dict[str, int]:
    """Every container's named ports, the sidecar's included (gateways run only the proxy)."""
    out: dict[str, int] = {}
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("containerPort") is not None:
                out.setdefault(str(p.get("name") or p["containerPort"]), int(p["containerPort"]))
    return out


def format_events(events: Sequence[Mapping[str, Any]]) -> str:
    """Kubernetes Events as lines, oldest first: time, type, object, reason, message."""

    def when(e: Mapping[str, Any]) -> str:
        return str(
            e.get("lastTimestamp")
            or e.get("eventTime")
            or (e.get("metadata") or {}).get("creationTimestamp")
            or ""
        )

    lines = []
    for e in sorted(events, key=when):
        obj = e.get("involvedObject") or {}
        lines.append(
            f"{when(e)} {e.get('type', '')} {obj.get('kind', '')}/{obj.get('name', '')} "
            f"{e.get('reason', '')} x{e.get('count') or 1}: {e.get('message', '')}".rstrip()
        )
    return "\n".join(lines) + ("\n" if lines else "")
