"""YAML for the harness's own files, through libyaml when PyYAML was built with it.

PyYAML's ``CSafeLoader``/``CSafeDumper`` read and write the same documents as ``safe_load``/
``safe_dump`` (the same constructors, representers and resolver; libyaml parses and emits) at a
fraction of the CPU: measured on this project's manifests and the local mesh's config files,
loading took about an eighth and dumping a fifth of the pure-Python classes' time, with
byte-identical output (``tests/unit/test_yamlio.py``). Without libyaml the pure-Python safe classes
are used. Users' files are read by :mod:`harness.istio.loader`, which keeps line numbers for its errors.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def load(text: str) -> Any:
    """``yaml.safe_load``."""
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a safe loader (CSafeLoader or SafeLoader)


def dump(data: Any, **options: Any) -> str:
    """``yaml.safe_dump`` to a string (same options)."""
    return str(yaml.dump(data, Dumper=Dumper, **options))


def dump_all(documents: Iterable[Any], **options: Any) -> str:
    """``yaml.safe_dump_all`` to a string (same options)."""
    return str(yaml.dump_all(documents, Dumper=Dumper, **options))
