"""Verbs of the kind path's machinery: ``docker`` (the engine) and ``images`` (the local images).

``meshproof docker status|install|start|stop``: Debian's docker.io (root, apt-get) and kind (``go
install`` into the cache, :mod:`harness.toolchain.kind`) installed, a dockerd started when none
answers and stopped only if meshproof started it (see :mod:`harness.backends.kube.engine`).
``meshproof images build|plan``: the images of the kind path under one local prefix
(see :mod:`harness.backends.kube.kind.images`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.text import Text

from harness.cli.output import Output, row, table
from harness.errors import ToolMissing
from harness.settings import Settings
from harness.versions import DEFAULT_ISTIO, ISTIO_RELEASES

NICE = ("nice", "-n", "19", "ionice", "-c3")


def add_docker_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        nargs="?",
        default="status",
        choices=("status", "install", "start", "stop"),
        help="status (default); install: Debian's docker.io (root) and kind into the cache; start: install, "
        "then start dockerd unless an engine answers; stop: stop the dockerd meshproof started (only that)",
    )
    p.add_argument(
        "--nice", action="store_true", help="run apt-get, go builds and dockerd under nice -n 19 ionice -c3"
    )


def add_images_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        nargs="?",
        default="plan",
        choices=("plan", "build"),
        help="plan (default): every image, how it is made and whether it is present; build: build them",
    )
    p.add_argument("--only", action="append", default=[], metavar="NAME", help="build only this image")
    p.add_argument("--force", action="store_true", help="rebuild even when the cached image is current")
    p.add_argument("--nice", action="store_true", help="run debootstrap and builds under nice/ionice")
    p.add_argument(
        "--istio",
        "--istio-version",
        dest="istio_version",
        choices=sorted(ISTIO_RELEASES),
        help=f"the pinned Istio release of the pilot/proxyv2 images and istioctl (default: $MESHPROOF_ISTIO or {DEFAULT_ISTIO})",
    )


def mesh_sources(settings: Settings, say: Callable[[str], None], prefix: Sequence[str] = ()) -> Any:
    """Where the mesh images' inputs come from: Istio's binaries of the pin and the Jaeger build
    (both :mod:`harness.toolchain`), built on first use."""
    from harness.backends.kube.kind.meshimages import MeshSources
    from harness.toolchain import istio_cluster
    from harness.toolchain import jaeger as jaeger_build

    return MeshSources(
        istio=settings.istio_version,
        jaeger_binary=lambda: Path(jaeger_build.install(settings.cache_dir, say).binary),
        jaeger_module=jaeger_build.module_dir,
        istio_binaries=lambda: istio_cluster.ensure(
            settings.cache_dir, settings.istio_version, say=say, prefix=prefix
        ),
    )


def _engine(settings: Settings, out: Output, nice: bool) -> Any:
    from harness.backends.kube.engine import DockerEngine, EngineLayout

    return DockerEngine(
        EngineLayout.under(settings.cache_dir), prefix=NICE if nice else (), say=lambda m: out.note(f"• {m}")
    )


def cmd_docker(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness.backends.kube import engine as eng
    from harness.toolchain import kind as kind_build

    def say(m: str) -> None:
        out.note(f"• {m}")

    prefix = NICE if args.nice else ()
    e = _engine(settings, out, args.nice)
    doc: dict[str, Any] = {}
    if args.action in ("install", "start"):
        doc["installed_docker_io"] = eng.install_docker_io(prefix=prefix, say=say)
        doc["kind"] = str(kind_build.install(settings.cache_dir, prefix=prefix, say=say))
    if args.action == "start":
        e.start()
    if args.action == "stop":
        stopped = e.stop()
        doc["stopped"] = stopped
        if not stopped:
            say("no dockerd started by meshproof runs: nothing stopped")
    st = e.status()
    doc |= {"engine": st.as_json(), "record": str(e.layout.record), "log": str(e.layout.log)}
    if args.json:
        out.json(doc)
        return 0
    t = table("what", "value")
    row(t, "engine", f"{st.mode.value}: {st.detail}")
    row(t, "server version", st.server_version or "-")
    row(t, "pid", st.pid or "-")
    row(t, "runc wrapper", st.wrapper or "(none: runc as shipped)")
    row(t, "data root", e.layout.data_root)
    row(t, "log", e.layout.log)
    if "kind" in doc:
        row(t, "kind", doc["kind"])
    out.print(t)
    return 0


def cmd_images(args: argparse.Namespace, settings: Settings, out: Output) -> int:
    from harness import proc
    from harness.backends.kube.kind import images
    from harness.backends.kube.kind.base import PREFIX, BuiltImage

    def say(m: str) -> None:
        out.note(f"• {m}")

    docker = proc.which("docker")
    if not docker:
        raise ToolMissing(
            "docker", "building the kind path's images", "run `meshproof docker start` (as root)"
        )
    prefix = NICE if args.nice else ()
    builder = images.ImageBuilder(
        settings.cache_dir, docker=docker, prefix=prefix, say=say, mesh=mesh_sources(settings, say, prefix)
    )
    built: list[BuiltImage] = []
    if args.action == "build":
        with out.err.status("building images") as status:

            def progress(m: str) -> None:
                status.update(Text(m))
                say(m)

            building = images.ImageBuilder(
                settings.cache_dir,
                docker=docker,
                prefix=prefix,
                say=progress,
                mesh=mesh_sources(settings, progress, prefix),
            )
            built = building.build(args.only, force=args.force)
    by_name = {b.name: b for b in built}
    rows = []
    for p in images.PLAN:
        ref = images.plan_ref(p.name, settings.istio_version)
        labels = images.safe_labels(builder, ref)
        b = by_name.get(p.name)
        rows.append(
            {
                "name": p.name,
                "ref": ref,
                "present": labels is not None,
                "built_now": bool(b and b.built),
                "seconds": round(b.seconds, 1) if b else None,
                "made_by": p.built_by,
                "what": p.what,
            }
        )
    if args.json:
        out.json({"prefix": PREFIX, "images": rows, **host_cluster(settings)})
        return 0
    t = table("image", "present", "made by", "what")
    for r in rows:
        present = "yes" if r["present"] else "no"
        if r["built_now"]:
            present += f" (built in {r['seconds']} s)"
        row(t, r["ref"], present, r["made_by"], r["what"])
    out.print(t)
    return 0


def host_cluster(settings: Settings) -> dict[str, Any]:
    """What a person's own ``kind create cluster`` and ``istioctl install`` need on this host, from
    the code the kind backend uses: ``kind_config`` (its node image, CNI and cgroup settings, no
    published ports) and ``istio``: hub and tag of the locally built pilot/proxyv2, and the
    IstioOperator ``spec.values`` an install with them needs (their Envoy is upstream Envoy, without
    Istio's own filters: :func:`~harness.backends.kube.istio_install.upstream_envoy_values`; and pull
    policy IfNotPresent, since they are loaded into the nodes, not pulled)."""
    from harness.backends.kube.istio_install import upstream_envoy_values
    from harness.backends.kube.kind import images, meshimages, nodeimage
    from harness.backends.kube.kind.base import PREFIX
    from harness.backends.kube.kind.cli import host_cgroup_v1, kind_config

    node = nodeimage.node_options(
        "local",
        cgroup_v1=host_cgroup_v1(Path("/proc/self/mounts").read_text()),
        build_node=lambda: images.plan_ref("kind-node"),
    )
    return {
        "kind_config": kind_config(None, node=node),
        "istio": {
            "hub": PREFIX,
            "tag": meshimages.tag_of("pilot", settings.istio_version),
            # merged into the IstioOperator's spec.values (deep: keep your own global.* keys)
            "values": {**upstream_envoy_values(), "global": {"imagePullPolicy": "IfNotPresent"}},
            "why": (
                "the proxyv2 image holds upstream Envoy, which lacks Istio's metadata exchange, ALPN and "
                "istio.stats filters: istiod must not send them, or no proxy gets Ready; and the images are "
                "in no registry (loaded into the nodes): a gateway with `image: auto` (no tag, so pull "
                "policy Always) could not pull them"
            ),
        },
    }
