"""Validate Kubernetes/Istio YAML: load, check against real schemas, apply Istio's semantic rules.

``validate_paths`` is what ``meshproof validate -f`` runs; ``validate_documents`` is what
``apply -f`` runs, with the already-applied bundle as context so that references (subsets,
gateways, selectors) resolve against both. Every problem of every file is collected and raised
once as a :class:`~harness.errors.ConfigError`; nothing a user writes produces a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.errors import ConfigError, ConfigProblem
from harness.istio import semantic
from harness.istio.loader import Document, parse_text, read_paths
from harness.istio.model import Bundle
from harness.istio.schemas import SchemaSet, load_schemas


def validate_paths(
    paths: Sequence[str | Path],
    *,
    bundle_context: Bundle | None = None,
    istio_version: str | None = None,
    schemas: SchemaSet | None = None,
    cache_dir: Path | None = None,
) -> Bundle:
    """Load and validate every YAML file under ``paths``; return the :class:`Bundle`.

    ``istio_version`` is a key of ``harness.versions.ISTIO_RELEASES`` (default: the default
    release); ``cache_dir`` is where translated schemas are cached (default
    ``~/.cache/meshproof/schemas``); ``schemas`` injects a ready :class:`SchemaSet` instead. Raises
    :class:`ConfigError` with every problem found, or :class:`~harness.errors.ToolMissing` when
    Istio's schemas cannot be obtained.

    With ``bundle_context`` (e.g. ``validate_paths([settings.manifests])``, or what is already
    applied) the files are validated as :func:`validate_documents` does: references resolve
    against the context too, and the merged bundle is returned. ``apply -f`` needs this: a
    re-weighted VirtualService alone names subsets and a Gateway defined elsewhere.
    """
    loaded = read_paths(paths)
    schema_set = schemas or load_schemas(istio_version, cache_dir=cache_dir)
    return _validate(loaded.documents, loaded.problems, bundle_context, schema_set, loaded.files)


def validate_documents(
    docs: Sequence[Document],
    bundle_context: Bundle | None = None,
    *,
    istio_version: str | None = None,
    schemas: SchemaSet | None = None,
    cache_dir: Path | None = None,
) -> Bundle:
    """Validate ``docs`` in the context of ``bundle_context`` (e.g. what is already applied).

    Returns the context with ``docs`` merged in (a document replaces the context's object of
    the same kind, namespace and name). Problems are reported for ``docs``, and for context
    objects that ``docs`` would break (e.g. a VirtualService whose subset a new
    DestinationRule no longer defines).
    """
    schema_set = schemas or load_schemas(istio_version, cache_dir=cache_dir)
    return _validate(tuple(docs), (), bundle_context, schema_set)


def validate_text(
    text: str,
    file: str = "<stdin>",
    bundle_context: Bundle | None = None,
    *,
    istio_version: str | None = None,
    schemas: SchemaSet | None = None,
    cache_dir: Path | None = None,
) -> Bundle:
    """:func:`validate_documents` for YAML text (``apply -f -``)."""
    docs, problems = parse_text(text, file)
    schema_set = schemas or load_schemas(istio_version, cache_dir=cache_dir)
    return _validate(tuple(docs), tuple(problems), bundle_context, schema_set)


def _validate(
    docs: Sequence[Document],
    load_problems: Sequence[ConfigProblem],
    context: Bundle | None,
    schema_set: SchemaSet,
    files: Sequence[str] = (),
) -> Bundle:
    problems = list(load_problems)
    warnings: list[ConfigProblem] = list(context.warnings) if context is not None else []
    for doc in docs:
        result = schema_set.check(doc)
        problems.extend(result.problems)
        warnings.extend(result.warnings)
    base = context if context is not None else Bundle(())
    bundle = base.merged(docs)
    problems.extend(semantic.check(docs, bundle))
    if context is not None:
        # Context objects that were fine before but are broken by the new documents.
        replaced = {id(d) for d in context.documents} - {id(d) for d in bundle.documents}
        still = [d for d in context.documents if id(d) not in replaced]
        before = {str(p) for p in semantic.check(still, context)}
        problems.extend(p for p in semantic.check(still, bundle) if str(p) not in before)
    if problems:
        raise ConfigError(_ordered(problems, [*files, *(d.file for d in docs)]))
    return Bundle(bundle.documents, tuple(warnings))


def _ordered(problems: Sequence[ConfigProblem], files: Sequence[str]) -> list[ConfigProblem]:
    """Problems by file (in load order), then document; each rule's order is kept in a document."""
    rank: dict[str, int] = {}
    for f in [*files, *(p.file for p in problems)]:
        rank.setdefault(f, len(rank))
    return sorted(problems, key=lambda p: (rank[p.file], p.document))
