"""The Istio builds' shared pieces: the wrapper module's go.mod carries the release's replaces."""

from __future__ import annotations

from harness.toolchain import istio
from harness.toolchain.istio_local import launcher_gomod
from harness.versions import ISTIO_RELEASES


def test_launcher_gomod_carries_the_replace_directives() -> None:
    text = launcher_gomod(ISTIO_RELEASES["1.30-dev"], "1.25.9")
    assert "require istio.io/istio v0.0.0-20260826214018-9739e10eb9d7" in text
    assert "replace istio.io/api => istio.io/api v1.30.8\n" in text
    assert text.count("replace ") == len(ISTIO_RELEASES["1.30-dev"].replaces)
    assert "replace" not in launcher_gomod(ISTIO_RELEASES["1.31-dev"], "1.26.0")


def test_analyzer_build_carries_the_replace_directives_too() -> None:
    text = istio.go_mod(ISTIO_RELEASES["1.30-dev"], "meshproof.local/analyze", "1.26")
    assert text.startswith("module meshproof.local/analyze\n")
    for module, version in ISTIO_RELEASES["1.30-dev"].replaces:
        assert f"replace {module} => {module} {version}\n" in text
