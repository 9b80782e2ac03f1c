"""PortForward over loopback sockets: the opener stands in for the API's port-forward stream."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from harness import wait
from harness.backends.base import State
from harness.backends.kube.portforward import PortForward
from harness.errors import BackendError, WaitTimeout


class FakePod:
    """A TCP server that records what each connection sent (up to the end of HTTP headers) and answers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.received: list[bytes] = []
        self.held: list[socket.socket] = []
        self.hold = False
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return str(host), int(port)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        self.received.append(data)
        if self.hold:
            self.held.append(conn)
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        conn.close()

    def open(self) -> socket.socket:
        return socket.create_connection(self.address)

    def close(self) -> None:
        self.listener.close()
        for c in self.held:
            c.close()


@pytest.fixture
def pod() -> Iterator[FakePod]:
    p = FakePod()
    yield p
    p.close()


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_forwards_http_on_a_loopback_port(pod: FakePod) -> None:
    with PortForward(pod.open, what="sample/web-1:3000") as pf:
        assert pf.state is State.RUNNING
        assert pf.url == f"http://127.0.0.1:{pf.port}" and pf.port != pod.address[1]
        r = httpx.get(pf.url + "/api/greet", headers={"x-test": "1"})
        assert r.status_code == 200 and r.text == "ok"
    assert pf.state is State.STOPPED
    assert any(b"GET /api/greet" in d and b"x-test: 1" in d for d in pod.received)


def test_preamble_goes_first(pod: FakePod) -> None:
    with PortForward(pod.open, what="relay", preamble=b"TARGET 10.244.0.7 3000\n") as pf:
        httpx.get(pf.url + "/x")
    assert pod.received[-1].startswith(b"TARGET 10.244.0.7 3000\nGET /x HTTP/1.1")


def test_readiness_waits_for_the_stream_and_keeps_errors(pod: FakePod) -> None:
    failures = [BackendError("port-forward to sample/web-1:3000 failed: pod not running")] * 2

    def opener() -> socket.socket:
        if failures:
            raise failures.pop()
        return pod.open()

    pf = PortForward(opener, what="sample/web-1:3000").start()
    try:
        pf.wait_ready(timeout=5, clock=FakeClock())  # type: ignore[arg-type]
        assert "BackendError: port-forward to sample/web-1:3000 failed: pod not running" in pf.errors
    finally:
        pf.stop()


def test_readiness_timeout_names_the_forward_and_the_stream_error() -> None:
    def opener() -> socket.socket:
        raise BackendError('pods "web-1" not found')

    pf = PortForward(opener, what="sample/web-1:3001").start()
    with pytest.raises(WaitTimeout) as info:
        pf.wait_ready(timeout=1, clock=FakeClock())  # type: ignore[arg-type]
    pf.stop()
    assert "port-forward to sample/web-1:3001" in str(info.value)
    assert 'pods "web-1" not found' in "\n".join(info.value.__notes__)


def test_context_manager_stops_when_never_ready() -> None:
    def opener() -> socket.socket:
        raise OSError("connection refused")

    pf = PortForward(opener, what="sample/web-1:3000", ready_timeout=0.0)
    with pytest.raises(WaitTimeout):
        pf.__enter__()
    assert pf.state is State.STOPPED
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", pf.port), timeout=1).close()


def test_stop_closes_live_connections_and_refuses_reuse(pod: FakePod) -> None:
    pod.hold = True
    pf = PortForward(pod.open, what="held").start()
    client = socket.create_connection(("127.0.0.1", pf.port))
    client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    client.settimeout(5)
    # The fake pod holds the connection open: the forward has one live connection.
    wait.until(
        lambda: pf.connections == 1 and bool(pod.received),
        what="the held connection",
        timeout=5,
        interval=0.01,
    )
    pf.stop()
    assert client.recv(1) == b""  # closed by stop()
    client.close()
    assert pf.connections == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", pf.port), timeout=1).close()
    with pytest.raises(BackendError, match="stopped"):
        pf.start()
    pf.stop()  # idempotent
