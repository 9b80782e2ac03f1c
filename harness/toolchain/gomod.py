"""The one Go-module helper: find ``go``, download a module, write a wrapper module's go.mod, build.

Every build of meshproof's toolchain (:mod:`harness.toolchain`) goes through these pieces:

* :func:`find_go` looks ``go`` up and names the fix when it is missing;
* :func:`download` is ``go mod download -json MODULE@VERSION``: the module's directory in Go's
  module cache (downloaded when missing) and its go.mod, or one :class:`ToolMissing` naming the
  module, what it was needed for and Go's own error;
* :func:`cached_dir` finds a module already in that cache without downloading it (``doctor``);
* :func:`go_directive` reads the ``go`` line of a go.mod (a wrapper module asks for the Go its
  dependency asks for);
* :func:`wrapper_go_mod` renders a wrapper module: a module that requires the one being built and
  replaces what a module download cannot resolve (Istio's pinned replaces, Kubernetes' staging
  modules, etcd's sibling modules). A module download has no ``./staging`` or ``../`` directories,
  and ``go install module@version`` refuses a module whose go.mod has replace directives;
* :func:`build_argv` is one ``go build`` (``-trimpath``, build tags, ``-ldflags`` version fields).

Runners are injectable (:data:`harness.proc.Runner`-shaped callables), so every build is testable
with a fake ``go``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import proc
from harness.errors import CommandFailed, MeshproofError, ToolMissing

GO_SOURCES = Path(__file__).parent / "go"  # the Go programs meshproof ships (package data)
GO_HINT = "install Go >= 1.26 (see README)"
DEFAULT_DIRECTIVE = "1.26"
DOWNLOAD_TIMEOUT = 900.0
# A pure-Go build inside a wrapper module: no cgo, and go.mod/go.sum completed as needed.
BUILD_ENV = {"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}

Run = Callable[..., proc.Completed]


def source_digest(directory: Path, patterns: Sequence[str] = ("*.go",)) -> str:
    """Digest of a Go program's sources in ``directory`` (the files matching ``patterns``, by name):
    the stamp a build records, so that a change of the sources rebuilds it."""
    h = hashlib.sha256()
    for p in sorted({p for pattern in patterns for p in directory.glob(pattern)}):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def find_go(*, needed_for: str, how_to_get: str = GO_HINT, which: proc.Which = proc.which) -> str:
    """The ``go`` binary; :class:`ToolMissing` naming ``needed_for`` and the fix when there is none."""
    go = which("go")
    if not go:
        raise ToolMissing("go", needed_for, how_to_get)
    return go


@dataclass(frozen=True)
class Module:
    """A module version in Go's module cache (what ``go mod download -json`` answers)."""

    path: str
    version: str
    dir: Path
    go_mod: Path  # the module's go.mod file in the cache (``GoMod``)

    def go_mod_text(self) -> str:
        return self.go_mod.read_text()


def download(
    module: str,
    version: str,
    *,
    go: str,
    needed_for: str,
    how_to_get: str = GO_HINT,
    run: Run = proc.run,
    cwd: Path | None = None,
    timeout: float = DOWNLOAD_TIMEOUT,
) -> Module:
    """``go mod download -json module@version``: the module in Go's module cache (served from there
    when present). ``cwd``: where ``go`` runs (a directory outside any module keeps a go.mod of the
    caller's directory from changing what Go does). Any failure is one :class:`ToolMissing` naming
    the module, with Go's error in a note."""
    target = f"{module}@{version}"
    argv = [go, "mod", "download", "-json", target]
    what = f"Go module {target}"
    kw: dict[str, Any] = {"cwd": cwd} if cwd is not None else {}
    try:
        done = run(argv, timeout=timeout, check=False, **kw)
    except ToolMissing as exc:  # no such go binary
        raise ToolMissing("go", needed_for, how_to_get) from exc
    except CommandFailed as exc:  # proc.run reports a timeout this way
        err = ToolMissing(what, needed_for, how_to_get)
        err.add_note(f"`{' '.join(argv)}` did not finish within {timeout:.0f}s")
        raise err from exc
    info: dict[str, Any] = {}
    try:
        parsed = json.loads(done.stdout) if done.stdout.strip() else {}
        info = parsed if isinstance(parsed, dict) else {}
    except json.JSONDecodeError:
        pass
    directory = info.get("Dir")
    if done.returncode != 0 or info.get("Error") or not isinstance(directory, str):
        failure = CommandFailed(argv, done.returncode, done.stdout, done.stderr)
        err = ToolMissing(what, needed_for, how_to_get)
        reason = info.get("Error") or done.stderr.strip()[-600:] or f"exit code {done.returncode}"
        err.add_note(f"go mod download failed: {reason}")
        raise err from failure
    go_mod = info.get("GoMod")
    return Module(
        module,
        version,
        Path(directory),
        Path(go_mod) if isinstance(go_mod, str) and go_mod else Path(directory) / "go.mod",
    )


def cached_dir(module: str, version: str, *, go: str, run: Run = proc.run) -> Path | None:
    """``module@version``'s directory when Go's module cache already holds it (never downloads)."""
    try:
        out = run([go, "env", "GOMODCACHE"], timeout=30, check=False)
    except MeshproofError:
        return None
    d = Path(out.stdout.strip()) / f"{module}@{version}"
    return d if out.returncode == 0 and d.is_dir() else None


_GO_LINE = re.compile(r"^go\s+(\S+)", re.MULTILINE)


def required_version(go_mod: str, module: str) -> str:
    """The version ``module`` is required at in a go.mod's text, on its own line (not a
    sub-module's); "" when the go.mod does not require it."""
    m = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", go_mod, re.M)
    return m.group(1) if m else ""


def go_directive(go_mod: str, default: str = DEFAULT_DIRECTIVE) -> str:
    """The ``go`` directive of a go.mod text (``1.25.0``), ``default`` when it has none."""
    m = _GO_LINE.search(go_mod)
    return m.group(1) if m else default


def wrapper_go_mod(
    name: str,
    go: str,
    require: tuple[str, str] | None = None,
    replaces: Iterable[tuple[str, str]] = (),
) -> str:
    """go.mod of a wrapper module ``name``: ``go`` directive, the one module it builds
    (``require``: module, version) and ``replace M => M VERSION`` for each of ``replaces``."""
    text = f"module {name}\n\ngo {go}\n"
    if require is not None:
        text += f"\nrequire {require[0]} {require[1]}\n\n"
        text += "".join(f"replace {m} => {m} {v}\n" for m, v in replaces)
    return text


def build_argv(
    go: str,
    package: str,
    out: str | Path,
    *,
    tags: str = "",
    ldflags: str = "",
    chdir: str | Path = "",
) -> list[str]:
    """``go [-C chdir] build -trimpath [-tags=TAGS] [-ldflags FLAGS] -o OUT PACKAGE``."""
    argv = [go, *(["-C", str(chdir)] if chdir else []), "build", "-trimpath"]
    if tags:
        argv.append(f"-tags={tags}")
    if ldflags:
        argv += ["-ldflags", ldflags]
    return [*argv, "-o", str(out), package]


def version_ldflags(fields: Sequence[tuple[str, str]]) -> str:
    """``-X package.var=value ...``: version fields set at link time, as the projects' builds set them."""
    return " ".join(f"-X {var}={value}" for var, value in fields)


def env_argv(env: Mapping[str, str]) -> list[str]:
    """``env K=V ...``: an environment for a runner that takes none (an argv prefix)."""
    return ["env", *(f"{k}={v}" for k, v in env.items())]
