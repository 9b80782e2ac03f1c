"""The supervisor's serve loop waits for a request or a child's exit instead of polling its children."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

from harness.backends.local.supervisor import _await_request_or_exit


def _listener(tmp_path: Path) -> socket.socket:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(tmp_path / "control.sock"))
    srv.listen(1)
    return srv


def test_returns_false_when_a_running_child_exits(tmp_path: Path) -> None:
    with _listener(tmp_path) as srv:
        reaped = subprocess.Popen([sys.executable, "-c", "pass"])
        reaped.wait()  # an exited and reaped child is not waited for
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        )
        assert child.stdin is not None
        threading.Timer(0.05, child.stdin.close).start()  # the child exits once its stdin closes
        assert _await_request_or_exit(srv, [reaped, child]) is False
        assert child.wait(10) == 0


def test_returns_true_when_a_request_arrives(tmp_path: Path) -> None:
    with _listener(tmp_path) as srv:
        child = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        )
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.connect(str(tmp_path / "control.sock"))
                assert _await_request_or_exit(srv, [child]) is True
        finally:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(10)
