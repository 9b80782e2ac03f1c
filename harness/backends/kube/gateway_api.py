"""The Kubernetes Gateway API's CRDs on a cluster.

* kind (a cluster meshproof made): the standard channel's CRDs of ``sigs.k8s.io/gateway-api`` at
  the version the pinned Istio's ``go.mod`` requires (located by :mod:`harness.istio.crds`, the same
  CRDs ``validate`` checks against and the local backend registers) are applied before the manifests.
* existing (someone else's cluster): CRDs are never installed there. When the cluster serves no
  Gateway API, the manifests' Gateway API documents are skipped with one line saying why, and a mesh
  asked to route with them (``--traffic-api gateway-api``) is refused before anything is created.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from harness.backends.kube.api import KubeApi
from harness.errors import UserError
from harness.istio.crds import GATEWAY_API_GROUPS, CrdIndex
from harness.versions import IstioRelease

#: The kinds a mesh's Gateway API routes need served (the manifests' Gateway and HTTPRoutes).
NEEDED = (("gateway.networking.k8s.io/v1", "Gateway"), ("gateway.networking.k8s.io/v1", "HTTPRoute"))
CHANNEL = "standard"

IndexReader = Callable[[IstioRelease], CrdIndex]


def read_index(release: IstioRelease) -> CrdIndex:
    """The Gateway API CRDs the release's Istio module requires (from the schema cache, or located
    in Go's module cache)."""
    from harness.istio.schemas import read_gateway_api_crds

    return read_gateway_api_crds(release.module_version)


def standard_crds(index: CrdIndex) -> list[dict[str, Any]]:
    """The standard channel's CustomResourceDefinitions of ``index``, one per file."""
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for entry in index.entries:
        if entry.channel != CHANNEL or entry.path in seen:
            continue
        seen.add(entry.path)
        text = Path(entry.path).read_text(encoding="utf-8")
        doc = json.loads(text) if entry.path.endswith(".json") else _yaml_crd(text)
        out.append(doc)
    return out


def _yaml_crd(text: str) -> dict[str, Any]:
    import yaml

    for doc in yaml.safe_load_all(text):
        if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
            return doc
    raise ValueError("no CustomResourceDefinition in the file")


def missing(api: KubeApi) -> list[str]:
    """The Gateway API kinds the mesh needs that the cluster does not serve."""
    return [f"{kind} ({version})" for version, kind in NEEDED if not api.has_kind(version, kind)]


def is_gateway_api(obj: Mapping[str, Any]) -> bool:
    return str(obj.get("apiVersion", "")).split("/")[0] in GATEWAY_API_GROUPS


def without_gateway_api(objs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(o) for o in objs if not is_gateway_api(o)]


def names(objs: Iterable[Mapping[str, Any]]) -> list[str]:
    return [
        f"{o.get('kind')} {(o.get('metadata') or {}).get('namespace', '')}/{(o.get('metadata') or {}).get('name')}"
        for o in objs
        if is_gateway_api(o)
    ]


def refuse_gateway_api_mode(reason: str, module: str) -> UserError:
    """``--traffic-api gateway-api`` on a cluster without the Gateway API: exit 2 with the fix."""
    version = module.rpartition("@")[2] or "the version the pinned Istio requires"
    return UserError(
        f"--traffic-api gateway-api needs the Gateway API on the cluster, but {reason}. Fix: install its "
        f"standard-channel CRDs ({module or 'sigs.k8s.io/gateway-api'}), e.g. `kubectl apply --server-side "
        f"-k 'github.com/kubernetes-sigs/gateway-api/config/crd?ref={version}'` (meshproof never installs "
        "CRDs into a cluster it did not create), or run with --traffic-api istio"
    )
