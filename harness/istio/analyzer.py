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

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness import proc
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
class Analysis:
    messages: tuple[IstioMessage, ...]
    source_errors: tuple[str, ...] = ()


# An analyzer takes the request (see go/analyze/main.go) and returns Istio's report; tests inject
# a fake, everything else uses :func:`run_binary` on the built binary.
Runner = Callable[[Mapping[str, Any]], Analysis]


# ---------------------------------------------------------------------------------------------
# The built binary (harness.toolchain.istio_analyzer builds it)


def run_binary(binary: Path) -> Runner:
    """A :data:`Runner` that pipes the request through ``binary``."""

    def runner(request: Mapping[str, Any]) -> Analysis:
        try:
            done = proc.run([binary], input=json.dumps(request), timeout=300)
        except CommandFailed as exc:
            err = ToolMissing(BINARY, "validating configuration with Istio's own code", SETUP_HINT)
            err.add_note(f"{binary} failed: {exc.stderr.strip()[-600:]}")
            raise err from exc
        raw = json.loads(done.stdout)
        return Analysis(
            tuple(IstioMessage.from_json(m) for m in raw.get("messages") or ()),
            tuple(str(e) for e in raw.get("sourceErrors") or ()),
        )

    return runner


# ---------------------------------------------------------------------------------------------
# Documents in, problems out


@dataclass(frozen=True)
class Verdict:
    """Istio's findings mapped onto the user's documents."""

    errors: tuple[ConfigProblem, ...]
    warnings: tuple[ConfigProblem, ...]
    infos: tuple[ConfigProblem, ...]
    messages: tuple[IstioMessage, ...]


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
    return yaml.safe_dump(body, sort_keys=False, default_flow_style=False)


def request_for(
    docs: Sequence[Document],
    context: Sequence[Document] = (),
    *,
    replaced: Sequence[Document] = (),
    namespace: str = "default",
) -> dict[str, Any]:
    """The analyzer request: each document its own source, so a message maps back exactly.

    ``context`` is what stays applied, ``replaced`` what ``docs`` replace (analyzed only as the
    "before" that decides which context messages are new). Objects without a namespace are put
    in ``namespace``; Istio is asked about every namespace.
    """

    def source(prefix: str, i: int, d: Document, *, context: bool, replaced: bool = False) -> dict[str, Any]:
        text = _dump(d, namespace)
        return {"name": f"{prefix}-{i}.yaml", "text": text, "context": context, "replaced": replaced}

    sources = [source("doc", i, d, context=False) for i, d in enumerate(docs)]
    sources += [source("ctx", i, d, context=True) for i, d in enumerate(context)]
    sources += [source("old", i, d, context=True, replaced=True) for i, d in enumerate(replaced)]
    return {"namespace": "", "istioNamespace": "istio-system", "sources": sources}


_SOURCE = re.compile(r"(doc|ctx)-(\d+)\.yaml")


def verdict(
    runner: Runner,
    docs: Sequence[Document],
    context: Sequence[Document] = (),
    *,
    replaced: Sequence[Document] = (),
    namespace: str = "default",
) -> Verdict:
    """Run Istio's analysis over ``docs`` (with ``context``) and map every message to a document."""
    analysis = runner(request_for(docs, context, replaced=replaced, namespace=namespace))
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
    return Verdict(tuple(errors), tuple(warnings), tuple(infos), analysis.messages)


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
