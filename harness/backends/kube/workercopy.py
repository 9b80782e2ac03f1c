"""A pytest-xdist worker's copy of the sample on the shared cluster (:mod:`harness.namespaces`).

Worker ``gwN`` (N >= 1) attaches to the mesh ``meshproof up`` brought up, as ``gw0`` does, and
runs the suites on the manifests renamed into its own namespaces (``sample-wN``, ...; the plugin
points its settings' manifests at that copy). What it needs besides, made here:

- an ingress gateway of its own in ``sample-wN``: Istio's gateway injection template, as on backend
  existing (:mod:`.own_gateway`), whose pods are labelled ``istio: ingressgateway-wN`` and
  ``meshproof.dev/ingress: wN``. The copy's Gateways select those labels when applied
  (:func:`localized`), so no Gateway of another worker (nor the first worker's, which selects
  ``istio: ingressgateway``) binds to it, and its Gateways bind to no other gateway: each worker's
  ingress carries only its own routes. It is reached through a port-forward;
- the in-cluster Locust runs in ``other-namespace-wN`` and sends to that gateway's Service.

The copy lives as long as the mesh: a later run's worker finds it applied (server-side apply
changes nothing, nothing is waited for); ``meshproof down`` deletes every copy's namespaces
(:func:`delete_copies`: the Namespaces labelled :data:`~harness.namespaces.WORKER_LABEL`), and
with them everything in them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness import namespaces, wait
from harness.backends.kube import own_gateway
from harness.backends.kube.api import KubeApi, ObjectRef
from harness.backends.kube.apply import wait_gone


def gateway_selector(sfx: str) -> dict[str, str]:
    """The labels of worker ``sfx``'s ingress gateway pods (what its Gateways select)."""
    return {"istio": f"ingressgateway{sfx}", own_gateway.OWN_LABEL[0]: sfx.lstrip("-")}


def gateway_label_selector(sfx: str) -> str:
    return ",".join(f"{k}={v}" for k, v in gateway_selector(sfx).items())


def gateway_objects(sfx: str) -> list[dict[str, Any]]:
    """The worker's ingress gateway (ServiceAccount, Deployment, Service) in its sample namespace;
    the Namespace itself comes from the renamed manifests (with its worker label)."""
    objs = own_gateway.objects(namespaces.ns("sample", sfx), gateway_selector(sfx))
    return [o for o in objs if o.get("kind") != "Namespace"]


#: The CPU a copy's app containers request. The manifests ask 50m each, sized for one sample on a
#: 2-CPU kind node: the node's requests came to 1690m of 2000m with the mesh and one copy, so a second
#: copy's pods would stay Pending ("Insufficient cpu"). Requests only place pods; limits stay.
COPY_CPU_REQUEST = "10m"


def localized(objs: Sequence[Mapping[str, Any]], sfx: str) -> list[dict[str, Any]]:
    """``objs`` as the worker applies them: its Istio Gateways select its own gateway, and its
    Deployments' containers request :data:`COPY_CPU_REQUEST` of CPU."""
    out = own_gateway.select_own(objs, gateway_selector(sfx))
    for o in out:
        if o.get("kind") != "Deployment":
            continue
        for c in ((o.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []:
            requests = (c.get("resources") or {}).get("requests") or {}
            if "cpu" in requests:
                requests["cpu"] = COPY_CPU_REQUEST
    return out


def delete_copies(api: KubeApi, *, timeout: float, clock: wait.Clock = wait.REAL_CLOCK) -> list[str]:
    """Delete every worker copy's Namespaces (labelled :data:`~harness.namespaces.WORKER_LABEL`),
    waiting until they are gone; their names."""
    found = api.list("v1", "Namespace", "", namespaces.WORKER_LABEL)
    refs = [ObjectRef("v1", "Namespace", "", str(n["metadata"]["name"])) for n in found]
    gone = [r for r in refs if api.delete(r)]
    if gone:
        wait_gone(api, gone, timeout=timeout, clock=clock)
    return [r.name for r in gone]
