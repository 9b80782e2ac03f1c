"""What someone else's Istio offers (backend ``existing``), read from the cluster, never changed.

- **Revisions**: the istiod Deployments (``app=istiod``) in the Istio namespace; an istiod without an
  ``istio.io/rev`` label is revision ``default``.
- **Injection**: the sidecar injector webhooks (MutatingWebhookConfigurations labelled
  ``istio.io/rev``): which revisions inject, and which revision tags (``istio.io/tag``) point where.
  A namespace of revision ``default`` is labelled ``istio-injection=enabled``; any other revision
  (or tag) is selected by ``istio.io/rev=<revision>``, as Istio documents it.
- **Ingress gateway**: pods labelled ``istio=ingressgateway`` in any namespace (but meshproof's own),
  Ready ones (a gateway whose proxy never got its config stays Running but not Ready: it is named
  apart). Reported only: meshproof runs a gateway of its own (:mod:`.own_gateway`).
- **Tracing**: the tracing providers (``extensionProviders`` with a tracing kind) of the chosen
  revision's mesh config (ConfigMap ``istio`` or ``istio-<revision>``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from harness.backends.kube.api import KubeApi
from harness.backends.kube.discovery import GATEWAY_SELECTOR
from harness.backends.kube.istio_install import ISTIO_NAMESPACE
from harness.errors import UserError

DEFAULT_REVISION = "default"
REV_LABEL = "istio.io/rev"
TAG_LABEL = "istio.io/tag"
LEGACY_LABEL = "istio-injection"
OWN_GATEWAY_LABEL = "meshproof.dev/ingress"  # own_gateway.OWN_LABEL: meshproof's gateway, not the cluster's
# extensionProviders kinds that export spans (Istio's MeshConfig.ExtensionProvider)
TRACING_KINDS = frozenset(
    {"zipkin", "opentelemetry", "datadog", "lightstep", "skywalking", "stackdriver", "opencensus"}
)


@dataclass(frozen=True)
class InstalledIstio:
    revisions: tuple[str, ...]  # istiod revisions, sorted; "default" for an unlabelled istiod
    injecting: tuple[str, ...] = ()  # revisions with a sidecar injector webhook
    tags: Mapping[str, str] = field(default_factory=dict)  # revision tag -> revision
    gateways: tuple[str, ...] = ()  # namespace/pod of every Ready ingress gateway pod
    tracing: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # revision -> tracing providers
    unready_gateways: tuple[str, ...] = ()  # namespace/pod of gateway pods not (yet) Ready

    def as_json(self) -> dict[str, Any]:
        return {
            "revisions": list(self.revisions),
            "injecting": list(self.injecting),
            "tags": dict(self.tags),
            "gateways": list(self.gateways),
            "unready_gateways": list(self.unready_gateways),
            "tracing": {k: list(v) for k, v in self.tracing.items()},
        }


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def tracing_providers(mesh_yaml: str) -> tuple[str, ...]:
    """The names of the mesh config's extension providers that export traces."""
    try:
        mesh = yaml.safe_load(mesh_yaml) or {}
    except yaml.YAMLError:
        return ()
    providers = mesh.get("extensionProviders") if isinstance(mesh, dict) else None
    return tuple(
        str(p["name"])
        for p in providers or []
        if isinstance(p, dict) and p.get("name") and TRACING_KINDS & set(p)
    )


def discover(api: KubeApi, namespace: str = ISTIO_NAMESPACE) -> InstalledIstio:
    revisions = sorted(
        {
            _labels(d).get(REV_LABEL) or DEFAULT_REVISION
            for d in api.list("apps/v1", "Deployment", namespace, "app=istiod")
        }
    )
    injecting: set[str] = set()
    tags: dict[str, str] = {}
    for hook in api.list("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"):
        labels = _labels(hook)
        if not any("sidecar-injector" in str(w.get("name", "")) for w in hook.get("webhooks") or []):
            continue
        rev = labels.get(REV_LABEL) or DEFAULT_REVISION
        if labels.get(TAG_LABEL):
            tags[labels[TAG_LABEL]] = rev
        else:
            injecting.add(rev)
    live = [
        p
        for p in api.list("v1", "Pod", "", GATEWAY_SELECTOR)
        if (p.get("status") or {}).get("phase") == "Running"
        and OWN_GATEWAY_LABEL not in _labels(p)
        and not (p.get("metadata") or {}).get("deletionTimestamp")
    ]
    gateways = sorted(_pod_ref(p) for p in live if _ready(p))
    unready = sorted(_pod_ref(p) for p in live if not _ready(p))
    meshes = {
        _name(cm): str((cm.get("data") or {}).get("mesh", ""))
        for cm in api.list("v1", "ConfigMap", namespace)
    }
    tracing = {
        rev: tracing_providers(meshes.get("istio" if rev == DEFAULT_REVISION else f"istio-{rev}", ""))
        for rev in revisions
    }
    return InstalledIstio(
        tuple(revisions), tuple(sorted(injecting)), tags, tuple(gateways), tracing, tuple(unready)
    )


def _pod_ref(pod: Mapping[str, Any]) -> str:
    return f"{(pod.get('metadata') or {}).get('namespace', '')}/{_name(pod)}"


def _ready(pod: Mapping[str, Any]) -> bool:
    """The pod's Ready condition, as the kubelet reports it (its readiness probes passed)."""
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def choose_revision(installed: InstalledIstio, wanted: str, context: str) -> str:
    """The revision to label meshproof's namespaces for: ``wanted`` (a revision or a revision tag),
    else the only one, else the one the ``default`` tag names. One-line UserError otherwise."""
    where = f"context {context or '(current)'}"
    have = ", ".join(installed.revisions) or "none"
    if wanted:
        if wanted in installed.revisions or wanted in installed.tags:
            return wanted
        raise UserError(
            f"Istio revision {wanted!r} is not installed in {where} (revisions: {have}; tags: "
            f"{', '.join(sorted(installed.tags)) or 'none'}). Fix: pass --revision naming one of them"
        )
    if len(installed.revisions) == 1:
        return installed.revisions[0]
    if DEFAULT_REVISION in installed.tags:
        return DEFAULT_REVISION
    raise UserError(
        f"{where} runs several Istio revisions ({have}) and no default tag. Fix: pass --revision naming one"
    )


def injection_labels(revision: str) -> dict[str, str]:
    """The namespace labels that have ``revision`` (or a tag) inject its sidecar."""
    if revision == DEFAULT_REVISION:
        return {LEGACY_LABEL: "enabled"}
    return {REV_LABEL: revision}


def relabelled(objs: Sequence[Mapping[str, Any]], revision: str) -> list[dict[str, Any]]:
    """Copies of ``objs`` whose injected Namespaces carry ``revision``'s injection label instead of
    ``istio-injection: enabled`` (a namespace with injection disabled stays as it is)."""
    import copy

    out = []
    for obj in objs:
        o = copy.deepcopy(dict(obj))
        labels = (o.get("metadata") or {}).get("labels") or {}
        if o.get("kind") == "Namespace" and labels.get(LEGACY_LABEL) == "enabled":
            del labels[LEGACY_LABEL]
            labels.update(injection_labels(revision))
        out.append(o)
    return out


PROXY_CONFIG_ANNOTATION = "proxy.istio.io/config"


def with_proxy_config(objs: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Copies of ``objs`` whose pod templates carry ``settings`` in the ``proxy.istio.io/config``
    annotation: Istio's per-workload ProxyConfig, which the injector merges over the mesh config's
    ``defaultConfig``. So meshproof's own workloads get what the suites need from their proxies (the
    counters of :mod:`harness.proxy_stats`) without a change to the cluster's mesh config. A key the
    annotation already sets is kept as it is."""
    import copy
    import json

    out = []
    for obj in objs:
        o = copy.deepcopy(dict(obj))
        template = (o.get("spec") or {}).get("template")
        if isinstance(template, dict):
            meta = template.setdefault("metadata", {})
            annotations = meta.setdefault("annotations", {})
            current = yaml.safe_load(annotations.get(PROXY_CONFIG_ANNOTATION) or "{}") or {}
            annotations[PROXY_CONFIG_ANNOTATION] = json.dumps({**settings, **current}, sort_keys=True)
        out.append(o)
    return out


def namespaced_in(objs: Sequence[Mapping[str, Any]], namespace: str) -> list[str]:
    return [
        f"{o.get('kind')}/{(o.get('metadata') or {}).get('name')}"
        for o in objs
        if (o.get("metadata") or {}).get("namespace") == namespace
    ]
