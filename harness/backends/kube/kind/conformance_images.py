"""The images ``meshproof conformance`` needs, built here (no registry is assumed) and cached.

The suite's manifests are embedded in its test binary and name their images upstream
(``registry.k8s.io/gateway-api/echo-basic:...``, ``.../echo-advanced:...``,
``registry.k8s.io/coredns/coredns:...``, pull policy IfNotPresent or unset). Each is built under
meshproof's prefix from the sources :mod:`harness.toolchain.gateway_conformance` builds, then
tagged with every name the manifests use for it and ``kind load``-ed, so the kubelet finds it:

* ``conformance-echo-basic``: the suite's ``echo-basic`` on debian-base, as the suite's own
  Dockerfile packages it (the binary as entrypoint, a non-root user); the manifests name several
  tags of it and all are this build of the suite's source;
* ``conformance-echo-advanced``: Istio's echo app (``server``, ``client``, the certificate at
  ``/cert.crt``/``/cert.key``, user 1338) on Istio's base image, as Istio's
  ``pkg/test/echo/docker/Dockerfile.app`` makes it (``echo-advanced`` is ``FROM`` that image);
* ``conformance-coredns``: CoreDNS at the version the base manifests name, on debian-base;
* ``gateway-conformance``: the suite's test binary on debian-base, run in the cluster as a Job.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import proc
from harness.backends.kube.kind.base import Builder, BuiltImage, image_ref, inputs_digest
from harness.toolchain.gateway_conformance import ECHO_CERTS, ConformanceBinaries, image_version

ECHO_BASIC = "registry.k8s.io/gateway-api/echo-basic"
ECHO_ADVANCED = "registry.k8s.io/gateway-api/echo-advanced"
COREDNS = "registry.k8s.io/coredns/coredns"
OFFICIAL_RUNNER_BASE = "debian:bookworm-slim"  # official images mode: pulled by the engine


def _sha(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def repository(ref: str) -> str:
    """``registry.k8s.io/gateway-api/echo-basic:v1.5.1`` -> ``registry.k8s.io/gateway-api/echo-basic``."""
    head, _, tail = ref.rpartition("/")
    return f"{head}/{tail.split(':', 1)[0]}" if head else tail.split(":", 1)[0]


@dataclass(frozen=True)
class SuiteImages:
    """Which upstream names each local build stands for, and the runner's ref."""

    runner: str
    tags: Mapping[str, tuple[str, ...]]  # local ref -> the manifests' names for it

    def refs(self) -> list[str]:
        """What is loaded into the cluster: the runner and every upstream name."""
        return [self.runner, *sorted(n for names in self.tags.values() for n in names)]


def unknown_images(manifest_images: Sequence[str]) -> list[str]:
    """Images the manifests name that meshproof does not build (a newer suite may add some)."""
    return [r for r in manifest_images if repository(r) not in (ECHO_BASIC, ECHO_ADVANCED, COREDNS)]


def echo_basic_dockerfile(base: str) -> str:
    return "\n".join([f"FROM {base}", "COPY echo-basic /echo-basic", "USER 65532:65532",
                      'ENTRYPOINT ["/echo-basic"]', ""])  # fmt: skip


def echo_advanced_dockerfile(base: str) -> str:
    return "\n".join(
        [
            f"FROM {base}",
            "COPY client /usr/local/bin/client",
            "COPY server /usr/local/bin/server",
            "COPY cert.crt /cert.crt",
            "COPY cert.key /cert.key",
            "RUN useradd -m --uid 1338 application",
            "USER 1338",
            'ENTRYPOINT ["/usr/local/bin/server"]',
            "",
        ]
    )


def coredns_dockerfile(base: str) -> str:
    return "\n".join([f"FROM {base}", "COPY coredns /coredns", 'ENTRYPOINT ["/coredns"]', ""])


def runner_dockerfile(base: str) -> str:
    return "\n".join([f"FROM {base}", "COPY conformance.test /usr/local/bin/conformance.test",
                      "WORKDIR /tmp", 'ENTRYPOINT ["/usr/local/bin/conformance.test"]', ""])  # fmt: skip


class ConformanceImages:
    """Builds the four images through a :class:`~.base.Builder` and tags them with upstream names."""

    def __init__(
        self,
        builder: Builder,
        binaries: ConformanceBinaries,
        *,
        istio_base: Callable[[], BuiltImage],
        coredns: Callable[[str], Path],
        run: proc.Runner = proc.run,
    ) -> None:
        self.b, self.bin = builder, binaries
        self._istio_base, self._coredns, self._run = istio_base, coredns, run

    def _build(self, name: str, tag: str, inputs: Sequence[str], files: Mapping[str, Path | str],
               dockerfile: str) -> BuiltImage:  # fmt: skip
        ref = image_ref(name, tag)
        digest = inputs_digest([*inputs, dockerfile])
        if self.b.current(ref, digest):
            self.b.say(f"{ref} is current (cached)")
            return BuiltImage(name, ref, False, 0.0, digest)
        self.b.work.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.b.work))
        try:
            ctx = tmp / "context"
            ctx.mkdir()
            for dest, src in files.items():
                shutil.copyfile(src, ctx / dest)
                (ctx / dest).chmod(0o755)
            (ctx / "Dockerfile").write_text(dockerfile)
            self.b.say(f"building {ref}")
            self.b.docker_build(ref, ctx, digest, build_args={}, what=f"{name} image")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return BuiltImage(name, ref, True, time.monotonic() - t0, digest)

    def build_runner_only(self, base: str = OFFICIAL_RUNNER_BASE) -> tuple[SuiteImages, list[BuiltImage]]:
        """Official images (MESHPROOF_IMAGES=official): the cluster pulls the images the manifests
        name from their registries; only the runner is built, on Debian's own image."""
        runner = self._build("gateway-conformance", f"{self.bin.suite_version}-{self.bin.label}",
                             [base, self.bin.sha256["conformance.test"]],
                             {"conformance.test": self.bin.conformance_test}, runner_dockerfile(base))  # fmt: skip
        return SuiteImages(runner.ref, {}), [runner]

    def build(self, manifest_images: Sequence[str]) -> tuple[SuiteImages, list[BuiltImage]]:
        debian = self.b.debian_base()
        istio_base = self._istio_base()
        suite = self.bin.suite_version
        istio_dir = Path(self.bin.istio_dir)
        certs = {k: istio_dir / v for k, v in ECHO_CERTS.items()}
        built = [
            self._build("gateway-conformance", f"{suite}-{self.bin.label}",
                        [debian.inputs, self.bin.sha256["conformance.test"]],
                        {"conformance.test": self.bin.conformance_test}, runner_dockerfile(debian.ref)),
            self._build("conformance-echo-basic", suite, [debian.inputs, self.bin.sha256["echo-basic"]],
                        {"echo-basic": self.bin.echo_basic}, echo_basic_dockerfile(debian.ref)),
            self._build("conformance-echo-advanced", self.bin.label,
                        [istio_base.inputs, self.bin.sha256["server"], self.bin.sha256["client"],
                         *(_sha(p) for p in certs.values())],
                        {"server": self.bin.echo_server, "client": self.bin.echo_client, **certs},
                        echo_advanced_dockerfile(istio_base.ref)),
        ]  # fmt: skip
        by_repo: dict[str, list[str]] = {}
        for r in manifest_images:
            by_repo.setdefault(repository(r), []).append(r)
        tags: dict[str, tuple[str, ...]] = {
            built[1].ref: tuple(by_repo.get(ECHO_BASIC, ())),
            built[2].ref: tuple(by_repo.get(ECHO_ADVANCED, ())),
        }
        for ref in by_repo.get(COREDNS, ()):
            version = image_version(ref)
            binary = self._coredns(version)
            img = self._build("conformance-coredns", version, [debian.inputs, _sha(binary)],
                              {"coredns": binary}, coredns_dockerfile(debian.ref))  # fmt: skip
            built.append(img)
            tags[img.ref] = (*tags.get(img.ref, ()), ref)
        for local, names in tags.items():
            for name in names:
                self._run([self.b.docker, "tag", local, name], timeout=60)
        return SuiteImages(built[0].ref, tags), built
