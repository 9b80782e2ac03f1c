"""The sample image alone, started by testcontainers: what the kind cluster will run, checked before it does.

The image is the one the kind path loads into the cluster (``meshproof images build --only sample``:
sample-service/Dockerfile on node-base in local mode). testcontainers starts it with an HTTP wait
strategy on the admin port's ``/healthz``, then ``GET /api/greet`` must answer the sample's greeting.
Ryuk (testcontainers' reaper, an image pulled from a registry) is off: the container is removed by the
context manager, pass or fail. Ports are published on 127.0.0.1 only and every request goes there.

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

APP_PORT, ADMIN_PORT = 3000, 3001
GREETING = {"message": "Hello from Microservice 1!"}


@pytest.fixture(scope="module")
def sample_image() -> Iterator[str]:
    settings = from_env()
    eng.install_docker_io()
    with eng.DockerEngine(eng.EngineLayout.under(settings.cache_dir)):
        docker = proc.which("docker", needed_for="the kind path's tests")
        sources = mesh_sources(settings, lambda _m: None)
        if settings.images == "official":  # where pulls work (nightly CI): the Dockerfile's default base
            sources = dataclasses.replace(sources, node_image="node:22-slim")
        builder = ImageBuilder(settings.cache_dir, docker=docker, mesh=sources)
        (built,) = builder.build(["sample"])
        yield built.ref


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Ryuk (it would be pulled), and testcontainers addresses the container at 127.0.0.1: the
    engine's host, even when this process itself runs in a container (testcontainers would then pick
    the bridge gateway, where nothing is published)."""
    monkeypatch.setattr(testcontainers_config, "_ryuk_disabled", True)
    monkeypatch.setattr(testcontainers_config, "tc_host_override", "127.0.0.1")
    monkeypatch.setattr(testcontainers_config, "connection_mode_override", ConnectionMode.docker_host)


def sample_container(image: str) -> DockerContainer:
    c = DockerContainer(image)
    for port in (APP_PORT, ADMIN_PORT):
        c.ports[f"{port}/tcp"] = ("127.0.0.1", None)  # type: ignore[assignment]  # the docker SDK's (ip, port)
    return c.waiting_for(HttpWaitStrategy(ADMIN_PORT, "/healthz").for_status_code(200))


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
