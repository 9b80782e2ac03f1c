"""harness.upgrade.held: the fate of a held HTTP/1.1 connection, against a scripted server on
127.0.0.1 (no mesh): open, closed cleanly (Connection: close, then a new connection works), reset
mid-request, closed without notice between requests."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest

from harness import wait
from harness.upgrade import held

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nserver: scripted\r\n\r\nok"
CLOSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
FIN = b"<fin>"  # a reply ending so: sent, then the connection closed without notice
Script = Callable[[int, int], bytes | None]  # (connection number, request number) -> reply; None: end


class Server:
    """Answers each request per ``script``; None closes the connection before answering
    (``reset``: with RST)."""

    def __init__(self, script: Script, *, reset: bool = False) -> None:
        self.script, self.reset = script, reset
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.closed = threading.Event()  # set when a FIN reply closed its connection
        self.requests: list[int] = []  # per connection: requests read
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            n = self.connections
            self.connections += 1
            self.requests.append(0)
            threading.Thread(target=self._conn, args=(c, n), daemon=True).start()

    def _conn(self, c: socket.socket, n: int) -> None:
        buf = b""
        with c:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = c.recv(4096)
                    if not data:
                        return
                    buf += data
                _, buf = buf.split(b"\r\n\r\n", 1)
                self.requests[n] += 1
                reply = self.script(n, self.requests[n])
                if reply is None:
                    if self.reset:
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                c.sendall(reply.removesuffix(FIN))
                if reply.endswith(FIN):
                    c.shutdown(socket.SHUT_RDWR)
                    self.closed.set()
                    return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server() -> Iterator[Callable[..., Server]]:
    made: list[Server] = []

    def make(script: Script, **kw: bool) -> Server:
        made.append(Server(script, **kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


def hold_until(srv: Server, requests: int) -> held.Held:
    conn = held.HeldConnection("http/1.1", "127.0.0.1", srv.port).start()
    wait.until(lambda: srv.requests[0] >= requests, what=f"{requests} requests", timeout=30, interval=0.01)
    return conn.stop()


def test_a_connection_that_keeps_serving_is_open(server: Callable[..., Server]) -> None:
    srv = server(lambda _c, _r: OK)
    h = hold_until(srv, 3)
    assert (h.fate, h.clean, h.reconnect, h.in_flight) == (held.OPEN, True, "", False)
    assert h.requests == h.answered >= 3 and h.failed == 0
    assert h.last_headers == {"server": "scripted", "content-length": "2"}


def test_connection_close_then_a_working_new_connection_is_a_clean_close(
    server: Callable[..., Server],
) -> None:
    srv = server(lambda c, r: CLOSE if (c, r) == (0, 3) else OK)
    h = hold_until(srv, 3)
    assert (h.fate, h.clean, h.reconnect) == (held.CLEAN, True, "ok"), h
    assert h.evidence == "Connection: close on response 3 (HTTP 200)"
    assert h.last_headers["connection"] == "close" and srv.connections == 2


def test_negative_control_a_connection_cut_with_a_request_in_flight_is_a_reset(
    server: Callable[..., Server],
) -> None:
    srv = server(lambda c, r: None if (c, r) == (0, 3) else OK, reset=True)
    h = hold_until(srv, 3)
    assert (h.fate, h.clean, h.in_flight, h.reconnect) == (held.RESET, False, True, "ok"), h
    assert "reset" in h.evidence.lower() or "end of file" in h.evidence
    assert (h.requests, h.answered) == (3, 2)


def test_negative_control_eof_between_requests_without_notice_is_not_clean(
    server: Callable[..., Server],
) -> None:
    # the first connection answers one request without Connection: close, then closes (FIN) idle
    srv = server(lambda c, r: (OK + FIN) if (c, r) == (0, 1) else OK)
    # the client's next request waits until the server has closed (no race with its FIN)
    conn = held.HeldConnection("http/1.1", "127.0.0.1", srv.port, between=lambda: srv.closed.wait(30))
    conn.start()
    wait.until(lambda: srv.connections >= 2, what="the new connection", timeout=30, interval=0.01)
    h = conn.stop()
    assert (h.fate, h.clean, h.in_flight, h.reconnect) == (held.NO_NOTICE, False, False, "ok"), h
    assert (h.requests, h.answered) == (1, 1) and h.evidence == "end of file between two requests"


def test_a_protocol_it_does_not_hold_is_refused() -> None:
    with pytest.raises(ValueError, match="protocol"):
        held.HeldConnection("h3", "127.0.0.1", 1)
