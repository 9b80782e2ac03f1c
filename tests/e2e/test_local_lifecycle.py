"""The embedded mesh's lifecycle through the public CLI: nothing leaks, whatever kills what.

Each test brings up its own mesh in a temp state dir (so they do not share the suites' mesh)
and proves that afterwards no process of it is alive and its ports are free again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness import wait
from harness.proc import group_members

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "harness.cli"]
ROOT = Path(__file__).resolve().parents[2]


def meshproof(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def mesh_ports(state: Path) -> list[int]:
    plan = json.loads((state / "plan.json").read_text())
    ports = [plan["istiod"][k] for k in ("grpc", "http", "monitoring")]
    for r in plan["replicas"]:
        ports += list(r["ports"].values())
    return ports


def port_free(port: int) -> bool:
    """Can a server listen on ``port`` again? (SO_REUSEADDR: TIME_WAIT leftovers do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
            s.listen(1)
        except OSError:
            return False
    return True


def assert_gone(pgid: int, ports: list[int]) -> None:
    wait.until(
        lambda: not group_members(pgid), what=f"every process of group {pgid} gone", timeout=30, interval=0.1
    )
    busy = [p for p in ports if not port_free(p)]
    assert not busy, f"ports still bound after teardown: {busy}"


def wait_ready(state: Path) -> None:
    def ready() -> bool:
        try:
            return json.loads((state / "status.json").read_text()).get("phase") == "ready"
        except (OSError, ValueError):
            return False

    wait.until(ready, what=f"mesh in {state} ready", timeout=120, interval=0.1)


def test_up_detach_then_down_leaves_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    p = meshproof("up", "--detach", "--state", str(state))
    assert p.returncode == 0, p.stderr
    pgid = json.loads((state / "backend.json").read_text())["pgid"]
    ports = mesh_ports(state)
    assert group_members(pgid), "the detached mesh should be running"
    p = meshproof("down", "--state", str(state))
    assert p.returncode == 0, p.stderr
    assert_gone(pgid, ports)
    left = sorted(x.name for x in state.iterdir())
    assert left == ["logs", "status.json"], f"runtime files left in the state dir: {left}"


def test_sigkill_of_the_foreground_cli_tears_the_mesh_down(tmp_path: Path) -> None:
    state = tmp_path / "state"
    cli = subprocess.Popen(
        [*CLI, "up", "--state", str(state)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_ready(state)
        pgid = json.loads((state / "backend.json").read_text())["pgid"]
        ports = mesh_ports(state)
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait(10)
        assert_gone(pgid, ports)
    finally:
        if cli.poll() is None:
            cli.kill()
        meshproof("down", "--state", str(state))


def test_down_after_sigkill_of_the_supervisor_leaves_nothing(tmp_path: Path) -> None:
    """The supervisor's own children die with it (PDEATHSIG); Envoys, children of pilot-agent,
    may outlive it, so `meshproof down` kills the whole process group."""
    state = tmp_path / "state"
    assert meshproof("up", "--detach", "--state", str(state)).returncode == 0
    info = json.loads((state / "backend.json").read_text())
    ports = mesh_ports(state)
    os.kill(info["pid"], signal.SIGKILL)
    p = meshproof("down", "--state", str(state))
    assert p.returncode == 0, p.stderr
    assert_gone(info["pgid"], ports)


def test_foreground_up_ends_with_an_error_when_the_mesh_dies_under_it(tmp_path: Path) -> None:
    """`meshproof up` in the foreground does not wait for a Ctrl-C that will never matter: once the
    supervisor is gone (killed, crashed), it says so, exits non-zero, and leaves nothing behind."""
    state = tmp_path / "state"
    cli = subprocess.Popen(
        [*CLI, "up", "--state", str(state)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_ready(state)
        info = json.loads((state / "backend.json").read_text())
        ports = mesh_ports(state)
        os.kill(info["pid"], signal.SIGKILL)
        out, err = cli.communicate(timeout=60)
        assert cli.returncode != 0, out
        assert "the mesh stopped by itself" in err and "supervisor exited" in err, err
        assert_gone(info["pgid"], ports)
    finally:
        if cli.poll() is None:
            cli.kill()
        meshproof("down", "--state", str(state))
