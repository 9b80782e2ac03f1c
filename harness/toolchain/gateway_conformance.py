"""The Gateway API conformance suite's binaries, built from the Go module the pinned Istio requires.

Istio runs the upstream suite (``sigs.k8s.io/gateway-api/conformance``) itself, compiled into its
own integration test. ``meshproof conformance`` runs the same suite, unchanged, compiled the same
way: in a wrapper module that requires the pinned ``istio.io/istio`` (:func:`istio.go_mod`), so
the suite, the Kubernetes client and Gateway API are the versions that Istio release builds with
(``sigs.k8s.io/gateway-api/conformance`` v1.6.0 for 1.31-dev). Built there, with Istio's build
tags (Go's compiled packages are shared with the kind path's pilot-discovery build):

* ``conformance.test``: ``go test -c`` of the suite's own ``TestConformance`` (its flags choose the
  gateway class, profiles, features, the report file);
* ``echo-basic``: the suite's HTTP/gRPC echo backend (``conformance/echo-basic``), the image its
  base manifests name ``registry.k8s.io/gateway-api/echo-basic``;
* ``server`` and ``client``: Istio's echo application (``pkg/test/echo/cmd``), which Gateway
  API's ``echo-advanced`` image is (its Dockerfile is ``FROM`` Istio's ``app`` image): the mesh
  tests' backends and the client they exec in the mesh namespace;
* ``conformance-plan`` (:data:`PLAN_SOURCE`, meshproof's): prints the suite's profiles, its tests
  with their features, and the features Istio declares it supports
  (``pilot/pkg/config/kube/gateway.SupportedFeatures``), so that what is claimed is Istio's word.

CoreDNS, which the base manifests also run (``registry.k8s.io/coredns/coredns``, for the UDPRoute
tests), is built at the exact version they name from its own module
(:func:`harness.toolchain.nodeparts.build_coredns`).

Everything lands in ``<cache>/istio-<label>/conformance/`` with a ``conformance.json`` stamp; a
second call with the same pin is a no-op.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import proc
from harness.cache import locked_install, sha256_file
from harness.errors import StateError, ToolMissing
from harness.toolchain import gomod, istio, nodeparts
from harness.versions import ISTIO_RELEASES, IstioRelease

MODULE = "sigs.k8s.io/gateway-api/conformance"
PLAN_SOURCE = gomod.GO_SOURCES / "conformance-plan"
GO_HINT = "install Go >= 1.26"
BUILD_TIMEOUT = 5400
WRAPPER = "meshproof.local/gateway-conformance"
PACKAGES = {
    "echo-basic": f"{MODULE}/echo-basic",
    "server": "istio.io/istio/pkg/test/echo/cmd/server",
    "client": "istio.io/istio/pkg/test/echo/cmd/client",
    "conformance-plan": f"{WRAPPER}/plan",
}
# Istio's echo app image: the certificate its Dockerfile copies to /cert.crt and /cert.key
ECHO_CERTS = {
    "cert.crt": "tests/testdata/certs/dns/cert-chain.pem",
    "cert.key": "tests/testdata/certs/dns/key.pem",
}
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ConformanceBinaries:
    label: str  # the Istio release they were built against
    istio_module_version: str
    suite_version: str  # sigs.k8s.io/gateway-api/conformance's version
    suite_dir: str  # that module in Go's module cache (its manifests and published reports)
    istio_dir: str  # the istio.io/istio module (the echo app's certificates)
    conformance_test: str
    echo_basic: str
    echo_server: str
    echo_client: str
    plan: str
    sha256: dict[str, str]


def root_dir(cache_dir: Path, label: str) -> Path:
    return cache_dir / f"istio-{label}" / "conformance"


def suite_version(istio_go_mod: str) -> str:
    """The conformance module's version the Istio go.mod requires; StateError when it requires none."""
    version = gomod.required_version(istio_go_mod, MODULE)
    if not version:
        raise StateError(f"the pinned istio.io/istio does not require {MODULE}: no conformance suite to run")
    return version


def test_build_argv(go: str, out: Path) -> list[str]:
    """``go test -c`` of the suite's own TestConformance (vet off: the suite is not ours to lint)."""
    return [go, "test", "-c", "-vet=off", "-trimpath", f"-tags={istio.BUILD_TAGS}", "-o", str(out), MODULE]


def load(cache_dir: Path, label: str) -> ConformanceBinaries:
    stamp = root_dir(cache_dir, label) / "conformance.json"
    fix = "Fix: run `meshproof conformance` again (it builds them)"
    if not stamp.is_file():
        raise StateError(f"the conformance suite of Istio {label} is not built ({stamp}). {fix}")
    got = ConformanceBinaries(**json.loads(stamp.read_text()))
    if got.istio_module_version != ISTIO_RELEASES[label].module_version:
        raise StateError(f"{stamp} holds another build than the pinned one. {fix}")
    for p in (got.conformance_test, got.echo_basic, got.echo_server, got.echo_client, got.plan):
        if not Path(p).is_file():
            raise StateError(f"{p} is missing. {fix}")
    return got


def ensure(
    cache_dir: Path,
    label: str,
    *,
    say: Progress = lambda _m: None,
    prefix: Sequence[str] = (),
    run: gomod.Run = proc.run,
    which: proc.Which = proc.which,
    force: bool = False,
) -> ConformanceBinaries:
    """The suite's binaries for Istio ``label``, built first when missing or stale."""
    root = root_dir(cache_dir, label)
    return locked_install(
        root,
        what=f"the Gateway API conformance suite (Istio {label})",
        current=lambda: load(cache_dir, label),
        build=lambda: _build(root, ISTIO_RELEASES[label], say, list(prefix), run, which),
        say=say,
        force=force,
    )


def _build(
    root: Path, rel: IstioRelease, say: Progress, prefix: list[str], run: gomod.Run, which: proc.Which
) -> ConformanceBinaries:
    go = gomod.find_go(
        needed_for="building the Gateway API conformance suite", how_to_get=GO_HINT, which=which
    )
    mod = istio.module(rel, go=go, needed_for="meshproof conformance", how_to_get=GO_HINT, run=run)
    version = suite_version(mod.go_mod_text())
    suite = gomod.download(
        MODULE, version, go=go, needed_for="meshproof conformance", how_to_get=GO_HINT, run=run
    )
    build, bin_dir = root / "build", root / "bin"
    shutil.rmtree(build, ignore_errors=True)
    (build / "plan").mkdir(parents=True)
    bin_dir.mkdir(parents=True, exist_ok=True)
    (build / "go.mod").write_text(istio.go_mod(rel, WRAPPER, gomod.go_directive(mod.go_mod_text())))
    shutil.copyfile(PLAN_SOURCE / "main.go", build / "plan" / "main.go")
    env = istio.build_env(rel)
    say(f"building the conformance suite {MODULE}@{version} (go test -c, against Istio {rel.label})")
    out = {"conformance.test": bin_dir / "conformance.test"}
    run([*prefix, *test_build_argv(go, out["conformance.test"])], cwd=build, env=env, timeout=BUILD_TIMEOUT)
    for name, package in PACKAGES.items():
        say(f"building {name} ({package})")
        out[name] = bin_dir / name
        argv = gomod.build_argv(go, package, out[name], tags=istio.BUILD_TAGS)
        run([*prefix, *argv], cwd=build, env=env, timeout=BUILD_TIMEOUT)
    got = ConformanceBinaries(
        label=rel.label,
        istio_module_version=rel.module_version,
        suite_version=version,
        suite_dir=str(suite.dir),
        istio_dir=str(mod.dir),
        conformance_test=str(out["conformance.test"]),
        echo_basic=str(out["echo-basic"]),
        echo_server=str(out["server"]),
        echo_client=str(out["client"]),
        plan=str(out["conformance-plan"]),
        sha256={n: sha256_file(p) for n, p in out.items()},
    )
    (root / "conformance.json").write_text(json.dumps(asdict(got), indent=2))
    shutil.rmtree(build, ignore_errors=True)
    return got


# ---- the images the suite's manifests name --------------------------------------------------------
_IMAGE = re.compile(r"^\s*image:\s*[\"']?([^\s\"']+)", re.MULTILINE)


def manifest_images(texts: Sequence[str]) -> list[str]:
    """Every ``image:`` the suite's manifests name, sorted, once each."""
    return sorted({m for t in texts for m in _IMAGE.findall(t)})


def suite_manifest_images(suite_dir: Path) -> list[str]:
    """The images of the suite's base, mesh and test manifests (the YAML it embeds)."""
    texts = [p.read_text() for d in ("base", "mesh", "tests") for p in sorted((suite_dir / d).glob("*.yaml"))]
    return manifest_images(texts)


def image_version(ref: str) -> str:
    """``registry.k8s.io/coredns/coredns:v1.12.2`` -> ``v1.12.2`` ("" without a tag)."""
    tail = ref.rsplit("/", 1)[-1]
    return tail.split(":", 1)[1] if ":" in tail else ""


def build_coredns(
    cache_dir: Path, suite: str, version: str, *, say: Progress, prefix: Sequence[str] = (), run: proc.Runner = proc.run,
    which: proc.Which = proc.which,
) -> Path:  # fmt: skip
    """CoreDNS at the version the suite's base manifests name, from its module (cached)."""
    go = which("go")
    if not go:
        raise ToolMissing("go", f"building CoreDNS {version} for the conformance suite", GO_HINT)
    return nodeparts.build_coredns(
        cache_dir / f"gateway-conformance-{suite}", version, go=go, run=run, prefix=prefix, say=say
    )
