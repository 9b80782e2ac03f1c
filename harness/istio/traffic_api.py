"""Which traffic API the mesh's routes come from: Istio's VirtualServices or Gateway API HTTPRoutes.

The manifests carry both. A document annotated ``meshproof.dev/traffic-api: <api>`` is applied by
``up`` (every backend) only when the mesh's traffic API (``--traffic-api``, $MESHPROOF_TRAFFIC_API,
:attr:`harness.settings.Settings.traffic_api`) is ``<api>``; a document without the annotation
always is. The suites' view of the applied configuration is the same selection.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from harness.errors import ConfigError, ConfigProblem
from harness.istio.loader import Document
from harness.istio.model import Bundle
from harness.settings import TRAFFIC_APIS

__all__ = [
    "ANNOTATION",
    "DEFAULT",
    "FIELD",
    "TRAFFIC_APIS",
    "annotated",
    "problems",
    "select",
    "select_bundle",
]

ANNOTATION = "meshproof.dev/traffic-api"
DEFAULT = "istio"
FIELD = f"metadata.annotations[{ANNOTATION}]"


def annotated(body: Mapping[str, Any]) -> str | None:
    """The document's traffic API annotation (None: it has none, so it is always applied)."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    value = annotations.get(ANNOTATION) if isinstance(annotations, Mapping) else None
    return None if value is None else str(value)


def problems(docs: Iterable[Document]) -> list[ConfigProblem]:
    """One problem per document whose annotation names no known traffic API."""
    found = []
    for d in docs:
        value = annotated(d.body)
        if value is not None and value not in TRAFFIC_APIS:
            found.append(
                d.problem(
                    FIELD,
                    f"unknown traffic API {value!r}",
                    f"use one of {', '.join(TRAFFIC_APIS)}, or drop the annotation to apply the object "
                    "whichever API the mesh routes with",
                )
            )
    return found


def select(docs: Iterable[Document], api: str) -> tuple[Document, ...]:
    """The documents ``up`` applies when the mesh routes with ``api``; ConfigError (exit 2) naming
    file and field when an annotation names no known traffic API."""
    docs = tuple(docs)
    if bad := problems(docs):
        raise ConfigError(bad)
    return tuple(d for d in docs if annotated(d.body) in (None, api))


def select_bundle(bundle: Bundle, api: str) -> Bundle:
    """``bundle`` (e.g. the validated manifests) as ``up`` applied it for ``api``."""
    return dataclasses.replace(bundle, documents=select(bundle.documents, api))
