"""The Kubernetes Gateway API's CRDs, for the API server's own admission code.

Gateway API objects (``gateway.networking.k8s.io``, ``gateway.networking.x-k8s.io``) are checked
by ``meshproof-analyze`` (``harness/toolchain/go/analyze/crd.go``) with ``k8s.io/apiextensions-apiserver``: the
CRD's structural schema, unknown fields, defaulting, the OpenAPI schema and the CEL rules, as the
API server admits a create. This module only finds those CRDs and says which kinds they define:

* the version is the one of ``sigs.k8s.io/gateway-api`` that the pinned ``istio.io/istio``
  requires (read from the Istio module's ``go.mod``);
* the CRDs are that module's ``config/crd/standard`` (what a cluster usually installs), then
  ``config/crd/experimental`` for kinds only that channel defines;
* both modules are read from Go's module cache (``go mod download``), never copied into the
  repository. Each CRD is written once as JSON to the schema cache (``meshproof-analyze``
  decodes JSON in milliseconds where the YAML takes ~0.7 s), with an index of group, kind,
  served versions and scope, so a request carries only the CRDs of the kinds it holds and later
  runs need neither ``go`` nor the modules.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.errors import HarnessError
from harness.toolchain import gomod
from harness.toolchain.istio import GATEWAY_API_MODULE

# The API groups the Gateway API CRDs define (checked against the CRDs by a unit test): a
# document of another group never needs them, so they are not even located for it.
GATEWAY_API_GROUPS = frozenset({"gateway.networking.k8s.io", "gateway.networking.x-k8s.io"})
CHANNELS = ("standard", "experimental")
INDEX_FORMAT = 1


@dataclass(frozen=True)
class CrdEntry:
    """One kind a CRD defines, and the JSON copy of that CRD."""

    group: str
    kind: str
    served: tuple[str, ...]  # served versions, most stable first
    deprecated: Mapping[str, str]  # version -> the CRD's deprecation warning
    namespaced: bool
    channel: str
    path: str


@dataclass(frozen=True)
class CrdIndex:
    module: str  # e.g. "sigs.k8s.io/gateway-api@v1.6.0"
    entries: tuple[CrdEntry, ...]

    def groups(self) -> frozenset[str]:
        return frozenset(e.group for e in self.entries)

    def find(self, group: str, kind: str) -> CrdEntry | None:
        return next((e for e in self.entries if e.group == group and e.kind == kind), None)

    def files(self, group_kinds: Iterable[tuple[str, str]]) -> list[str]:
        """The JSON CRD files defining these (group, kind) pairs (unknown pairs are skipped)."""
        out: list[str] = []
        for group, kind in group_kinds:
            entry = self.find(group, kind)
            if entry is not None and entry.path not in out:
                out.append(entry.path)
        return sorted(out)


def required_version(go_mod: str, module: str = GATEWAY_API_MODULE) -> str:
    """The version of ``module`` a ``go.mod`` requires (its own line, not a sub-module's)."""
    found = gomod.required_version(go_mod, module)
    if not found:
        raise HarnessError(f"the Istio module's go.mod requires no {module}: update harness/istio/crds.py")
    return found


def _version_key(version: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0)
    return ({"": 0, "beta": 1, "alpha": 2}[m.group(2) or ""], -int(m.group(1)), -int(m.group(3) or 0))


def read_gateway_api_crds(module_dir: Path, version: str, out_dir: Path) -> CrdIndex:
    """Index the CRDs of ``sigs.k8s.io/gateway-api`` in ``module_dir`` and write each as JSON."""
    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    entries: list[CrdEntry] = []
    seen: set[tuple[str, str]] = set()
    for channel in CHANNELS:
        for path in sorted((module_dir / "config" / "crd" / channel).glob("*.yaml")):
            for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=loader):
                if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                    continue  # e.g. the ValidatingAdmissionPolicy shipped next to the CRDs
                spec = doc.get("spec") or {}
                group, kind = str(spec.get("group")), str((spec.get("names") or {}).get("kind"))
                if (group, kind) in seen:
                    continue  # the standard channel's definition wins
                seen.add((group, kind))
                versions = [v for v in spec.get("versions") or [] if v.get("served") is True]
                target = out_dir / channel / f"{doc['metadata']['name']}.json"
                try:
                    _write_json(target, doc)
                except OSError:  # a read-only cache: the Go side reads the YAML too, slower
                    target = path
                entries.append(
                    CrdEntry(
                        group=group,
                        kind=kind,
                        served=tuple(sorted((str(v["name"]) for v in versions), key=_version_key)),
                        deprecated={
                            str(v["name"]): str(
                                v.get("deprecationWarning") or f"{group}/{v['name']} {kind} is deprecated"
                            )
                            for v in versions
                            if v.get("deprecated") is True
                        },
                        namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                        channel=channel,
                        path=str(target),
                    )
                )
    if not entries:
        raise HarnessError(
            f"no CRDs under {module_dir}/config/crd: its layout changed; update harness/istio/crds.py"
        )
    return CrdIndex(module=f"{GATEWAY_API_MODULE}@{version}", entries=tuple(entries))


def index_to_json(index: CrdIndex) -> dict[str, Any]:
    return {
        "format": INDEX_FORMAT,
        "module": index.module,
        "entries": [
            {
                "group": e.group,
                "kind": e.kind,
                "served": list(e.served),
                "deprecated": dict(e.deprecated),
                "namespaced": e.namespaced,
                "channel": e.channel,
                "path": e.path,
            }
            for e in index.entries
        ],
    }


def index_from_json(data: Any) -> CrdIndex | None:
    """The index a cache file holds, or None when it is stale or its JSON CRDs are gone."""
    if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
        return None
    try:
        entries = tuple(
            CrdEntry(
                group=e["group"],
                kind=e["kind"],
                served=tuple(e["served"]),
                deprecated=dict(e["deprecated"]),
                namespaced=e["namespaced"],
                channel=e["channel"],
                path=e["path"],
            )
            for e in data["entries"]
        )
        index = CrdIndex(module=data["module"], entries=entries)
    except (KeyError, TypeError):
        return None
    return index if entries and all(os.path.isfile(e.path) for e in entries) else None


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, separators=(",", ":"))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_index(path: Path, index: CrdIndex) -> None:
    _write_json(path, index_to_json(index))
