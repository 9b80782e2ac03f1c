"""What each backend needs, what is present (with versions), what is missing and how to get it."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from harness import proc
from harness.errors import CommandFailed, ToolMissing


@dataclass(frozen=True)
class ToolStatus:
    name: str
    backend: str  # "local", "kind", "existing" or "all"
    needed_for: str
    found: bool
    version: str = ""
    path: str = ""
    how_to_get: str = ""
    optional: bool = False  # missing does not make the backend unready (e.g. a second Istio release)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def probe(
    name: str,
    backend: str,
    needed_for: str,
    how_to_get: str,
    version_argv: list[str] | None = None,
    path: str | None = None,
    pattern: str = r"v?(\d+\.\d+(?:\.\d+)?[\w.+-]*)",
) -> ToolStatus:
    """Look ``name`` up on PATH (or at ``path``) and read its version with ``version_argv``."""
    where = path if path is not None else proc.which(name)
    if not where:
        return ToolStatus(name, backend, needed_for, False, how_to_get=how_to_get)
    version = ""
    if version_argv is not None:
        try:
            out = proc.run([where, *version_argv], timeout=30, check=False)
            m = re.search(pattern, out.stdout + out.stderr)
            version = m.group(1) if m else (out.stdout + out.stderr).strip().splitlines()[0][:80]
        except (CommandFailed, ToolMissing, IndexError):
            version = "unknown"
    return ToolStatus(name, backend, needed_for, True, version, where, how_to_get)
