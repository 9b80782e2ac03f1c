"""The conformance suite's build: its version from Istio's go.mod, the test binary's argv, the manifests' images."""

from __future__ import annotations

import pytest

from harness.backends.kube.kind import conformance_images as ci
from harness.errors import StateError
from harness.toolchain import gateway_conformance as gcb

ISTIO_GO_MOD = """module istio.io/istio

go 1.26.0

require (
\tsigs.k8s.io/gateway-api v1.6.0
\tsigs.k8s.io/gateway-api-inference-extension v1.5.0
\tsigs.k8s.io/gateway-api/conformance v1.6.0
)
"""


def test_suite_version_is_the_one_istio_requires() -> None:
    assert gcb.suite_version(ISTIO_GO_MOD) == "v1.6.0"
    with pytest.raises(StateError, match="does not require sigs.k8s.io/gateway-api/conformance"):
        gcb.suite_version("module istio.io/istio\n\nrequire sigs.k8s.io/gateway-api v1.6.0\n")


def test_the_test_binary_is_go_test_c_of_the_suite() -> None:
    argv = gcb.test_build_argv(
        "/go", gcb.root_dir(__import__("pathlib").Path("/c"), "1.31-dev") / "bin" / "t"
    )
    assert argv[:3] == ["/go", "test", "-c"] and argv[-1] == gcb.MODULE
    assert "-vet=off" in argv and "-tags=vtprotobuf,disable_pgv" in argv


def test_images_of_the_manifests_once_each() -> None:
    texts = [
        "spec:\n  containers:\n    - image: registry.k8s.io/gateway-api/echo-basic:v1.5.1\n",
        "      image: 'registry.k8s.io/coredns/coredns:v1.12.2'\n# image: not-this\n"
        "      image: registry.k8s.io/gateway-api/echo-basic:v1.5.1\n",
    ]
    assert gcb.manifest_images(texts) == [
        "registry.k8s.io/coredns/coredns:v1.12.2",
        "registry.k8s.io/gateway-api/echo-basic:v1.5.1",
    ]
    assert gcb.image_version("registry.k8s.io/coredns/coredns:v1.12.2") == "v1.12.2"
    assert gcb.image_version("localhost:5000/x") == ""


def test_which_images_meshproof_builds() -> None:
    assert (
        ci.repository("registry.k8s.io/gateway-api/echo-basic:v1.5.1")
        == "registry.k8s.io/gateway-api/echo-basic"
    )
    refs = ["registry.k8s.io/gateway-api/echo-advanced:v1.5.1", "registry.k8s.io/coredns/coredns:v1.12.2",
            "registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.2", "example.com/other:v1"]  # fmt: skip
    assert ci.unknown_images(refs) == ["example.com/other:v1"]


def test_echo_advanced_is_istios_app_image_shape() -> None:
    d = ci.echo_advanced_dockerfile("meshproof.local/base:1.31-dev")
    assert d.startswith("FROM meshproof.local/base:1.31-dev\n")
    for line in ("COPY client /usr/local/bin/client", "COPY cert.crt /cert.crt", "USER 1338",
                 'ENTRYPOINT ["/usr/local/bin/server"]'):  # fmt: skip
        assert line in d
