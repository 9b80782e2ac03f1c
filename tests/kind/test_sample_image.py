"""The sample image alone, started by testcontainers: what the kind cluster will run, checked before it does.

The image is the one the kind path loads into the cluster (``meshproof images build --only sample``:
sample-service/Dockerfile on node-base in local mode). testcontainers starts it on the Docker engine
meshproof runs (``meshproof docker status``; DOCKER_HOST is that engine's socket, whatever the
environment says) and waits with an HTTP strategy on ``GET /api/greet`` until it answers 200; then
the greeting must be the sample's. Ryuk (testcontainers' reaper, an image pulled from a registry) is
off: the container is removed by the context manager, pass or fail. The port is published on
127.0.0.1 only and every request goes there.

Runs only with ``--backend kind`` (``tox -e e2e-kind``), like the rest of tests/kind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import httpx
import pytest
from testcontainers.core.config import ConnectionMode, testcontainers_config
from testcontainers.core.container import DockerContainer
from testcontainers.core.wait_strategies import HttpWaitStrategy

from harness import proc
from harness.backends.kube import engine as eng
from harness.backends.kube.kind import meshimages
from harness.backends.kube.kind.images import ImageBuilder
from harness.cli.kind import mesh_sources
from harness.settings import from_env

pytestmark = [pytest.mark.backend("kind"), pytest.mark.slow]

APP_PORT = 3000
GREETING = {"message": "Hello from Microservice 1!"}


@pytest.fixture(scope="module")
def engine_layout() -> eng.EngineLayout:
    return eng.EngineLayout.under(from_env().cache_dir)


@pytest.fixture(scope="module")
def sample_image(engine_layout: eng.EngineLayout) -> Iterator[str]:
    settings = from_env()
    eng.install_docker_io()
    with eng.DockerEngine(engine_layout):
        docker = proc.which("docker", needed_for="the kind path's tests")
        sources = mesh_sources(settings, lambda _m: None)
        if settings.images == "official":  # where pulls work (nightly CI): the Dockerfile's default base
            sources = dataclasses.replace(sources, node_image="node:22-slim")
        builder = ImageBuilder(settings.cache_dir, docker=docker, mesh=sources)
        (built,) = builder.build(["sample"])
        yield built.ref


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch, engine_layout: eng.EngineLayout) -> None:
    """testcontainers talks to meshproof's engine (its socket as DOCKER_HOST), without Ryuk (it would
    be pulled), and addresses the container at 127.0.0.1: the engine's host, even when this process
    itself runs in a container (testcontainers would then pick the bridge gateway, where nothing is
    published)."""
    monkeypatch.setenv("DOCKER_HOST", engine_layout.host)
    monkeypatch.setattr(testcontainers_config, "_ryuk_disabled", True)
    monkeypatch.setattr(testcontainers_config, "tc_host_override", "127.0.0.1")
    monkeypatch.setattr(testcontainers_config, "connection_mode_override", ConnectionMode.docker_host)


def sample_container(image: str) -> DockerContainer:
    """The sample, ready once ``GET /api/greet`` answers 200 (the wait strategy's probe)."""
    c = DockerContainer(image)
    c.ports[f"{APP_PORT}/tcp"] = ("127.0.0.1", None)  # type: ignore[assignment]  # the docker SDK's (ip, port)
    return c.waiting_for(HttpWaitStrategy(APP_PORT, "/api/greet").for_status_code(200))


def test_the_sample_image_alone_answers_its_greeting(sample_image: str, loopback_only: None) -> None:
    with sample_container(sample_image) as c:
        port = int(c.get_exposed_port(APP_PORT))
        r = httpx.get(f"http://127.0.0.1:{port}/api/greet", timeout=10, trust_env=False)
        assert r.status_code == 200, r.text
        assert r.json()["message"] == GREETING["message"], r.text
        user = c.get_wrapped_container().attrs["Config"]["User"]
        assert user == "node"  # the Dockerfile's USER: node-base has that user, like the official image


@pytest.mark.negative
def test_a_wrong_path_is_not_the_greeting(sample_image: str, loopback_only: None) -> None:
    """Negative control: the check above can fail: the sample answers 404 outside its routes."""
    with sample_container(sample_image) as c:
        port = int(c.get_exposed_port(APP_PORT))
        r = httpx.get(f"http://127.0.0.1:{port}/api/nope", timeout=10, trust_env=False)
        assert r.status_code == 404


def test_the_local_image_map_names_the_built_sample(sample_image: str) -> None:
    assert meshimages.local_image_map()[meshimages.SAMPLE_OFFICIAL] == sample_image
