"""The tools the kind/existing backends need: where they are, their versions, and how to get them.

:func:`preflight` runs before anything touches a cluster and raises one
:class:`~harness.errors.ToolMissing` naming the first missing piece (with every other missing
piece in a note). :func:`harness.backends.kube.doctor.doctor` reports the same facts without
raising, for ``meshproof doctor``.
Lookups go through an injectable ``which`` and subprocesses through an injectable runner with
:func:`harness.proc.run`'s signature, so both are testable offline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harness import proc
from harness.errors import CommandFailed, MeshproofError, ToolMissing
from harness.versions import IstioRelease, parse_version


def default_which(tool: str) -> str:
    return proc.which(tool)


def minor(release: IstioRelease) -> str:
    """``1.30`` for release labels ``1.30`` or ``1.31-dev``-style ``1.31``."""
    m = re.match(r"\d+\.\d+", release.label)
    return m.group(0) if m else release.label


def same_minor(version: str, line: str) -> bool:
    """Whether ``1.30.2`` (or a ``1.30-alpha.<sha>`` dev build) belongs to the ``1.30`` line."""
    return version == line or version.startswith((line + ".", line + "-"))


@dataclass(frozen=True)
class Tool:
    name: str
    needed_for: str
    how_to_get: str
    version_argv: tuple[str, ...]


DOCKER = Tool(
    "docker",
    "the kind cluster's nodes and building the sample image",
    "install Docker Engine (https://docs.docker.com/engine/install/) or Docker Desktop and put `docker` on PATH",
    ("version", "--format", "{{.Client.Version}}"),
)
KIND = Tool(
    "kind",
    "creating the kind cluster",
    "install kind (`go install sigs.k8s.io/kind@latest`, or a release binary from "
    "https://kind.sigs.k8s.io/docs/user/quick-start/#installation) and put it on PATH",
    ("version",),
)
KUBECTL = Tool(
    "kubectl",
    "looking at the cluster by hand (optional: meshproof itself talks to the Kubernetes API)",
    "install kubectl (https://kubernetes.io/docs/tasks/tools/) and put it on PATH",
    ("version", "--client"),
)


def istioctl_tool(release: IstioRelease) -> Tool:
    m = minor(release)
    return Tool(
        "istioctl",
        f"installing Istio {release.label} into the kind cluster",
        f"download Istio {m}.x (`curl -L https://istio.io/downloadIstio | ISTIO_VERSION={m}.0 sh -`, or a "
        f"{m} dev build) and put its bin/ on PATH; `istioctl version --remote=false` must say {m}.x",
        ("version", "--remote=false"),
    )


def docker_engine_missing(detail: str) -> ToolMissing:
    err = ToolMissing(
        "a running Docker engine",
        "the kind cluster's nodes",
        "start Docker (e.g. `sudo systemctl start docker`, or open Docker Desktop) and check that "
        "`docker info` succeeds for your user",
    )
    if detail:
        err.add_note(f"`docker info` said: {detail}")
    return err


@dataclass(frozen=True)
class ToolPaths:
    """Absolute paths of the tools found ("" when absent and not needed)."""

    docker: str = ""
    kind: str = ""
    istioctl: str = ""
    kubectl: str = ""
    istioctl_version: str = ""


def _tail(c: proc.Completed | CommandFailed) -> str:
    text = (c.stderr or c.stdout).strip().splitlines()
    return text[-1] if text else ""


def tool_version(path: str, tool: Tool, run: proc.Runner) -> str:
    try:
        out = run([path, *tool.version_argv], timeout=30, check=False)
    except MeshproofError:
        return ""
    return parse_version(out.stdout + "\n" + out.stderr)


def check_docker_engine(docker: str, run: proc.Runner) -> str:
    """The Docker server version; raises ToolMissing when the engine is not reachable."""
    try:
        out = run([docker, "info", "--format", "{{.ServerVersion}}"], timeout=60, check=False)
    except MeshproofError as e:
        raise docker_engine_missing(str(e)) from e
    version = out.stdout.strip()
    if out.returncode != 0 or not version or "error" in version.lower():
        raise docker_engine_missing(_tail(out))
    return version


def preflight(
    backend: str,
    release: IstioRelease,
    *,
    which: proc.Which = default_which,
    run: proc.Runner = proc.run,
    istioctl: str = "",
) -> ToolPaths:
    """Check the tools ``backend`` ("kind" or "existing") needs; raise ToolMissing for what is missing.

    kind needs docker (with a running engine), kind and an istioctl of the pinned Istio release:
    ``istioctl`` when given (the one built from the pinned module for locally built images, checked
    when it was built), else the one on PATH, whose minor version must be ``release``'s.
    existing needs none of them (Istio is already installed; the cluster is checked over its API);
    docker and kind are used when present, to build and load the sample image into a kind context.
    """
    built = istioctl
    istioctl_t = istioctl_tool(release)
    wanted = (DOCKER, KIND, istioctl_t) if backend == "kind" else ()
    paths = {t.name: which(t.name) for t in (DOCKER, KIND, istioctl_t, KUBECTL)}
    if built:
        paths["istioctl"] = built
    missing = [t for t in wanted if not paths[t.name]]
    if missing:
        first = missing[0]
        err = ToolMissing(first.name, first.needed_for, first.how_to_get)
        for t in missing[1:]:
            err.add_note(f"also missing: {t.name} (needed for {t.needed_for}). Fix: {t.how_to_get}")
        raise err
    version = ""
    if backend == "kind":
        check_docker_engine(paths["docker"], run)
        version = release.label if built else tool_version(paths["istioctl"], istioctl_t, run)
        if not same_minor(version, minor(release)):
            raise ToolMissing(
                f"istioctl {minor(release)}.x",
                f"installing Istio {release.label} (found istioctl {version or 'of unknown version'} "
                f"at {paths['istioctl']})",
                istioctl_t.how_to_get,
            )
    return ToolPaths(paths["docker"], paths["kind"], paths["istioctl"], paths["kubectl"], version)
