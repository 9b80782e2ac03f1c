"""The kind node image ``meshproof.local/kind-node:<Kubernetes version>``, assembled by our own code.

``kind build node-image`` cannot run offline (it pulls etcd, CoreDNS, pause, kindnetd and the storage images
inside the build), so this module does what its ``buildImage`` does, from parts built here:

1. **The node's binaries**: kubeadm, kubelet and kubectl (:mod:`harness.toolchain.nodeparts`, which builds every
   binary named below) go to ``/usr/bin``
   of a container of ``kind-runtime`` (kind-base + containerd, runc, crictl, CNI plugins).
2. **The images kubeadm and kind need**, named as ``kubeadm config images list`` (run inside that container)
   and kind's containerd config (``sandbox_image``) name them, each built here and imported with
   ``ctr -n k8s.io images import`` into the container's containerd (started by hand, as kind's build does):

   - kube-apiserver, kube-controller-manager, kube-scheduler: debian-base plus the binary;
   - kube-proxy: debian-base plus the binary and Debian's iptables/conntrack (its rules are iptables);
   - etcd: ``go.etcd.io/etcd/server/v3`` at the version kubeadm names, built in a wrapper module (etcd's
     go.mod replaces its sibling modules by ``../`` paths, which a module download does not have; each is
     replaced by its published copy at the same version);
   - CoreDNS: ``go install github.com/coredns/coredns@<version kubeadm names>``;
   - pause: ``build/pause/linux/pause.c`` of the ``k8s.io/kubernetes`` module, compiled static with gcc as
     its Makefile does.

3. **/kind/version** is written; ``docker commit`` with kind's entrypoint.

Deviations from kind's node image (see docs/KIND.md): no kindnetd and no local-path-provisioner (their
modules are not served by the module proxy here), so the node carries a CNI config for the ptp,
host-local and portmap plugins kind-runtime already has, the cluster is created with kind's
``disableDefaultCNI``, and kind falls back to its host-path StorageClass when
``/kind/manifests/default-storage.yaml`` is absent.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import proc, wait
from harness.backends.kube.kind.base import INPUTS_LABEL, Builder, inputs_digest
from harness.backends.kube.kind.cli import NodeOptions
from harness.cache import sha256_file
from harness.errors import BackendError, ToolMissing
from harness.toolchain import nodeparts
from harness.versions import KUBERNETES_VERSION

REGISTRY = "registry.k8s.io"
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
POD_SUBNET = "10.244.0.0/16"  # kind's default podSubnet; the kind config sets it explicitly too
CNI_CONFIG_PATH = "/etc/cni/net.d/10-meshproof-ptp.conflist"

Progress = Callable[[str], None]


# ---- what kubeadm asks for -------------------------------------------------------------------------
def split_ref(ref: str) -> tuple[str, str]:
    """``registry.k8s.io/coredns/coredns:v1.14.6`` -> (``registry.k8s.io/coredns/coredns``, ``v1.14.6``)."""
    repo, sep, tag = ref.rpartition(":")
    if not sep or "/" in tag:
        raise ValueError(f"image reference without a tag: {ref!r}")
    return repo, tag


def kubeadm_images(listing: str) -> dict[str, str]:
    """``kubeadm config images list`` output -> {short name: reference} (short name = last path element)."""
    out = {}
    for line in listing.split():
        if "/" in line and ":" in line:
            repo, _ = split_ref(line)
            out[repo.rsplit("/", 1)[-1]] = line
    need = {*CONTROL_PLANE, "kube-proxy", "etcd", "coredns", "pause"}
    missing = sorted(need - set(out))
    if missing:
        raise ValueError(f"`kubeadm config images list` names no {', '.join(missing)}: {listing.strip()!r}")
    return out


def sandbox_image(containerd_config: str) -> str:
    """The ``sandbox_image`` (pause) kind's containerd config pins ("" when it pins none)."""
    m = re.search(r'^\s*sandbox(?:_image)?\s*=\s*"([^"]+)"', containerd_config, re.MULTILINE)
    return m.group(1) if m else ""


# ---- the CNI config (instead of kindnetd) ------------------------------------------------------
def cni_conflist(pod_subnet: str = POD_SUBNET) -> str:
    """A conflist for the ptp, host-local and portmap plugins (the plugins kindnetd configures).

    One node: every pod address comes from ``pod_subnet``; ``ipMasq`` masquerades pod traffic that
    leaves the subnet.
    """
    conf = {
        "cniVersion": "0.4.0",
        "name": "meshproof-ptp",
        "plugins": [
            {
                "type": "ptp",
                "ipMasq": True,
                "mtu": 1500,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": pod_subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return json.dumps(conf, indent=2) + "\n"


# ---- Dockerfiles ---------------------------------------------------------------------------------
def binary_dockerfile(
    base: str, binary: str, *, dest: str = "/usr/local/bin", packages: Sequence[str] = ()
) -> str:
    """debian-base plus one binary (and Debian packages), the binary as entrypoint."""
    lines = [f"FROM {base}"]
    if packages:
        lines.append(
            "RUN apt-get update && apt-get install -y --no-install-recommends "
            + " ".join(packages)
            + " && rm -rf /var/lib/apt/lists/*"
        )
    lines += [f"COPY {binary} {dest}/{binary}", f'ENTRYPOINT ["{dest}/{binary}"]', ""]
    return "\n".join(lines)


def pause_dockerfile() -> str:
    """As build/pause/Dockerfile: the static binary alone, user 65535."""
    return 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n'


# ---- the image -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ComponentImage:
    """One image the node imports: built as ``local`` in the engine, tagged ``names`` inside the node."""

    key: str
    local: str  # meshproof.local/k8s/NAME:TAG
    names: tuple[str, ...]  # what kubeadm / kind's containerd config call it


def component_images(
    wanted: dict[str, str], sandbox: str, prefix: str = "meshproof.local"
) -> list[ComponentImage]:
    """The images to build and import for kubeadm's list (``wanted``) and the containerd sandbox image."""
    out = []
    for key, ref in sorted(wanted.items()):
        _, tag = split_ref(ref)
        names = (ref, sandbox) if key == "pause" and sandbox and sandbox != ref else (ref,)
        out.append(ComponentImage(key, f"{prefix}/k8s/{key}:{tag}", names))
    return out


@dataclass(frozen=True)
class Tools:
    """The builder's collaborators: runner, ``which``, progress, the nice/ionice prefix, kind's module."""

    run: proc.Runner
    which: proc.Which
    say: Progress
    prefix: tuple[str, ...]
    kind_module_dir: Path


def node_ref(kubernetes_version: str = KUBERNETES_VERSION, prefix: str = "meshproof.local") -> str:
    return f"{prefix}/kind-node:{kubernetes_version}"


class NodeImageBuild:
    """``meshproof.local/kind-node:<version>`` from kind-runtime, the Kubernetes binaries and the component
    images (see the module docstring); every step cached, the node image itself by an inputs label."""

    def __init__(self, builder: Builder, tools: Tools, *, version: str = KUBERNETES_VERSION) -> None:
        self.b, self.t = builder, tools
        self.version = version
        self.cache = builder.work.parent
        self.parts = nodeparts.images_dir(self.cache, version)

    # -- the Kubernetes binaries ---------------------------------------------------------------------
    def kubernetes(self, go: str) -> Path:
        """``nodeparts.kubernetes_binaries``: built from the pinned module (or adopted from a spike)."""
        return nodeparts.kubernetes_binaries(
            self.cache, go=go, version=self.version, run=self.t.run, prefix=self.t.prefix, say=self.t.say
        )

    # -- the component images ------------------------------------------------------------------------
    def component_binaries(self, wanted: dict[str, str], kube_bin: Path, go: str) -> dict[str, Path]:
        from harness.backends.kube.engine import apt_install

        # installed here when missing (root), as debootstrap and libseccomp-dev are
        apt_install(
            "gcc libc6-dev",
            "gcc",
            "compiling pause for the kind node",
            "run `apt-get install -y gcc libc6-dev` as root",
            run=self.t.run,
            which=self.t.which,
            prefix=self.t.prefix,
            say=self.t.say,
        )
        gcc = self.t.which("gcc")
        if not gcc:  # apt_install raises first; for the type checker
            raise ToolMissing("gcc", "compiling pause for the kind node", "apt-get install -y gcc libc6-dev")
        kw = {"go": go, "run": self.t.run, "prefix": self.t.prefix, "say": self.t.say}
        out = {k: kube_bin / k for k in (*CONTROL_PLANE, "kube-proxy")}
        etcd = nodeparts.etcd_module_version(split_ref(wanted["etcd"])[1])
        out["etcd"] = nodeparts.build_etcd(self.parts, etcd, **kw)  # type: ignore[arg-type]
        out["coredns"] = nodeparts.build_coredns(self.parts, split_ref(wanted["coredns"])[1], **kw)  # type: ignore[arg-type]
        out["pause"] = nodeparts.build_pause(
            self.parts,
            split_ref(wanted["pause"])[1],
            gcc=gcc,
            kubernetes_version=self.version,
            **kw,  # type: ignore[arg-type]
        )
        return out

    def component_dockerfile(self, key: str, base: str) -> str:
        if key == "pause":
            return pause_dockerfile()
        if key == "coredns":
            return binary_dockerfile(base, "coredns", dest="")
        if key == "kube-proxy":
            return binary_dockerfile(base, key, packages=("iptables", "conntrack", "ipset"))
        return binary_dockerfile(base, key)

    def component_image(
        self, image: ComponentImage, binary: Path, base_ref: str, base_inputs: str, force: bool
    ) -> str:
        """Build one component image in the engine (cached by its inputs label); returns its inputs."""
        dockerfile = self.component_dockerfile(image.key, base_ref)
        inputs = inputs_digest([base_inputs, dockerfile, sha256_file(binary)])
        if not force and self.b.current(image.local, inputs):
            return inputs
        with tempfile.TemporaryDirectory(prefix=f"{image.key}-", dir=self.b.work) as tmp:
            ctx = Path(tmp)
            shutil.copy2(binary, ctx / binary.name)
            (ctx / "Dockerfile").write_text(dockerfile)
            self.t.say(f"building {image.local}")
            self.b.docker_build(
                image.local, ctx, inputs, build_args={}, what=f"the {image.key} image", timeout=1800
            )
        return inputs

    # -- the node ----------------------------------------------------------------------------------------
    def build(self, *, force: bool = False) -> tuple[str, bool, str]:
        """(reference, built?, inputs) of the node image."""
        go = self.t.which("go")
        if not go:
            raise ToolMissing("go", "building the kind node image's parts", "install Go (see README)")
        runtime = self.b.kind_runtime()
        base = self.b.debian_base()
        kube_bin = self.kubernetes(go)
        listing = self.t.run(
            [str(kube_bin / "kubeadm"), "config", "images", "list", "--kubernetes-version", self.version],
            timeout=60,
        ).stdout
        wanted = kubeadm_images(listing)
        config = (self.t.kind_module_dir / "images/base/files/etc/containerd/config.toml").read_text()
        images = component_images(wanted, sandbox_image(config))
        binaries = self.component_binaries(wanted, kube_bin, go)
        self.b.work.mkdir(parents=True, exist_ok=True)
        inputs = [runtime.inputs, self.version, cni_conflist()]
        inputs += [self.component_image(i, binaries[i.key], base.ref, base.inputs, force) for i in images]
        inputs += [sha256_file(kube_bin / b) for b in ("kubeadm", "kubelet", "kubectl")]
        ref = node_ref(self.version)
        digest = inputs_digest(inputs)
        if not force and self.b.current(ref, digest):
            self.t.say(f"{ref} is current (cached)")
            return ref, False, digest
        self.assemble(ref, runtime.ref, kube_bin, images, digest)
        return ref, True, digest

    def assemble(
        self, ref: str, runtime_ref: str, kube_bin: Path, images: Sequence[ComponentImage], inputs: str
    ) -> None:
        docker, run = self.b.docker, self.t.run
        name = f"meshproof-kind-node-build-{uuid.uuid4().hex[:8]}"
        self.t.say(f"assembling {ref} in container {name}")
        run([docker, "run", "-d", "--name", name, "--entrypoint=sleep", "--security-opt", "seccomp=unconfined",
             runtime_ref, "infinity"], timeout=300)  # fmt: skip
        try:

            def sh(script: str, timeout: float = 600) -> proc.Completed:
                return run([docker, "exec", name, "bash", "-c", script], timeout=timeout)

            for b in ("kubeadm", "kubelet", "kubectl"):
                run([docker, "cp", str(kube_bin / b), f"{name}:/usr/bin/{b}"], timeout=600)
            sh("chown root:root /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl"
               " && chmod 0755 /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl"
               f" && mkdir -p /kind /etc/cni/net.d && printf %s {self.version} > /kind/version")  # fmt: skip
            with tempfile.TemporaryDirectory(prefix="kind-node-", dir=self.b.work) as tmp:
                (Path(tmp) / "cni.conflist").write_text(cni_conflist())
                run([docker, "cp", str(Path(tmp) / "cni.conflist"), f"{name}:{CNI_CONFIG_PATH}"], timeout=60)
                tar = Path(tmp) / "images.tar"
                self.t.say(f"saving {len(images)} images for the node's containerd")
                run(
                    [*self.t.prefix, docker, "save", "-o", str(tar), *(i.local for i in images)], timeout=1800
                )
                run([docker, "cp", str(tar), f"{name}:/images.tar"], timeout=1800)
            sh("nohup containerd > /var/log/containerd-build.log 2>&1 &")

            def ready() -> bool:
                return run([docker, "exec", name, "ctr", "info"], timeout=60, check=False).returncode == 0

            wait.until(ready, what=f"containerd answering `ctr info` in {name}", timeout=120, interval=0.5)
            sh("ctr --namespace=k8s.io images import --label=io.cri-containerd.pinned=pinned --no-unpack"
               " --digests /images.tar && rm /images.tar", timeout=1800)  # fmt: skip
            for i in images:
                for n in i.names:
                    sh(f"ctr --namespace=k8s.io images tag --force {i.local} {n}")
            listed = sh("ctr --namespace=k8s.io images list -q").stdout.split()
            missing = [n for i in images for n in i.names if n not in listed]
            if missing:
                raise BackendError(
                    f"the node's containerd lacks {', '.join(missing)} after the import: {listed}"
                )
            # the exec session's containerd is reparented to `sleep` (PID 1 here), which never reaps it: a
            # stopped containerd stays a zombie, so "gone" means no containerd that is not a zombie
            sh(STOP_CONTAINERD)
            self.t.say(f"committing {ref}")
            run([docker, "commit", "--change", 'ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]',
                 "--change", 'ENV HTTP_PROXY="" HTTPS_PROXY="" NO_PROXY=""', "--change", f"LABEL {INPUTS_LABEL}={inputs}",
                 name, ref], timeout=1800)  # fmt: skip
        finally:
            run([docker, "rm", "-f", "-v", name], timeout=300, check=False)


STOP_CONTAINERD = (
    "pkill -x containerd; for i in $(seq 1 300); do alive=; for p in $(pgrep -x containerd); do"
    " grep -q '^State:[[:space:]]*Z' /proc/$p/status 2>/dev/null || alive=1; done;"
    ' [ -z "$alive" ] && exit 0; sleep 0.1; done; echo containerd did not exit >&2; exit 1'
)


def node_options(
    mode: str,
    *,
    cgroup_v1: bool,
    build_node: Callable[[], str],
) -> NodeOptions:
    """The kind node for a cluster: the node image built here (``mode`` "local": it brings its own CNI
    config), or kind's default node image ("official"); both with the cgroup v1 patch on such hosts."""
    if mode == "official":
        return NodeOptions(cgroup_v1=cgroup_v1)
    return NodeOptions(image=build_node(), own_cni=True, pod_subnet=POD_SUBNET, cgroup_v1=cgroup_v1)
