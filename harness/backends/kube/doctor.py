"""``meshproof doctor`` for the kind and existing backends: the tools, the Docker engine, the cluster.

Above :mod:`~harness.backends.kube.tools` (tool lookups and versions) and the cluster modules
(:mod:`~harness.backends.kube.api`, :mod:`~harness.backends.kube.istio_install`) it probes with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness import proc
from harness.backends.kube.tools import (
    DOCKER,
    KIND,
    KUBECTL,
    Tool,
    check_docker_engine,
    default_which,
    istioctl_tool,
    minor,
    same_minor,
    tool_version,
)
from harness.doctor import ToolStatus
from harness.errors import ToolMissing
from harness.versions import DEFAULT_ISTIO, ISTIO_RELEASES, IstioRelease


@dataclass(frozen=True)
class ClusterInfo:
    server_version: str
    istio_version: str  # "" when no istiod runs in istio-system


ClusterProbe = Callable[
    [str], ClusterInfo
]  # kubeconfig context ("" = current) -> info, raises when unreachable


def _status(tool: Tool, backend: str, which: proc.Which, run: proc.Runner) -> ToolStatus:
    path = which(tool.name)
    if not path:
        return ToolStatus(tool.name, backend, tool.needed_for, False, how_to_get=tool.how_to_get)
    return ToolStatus(
        tool.name, backend, tool.needed_for, True, tool_version(path, tool, run), path, tool.how_to_get
    )


def doctor(
    *,
    release: IstioRelease | None = None,
    context: str = "",
    which: proc.Which = default_which,
    run: proc.Runner = proc.run,
    probe: ClusterProbe | None = None,
) -> list[ToolStatus]:
    """What the kind and existing backends need, found or not, with versions and how to get each.

    ``probe`` checks the existing cluster (context ``context``, "" = current); by default it asks the
    Kubernetes API. Nothing here raises: failures become entries with ``found=False``.
    Optional tools (kubectl) appear only when found.
    """
    release = release or ISTIO_RELEASES[DEFAULT_ISTIO]
    istioctl = istioctl_tool(release)
    out: list[ToolStatus] = []

    # kind
    docker = _status(DOCKER, "kind", which, run)
    out.append(docker)
    engine_how = "start Docker and check that `docker info` succeeds"
    if docker.found:
        try:
            server = check_docker_engine(docker.path, run)
            out.append(
                ToolStatus("docker engine", "kind", DOCKER.needed_for, True, server, docker.path, engine_how)
            )
        except ToolMissing as e:
            notes = " ".join(getattr(e, "__notes__", []))
            out.append(
                ToolStatus(
                    "docker engine",
                    "kind",
                    f"{DOCKER.needed_for} ({notes})".strip(),
                    False,
                    how_to_get=engine_how,
                )
            )
    else:
        out.append(
            ToolStatus("docker engine", "kind", DOCKER.needed_for, False, how_to_get=DOCKER.how_to_get)
        )
    out.append(_status(KIND, "kind", which, run))
    ictl = _status(istioctl, "kind", which, run)
    if ictl.found and not same_minor(ictl.version, minor(release)):
        ictl = ToolStatus(
            ictl.name,
            "kind",
            f"{ictl.needed_for} (found {ictl.version or 'unknown version'}, need {minor(release)}.x)",
            False,
            ictl.version,
            ictl.path,
            ictl.how_to_get,
        )
    out.append(ictl)
    # kubectl is optional (meshproof uses the API directly): listed when present, never "MISSING",
    # because a backend counts as ready only when all of its entries are found.
    kubectl = [_status(KUBECTL, b, which, run) for b in ("kind", "existing")]
    out += [k for k in kubectl[:1] if k.found]

    # existing
    out += [k for k in kubectl[1:] if k.found]
    where = f"context {context!r}" if context else "the current kubeconfig context"
    cluster_how = (
        "point KUBECONFIG / --kube-context at a reachable cluster (check with `kubectl cluster-info`)"
    )
    istio_how = (
        f"install Istio {release.label} into the cluster (`istioctl install --set profile=default -y`), "
        "or use --backend kind"
    )
    probe = probe or api_probe
    try:
        info = probe(context)
    except Exception as e:  # noqa: BLE001 - doctor reports, never raises
        out.append(
            ToolStatus("cluster", "existing", f"the cluster of {where} ({e})", False, how_to_get=cluster_how)
        )
        out.append(ToolStatus("istiod", "existing", "the mesh's control plane", False, how_to_get=istio_how))
        return out
    out.append(
        ToolStatus(
            "cluster",
            "existing",
            f"the cluster of {where}",
            True,
            info.server_version,
            how_to_get=cluster_how,
        )
    )
    out.append(
        ToolStatus(
            "istiod",
            "existing",
            "the mesh's control plane",
            bool(info.istio_version),
            info.istio_version,
            how_to_get=istio_how,
        )
    )
    return out


def api_probe(context: str) -> ClusterInfo:
    """ClusterInfo of a kubeconfig context, over the Kubernetes API."""
    from harness.backends.kube.api import ClusterApi
    from harness.backends.kube.istio_install import find_istiod

    api = ClusterApi(None, context or None, request_timeout=10)
    try:
        server = api.server_version()
        istiod = find_istiod(api)
        return ClusterInfo(server, istiod.version if istiod else "")
    finally:
        api.close()
