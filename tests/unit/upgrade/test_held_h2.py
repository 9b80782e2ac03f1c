"""harness.upgrade.held: the fate of a held HTTP/2 stream, against a scripted h2 server on
127.0.0.1 (no mesh): a GOAWAY covering it and the stream then completing is a clean close; end of
file with it open and no GOAWAY is a reset; a GOAWAY that excludes it is a reset."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

h2_config = pytest.importorskip("h2.config", reason="h2 is a dependency: run ./scripts/setup")

import h2.connection  # noqa: E402
import h2.events  # noqa: E402
import hyperframe.frame as hf  # noqa: E402

from harness import wait  # noqa: E402
from harness.upgrade import held  # noqa: E402
from harness.upgrade.held import _Frames  # noqa: E402


class H2Server:
    """Connection 0 follows ``first`` after sending the held stream's response headers:
    "goaway" (GOAWAY last id 1, then the body once the client opens the stream's window),
    "goaway-excluding" (GOAWAY last id 0, then close), "eof" (close). Later connections answer."""

    def __init__(self, first: str) -> None:
        self.first = first
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.go = threading.Event()  # set by the test once the held stream has its headers
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            n, self.connections = self.connections, self.connections + 1
            threading.Thread(target=self._conn, args=(c, n), daemon=True).start()

    def _conn(self, c: socket.socket, n: int) -> None:
        with c:
            conn = h2.connection.H2Connection(h2_config.H2Configuration(client_side=False))
            conn.initiate_connection()
            c.sendall(conn.data_to_send())
            sid = 0
            while not sid:
                data = c.recv(65536)
                if not data:
                    return
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        sid = ev.stream_id
                c.sendall(conn.data_to_send())
            conn.send_headers(sid, [(":status", "200"), ("server", "scripted")], end_stream=n > 0)
            c.sendall(conn.data_to_send())
            if n > 0:
                return
            self.go.wait(30)
            if self.first == "eof":
                _finish(c)
                return
            last = sid if self.first == "goaway" else sid - 1
            c.sendall(hf.GoAwayFrame(0, last_stream_id=last, error_code=0).serialize())
            if self.first != "goaway":
                _finish(c)
                return
            frames = _Frames()
            while True:  # the client opens the held stream's window: then its body
                data = c.recv(65536)
                if not data:
                    return
                for raw in frames.feed(data):
                    frame, _ = hf.Frame.parse_frame_header(memoryview(raw[:9]))
                    if isinstance(frame, hf.WindowUpdateFrame) and frame.stream_id == sid:
                        c.sendall(hf.DataFrame(sid, data=b"ok", flags=["END_STREAM"]).serialize())
                        _finish(c)
                        return

    def close(self) -> None:
        self.sock.close()


def _finish(c: socket.socket) -> None:
    """Close with a FIN the client reads before anything else (not an RST): shut our side, then
    read until the client closes too."""
    c.shutdown(socket.SHUT_WR)
    try:
        while c.recv(65536):
            pass
    except OSError:
        pass


@pytest.fixture
def server() -> Iterator[list[H2Server]]:
    made: list[H2Server] = []
    yield made
    for s in made:
        s.close()


def held_on(made: list[H2Server], first: str) -> held.Held:
    made.append(H2Server(first))
    conn = held.HeldConnection("h2", "127.0.0.1", made[-1].port).start()
    made[-1].go.set()
    wait.until(lambda: conn.ended, what="the held stream's fate", timeout=60, interval=0.01)
    return conn.stop()


def test_a_goaway_covering_the_held_stream_which_then_completes_is_a_clean_close(
    server: list[H2Server],
) -> None:
    h = held_on(server, "goaway")
    assert (h.fate, h.clean, h.reconnect, h.in_flight) == (held.CLEAN, True, "ok", False), h
    assert h.evidence.startswith("GOAWAY") and "last stream id 1" in h.evidence
    assert h.evidence.endswith("the held stream completed") and h.answered == 1
    assert h.last_headers == {"server": "scripted"}


def test_negative_control_end_of_file_with_the_stream_open_and_no_goaway_is_a_reset(
    server: list[H2Server],
) -> None:
    h = held_on(server, "eof")
    assert (h.fate, h.clean, h.in_flight, h.reconnect) == (held.RESET, False, True, "ok"), h
    assert h.evidence == "end of file with the held stream open, no GOAWAY"


def test_negative_control_a_goaway_excluding_the_held_stream_is_a_reset(server: list[H2Server]) -> None:
    h = held_on(server, "goaway-excluding")
    assert (h.fate, h.in_flight) == (held.RESET, True), h
    assert h.evidence.endswith("last stream id 0: the held stream refused")
