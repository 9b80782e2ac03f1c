"""Istio's own verdict on configuration: ``meshproof-analyze``, built from the pinned module.

``meshproof-analyze`` (``harness/toolchain/go/analyze/main.go``, built by
:mod:`harness.toolchain.istio_analyzer`) runs what ``istioctl analyze --use-kube=false`` runs:
every Istio kind's ``ValidateConfig`` from ``pkg/config/validation`` (errors IST0106, warnings
IST0133, e.g. deprecated fields) and Istio's cross-reference analyzers (IST0101 for a subset,
gateway or host that does not exist, ...). It is built from the same ``istio.io/istio`` module
version as the embedded mesh's istiod, on first use or by ``meshproof install``.

This module only carries documents to Istio and maps Istio's messages back to the user's file,
document and field path, with a fix hint. It decides nothing: an Istio Error is a problem (exit
2), an Istio Warning is a warning, Info is kept for ``--json``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import proc, yamlio
from harness.errors import CommandFailed, ConfigProblem, ToolMissing
from harness.istio.loader import Document
from harness.toolchain.istio_analyzer import BINARY, SETUP_HINT

DOCS_URL = "https://istio.io/latest/docs/reference/config/analysis/{code}/"


@dataclass(frozen=True)
class IstioMessage:
    """One message of Istio's analysis, as Istio reported it."""

    code: str  # IST0106, IST0133, IST0101, ...
    level: str  # Error | Warning | Info
    message: str
    kind: str = ""
    namespace: str = ""
    name: str = ""
    file: str = ""  # source name given to the analyzer
    line: int = 0  # line in that source (the field's, when Istio knows it)
    field_lines: Mapping[str, int] = field(default_factory=dict)
    context: bool = False

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> IstioMessage:
        return cls(
            code=str(raw.get("code", "")),
            level=str(raw.get("level", "")),
            message=str(raw.get("message", "")),
            kind=str(raw.get("kind", "")),
            namespace=str(raw.get("namespace", "")),
            name=str(raw.get("name", "")),
            file=str(raw.get("file", "")),
            line=int(raw.get("line") or 0),
            field_lines={str(k): int(v) for k, v in (raw.get("fieldLines") or {}).items()},
            context=bool(raw.get("context")),
        )


@dataclass(frozen=True)
class CrdError:
    """One reason the Kubernetes API server would refuse a document (its CRD's schema or CEL rule)."""

    file: str  # source name given to the analyzer
    field: str  # the API server's field path, e.g. spec.rules[0].backendRefs[0].weight
    type: str  # the API server's error type, e.g. FieldValueInvalid, FieldValueNotSupported
    message: str  # the API server's message after the field path, verbatim
    crd: str = ""  # the CRD file the rule comes from
    rule: str = ""  # a CEL error's rule (x-kubernetes-validations), as the CRD writes it
    fields: tuple[str, ...] = ()  # an unknown field's: the fields the CRD defines there

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> CrdError:
        return cls(
            file=str(raw.get("file", "")),
            field=str(raw.get("field", "")),
            type=str(raw.get("type", "")),
            message=str(raw.get("message", "")),
            crd=str(raw.get("crd", "")),
            rule=str(raw.get("rule", "")),
            fields=tuple(str(f) for f in raw.get("fields") or ()),
        )


@dataclass(frozen=True)
class Analysis:
    messages: tuple[IstioMessage, ...]
    source_errors: tuple[str, ...] = ()
    crd_errors: tuple[CrdError, ...] = ()


# An analyzer takes the request (see go/analyze/main.go) and returns Istio's report; tests inject
# a fake, everything else uses :func:`run_binary` on the built binary.
Runner = Callable[[Mapping[str, Any]], Analysis]


# ---------------------------------------------------------------------------------------------
# The built binary (harness.toolchain.istio_analyzer builds it)


def run_binary(binary: Path, cache: Path | None = None) -> Runner:
    """A :data:`Runner` that pipes the request through ``binary``.

    With ``cache`` (a directory), Istio's answer to a request is kept there under a digest of the
    request, the CRD files it names (their bytes) and the binary (path, size, mtime, inode): the
    analysis is a function of those, so the same request is answered from the cache without
    running the binary again (the suites apply the same variants in every run; each run of the
    binary costs ~0.1-0.15 CPU-s, mostly its start-up). Rebuilding the binary or editing a CRD
    file changes the digest.
    """

    def runner(request: Mapping[str, Any]) -> Analysis:
        text = json.dumps(request, sort_keys=True)
        hit = _cached(cache, binary, text, request) if cache is not None else None
        raw = json.loads(hit[1]) if hit is not None and hit[1] is not None else None
        if raw is None:
            try:
                done = proc.run([binary], input=text, timeout=300)
            except CommandFailed as exc:
                err = ToolMissing(BINARY, "validating configuration with Istio's own code", SETUP_HINT)
                err.add_note(f"{binary} failed: {exc.stderr.strip()[-600:]}")
                raise err from exc
            raw = json.loads(done.stdout)
            if hit is not None:
                _keep(hit[0], done.stdout)
        return Analysis(
            tuple(IstioMessage.from_json(m) for m in raw.get("messages") or ()),
            tuple(str(e) for e in raw.get("sourceErrors") or ()),
            tuple(CrdError.from_json(e) for e in raw.get("crdErrors") or ()),
        )

    return runner


def _cached(cache: Path, binary: Path, text: str, request: Mapping[str, Any]) -> tuple[Path, str | None]:
    """Where ``request``'s answer is kept in ``cache``, and the answer when it is there."""
    digest = hashlib.sha256()
    st = binary.stat()
    digest.update(f"{binary.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0".encode())
    for crd in request.get("crds") or ():
        digest.update(Path(crd).read_bytes() + b"\0")
    digest.update(text.encode())
    path = cache / f"{digest.hexdigest()}.json"
    try:
        return path, path.read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return path, None


def _keep(path: Path, answer: str) -> None:
    """Write ``answer`` to ``path`` whole (a concurrent reader sees it complete or not at all)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(answer)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Documents in, problems out


@dataclass(frozen=True)
class Verdict:
    """Istio's findings mapped onto the user's documents."""

    errors: tuple[ConfigProblem, ...]
    warnings: tuple[ConfigProblem, ...]
    infos: tuple[ConfigProblem, ...]
    messages: tuple[IstioMessage, ...]
    refused: tuple[ConfigProblem, ...] = ()  # what the API server would refuse (CRD schema, CEL)


# Kinds without a namespace; every other object without metadata.namespace lives in "default",
# as Kubernetes would put it there.
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "Node",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "IngressClass",
        "GatewayClass",
    }
)


def _dump(doc: Document, default_namespace: str) -> str:
    body = doc.body
    meta = body.get("metadata")
    if doc.kind not in CLUSTER_SCOPED and isinstance(meta, dict) and not meta.get("namespace"):
        body = {**body, "metadata": {**meta, "namespace": default_namespace}}
    return yamlio.dump(body, sort_keys=False, default_flow_style=False)


def request_for(
    docs: Sequence[Document],
    context: Sequence[Document] = (),
    *,
    replaced: Sequence[Document] = (),
    namespace: str = "default",
    crds: Sequence[str] = (),
) -> dict[str, Any]:
    """The analyzer request: each document its own source, so a message maps back exactly.

    ``context`` is what stays applied, ``replaced`` what ``docs`` replace (analyzed only as the
    "before" that decides which context messages are new). Objects without a namespace are put
    in ``namespace``; Istio is asked about every namespace. ``crds`` are CRD files whose kinds
    the analyzer admits first as the API server would (schema, defaults, CEL rules): a document
    it would refuse is reported as :class:`CrdError` and not analyzed.
    """

    def source(prefix: str, i: int, d: Document, *, context: bool, replaced: bool = False) -> dict[str, Any]:
        text = _dump(d, namespace)
        return {"name": f"{prefix}-{i}.yaml", "text": text, "context": context, "replaced": replaced}

    sources = [source("doc", i, d, context=False) for i, d in enumerate(docs)]
    sources += [source("ctx", i, d, context=True) for i, d in enumerate(context)]
    sources += [source("old", i, d, context=True, replaced=True) for i, d in enumerate(replaced)]
    request: dict[str, Any] = {"namespace": "", "istioNamespace": "istio-system", "sources": sources}
    if crds:
        request["crds"] = list(crds)
    return request


_SOURCE = re.compile(r"(doc|ctx)-(\d+)\.yaml")


def verdict(
    runner: Runner,
    docs: Sequence[Document],
    context: Sequence[Document] = (),
    *,
    replaced: Sequence[Document] = (),
    namespace: str = "default",
    crds: Sequence[str] = (),
) -> Verdict:
    """Run Istio's analysis over ``docs`` (with ``context``) and map every message to a document.

    With ``crds``, the documents of those CRDs' kinds are admitted first as the API server would
    admit them; its refusals are :attr:`Verdict.refused` (and those documents are not analyzed).
    """
    analysis = runner(request_for(docs, context, replaced=replaced, namespace=namespace, crds=crds))
    errors: list[ConfigProblem] = []
    warnings: list[ConfigProblem] = []
    infos: list[ConfigProblem] = []
    for m in analysis.messages:
        where = _SOURCE.fullmatch(m.file)
        if where is None:
            if m.level != "Error":
                continue  # about Istio's own default objects, not the user's
            problem = ConfigProblem(
                file="<istio>",
                document=0,
                path="",
                message=_text(m),
                fix=_fix(m, ""),
                kind=m.kind,
                name=m.name,
            )
        else:
            pool = docs if where.group(1) == "doc" else context
            doc = pool[int(where.group(2))]
            path = _field_path(m, doc)
            problem = doc.problem(path, _text(m), _fix(m, path))
        {"Error": errors, "Warning": warnings}.get(m.level, infos).append(problem)
    for text in analysis.source_errors:
        errors.extend(_source_problems(text, docs, context))
    refused = []
    for e in analysis.crd_errors:
        where = _SOURCE.fullmatch(e.file)
        if where is None or where.group(1) != "doc":
            continue  # context objects were admitted when they were applied
        refused.append(_crd_problem(docs[int(where.group(2))], e))
    return Verdict(tuple(errors), tuple(warnings), tuple(infos), analysis.messages, tuple(refused))


# ---------------------------------------------------------------------------------------------
# The API server's refusals (presentation only: its message is shown as it is, without the
# repeated "<field> in body" of OpenAPI schema errors)


def _crd_problem(doc: Document, e: CrdError) -> ConfigProblem:
    path = "" if e.field in ("", "<nil>") else e.field
    message = (
        e.message.replace(f"{path} in body ", "") if path else e.message.removeprefix("Invalid value: null: ")
    )
    crd = Path(e.crd).name.removesuffix(".json").removesuffix(".yaml")
    return doc.problem(path, f"Kubernetes would refuse it ({crd}): {message}", _crd_fix(e, path, message))


def _crd_fix(e: CrdError, path: str, message: str) -> str:
    leaf = re.sub(r"\[\d+\]$", "", path.rsplit(".", 1)[-1]) if path else "the field"
    if e.type == "FieldValueUnknown":
        close = difflib.get_close_matches(leaf, e.fields, n=1, cutoff=0.6)
        if close:
            return (
                f"did you mean {close[0]}? Rename {leaf} to {close[0]} (fields here: {', '.join(e.fields)})"
            )
        listed = f"; fields allowed here: {', '.join(e.fields)}" if e.fields else ""
        return f"remove {leaf}{listed}"
    if e.type == "FieldValueNotSupported":
        allowed = re.findall(r'"([^"]*)"', message.split("supported values:", 1)[-1])
        got = re.search(r'Unsupported value: "([^"]*)"', message)
        close = difflib.get_close_matches(got.group(1), allowed, n=1, cutoff=0.6) if got else []
        hint = f"did you mean {close[0]}? " if close else ""
        return f"{hint}use one of the supported values for {leaf}"
    if e.type == "FieldValueRequired":
        return f"add {leaf}"
    if e.type == "FieldValueTypeInvalid":
        want = re.search(r"must be of type (\w+)", message)
        return f"write {leaf} as {want.group(1) if want else 'the type the CRD names'}"
    if e.type in ("FieldValueTooLong", "FieldValueTooMany"):
        return f"shorten {leaf} to the limit the CRD gives"
    bound = re.search(r"should be (greater|less) than (or equal to )?(-?[\d.e+]+)", message)
    if bound:
        op = {"greater": ">", "less": "<"}[bound.group(1)] + ("=" if bound.group(2) else "")
        return f"use a {leaf} {op} {bound.group(3)}"
    if "some validation rules were not checked" in message:
        return "fix the other problems of this document; its CEL rules are checked then"
    if e.rule:
        return f"change {leaf} so that the CRD's rule holds: {e.rule}"
    return f"change {leaf} so that the CRD's rule holds"


_PROCESSING = re.compile(r"error processing (doc|ctx)-(\d+)\.yaml(?:\[\d+\])?: (.*)")
_QUOTED = re.compile(r'"([^"]+)"')


def _source_problems(text: str, docs: Sequence[Document], context: Sequence[Document]) -> list[ConfigProblem]:
    """Istio's errors reading documents (a value it cannot parse), one problem per document."""
    out: list[ConfigProblem] = []
    for raw in text.splitlines():
        line = raw.strip().lstrip("*").strip()
        if (
            not line
            or re.fullmatch(r"\d+ errors? occurred:", line)
            or line.startswith("errors parsing content")
        ):
            continue
        got = _PROCESSING.search(line)
        fix = "correct the value Istio names (see the schema of this kind)"
        if got is None:
            out.append(ConfigProblem(file="<istio>", document=0, path="", message=f"Istio: {line}", fix=fix))
            continue
        pool = docs if got.group(1) == "doc" else context
        doc = pool[int(got.group(2))]
        message = got.group(3)
        path = next((p for v in _QUOTED.findall(message) if (p := _find_value(doc.body, v))), "")
        for pattern, _fieldname, fix_text in _HINTS:
            if re.search(pattern, message, re.I):
                fix = fix_text
                break
        out.append(doc.problem(path, f"Istio cannot read it: {message}", fix))
    return out


def _find_value(obj: Any, value: str, path: str = "") -> str:
    """Path of the first string field whose value is ``value``."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            here = f"{path}.{k}" if path else str(k)
            got = here if v == value else _find_value(v, value, here)
            if got:
                return got
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            got = f"{path}[{i}]" if v == value else _find_value(v, value, f"{path}[{i}]")
            if got:
                return got
    return ""


def _text(m: IstioMessage) -> str:
    return f"Istio {m.code} {m.level.lower()}: {m.message}"


# ---------------------------------------------------------------------------------------------
# Field paths and fix hints (presentation only: Istio's message is always shown as it is)

_ISTIO_PATH = re.compile(r"^\{\.(.*)\}$")


def _field_path(m: IstioMessage, doc: Document) -> str:
    """The field Istio's message is about: from Istio's own field map when it gave a line."""
    if m.line > 0:
        at_line = [k for k, line in m.field_lines.items() if line == m.line]
        # the deepest path on that line (a map's first key shares the line of its parent item)
        at_line.sort(key=lambda k: (k.count(".") + k.count("["), len(k)), reverse=True)
        for key in at_line:
            got = _ISTIO_PATH.match(key)
            if got and got.group(1).startswith("spec"):
                return _sibling(doc.body, got.group(1), m.message)
    for pattern, fieldname, _fix_text in _HINTS:
        if fieldname and re.search(pattern, m.message, re.I):
            paths = _find_key(doc.body, fieldname)
            # the field whose value the message quotes (e.g. "weight -20 < 0"), else the first
            tokens = set(re.findall(r"-?\d+(?:\.\d+)?|\w+", m.message))
            for path, value in paths:
                if str(value) in tokens:
                    return path
            if paths:
                return paths[0][0]
    return ""


def _sibling(body: Any, path: str, message: str) -> str:
    """Istio marks the line of an object's first field; the field the message names, if it is there."""
    parent, _, last = path.rpartition(".")
    for pattern, fieldname, _fix_text in _HINTS:
        if fieldname and re.search(pattern, message, re.I):
            if last.split("[")[0] == fieldname:
                return path
            for candidate, _value in _find_key(body, fieldname):
                if candidate == f"{parent}.{fieldname}":
                    return candidate
    return path


def _find_key(obj: Any, key: str, path: str = "") -> list[tuple[str, Any]]:
    """``(path, value)`` of every field named ``key``, in document order."""
    found: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            here = f"{path}.{k}" if path else str(k)
            if k == key:
                found.append((here, v))
            found.extend(_find_key(v, key, here))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found.extend(_find_key(v, key, f"{path}[{i}]"))
    return found


# (regex on Istio's message, the field it names, our fix hint)
_HINTS: tuple[tuple[str, str, str], ...] = (
    (
        r"consecutive errors is deprecated",
        "consecutiveErrors",
        "Istio still accepts it but no longer translates it, so Envoy's default applies (eject after "
        "5 consecutive 5xx); write consecutive5xxErrors (or consecutiveGatewayErrors) to say so explicitly",
    ),
    (r"weight .* < 0|weight.*negative", "weight", "use a weight of 0 or more; Istio routes by proportion"),
    (
        r"host\+subset in destinationrule not found",
        "subset",
        "define that subset in a DestinationRule for the host, or route to a subset one defines",
    ),
    (
        r"Referenced gateway not found",
        "gateways",
        "define the Gateway, or name an existing one (namespace/name)",
    ),
    (
        r"Referenced host not found",
        "host",
        "route to a host of a Service or ServiceEntry of the configuration",
    ),
    (r"total destination weight.*0|weight.*= 0", "route", "give at least one destination a weight above 0"),
    (r"percentage", "percentage", "use a percentage from 0.0 to 100.0"),
    (r"duration", "", "write a duration such as 5s or 100ms (at least 1ms, whole milliseconds)"),
)


def _fix(m: IstioMessage, path: str) -> str:
    for pattern, _fieldname, fix_text in _HINTS:
        if re.search(pattern, m.message, re.I):
            return fix_text
    return f"see {DOCS_URL.format(code=m.code.lower())}"
