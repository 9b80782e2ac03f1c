"""harness.toolchain.istio_local: the istiod launcher's build inputs and stamp."""

from __future__ import annotations

from pathlib import Path

from harness.toolchain import istio_local as install
from harness.toolchain.gomod import required_version
from harness.toolchain.istio_local import launcher_gomod
from harness.versions import ISTIO_RELEASES


def test_the_launcher_builds_with_the_kubernetes_libraries_istio_requires() -> None:
    gomod = "module x\n\nrequire (\n\tk8s.io/api v0.36.1\n\tk8s.io/client-go v0.36.1\n\tsigs.k8s.io/gateway-api v1.6.0\n)\n"
    assert required_version(gomod, "k8s.io/client-go") == "v0.36.1"
    assert required_version(gomod, "sigs.k8s.io/gateway-api") == "v1.6.0"
    assert required_version(gomod, "k8s.io/endpointslice") == ""
    text = launcher_gomod(ISTIO_RELEASES["1.31-dev"], "1.26", "v0.36.1")
    assert "require istio.io/istio " in text
    assert text.rstrip().endswith("require k8s.io/endpointslice v0.36.1")


def test_the_launcher_stamp_follows_its_sources(tmp_path: Path) -> None:
    (tmp_path / "main.go").write_text("package main\n")
    before = install.launcher_digest(tmp_path)
    assert install.launcher_digest(tmp_path) == before
    (tmp_path / "cluster.go").write_text("package main\n")
    assert install.launcher_digest(tmp_path) != before, "a new source file changes the stamp"
    assert install.launcher_digest() != before  # the real sources
