"""``meshproof doctor`` for the kind and existing backends: the tools, the Docker engine, the cluster.

Above :mod:`~harness.backends.kube.tools` (tool lookups and versions) and the cluster modules
(:mod:`~harness.backends.kube.api`, :mod:`~harness.backends.kube.istio_install`) it probes with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from harness import proc
from harness.backends.kube.engine import DockerEngine, EngineLayout, EngineMode, ProcTable, needs_cap_wrapper
from harness.backends.kube.kind.images import ImageBuilder, images_mode, kind_default_node_image
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
from harness.errors import StateError, ToolMissing
from harness.settings import Settings
from harness.toolchain import istio_cluster
from harness.toolchain import kind as kind_build
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


def kind_path(
    cache_dir: Path,
    images_setting: str = "auto",
    *,
    run: proc.Runner = proc.run,
    which: proc.Which = default_which,
    procs: ProcTable | None = None,
    kind_module_dir: Path | None = None,
    istio: str = DEFAULT_ISTIO,
) -> list[ToolStatus]:
    """The kind path's machinery: who runs the Docker engine, whether runc needs the capability
    wrapper (and has it), which images the cluster would use (local builds or official), why, and
    with local images the istioctl built from the pin (PATH's istioctl is then not used)."""
    procs = procs or ProcTable()
    engine = DockerEngine(EngineLayout.under(cache_dir), run=run, which=which, procs=procs)
    st = engine.status()
    out = [
        ToolStatus(
            "docker engine owner",
            "kind",
            f"who runs the engine: {st.detail}",
            st.mode is not EngineMode.ABSENT,
            st.mode.value,
            str(engine.layout.record) if st.mode is EngineMode.OURS else "",
            "`meshproof docker start` (root): installs Debian's docker.io and starts dockerd when none answers",
            optional=True,
        )
    ]
    try:
        needed = needs_cap_wrapper(procs.status_text())
    except (OSError, ValueError):
        needed = False
    if needed:
        has = st.mode is EngineMode.OURS and bool(st.wrapper)
        why = "privileged containers (kind's nodes): the capability bounding set lacks CAP_SYS_RESOURCE"
        if st.mode is EngineMode.FOREIGN:
            why += (
                "; the running engine was not started by meshproof, so whether its runtime copes is unknown"
            )
        out.append(
            ToolStatus(
                "runc capability wrapper",
                "kind",
                why,
                has,
                "needed",
                st.wrapper,
                "`meshproof docker start` registers runc-capdrop as dockerd's default runtime",
                optional=st.mode is not EngineMode.OURS,
            )
        )
    module_dir = kind_module_dir or kind_build.cached_module_dir(run=run, which=which)
    node = kind_default_node_image(module_dir) if module_dir else ""
    present: bool | None = None
    docker = which("docker")
    if st.server_version and docker and node:
        present = ImageBuilder(cache_dir, docker=docker, run=run, which=which).labels(node) is not None
    mode = images_mode(
        images_setting, official_node_image=node or "kind's default node image", official_present=present
    )
    ready = mode.mode == "official"
    how = (
        "pull access to the official images (kind's node image, Istio's release images)"
        if ready
        else "`meshproof images build` (the kind node, Istio's pilot and proxyv2, Jaeger, the sample and Locust; "
        "`up --backend kind` builds what is missing), or MESHPROOF_IMAGES=official where pulls work"
    )
    out.append(ToolStatus("images", "kind", f"the cluster's images: {mode.why}", ready, mode.mode, "", how))
    if mode.mode == "local":
        out.append(pinned_istioctl(cache_dir, istio))
    return out


def pinned_istioctl(cache_dir: Path, istio: str) -> ToolStatus:
    """The istioctl built from the pinned module (kind with local images); built on first use."""
    name, needed = (
        f"istioctl ({istio}, from the pin)",
        "installing Istio from the local images into the kind cluster",
    )
    how = f"built on first `meshproof up --backend kind`, or by `meshproof images build --istio {istio}`"
    try:
        built = istio_cluster.load(cache_dir, istio)
    except StateError:
        return ToolStatus(name, "kind", f"{needed} (not built yet)", False, how_to_get=how, optional=True)
    return ToolStatus(name, "kind", needed, True, built.label, built.istioctl, how)


def backend_doctor(settings: Settings) -> list[ToolStatus]:
    """What ``meshproof doctor`` shows for the kind and existing backends: the tools (a cached kind
    build before PATH's), the cluster, and the kind path's machinery. With local images PATH's
    istioctl is not used (the one built from the pin is), so it is optional then."""
    which = kind_build.kind_which(settings.cache_dir, default_which)
    machinery = kind_path(settings.cache_dir, settings.images, which=which, istio=settings.istio_version)
    tools = doctor(release=ISTIO_RELEASES[settings.istio_version], context=settings.kube_context, which=which)
    if any(t.name.startswith("istioctl (") for t in machinery):
        tools = [
            replace(t, optional=True, needed_for=f"{t.needed_for}; not used with local images")
            if t.name == "istioctl" and t.backend == "kind"
            else t
            for t in tools
        ]
    return tools + machinery
