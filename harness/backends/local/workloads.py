"""Which changes to its Kubernetes objects the local mesh makes, and what each one means (pure, no I/O).

The local mesh runs the manifests' Deployments as processes (see :mod:`topology`), so it cannot
apply an arbitrary Deployment edit. It can apply the one that changes who a workload *is*: a new
``serviceAccountName`` in the pod template. Kubernetes then replaces the pods, and the new ones
get tokens of the new ServiceAccount, so istiod issues them certificates of the new identity;
the local mesh replaces each replica's proxy in the same way (the supervisor's
``set-service-account``). ServiceAccounts are recorded, and a Deployment may only name one that
exists (or ``default``), because Kubernetes would not start its pods otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import StateError, UnsupportedFeature, UserError

WORKLOAD_KINDS = ("Deployment", "ServiceAccount")
Key = tuple[str, str, str]  # (kind, namespace, name)


def key_of(body: Mapping[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return (str(body.get("kind")), str(meta.get("namespace") or "default"), str(meta.get("name", "")))


def _pod_spec(body: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = ((body.get("spec") or {}).get("template") or {}).get("spec")
    return spec if isinstance(spec, Mapping) else {}


def service_account(deployment: Mapping[str, Any]) -> str:
    """The ServiceAccount a Deployment's pods run as (``serviceAccountName``, the deprecated
    ``serviceAccount``, else ``default``), as Kubernetes reads it."""
    spec = _pod_spec(deployment)
    for name in ("serviceAccountName", "serviceAccount"):
        value = spec.get(name)
        if isinstance(value, str) and value:
            return value
    return "default"


def _without_service_account(deployment: Mapping[str, Any]) -> Any:
    spec = dict(deployment.get("spec") or {})
    template = dict(spec.get("template") or {})
    pod = {
        k: v for k, v in _pod_spec(deployment).items() if k not in ("serviceAccountName", "serviceAccount")
    }
    template["spec"] = pod
    spec["template"] = template
    return spec


def differing_paths(a: Any, b: Any, prefix: str = "spec") -> list[str]:
    """Dotted paths where ``a`` and ``b`` differ (mappings compared key by key, anything else whole)."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[str] = []
        for k in sorted(set(a) | set(b), key=str):
            out += differing_paths(a.get(k), b.get(k), f"{prefix}.{k}")
        return out
    return [] if a == b else [prefix]


@dataclass(frozen=True)
class Rollout:
    """Deployment ``namespace/deployment`` is to run as ``service_account`` (was ``previous``)."""

    namespace: str
    deployment: str
    service_account: str
    previous: str


@dataclass(frozen=True)
class WorkloadChange:
    service_accounts: tuple[Mapping[str, Any], ...] = ()  # to record (new or re-applied)
    rollouts: tuple[Rollout, ...] = ()
    deployments: tuple[Mapping[str, Any], ...] = ()  # to record once rolled out


def plan_apply(running: Mapping[Key, Mapping[str, Any]], objs: Sequence[Mapping[str, Any]]) -> WorkloadChange:
    """What applying ``objs`` (Deployments and ServiceAccounts) to a mesh running ``running`` does.

    Raises :class:`UnsupportedFeature` for a Deployment the mesh does not run or a change other
    than its ServiceAccount, and :class:`UserError` for a ServiceAccount that does not exist.
    """
    accounts = [o for o in objs if o.get("kind") == "ServiceAccount"]
    known = {(k[1], k[2]) for k in running if k[0] == "ServiceAccount"}
    known |= {(key_of(o)[1], key_of(o)[2]) for o in accounts}
    rollouts: list[Rollout] = []
    deployments: list[Mapping[str, Any]] = []
    for obj in objs:
        if obj.get("kind") != "Deployment":
            continue
        kind, ns, name = key_of(obj)
        current = running.get((kind, ns, name))
        if current is None:
            raise UnsupportedFeature(
                f"the local backend runs the manifests' Deployments only; Deployment {ns}/{name} is not "
                "one of them. Fix: add it to manifests/ and restart the mesh, or use --backend kind"
            )
        changed = differing_paths(_without_service_account(current), _without_service_account(obj))
        if changed:
            raise UnsupportedFeature(
                f"the local backend applies only a new spec.template.spec.serviceAccountName to a running "
                f"Deployment; {ns}/{name} also changes {', '.join(changed[:5])}. Fix: change it in "
                "manifests/ and restart the mesh, or use --backend kind"
            )
        sa, previous = service_account(obj), service_account(current)
        if sa != "default" and (ns, sa) not in known:
            raise UserError(
                f"Deployment {ns}/{name} names ServiceAccount {sa!r}, which does not exist in namespace "
                f"{ns} (Kubernetes would not start its pods). Fix: apply a ServiceAccount {ns}/{sa} with it"
            )
        if sa != previous:
            rollouts.append(Rollout(ns, name, sa, previous))
        deployments.append(obj)
    return WorkloadChange(tuple(accounts), tuple(rollouts), tuple(deployments))


def plan_delete(running: Mapping[Key, Mapping[str, Any]], objs: Iterable[Mapping[str, Any]]) -> list[Key]:
    """The ServiceAccounts deleting ``objs`` removes; a Deployment cannot be deleted locally."""
    out: list[Key] = []
    for obj in objs:
        key = key_of(obj)
        if key[0] == "Deployment":
            raise UnsupportedFeature(
                f"the local backend cannot delete Deployment {key[1]}/{key[2]} (it runs the manifests' "
                "workloads). Fix: remove it from manifests/ and restart the mesh, or use --backend kind"
            )
        if key not in running:
            raise StateError(f"not applied, cannot delete: ServiceAccount {key[1]}/{key[2]}")
        out.append(key)
    return out
