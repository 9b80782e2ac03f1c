"""The kind path's foundation on this machine: the Docker engine, the capability wrapper, kind's base image.

Runs only with ``--backend kind`` (``tox -e e2e-kind``): it needs root, Debian's docker.io (installed when
missing) and minutes of image builds on a cold cache. A dockerd this module starts is stopped at its end; an
engine that was already running is left as it was.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import proc, wait
from harness.backends.kube import engine as eng
from harness.backends.kube.kind.base import image_ref
from harness.backends.kube.kind.images import ImageBuilder, plan_tag
from harness.settings import from_env

pytestmark = [pytest.mark.backend("kind"), pytest.mark.slow]


@pytest.fixture(scope="module")
def docker() -> Iterator[str]:
    cache = from_env().cache_dir
    eng.install_docker_io()
    with eng.DockerEngine(eng.EngineLayout.under(cache)):
        yield proc.which("docker", needed_for="the kind path's tests")


@pytest.fixture(scope="module")
def images(docker: str) -> dict[str, str]:
    built = ImageBuilder(from_env().cache_dir, docker=docker).build(["debian-base", "kind-base"])
    return {b.name: b.ref for b in built}


def host_lacks_cap_sys_resource() -> bool:
    return eng.needs_cap_wrapper(Path("/proc/self/status").read_text())


def test_a_privileged_container_runs(docker: str, images: dict[str, str]) -> None:
    out = proc.run(
        [docker, "run", "--rm", "--privileged", images["debian-base"], "sh", "-c",
         "grep CapBnd /proc/self/status && mount -t tmpfs probe /mnt && echo mounted"],
        timeout=300,
    )  # fmt: skip
    assert "mounted" in out.stdout
    bnd = eng.bounding_set(out.stdout)
    assert bnd >> 21 & 1, "CAP_SYS_ADMIN missing in a privileged container"
    assert bool(bnd >> eng.CAP_SYS_RESOURCE & 1) is not host_lacks_cap_sys_resource()


@pytest.mark.negative
def test_plain_runc_cannot_start_a_privileged_container_here(docker: str, images: dict[str, str]) -> None:
    """Why the wrapper exists: without it, runc fails on this host's bounding set."""
    if not host_lacks_cap_sys_resource():
        pytest.skip(
            "this host's bounding set has CAP_SYS_RESOURCE: plain runc works and no wrapper is registered"
        )
    out = proc.run(
        [docker, "run", "--rm", "--privileged", "--runtime", "runc", images["debian-base"], "true"],
        timeout=300,
        check=False,
    )
    assert out.returncode != 0 and "unable to apply caps" in out.stderr


def test_kind_base_boots_systemd_as_pid_1(docker: str, images: dict[str, str]) -> None:
    """kind's entrypoint and systemd come up in a privileged container (no containerd yet: kind-node adds it)."""
    assert images["kind-base"] == image_ref("kind-base", plan_tag("kind-base"))
    name = f"meshproof-kind-base-{uuid.uuid4().hex[:8]}"
    proc.run(
        [docker, "run", "-d", "--name", name, "--privileged", "--cgroupns=private", "--tmpfs", "/tmp",
         "--tmpfs", "/run", "--volume", "/var", "-e", "container=docker", "--stop-signal", "SIGRTMIN+3",
         "--entrypoint", "/usr/local/bin/entrypoint", images["kind-base"], "/sbin/init"],
        timeout=300,
    )  # fmt: skip
    try:

        def state() -> str:
            out = proc.run([docker, "exec", name, "systemctl", "is-system-running"], timeout=60, check=False)
            return out.stdout.strip() if out.stdout.strip() in ("running", "degraded") else ""

        wait.until(state, what=f"systemd in {name} to finish booting", timeout=180, interval=1.0)
        pid1 = proc.run([docker, "exec", name, "cat", "/proc/1/comm"], timeout=60).stdout.strip()
        assert pid1 == "systemd"
    finally:
        proc.run([docker, "rm", "-f", name], timeout=120, check=False)
