"""kind-runtime on this machine: containerd runs inside the node, and so do privileged containers it starts.

Runs only with ``--backend kind`` (``tox -e e2e-kind``). The node is started the way kind starts one
(privileged, private cgroup namespace, tmpfs /run and /tmp, kind's entrypoint and /sbin/init) and removed at
the end. Inside it, containerd's runc is runc-capdrop in front of the real runc. Found on the 2-core VM: a
*privileged* container started by containerd 2.3 works even with the real runc (containerd grants a
privileged container the capabilities its own process holds, not every known one, unlike dockerd 20.10);
a container that *adds* CAP_SYS_RESOURCE (a pod's ``capabilities.add``) fails with the real runc alone
("unable to apply caps") and starts through the wrapper, which removes what the host lacks.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import proc, wait
from harness.backends.kube import engine as eng
from harness.backends.kube.kind.images import ImageBuilder
from harness.settings import from_env

pytestmark = [pytest.mark.backend("kind"), pytest.mark.slow]


@pytest.fixture(scope="module")
def node() -> Iterator[tuple[str, str]]:
    """(docker, node container name) of a started kind-runtime node, with debian-base imported into it."""
    cache = from_env().cache_dir
    eng.install_docker_io()
    with eng.DockerEngine(eng.EngineLayout.under(cache)):
        docker = proc.which("docker", needed_for="the kind path's tests")
        built = {
            b.name: b.ref for b in ImageBuilder(cache, docker=docker).build(["debian-base", "kind-runtime"])
        }
        name = f"meshproof-kind-runtime-{uuid.uuid4().hex[:8]}"
        proc.run(
            [docker, "run", "-d", "--name", name, "--privileged", "--cgroupns=private", "--tmpfs", "/tmp",
             "--tmpfs", "/run", "--volume", "/var", "-e", "container=docker", "--stop-signal", "SIGRTMIN+3",
             built["kind-runtime"]],
            timeout=300,
        )  # fmt: skip
        try:

            def containerd_active() -> str:
                out = proc.run(
                    [docker, "exec", name, "systemctl", "is-active", "containerd"], timeout=60, check=False
                )
                return out.stdout.strip() if out.stdout.strip() == "active" else ""

            wait.until(containerd_active, what=f"containerd active in {name}", timeout=180, interval=1.0)
            with tempfile.TemporaryDirectory(prefix="meshproof-kind-runtime-") as tmp:
                tar = Path(tmp) / "debian-base.tar"
                proc.run([docker, "save", "-o", str(tar), built["debian-base"]], timeout=600)
                proc.run([docker, "cp", str(tar), f"{name}:/debian-base.tar"], timeout=600)
            proc.run(
                [docker, "exec", name, "ctr", "-n", "k8s.io", "images", "import", "/debian-base.tar"],
                timeout=600,
            )
            yield docker, name
        finally:
            proc.run([docker, "rm", "-f", name], timeout=120, check=False)


def ctr_run(docker: str, name: str, *extra: str) -> proc.Completed:
    return proc.run(
        [docker, "exec", name, "ctr", "-n", "k8s.io", "run", "--rm", *extra, "meshproof.local/debian-base:bookworm",
         f"t-{uuid.uuid4().hex[:6]}", "sh", "-c", "grep CapBnd /proc/self/status && echo ok"],
        timeout=300,
        check=False,
    )  # fmt: skip


def lacks_cap_sys_resource() -> bool:
    return eng.needs_cap_wrapper(Path("/proc/self/status").read_text())


def test_containerd_in_the_node_starts_a_privileged_container(node: tuple[str, str]) -> None:
    out = ctr_run(*node, "--privileged")
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
    assert eng.bounding_set(out.stdout) >> 21 & 1  # CAP_SYS_ADMIN: privileged indeed


def test_a_container_adding_cap_sys_resource_starts_through_the_wrapper(node: tuple[str, str]) -> None:
    out = ctr_run(*node, "--cap-add", "CAP_SYS_RESOURCE")
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
    held = bool(eng.bounding_set(out.stdout) >> eng.CAP_SYS_RESOURCE & 1)
    assert held is not lacks_cap_sys_resource()


@pytest.mark.negative
def test_the_real_runc_alone_cannot_add_cap_sys_resource_here(node: tuple[str, str]) -> None:
    if not lacks_cap_sys_resource():
        pytest.skip("this host's bounding set has CAP_SYS_RESOURCE: the wrapper is a pass-through")
    out = ctr_run(*node, "--cap-add", "CAP_SYS_RESOURCE", "--runc-binary", "/usr/local/sbin/runc.real")
    assert "unable to apply caps" in out.stderr + out.stdout, out.stdout
