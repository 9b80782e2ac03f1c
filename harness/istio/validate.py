"""Validate Kubernetes/Istio YAML: load, check the schemas, then ask Istio.

1. load (:mod:`~harness.istio.loader`): YAML syntax, apiVersion/kind/metadata.name;
2. schemas (:mod:`~harness.istio.schemas`): the Kubernetes schemas and Istio's CRD schemas (what
   the API server would check), plus the Kubernetes API-server rules kept in
   :mod:`~harness.istio.semantic`;
3. the Kubernetes API server's own admission code, in ``meshproof-analyze``, for Gateway API
   kinds: their CRD's OpenAPI schema, unknown fields, defaults and CEL rules
   (:mod:`~harness.istio.crds`); a document it would refuse is not given to Istio;
4. Istio (:mod:`~harness.istio.analyzer`): Istio's own validation and analyzers (the Gateway API
   analyzers included), over the documents plus the context (what is applied, or the manifests)
   for cross-references. Istio's errors are problems, its warnings are warnings;
5. meshproof's own annotation ``meshproof.dev/traffic-api`` must name a known traffic API
   (:mod:`~harness.istio.traffic_api`);
6. meshproof's own warnings (:func:`harness.istio.semantic.warn`), labelled as such.

``validate_paths`` is what ``meshproof validate -f`` runs; ``validate_documents`` is what
``apply -f`` runs, with the already-applied bundle as context. Every problem of every file is
collected and raised once as a :class:`~harness.errors.ConfigError`; nothing a user writes
produces a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from harness.errors import ConfigError, ConfigProblem
from harness.istio import analyzer, semantic, traffic_api
from harness.istio.loader import Document, parse_text, read_paths
from harness.istio.model import Bundle
from harness.istio.schemas import SchemaSet, load_schemas
from harness.settings import from_env
from harness.toolchain import istio_analyzer


def validate_paths(
    paths: Sequence[str | Path],
    *,
    bundle_context: Bundle | None = None,
    istio_version: str | None = None,
    schemas: SchemaSet | None = None,
    cache_dir: Path | None = None,
    istio: analyzer.Runner | None = None,
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
    runner = istio or default_runner(istio_version)
    return _validate(loaded.documents, loaded.problems, bundle_context, schema_set, runner, loaded.files)


def validate_documents(
    docs: Sequence[Document],
    bundle_context: Bundle | None = None,
    *,
    istio_version: str | None = None,
    schemas: SchemaSet | None = None,
    cache_dir: Path | None = None,
    istio: analyzer.Runner | None = None,
) -> Bundle:
    """Validate ``docs`` in the context of ``bundle_context`` (e.g. what is already applied).

    Returns the context with ``docs`` merged in (a document replaces the context's object of
    the same kind, namespace and name). Problems are reported for ``docs``, and for context
    objects that ``docs`` would break (e.g. a VirtualService whose subset a new
    DestinationRule no longer defines).
    """
    schema_set = schemas or load_schemas(istio_version, cache_dir=cache_dir)
    return _validate(tuple(docs), (), bundle_context, schema_set, istio or default_runner(istio_version))


def validate_text(
    text: str,
    file: str = "<stdin>",
    bundle_context: Bundle | None = None,
    *,
    istio_version: str | None = None,
    schemas: SchemaSet | None = None,
    cache_dir: Path | None = None,
    istio: analyzer.Runner | None = None,
) -> Bundle:
    """:func:`validate_documents` for YAML text (``apply -f -``)."""
    docs, problems = parse_text(text, file)
    schema_set = schemas or load_schemas(istio_version, cache_dir=cache_dir)
    runner = istio or default_runner(istio_version)
    return _validate(tuple(docs), tuple(problems), bundle_context, schema_set, runner)


def default_runner(istio_version: str | None) -> analyzer.Runner:
    """Istio's analyzer for ``istio_version`` from the meshproof cache (built on first use); its
    answers are kept beside it (:func:`analyzer.run_binary`)."""
    settings = from_env()
    version = istio_version or settings.istio_version
    binary = istio_analyzer.ensure(settings.cache_dir, version)
    return analyzer.run_binary(binary, cache=settings.cache_dir / f"istio-{version}" / "analyses")


def _validate(
    docs: Sequence[Document],
    load_problems: Sequence[ConfigProblem],
    context: Bundle | None,
    schema_set: SchemaSet,
    istio: analyzer.Runner,
    files: Sequence[str] = (),
) -> Bundle:
    problems = list(load_problems)
    warnings: list[ConfigProblem] = list(context.warnings) if context is not None else []
    clean: list[Document] = []
    for doc in docs:
        result = schema_set.check(doc)
        problems.extend(result.problems)
        warnings.extend(result.warnings)
        if not result.problems:
            clean.append(doc)
    base = context if context is not None else Bundle(())
    bundle = base.merged(docs)
    problems.extend(semantic.check(docs, bundle))
    problems.extend(traffic_api.problems(docs))  # meshproof's own annotation: which routes `up` applies
    infos: list[ConfigProblem] = []
    if clean:
        # Istio reads what passed the schemas. Its messages about context objects are reported
        # only when the new documents caused them; while some documents are broken, a missing
        # reference (IST0101) may be one of them, so those wait until the rest is fixed.
        replaced = {id(d) for d in base.documents} - {id(d) for d in bundle.documents}
        still = [d for d in base.documents if id(d) not in replaced]
        gone = [d for d in base.documents if id(d) in replaced]
        crds = schema_set.crd_files([*clean, *base.documents])
        verdict = analyzer.verdict(istio, clean, still, replaced=gone, crds=crds)
        problems.extend(verdict.refused)
        partial = len(clean) < len(docs) or bool(load_problems) or bool(verdict.refused)
        problems.extend(p for p in verdict.errors if not (partial and "IST0101" in p.message))
        warnings.extend(verdict.warnings)
        infos.extend(verdict.infos)
    if problems:
        raise ConfigError(_ordered(problems, [*files, *(d.file for d in docs)]))
    warnings.extend(semantic.warn(docs, bundle))
    return Bundle(bundle.documents, tuple(warnings), tuple(infos))


def _ordered(problems: Sequence[ConfigProblem], files: Sequence[str]) -> list[ConfigProblem]:
    """Problems by file (in load order), then document; each rule's order is kept in a document."""
    rank: dict[str, int] = {}
    for f in [*files, *(p.file for p in problems)]:
        rank.setdefault(f, len(rank))
    return sorted(problems, key=lambda p: (rank[p.file], p.document))
