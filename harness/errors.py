"""One exception tree for meshproof.

::

    MeshproofError                 base; ``exit_code`` is what the CLI exits with
    ├── UserError                  the user can fix it (exit 2): bad input, missing tool
    │   ├── ConfigError            invalid YAML / schema / semantic rule; carries ConfigProblem list
    │   ├── ToolMissing            a required binary or package is absent; names how to get it
    │   ├── UnsupportedFeature     valid Istio, but this backend cannot do it
    │   ├── StateError             no mesh in the state dir, or one already running there
    │   └── SkewError              an upgrade (or a step of one) outside Istio's version-skew rule
    └── HarnessError               something failed at run time (exit 1)
        ├── CommandFailed          a subprocess exited non-zero (argv, exit code, output tails)
        ├── WaitTimeout            a condition did not hold before its deadline (what, last seen)
        ├── BackendError           a backend could not do what was asked
        ├── LoadError              Locust failed (exit 2, a traceback, no spawn): its own message
        └── CheckFailed            a mesh check produced evidence against the configuration

Always ``raise NewError(...) from original``; diagnostics go on with ``add_note``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class MeshproofError(Exception):
    """Base of every error meshproof raises on purpose."""

    exit_code = 1


class UserError(MeshproofError):
    """Something the user can fix; the CLI prints one line and exits 2."""

    exit_code = 2


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in one document of one file."""

    file: str
    document: int  # 1-based index of the YAML document in the file; 0: the file as a whole
    path: str  # field path, e.g. "spec.http[0].route[1].weight"
    message: str  # what was wrong
    fix: str  # how to fix it
    kind: str = ""
    name: str = ""

    def __str__(self) -> str:
        obj = f" {self.kind}/{self.name}" if self.kind else ""
        if self.document == 0:  # about the file (or directory) as a whole, not one of its documents
            where = f"{'directory' if Path(self.file).is_dir() else 'file'} {self.file}"
        else:
            where = f"{self.file} (document {self.document}{obj})"
        field = f" field {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}. Fix: {self.fix}"


class ConfigError(UserError):
    """Invalid configuration; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = tuple(problems)
        lines = [str(p) for p in self.problems]
        super().__init__("\n".join(lines) if lines else "invalid configuration")


class ToolMissing(UserError):
    """A binary or package the chosen backend needs is not available."""

    def __init__(self, tool: str, needed_for: str, how_to_get: str) -> None:
        self.tool, self.needed_for, self.how_to_get = tool, needed_for, how_to_get
        super().__init__(f"{tool} is needed for {needed_for} but was not found. Fix: {how_to_get}")


class UnsupportedFeature(UserError):
    """Valid configuration that this backend cannot honour."""


class StateError(UserError):
    """The state directory does not hold what the command needs."""


class SkewError(UserError):
    """An upgrade, or one of its steps, that Istio's version-skew rule does not support."""


class HarnessError(MeshproofError):
    """A run-time failure of the harness or the mesh under test."""


class CommandFailed(HarnessError):
    """A subprocess exited non-zero."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv, self.returncode = list(argv), returncode
        self.stdout, self.stderr = stdout, stderr
        tail = (stderr or stdout).strip().splitlines()[-15:]
        msg = f"{argv[0]} exited {returncode}: {' '.join(argv)}"
        if tail:
            msg += "\n  " + "\n  ".join(tail)
        super().__init__(msg)


class WaitTimeout(HarnessError):
    """A condition did not hold before its deadline."""

    def __init__(self, what: str, timeout: float, last_seen: object, hint: str = "") -> None:
        self.what, self.timeout, self.last_seen, self.hint = what, timeout, last_seen, hint
        msg = f"timed out after {timeout:.1f}s waiting for {what}; last seen: {last_seen!s}"
        if hint:
            msg += f". Hint: {hint}"
        super().__init__(msg)


class BackendError(HarnessError):
    """A backend operation failed."""


class LoadError(HarnessError):
    """The Locust subprocess failed on its own (not the mesh under test): exit 2, a traceback, no spawn."""


class CheckFailed(HarnessError, AssertionError):
    """Evidence contradicts the configuration; the message carries the observed-vs-expected table."""
