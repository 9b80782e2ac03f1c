"""PortForward over loopback sockets: the opener stands in for the API's port-forward stream."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator

import httpx
import pytest

from harness import wait
from harness.backends.base import State
from harness.backends.kube.portforward import Forwards, PortForward
from harness.backends.kube.relay import RELAY_JS, preamble
from harness.errors import BackendError, WaitTimeout
from harness.mesh import UNREACHED_HEADER, Workload


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


# ---- a target that was never reached is not a refusal ------------------------------------------


class ClosingPod(FakePod):
    """Accepts, reads the request and closes without answering: what STRICT mTLS does to plaintext."""

    def _handle(self, conn: socket.socket) -> None:
        self.received.append(conn.recv(4096))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset
        conn.close()


@contextlib.contextmanager
def started(pf: PortForward) -> Iterator[PortForward]:
    """Started without the readiness wait (which would open a stream), always stopped."""
    pf.start()
    try:
        yield pf
    finally:
        pf.stop()


def failing_opener() -> socket.socket:
    raise BackendError("port-forward to sample/web-1:15006 failed: Handshake status 500")


def test_a_stream_that_fails_to_open_is_answered_as_unreached_not_closed() -> None:
    with started(PortForward(failing_opener, what="sample/web-1:8080", answer_unreached=True)) as pf:
        r = httpx.get(pf.url + "/api/greet", timeout=5)
    assert r.status_code == 502
    assert "Handshake status 500" in r.headers[UNREACHED_HEADER]
    assert "sample/web-1:8080" in r.headers[UNREACHED_HEADER]
    assert pf.unreached == 1


def test_without_answer_unreached_a_failed_stream_looks_like_a_refusal() -> None:
    """Why answer_unreached exists: otherwise the client cannot tell a failed stream from a refusal."""
    pf = PortForward(failing_opener, what="sample/web-1:8080").start()
    try:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.get(pf.url + "/api/greet", timeout=5)
    finally:
        pf.stop()


def test_a_relay_that_stays_silent_is_unreached() -> None:
    silent = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def opener() -> socket.socket:
        c = socket.create_connection(silent.getsockname()[:2])
        held.append(silent.accept()[0])
        return c

    pf = PortForward(
        opener, what="via relay", preamble=b"TARGET 10.0.0.1 80\n", confirm=True, answer_unreached=True
    )
    pf.confirm_timeout = 0.2
    with started(pf):
        r = httpx.get(pf.url + "/", timeout=5)
    silent.close()
    for h in held:
        h.close()
    assert r.status_code == 502 and "did not confirm" in r.headers[UNREACHED_HEADER]


@pytest.fixture(scope="module")
def relay() -> Iterator[tuple[str, int]]:
    """The relay pod's program (RELAY_JS) run by node on loopback."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (./scripts/setup installs it)")
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = int(s.getsockname()[1])
    env = {**os.environ, "RELAY_PORT": str(port), "RELAY_HOST": "127.0.0.1"}
    child = subprocess.Popen([node, "-e", RELAY_JS], env=env)
    try:
        wait.until(
            lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True,
            what="the relay to listen",
            timeout=20,
            interval=0.05,
            retry_on=(OSError,),
        )
        yield "127.0.0.1", port
    finally:
        child.terminate()
        child.wait(timeout=10)


def via_relay(relay: tuple[str, int], target: tuple[str, int]) -> PortForward:
    return PortForward(
        lambda: socket.create_connection(relay),
        what=f"{target[0]}:{target[1]} via the relay",
        preamble=preamble(*target),
        confirm=True,
        answer_unreached=True,
    )


def test_relay_confirms_and_carries_the_request(relay: tuple[str, int], pod: FakePod) -> None:
    with started(via_relay(relay, pod.address)) as pf:
        r = httpx.get(pf.url + "/api/greet", timeout=5)
    assert (r.status_code, r.text) == (200, "ok")
    assert pod.received[-1].startswith(b"GET /api/greet HTTP/1.1")  # the TARGET line is the relay's


def test_relay_that_cannot_connect_is_unreached_not_refused(relay: tuple[str, int]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        closed = s.getsockname()[:2]  # nothing listens here any more
    with started(via_relay(relay, closed)) as pf:
        r = httpx.get(pf.url + "/", timeout=5)
    assert r.status_code == 502 and "ECONNREFUSED" in r.headers[UNREACHED_HEADER]


def test_target_that_accepts_and_resets_still_looks_refused(relay: tuple[str, int]) -> None:
    strict = ClosingPod()
    try:
        with (
            started(via_relay(relay, strict.address)) as pf,
            pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)),
        ):
            httpx.get(pf.url + "/api/greet", timeout=5)
        assert strict.received and strict.received[0].startswith(b"GET /api/greet")
    finally:
        strict.close()


def test_mtls_probe_errors_when_the_sidecar_was_never_reached() -> None:
    from suites.test_mtls import probe

    with started(PortForward(failing_opener, what="sample/web-1:8080", answer_unreached=True)) as pf:
        w = Workload("web-1", "sample", "web", {}, "10.0.0.7", "", "", pf.url, "")
        with httpx.Client(timeout=5, trust_env=False) as http, pytest.raises(BackendError) as info:
            probe(http, w)
    assert "never reached its sidecar" in str(info.value)


def test_mtls_probe_counts_a_reset_after_connect_as_refused(relay: tuple[str, int]) -> None:
    from suites.test_mtls import probe

    strict = ClosingPod()
    try:
        with started(via_relay(relay, strict.address)) as pf:
            w = Workload("web-1", "sample", "web", {}, "10.0.0.7", "", "", pf.url, "")
            with httpx.Client(timeout=5, trust_env=False) as http:
                assert probe(http, w).outcome == "refused-after-connect"
    finally:
        strict.close()


def test_forwards_are_made_once_per_key_and_closed_by_key() -> None:
    from .fakes import FakeCluster

    api = FakeCluster()
    asked: list[int] = []

    def connected() -> FakeCluster:
        asked.append(1)
        return api

    forwards = Forwards(connected, httpx.Client(trust_env=False), lock=threading.RLock())
    a = forwards.get("sample", "web-0", 3000)
    assert forwards.get("sample", "web-0", 3000) is a and len(asked) == 1  # reused: no new stream set up
    b = forwards.get("sample", "web-1", 3000)
    forwards.close(keep=lambda k: k[1] == "web-1")
    assert len(forwards) == 1 and a.state is State.STOPPED and b.state is State.RUNNING
    forwards.close()
    assert not forwards and b.state is State.STOPPED


def test_a_forward_through_the_relay_without_a_ready_relay_pod_is_unreached() -> None:
    from .fakes import FakeCluster

    api = FakeCluster()  # no relay pod runs in it
    forwards = Forwards(lambda: api, httpx.Client(trust_env=False), lock=threading.RLock())
    pf = forwards.get("sample", "web-0", 3000, via=preamble("10.244.0.9", 3000))
    try:
        r = httpx.get(pf.url + "/", timeout=5)
        assert r.status_code == 502 and "has no ready pod" in r.headers[UNREACHED_HEADER]
    finally:
        forwards.close()
