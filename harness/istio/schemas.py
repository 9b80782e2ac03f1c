# Over 500 lines: fetching, caching and applying the real schemas of every accepted kind, one pipeline.
"""Real schemas for every kind meshproof accepts, and validation of documents against them.

Nothing here is hand-typed:

* Kubernetes built-in kinds use the JSON schemas bundled with the ``kubernetes-validate``
  package, in their *strict* variant (``additionalProperties: false``, so an unknown field is an
  error, as with ``kubectl apply --validate=strict``). The newest Kubernetes version the package
  ships is used.
* Istio kinds use the CRD OpenAPI v3 schemas of ``crd-all.gen.yaml`` inside the Go module
  ``istio.io/istio`` pinned in :mod:`harness.versions`. The module is located at run time with
  ``go mod download -json`` (served from Go's module cache when present). The schemas are
  translated to JSON Schema once per module version, kept in process and written to
  ``~/.cache/meshproof/schemas/<module_version>.json``, so later runs need neither ``go`` nor
  the module.

Translation of the OpenAPI v3 structural-schema details (see :func:`translate_openapi`):

* an object schema with ``properties`` and without ``x-kubernetes-preserve-unknown-fields``
  gets ``additionalProperties: false``: a field not in ``properties`` is an unknown field;
* ``x-kubernetes-int-or-string`` becomes integer-or-string; ``nullable: true`` admits null;
* ``format: int32``/``uint32``/``int64`` become bounds when the CRD gives none;
* ``x-kubernetes-validations`` (CEL) are not evaluated: the rules that matter for meshproof
  (durations, percentages, weights) are checked by :mod:`harness.istio.semantic`;
* null values are pruned from documents before validation, as the API server does.

Gateway API kinds are only resolved here (kind, served apiVersion, deprecation): their CRDs
(located by :func:`read_gateway_api_crds`, see :mod:`harness.istio.crds`) are checked by
``meshproof-analyze`` with the Kubernetes API server's own code, CEL rules included.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib.resources
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import yaml
from referencing import Registry, Resource

from harness.errors import ConfigProblem, HarnessError, ToolMissing, UserError
from harness.istio import crds
from harness.istio.crds import CrdEntry, CrdIndex
from harness.istio.loader import Document
from harness.toolchain import gomod
from harness.toolchain.istio import GATEWAY_API_MODULE
from harness.versions import DEFAULT_ISTIO, ISTIO_RELEASES

ISTIO_MODULE = "istio.io/istio"
CRD_FILE = "manifests/charts/base/files/crd-all.gen.yaml"
SETUP_HINT = "run ./scripts/setup (see README.md); it installs Go and downloads the pinned Istio module"
CACHE_FORMAT = 1  # bump when the translation changes, so stale cache files are ignored

K8S_DEFS_URI = "https://kubernetes.io/api/_definitions.json"
OBJECT_META_REF = f"{K8S_DEFS_URI}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"

_INT_FORMATS = {
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
_COPIED_KEYWORDS = (
    "enum",
    "minimum",
    "maximum",
    "pattern",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    "uniqueItems",
    "multipleOf",
    "format",
)


def default_cache_dir() -> Path:
    """Where translated schemas are cached: ``~/.cache/meshproof/schemas``."""
    return Path.home() / ".cache" / "meshproof" / "schemas"


# ---------------------------------------------------------------------------------------------
# OpenAPI v3 (CRD structural schema) -> JSON Schema 2020-12


def translate_openapi(schema: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """Translate one CRD OpenAPI v3 schema node (and its children) to JSON Schema 2020-12.

    ``partial`` marks a branch of ``oneOf``/``anyOf``/``allOf``/``not``: those only constrain
    (e.g. ``required``), so they never get ``additionalProperties: false``.
    """
    out: dict[str, Any] = {}
    nullable = schema.get("nullable") is True
    preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
    stype = schema.get("type")
    if schema.get("x-kubernetes-int-or-string") is True and "anyOf" not in schema:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    elif isinstance(stype, str):
        out["type"] = [stype, "null"] if nullable else stype
    for key in _COPIED_KEYWORDS:
        if key in schema:
            out[key] = schema[key]
    if nullable and isinstance(out.get("enum"), list) and None not in out["enum"]:
        out["enum"] = [*out["enum"], None]
    if schema.get("exclusiveMinimum") is True and "minimum" in out:
        out["exclusiveMinimum"] = out.pop("minimum")
    if schema.get("exclusiveMaximum") is True and "maximum" in out:
        out["exclusiveMaximum"] = out.pop("maximum")
    fmt = schema.get("format")
    if stype == "integer" and fmt in _INT_FORMATS:
        low, high = _INT_FORMATS[fmt]
        out.setdefault("minimum", low)
        out.setdefault("maximum", high)
    props = schema.get("properties")
    if isinstance(props, Mapping):
        out["properties"] = {k: translate_openapi(v) for k, v in props.items() if isinstance(v, Mapping)}
    items = schema.get("items")
    if isinstance(items, Mapping):
        out["items"] = translate_openapi(items)
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        out["additionalProperties"] = translate_openapi(extra)
    elif isinstance(extra, bool):
        out["additionalProperties"] = extra
    elif isinstance(props, Mapping) and not preserve and not partial:
        out["additionalProperties"] = False
    for key in ("oneOf", "anyOf", "allOf"):
        branches = schema.get(key)
        if isinstance(branches, list):
            out[key] = [translate_openapi(b, partial=True) for b in branches if isinstance(b, Mapping)]
    if isinstance(schema.get("not"), Mapping):
        out["not"] = translate_openapi(schema["not"], partial=True)
    return out


def _document_schema(spec_schema: Mapping[str, Any]) -> dict[str, Any]:
    """A whole-object schema: the CRD's schema plus apiVersion, kind and Kubernetes ObjectMeta."""
    top = translate_openapi(spec_schema)
    props = dict(top.get("properties", {}))
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props["metadata"] = {"$ref": OBJECT_META_REF}
    top["properties"] = props
    top["type"] = "object"
    top["additionalProperties"] = False
    return top


# ---------------------------------------------------------------------------------------------
# Istio CRDs: locate, parse, translate, cache


@dataclass(frozen=True)
class CrdVersion:
    name: str
    served: bool
    storage: bool
    deprecated: bool
    deprecation_warning: str | None
    schema: Mapping[str, Any] = field(repr=False, hash=False)


@dataclass(frozen=True)
class Crd:
    group: str
    kind: str
    plural: str
    namespaced: bool
    versions: tuple[CrdVersion, ...]

    def version(self, name: str) -> CrdVersion | None:
        return next((v for v in self.versions if v.name == name), None)

    @property
    def preferred(self) -> str:
        """The most stable served version (v1 before v1beta1 before v1alpha3 ...)."""
        served = [v.name for v in self.versions if v.served] or [v.name for v in self.versions]
        return sorted(served, key=_version_priority)[0]


@dataclass(frozen=True)
class IstioCrds:
    module_version: str
    source: str  # where they were read from (the CRD file, or the cache file)
    crds: tuple[Crd, ...]

    def groups(self) -> set[str]:
        return {c.group for c in self.crds}


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' version priority, as a sort key (smaller sorts first = more stable)."""
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0)
    major = int(m.group(1))
    stage = {"": 0, "beta": 1, "alpha": 2}[m.group(2) or ""]
    minor = int(m.group(3) or 0)
    return (stage, -major, -minor)


def resolve_module_version(istio_version: str | None) -> str:
    """The Go module version of ``istio_version`` (a key of ``ISTIO_RELEASES``, or a module version)."""
    key = istio_version or DEFAULT_ISTIO
    release = ISTIO_RELEASES.get(key)
    if release is not None:
        return release.module_version
    if key.startswith("v"):
        return key
    known = ", ".join(sorted(ISTIO_RELEASES))
    raise UserError(f"unknown Istio version {key!r}. Fix: choose one of {known} (see harness/versions.py)")


def istio_module_dir(module_version: str, *, go: str = "go", timeout: float = 900.0) -> Path:
    """Directory of ``istio.io/istio@module_version`` in Go's module cache, downloading it if needed."""
    return gomod.download(
        ISTIO_MODULE,
        module_version,
        go=go,
        needed_for=f"reading Istio's CRD schemas ({ISTIO_MODULE}@{module_version})",
        how_to_get=SETUP_HINT,
        # Outside any module: a go.mod in the caller's directory must not change what Go does.
        cwd=Path(tempfile.gettempdir()),
        timeout=timeout,
    ).dir


def read_gateway_api_crds(module_version: str, *, cache_dir: Path | None = None, go: str = "go") -> CrdIndex:
    """The Gateway API CRDs the Istio module ``module_version`` requires (see :mod:`.crds`).

    Served from the cache's index when its JSON CRDs are still there; else located with ``go``
    (Istio's ``go.mod`` names the version) and indexed into the cache.
    """
    cache = cache_dir or default_cache_dir()
    index_file = cache / f"gateway-api-for-{module_version}.json"
    try:
        cached = crds.index_from_json(json.loads(index_file.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        cached = None
    if cached is not None:
        return cached
    istio_dir = istio_module_dir(module_version, go=go)
    try:
        version = crds.required_version((istio_dir / "go.mod").read_text(encoding="utf-8"))
    except OSError as exc:
        raise HarnessError(f"{istio_dir}/go.mod is unreadable: {exc}") from exc
    module_dir = gomod.download(
        GATEWAY_API_MODULE,
        version,
        go=go,
        needed_for=f"reading the Gateway API CRDs ({GATEWAY_API_MODULE}@{version})",
        how_to_get=SETUP_HINT,
        cwd=Path(tempfile.gettempdir()),
    ).dir
    index = crds.read_gateway_api_crds(module_dir, version, cache / f"gateway-api-{version}")
    with contextlib.suppress(
        OSError
    ):  # the cache is an optimisation: a read-only home must not break validation
        crds.write_index(index_file, index)
    return index


def read_istio_crds(
    module_version: str,
    *,
    cache_dir: Path | None = None,
    go: str = "go",
) -> IstioCrds:
    """Istio's CRDs for ``module_version``: from the cache file if there, else from the module.

    Raises :class:`ToolMissing` naming ``go`` and the setup command when neither the cache nor
    the module (via ``go``) is available.
    """
    cache_file = (cache_dir or default_cache_dir()) / f"{module_version}.json"
    cached = _read_cache(cache_file, module_version)
    if cached is not None:
        return cached
    crd_path = istio_module_dir(module_version, go=go) / CRD_FILE
    try:
        text = crd_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HarnessError(
            f"{crd_path} is missing from {ISTIO_MODULE}@{module_version}: its layout changed; "
            "update harness/istio/schemas.py CRD_FILE"
        ) from exc
    crds = parse_crds(text, module_version=module_version, source=str(crd_path))
    _write_cache(cache_file, crds)
    return crds


def parse_crds(text: str, *, module_version: str, source: str) -> IstioCrds:
    """Parse a multi-document CRD YAML (``crd-all.gen.yaml``) and translate its schemas."""
    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crds = []
    for doc in yaml.load_all(text, Loader=loader):
        if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc.get("spec") or {}
        names = spec.get("names") or {}
        versions = []
        for v in spec.get("versions") or []:
            raw = ((v.get("schema") or {}).get("openAPIV3Schema")) or {"type": "object"}
            versions.append(
                CrdVersion(
                    name=str(v.get("name")),
                    served=v.get("served") is True,
                    storage=v.get("storage") is True,
                    deprecated=v.get("deprecated") is True,
                    deprecation_warning=v.get("deprecationWarning"),
                    schema=_document_schema(raw),
                )
            )
        crds.append(
            Crd(
                group=str(spec.get("group")),
                kind=str(names.get("kind")),
                plural=str(names.get("plural")),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                versions=tuple(versions),
            )
        )
    return IstioCrds(module_version=module_version, source=source, crds=tuple(crds))


def _read_cache(path: Path, module_version: str) -> IstioCrds | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return None
    if data.get("module_version") != module_version:
        return None
    try:
        crds = tuple(
            Crd(
                group=c["group"],
                kind=c["kind"],
                plural=c["plural"],
                namespaced=c["namespaced"],
                versions=tuple(
                    CrdVersion(
                        name=v["name"],
                        served=v["served"],
                        storage=v["storage"],
                        deprecated=v["deprecated"],
                        deprecation_warning=v["deprecation_warning"],
                        schema=v["schema"],
                    )
                    for v in c["versions"]
                ),
            )
            for c in data["crds"]
        )
    except (KeyError, TypeError):
        return None
    return IstioCrds(module_version=module_version, source=str(path), crds=crds)


def _write_cache(path: Path, crds: IstioCrds) -> None:
    data = {
        "format": CACHE_FORMAT,
        "module_version": crds.module_version,
        "source": crds.source,
        "crds": [
            {
                "group": c.group,
                "kind": c.kind,
                "plural": c.plural,
                "namespaced": c.namespaced,
                "versions": [
                    {
                        "name": v.name,
                        "served": v.served,
                        "storage": v.storage,
                        "deprecated": v.deprecated,
                        "deprecation_warning": v.deprecation_warning,
                        "schema": v.schema,
                    }
                    for v in c.versions
                ],
            }
            for c in crds.crds
        ],
    }
    try:  # the cache is an optimisation: a read-only home must not break validation
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, separators=(",", ":"))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# Kubernetes built-in kinds (kubernetes-validate's bundled strict schemas)


@dataclass(frozen=True)
class KubernetesSchemas:
    version: str  # e.g. "1.37.0"
    definitions: Mapping[str, Any] = field(repr=False)
    index: Mapping[tuple[str, str, str], str] = field(repr=False)  # (group, version, kind) -> def


def kubernetes_schema_dir() -> Path:
    """The newest ``v<version>-local-strict`` schema directory shipped by kubernetes-validate."""
    root = importlib.resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    dirs = [Path(str(p)) for p in root.iterdir() if re.fullmatch(r"v[\d.]+-local-strict", p.name)]
    if not dirs:
        raise ToolMissing("kubernetes-validate schemas", "validating Kubernetes objects", SETUP_HINT)

    def key(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in p.name[1:].split("-")[0].split("."))

    return max(dirs, key=key)


@functools.lru_cache(maxsize=2)
def load_kubernetes_schemas(directory: Path | None = None) -> KubernetesSchemas:
    """Kubernetes' definitions and an index of every top-level kind in them."""
    directory = directory or kubernetes_schema_dir()
    with open(directory / "_definitions.json", encoding="utf-8") as fh:
        definitions = json.load(fh)
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions.get("$defs", {}).items():
        gvks = schema.get("x-kubernetes-group-version-kind") or []
        if len(gvks) != 1:  # DeleteOptions, WatchEvent: listed under every group, never applied
            continue
        gvk = gvks[0]
        index[(gvk.get("group", ""), gvk["version"], gvk["kind"])] = name
    version = directory.name[1:].split("-")[0]
    return KubernetesSchemas(version=version, definitions=definitions, index=index)


# ---------------------------------------------------------------------------------------------
# The schema set: resolve a document's kind, validate it, explain the errors


@dataclass(frozen=True)
class SchemaCheck:
    problems: tuple[ConfigProblem, ...]
    warnings: tuple[ConfigProblem, ...] = ()
    crd: str = ""  # the CRD the API server's own code checks the document against (Gateway API)


@dataclass(frozen=True)
class KindSchema:
    """The schema one apiVersion/kind is validated against, and where it comes from."""

    api_version: str
    kind: str
    source: str
    schema: Mapping[str, Any] = field(repr=False, hash=False)
    warning: tuple[str, str] | None = None  # (message, fix) for a superseded apiVersion
    crd: str = ""  # a CRD file: checked by meshproof-analyze with the API server's code, not here


class SchemaSet:
    """Kubernetes and Istio schemas for one Istio release; validators are built lazily.

    ``gateway_api`` gives the Gateway API CRDs the release requires (called once, on the first
    document of a Gateway API group): those documents are resolved here and checked by
    ``meshproof-analyze`` with the API server's code (see :mod:`harness.istio.crds`).
    """

    def __init__(
        self,
        istio: IstioCrds,
        kubernetes: KubernetesSchemas,
        gateway_api: Callable[[], CrdIndex] | None = None,
    ) -> None:
        self.istio = istio
        self.kubernetes = kubernetes
        self._gateway_api_loader = gateway_api
        self._gateway_api: CrdIndex | None = None
        self._istio_by_group_kind = {(c.group, c.kind): c for c in istio.crds}
        self._istio_groups = istio.groups()
        defs = Resource.from_contents(kubernetes.definitions)
        self._registry: Registry[Any] = Registry().with_resource(K8S_DEFS_URI, defs)
        self._validators: dict[tuple[str, str], Any] = {}
        self._known_kinds = sorted({c.kind for c in istio.crds} | {k for (_, _, k) in kubernetes.index})

    # -- resolution ------------------------------------------------------------------------------

    def resolve(self, api_version: str, kind: str) -> KindSchema | tuple[str, str, str]:
        """The schema for ``api_version``/``kind``, or ``(field, message, fix)`` saying why none."""
        group, _, version = api_version.rpartition("/")
        if group in self._istio_groups:
            return self._resolve_istio(api_version, group, version, kind)
        if group in crds.GATEWAY_API_GROUPS and self._gateway_api_loader is not None:
            return self._resolve_crd(self.gateway_api(), api_version, group, version, kind)
        def_name = self.kubernetes.index.get((group, version, kind))
        if def_name is not None:
            return KindSchema(
                api_version,
                kind,
                f"Kubernetes {self.kubernetes.version}",
                {"$ref": f"{K8S_DEFS_URI}#/$defs/{def_name}"},
            )
        return self._unknown(api_version, group, kind)

    def _resolve_istio(
        self, api_version: str, group: str, version: str, kind: str
    ) -> KindSchema | tuple[str, str, str]:
        crd = self._istio_by_group_kind.get((group, kind))
        if crd is None:
            return self._unknown(api_version, group, kind)
        served = ", ".join(v.name for v in crd.versions if v.served)
        wanted = f"{crd.group}/{crd.preferred}"
        crd_version = crd.version(version)
        if crd_version is None:
            return (
                "apiVersion",
                f"{kind} is not served as {api_version} by Istio {self._istio_label()} (served: {served})",
                f"use apiVersion: {wanted}",
            )
        if not crd_version.served:
            return (
                "apiVersion",
                f"{api_version} {kind} is no longer served by Istio {self._istio_label()}",
                f"use apiVersion: {wanted}",
            )
        warning: tuple[str, str] | None = None
        if crd_version.deprecated:
            note = crd_version.deprecation_warning or f"{api_version} {kind} is deprecated"
            warning = (note, f"use apiVersion: {wanted}")
        elif version != crd.preferred:
            warning = (
                f"meshproof's own check (Istio accepts this): {api_version} is an older API version "
                f"of {kind}, superseded by {wanted}",
                f"use apiVersion: {wanted}",
            )
        return KindSchema(
            api_version,
            kind,
            f"Istio CRD ({ISTIO_MODULE}@{self.istio.module_version})",
            crd_version.schema,
            warning,
        )

    def gateway_api(self) -> CrdIndex:
        """The Gateway API CRD index (located on first use)."""
        if self._gateway_api is None:
            if self._gateway_api_loader is None:
                return CrdIndex(module="", entries=())
            self._gateway_api = self._gateway_api_loader()
        return self._gateway_api

    def _resolve_crd(
        self, index: CrdIndex, api_version: str, group: str, version: str, kind: str
    ) -> KindSchema | tuple[str, str, str]:
        entry = index.find(group, kind)
        if entry is None:
            kinds = sorted(e.kind for e in index.entries if e.group == group)
            close = difflib.get_close_matches(kind, kinds, n=1, cutoff=0.75)
            hint = f"did you mean {close[0]}? " if close else ""
            return (
                "kind",
                f"unknown kind {kind} in API group {group} ({index.module})",
                f"{hint}kinds of {group}: {', '.join(kinds)}",
            )
        wanted = f"{group}/{entry.served[0]}" if entry.served else group
        if version not in entry.served:
            return (
                "apiVersion",
                f"{kind} is not served as {api_version} by {index.module} (served: {', '.join(entry.served)})",
                f"use apiVersion: {wanted}",
            )
        warning = (
            (entry.deprecated[version], f"use apiVersion: {wanted}") if version in entry.deprecated else None
        )
        source = f"{entry.channel} CRD ({index.module})"
        return KindSchema(api_version, kind, source, {}, warning, crd=entry.path)

    def _gateway_api_kinds(self) -> tuple[CrdEntry, ...]:
        """Gateway API kinds for suggestions; none when they cannot be located (no go, no cache)."""
        try:
            return self.gateway_api().entries
        except ToolMissing:
            return ()

    def crd_files(self, docs: Iterable[Document]) -> list[str]:
        """The CRD files ``meshproof-analyze`` needs for these documents (Gateway API kinds)."""
        wanted = {(d.group, d.kind) for d in docs if d.group in crds.GATEWAY_API_GROUPS}
        if not wanted or self._gateway_api_loader is None:
            return []
        return self.gateway_api().files(sorted(wanted))

    def _istio_label(self) -> str:
        for key, release in ISTIO_RELEASES.items():
            if release.module_version == self.istio.module_version:
                return key
        return self.istio.module_version

    def _unknown(self, api_version: str, group: str, kind: str) -> tuple[str, str, str]:
        same_kind = sorted(
            ((g, v) for (g, v, k) in self.kubernetes.index if k == kind),
            key=lambda gv: _version_priority(gv[1]),
        )
        if same_kind:
            g, v = same_kind[0]
            return (
                "apiVersion",
                f"{kind} is not served as {api_version} in Kubernetes {self.kubernetes.version}",
                f"use apiVersion: {g + '/' if g else ''}{v}",
            )
        istio_kind = next((c for c in self.istio.crds if c.kind == kind), None)
        if istio_kind is not None:
            return (
                "apiVersion",
                f"{kind} is not in API group {group or '(core)'}: it is an Istio kind",
                f"use apiVersion: {istio_kind.group}/{istio_kind.preferred}",
            )
        gateway_kind = next((e for e in self._gateway_api_kinds() if e.kind == kind), None)
        if gateway_kind is not None:
            return (
                "apiVersion",
                f"{kind} is not in API group {group or '(core)'}: it is a Gateway API kind",
                f"use apiVersion: {gateway_kind.group}/{gateway_kind.served[0]}",
            )
        known = [*self._known_kinds, *(e.kind for e in self._gateway_api_kinds())]
        lower = {k.lower(): k for k in known}
        close = difflib.get_close_matches(kind.lower(), list(lower), n=1, cutoff=0.75)
        hint = f"did you mean {lower[close[0]]}? " if close else ""
        return (
            "kind",
            f"unknown kind {kind} (apiVersion {api_version})",
            f"{hint}meshproof accepts Kubernetes built-in kinds, Istio's CRD kinds "
            "(e.g. VirtualService, DestinationRule, Gateway, AuthorizationPolicy) and the Gateway "
            "API's (gateway.networking.k8s.io: e.g. Gateway, HTTPRoute, GRPCRoute, ReferenceGrant)",
        )

    # -- validation ------------------------------------------------------------------------------

    def check(self, doc: Document) -> SchemaCheck:
        """Problems (and warnings) of one document against its kind's schema."""
        resolved = self.resolve(doc.api_version, doc.kind)
        if isinstance(resolved, tuple):
            path, message, fix = resolved
            return SchemaCheck((doc.problem(path, message, fix),))
        warnings: tuple[ConfigProblem, ...] = ()
        if resolved.warning is not None:
            warnings = (doc.problem("apiVersion", *resolved.warning),)
        if resolved.crd:
            return SchemaCheck((), warnings, crd=resolved.crd)
        validator = self._validator(resolved)
        instance = prune_nulls(doc.body)
        problems: list[ConfigProblem] = []
        seen: set[tuple[str, str]] = set()
        errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
        for error in errors:
            for path, message, fix in explain(error):
                if (path, message) not in seen:
                    seen.add((path, message))
                    problems.append(doc.problem(path, message, fix))
        return SchemaCheck(tuple(problems), warnings)

    def _validator(self, resolved: KindSchema) -> Any:
        key = (resolved.api_version, resolved.kind)
        validator = self._validators.get(key)
        if validator is None:
            validator = jsonschema.Draft202012Validator(dict(resolved.schema), registry=self._registry)
            self._validators[key] = validator
        return validator


@functools.lru_cache(maxsize=8)
def _load_schemas_cached(module_version: str, cache_dir: Path | None, go: str) -> SchemaSet:
    return SchemaSet(
        read_istio_crds(module_version, cache_dir=cache_dir, go=go),
        load_kubernetes_schemas(),
        gateway_api=lambda: read_gateway_api_crds(module_version, cache_dir=cache_dir, go=go),
    )


def load_schemas(
    istio_version: str | None = None, *, cache_dir: Path | None = None, go: str = "go"
) -> SchemaSet:
    """The schema set for an Istio release (a key of ``ISTIO_RELEASES``; default ``DEFAULT_ISTIO``).

    ``cache_dir`` holds the translated CRD schemas (default :func:`default_cache_dir`). The
    result is kept for the life of the process.
    """
    return _load_schemas_cached(resolve_module_version(istio_version), cache_dir, go)


def prune_nulls(value: Any) -> Any:
    """A copy of ``value`` without null-valued mapping entries (the API server prunes them)."""
    if isinstance(value, dict):
        return {k: prune_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [prune_nulls(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# jsonschema errors -> (path, message, fix)


def format_path(parts: Iterable[Any]) -> str:
    """``spec.http[0].route[1].weight`` from jsonschema's path parts."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(p)):
            out += f".{p}" if out else str(p)
        else:
            out += f'["{p}"]'
    return out


_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "a boolean (true or false)",
    "object": "a mapping",
    "array": "a list",
    "null": "null",
}
_TYPE_FIXES = {
    "integer": "write a whole number without quotes",
    "number": "write a number without quotes",
    "string": "write a string (quote it if YAML would read it as a number or boolean)",
    "boolean": "write true or false without quotes",
    "object": "write a mapping (key: value lines, or {key: value})",
    "array": "write a list ('- item' lines, or [a, b])",
}


def _types(value: Any) -> list[str]:
    types = value if isinstance(value, list) else [value]
    return [t for t in types if isinstance(t, str) and t != "null"]


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        kind = "a boolean"
    elif isinstance(value, int):
        kind = "an integer"
    elif isinstance(value, float):
        kind = "a number"
    elif isinstance(value, str):
        kind = "a string"
    elif isinstance(value, dict):
        return "a mapping"
    elif isinstance(value, list):
        return "a list"
    else:
        kind = type(value).__name__
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{kind} {text}"


def _type_problem(path: str, expected: Sequence[str], instance: Any) -> tuple[str, str, str]:
    words = " or ".join(_TYPE_WORDS.get(t, t) for t in expected)
    fix = _TYPE_FIXES.get(expected[0], f"write {words}") if len(expected) == 1 else f"write {words}"
    leaf = path.rsplit(".", 1)[-1] if path else "the value"
    return path, f"wrong type: expected {words}, got {_describe(instance)}", f"{fix} for {leaf}"


def _only_types(branches: Sequence[Any]) -> list[str] | None:
    """The types of an int-or-string style oneOf/anyOf whose branches only give a type."""
    types: list[str] = []
    for b in branches:
        if not isinstance(b, Mapping) or set(b) != {"type"}:
            return None
        types.extend(t for t in _types(b["type"]) if t not in types)
    return types


def _required_names(branches: Sequence[Any]) -> list[str] | None:
    """Field names of Istio's generated "at most/exactly one of" oneOf, if that is what it is."""
    names: list[str] = []
    for b in branches:
        if not isinstance(b, Mapping):
            return None
        if set(b) == {"required"} and isinstance(b["required"], list):
            names.extend(n for n in b["required"] if n not in names)
        elif set(b) != {"not"}:
            return None
    return names or None


def explain(error: Any) -> list[tuple[str, str, str]]:
    """Turn one jsonschema ``ValidationError`` into ``(path, message, fix)`` triples."""
    path = format_path(error.absolute_path)
    keyword = error.validator
    value = error.validator_value
    instance = error.instance
    schema = error.schema if isinstance(error.schema, Mapping) else {}

    if keyword == "additionalProperties" and isinstance(instance, dict):
        known = sorted(schema.get("properties", {}))
        patterns = list(schema.get("patternProperties", {}))
        out = []
        for name in instance:
            if name in known or any(re.search(p, str(name)) for p in patterns):
                continue
            field_path = format_path([*error.absolute_path, name])
            close = difflib.get_close_matches(str(name), known, n=1, cutoff=0.6)
            listed = ", ".join(known[:15]) + (", ..." if len(known) > 15 else "")
            if close:
                fix = f"did you mean {close[0]}? Rename {name} to {close[0]} (fields here: {listed})"
            else:
                fix = f"remove {name}; fields allowed here: {listed}" if known else f"remove {name}"
            out.append((field_path, f"unknown field {name}", fix))
        return out
    if keyword == "required" and isinstance(instance, dict):
        out = []
        for name in value:
            if name not in instance:
                out.append(
                    (
                        format_path([*error.absolute_path, name]),
                        f"missing required field {name}",
                        f"add {name}",
                    )
                )
        return out
    if keyword == "type":
        return [_type_problem(path, _types(value), instance)]
    if keyword == "enum":
        allowed = [v for v in value if v is not None]
        shown = ", ".join(str(v) for v in allowed)
        close = difflib.get_close_matches(str(instance), [str(v) for v in allowed], n=1, cutoff=0.6)
        fix = f"did you mean {close[0]}? Use one of {shown}" if close else f"use one of {shown}"
        return [(path, f"{instance!r} is not one of the allowed values {shown}", fix)]
    if keyword in ("oneOf", "anyOf"):
        types = _only_types(value)
        if types is not None:
            return [_type_problem(path, types, instance)]
        names = _required_names(value)
        if names is not None and isinstance(instance, dict):
            present = [n for n in names if n in instance]
            choices = ", ".join(names)
            if len(present) > 1:
                return [
                    (path, f"{' and '.join(present)} cannot be set together", f"set only one of {choices}")
                ]
            return [(path, f"exactly one of {choices} must be set", f"set one of {choices}")]
        best = jsonschema.exceptions.best_match(error.context) if error.context else None
        if best is not None:
            return explain(best)
    if keyword in ("minimum", "exclusiveMinimum"):
        op = ">=" if keyword == "minimum" else ">"
        return [(path, f"{instance} is below the minimum {value}", f"use a value {op} {value}")]
    if keyword in ("maximum", "exclusiveMaximum"):
        op = "<=" if keyword == "maximum" else "<"
        return [(path, f"{instance} is above the maximum {value}", f"use a value {op} {value}")]
    if keyword == "pattern":
        return [
            (
                path,
                f"{instance!r} does not match the pattern {value}",
                "change the value to match the pattern",
            )
        ]
    if keyword in ("minItems", "minLength", "minProperties"):
        return [(path, f"too short: {error.message}", f"give at least {value}")]
    if keyword in ("maxItems", "maxLength", "maxProperties"):
        return [(path, f"too long: {error.message}", f"give at most {value}")]
    return [(path, error.message, "correct the value so it matches the schema")]
