"""Long-lived client connections held across a proxy restart, and what became of them.

Before each data-plane phase the upgrade check opens two connections to the ingress gateway (on
127.0.0.1) and holds them until the phase ends:

- ``http/1.1``: one keep-alive connection (h11) that sends a request, reads its answer, pauses
  :data:`PACE_S` and sends the next, on the same connection, for the whole phase;
- ``h2``: one HTTP/2 connection (h2, prior knowledge) holding one stream open: it advertises a
  stream window of 0 bytes, so the gateway can send the response's headers but not its body, and
  the request stays in flight at the gateway (an active request in Envoy's counters) until the
  client opens the window: at a GOAWAY, or when the phase ends.

The fate of each (:class:`Held`), decided on what the connection saw, never on timing:

- ``open``: it still served at the end of the phase (the restarted proxy was not on its path, or
  its successor took over without closing it);
- ``closed cleanly``: the server said so before closing, ``Connection: close`` on a response
  (HTTP/1.1) or a GOAWAY frame whose last stream id covers the held stream, which then completed
  (HTTP/2); and a new connection then works;
- ``reset``: the connection was reset, or reached end of file, with a request in flight (the
  request is lost), or the held stream was reset (RST_STREAM);
- ``closed without notice``: end of file between two requests, with no ``Connection: close``
  first (HTTP/1.1 allows it; a client must retry on a new connection).

The evidence is kept: the exception text or frame, and the last response's status and headers.
After a close or reset a new connection must answer 200 (``reconnect``, retried until it does or
:data:`RECONNECT_TIMEOUT_S`): a restart that leaves the address dead is not "clean".
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11

from harness import wait
from harness.errors import WaitTimeout

PROTOCOLS = ("http/1.1", "h2")
OPEN, CLEAN, RESET, NO_NOTICE = "open", "closed cleanly", "reset", "closed without notice"
FATES = (OPEN, CLEAN, RESET, NO_NOTICE)
PACE_S = 0.05  # pause between two requests of the HTTP/1.1 connection (a pace, not a wait)
READ_TIMEOUT_S = 30.0  # a response that does not come in this long is a failure of its own
RECONNECT_TIMEOUT_S = 60.0
#: the response headers kept as evidence
KEPT_HEADERS = ("connection", "server", "x-envoy-upstream-service-time", "content-length", "date")


@dataclass(frozen=True)
class Held:
    """What became of one held connection."""

    protocol: str  # http/1.1 | h2
    fate: str  # one of FATES
    requests: int  # sent on the held connection
    answered: int  # of which got a response (any status)
    failed: int  # of which answered non-2xx
    evidence: str  # the exception text, frame or header that decided the fate
    last_status: int = 0
    last_headers: dict[str, str] = field(default_factory=dict)
    in_flight: bool = False  # a request was in flight when the connection ended
    reconnect: str = ""  # "" (not needed: open), "ok", or why a new connection did not work
    reconnect_s: float = 0.0  # until a new connection answered (shown, never decided)

    @property
    def clean(self) -> bool:
        """Held to the end, or closed with notice and then replaced by a working connection."""
        return self.fate == OPEN or (self.fate == CLEAN and self.reconnect == "ok")

    @property
    def summary(self) -> str:
        """One line: protocol, fate, the evidence, the new connection."""
        after = {"": "", "ok": "; a new connection works"}.get(self.reconnect, f"; {self.reconnect}")
        return (
            f"{self.protocol:<8} {self.fate}: {self.evidence} ({self.answered}/{self.requests} answered, "
            f"{self.failed} non-2xx){after}"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "fate": self.fate,
            "clean": self.clean,
            "requests": self.requests,
            "answered": self.answered,
            "failed": self.failed,
            "in_flight": self.in_flight,
            "evidence": self.evidence,
            "last_status": self.last_status,
            "last_headers": self.last_headers,
            "reconnect": self.reconnect,
            "reconnect_s": round(self.reconnect_s, 3),
        }


class _Ended(Exception):
    """The held connection's fate is decided."""

    def __init__(self, fate: str, evidence: str, *, in_flight: bool) -> None:
        super().__init__(evidence)
        self.fate, self.evidence, self.in_flight = fate, evidence, in_flight


class HeldConnection:
    """One connection held in a thread: :meth:`start` returns once its first response arrived;
    :meth:`stop` ends it and returns its :class:`Held`."""

    def __init__(
        self,
        protocol: str,
        host: str,
        port: int,
        path: str = "/api/greet",
        *,
        between: Callable[[], object] | None = None,
    ) -> None:
        """``between``: called between two HTTP/1.1 requests, after the pace (a test's hook)."""
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol {protocol!r}: one of {PROTOCOLS}")
        self.protocol, self.host, self.port, self.path = protocol, host, port, path
        self._between = between or (lambda: None)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"held-{protocol}", daemon=True)
        self._result: Held | None = None
        self._error: BaseException | None = None
        self.requests = self.answered = self.failed = 0
        self.last_status, self.last_headers = 0, dict[str, str]()

    @property
    def ended(self) -> bool:
        """Its fate is decided (and a new connection tried) before :meth:`stop`."""
        return self._thread.ident is not None and not self._thread.is_alive()

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> HeldConnection:
        self._thread.start()
        try:
            wait.until(
                lambda: self._ready.is_set() or not self._thread.is_alive(),
                what=f"the first response on the held {self.protocol} connection to {self.authority}",
                timeout=timeout,
                interval=0.02,
            )
        except WaitTimeout:
            self.stop()
            raise
        if not self._ready.is_set():
            raise OSError(f"held {self.protocol} connection to {self.authority}: {self._outcome().evidence}")
        return self

    def stop(self, timeout: float = READ_TIMEOUT_S + RECONNECT_TIMEOUT_S + 10) -> Held:
        self._stop.set()
        self._thread.join(timeout)
        return self._outcome()

    def _outcome(self) -> Held:
        if self._result is not None:
            return self._result
        what = f"{type(self._error).__name__}: {self._error}" if self._error else "the thread did not end"
        return Held(self.protocol, RESET, self.requests, self.answered, self.failed, what, self.last_status)

    def _run(self) -> None:
        try:
            fate, evidence, in_flight = OPEN, "", False
            try:
                evidence = (self._run_h1 if self.protocol == "http/1.1" else self._run_h2)()
            except _Ended as e:
                fate, evidence, in_flight = e.fate, e.evidence, e.in_flight
            reconnect, took = ("", 0.0) if fate == OPEN else self._reconnect()
            self._result = Held(
                self.protocol,
                fate,
                self.requests,
                self.answered,
                self.failed,
                evidence,
                self.last_status,
                dict(self.last_headers),
                in_flight,
                reconnect,
                took,
            )
        except BaseException as e:  # noqa: BLE001 - reported in the outcome
            self._error = e

    def _answer(self, status: int, headers: list[tuple[bytes, bytes]] | list[tuple[str, str]]) -> None:
        self.answered += 1
        self.failed += not 200 <= status < 300
        self.last_status = status
        decoded = {_text(k).lower(): _text(v) for k, v in headers}
        self.last_headers = {k: decoded[k] for k in KEPT_HEADERS if k in decoded}
        self._ready.set()

    def _connect(self) -> socket.socket:
        s = socket.create_connection((self.host, self.port), timeout=READ_TIMEOUT_S)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def _reconnect(self) -> tuple[str, float]:
        """A new connection of the same protocol answers a request (retried: the successor may
        still be starting, as after a restart without drain)."""
        t0 = time.monotonic()

        def works() -> bool:
            status = (_one_h1 if self.protocol == "http/1.1" else _one_h2)(self)
            if not 200 <= status < 300:
                raise _H2Error(f"HTTP {status}")  # not yet: reported as last seen
            return True

        try:
            wait.until(
                works,
                what=f"a new {self.protocol} connection to {self.authority} answering 200",
                timeout=RECONNECT_TIMEOUT_S,
                interval=0.1,
                retry_on=(OSError, h11.ProtocolError, _Ended, _H2Error),
            )
        except WaitTimeout as e:
            return f"no working new connection: {e}", time.monotonic() - t0
        return "ok", time.monotonic() - t0

    # ---- HTTP/1.1 ----------------------------------------------------------------------
    def _run_h1(self) -> str:
        with self._connect() as s:
            conn = h11.Connection(h11.CLIENT)
            while True:
                if self.requests and _closed_while_idle(s):
                    raise _Ended(NO_NOTICE, "end of file between two requests", in_flight=False)
                self.requests += 1
                try:
                    status, closing = _exchange_h1(s, conn, self)
                except _Ended:
                    raise
                except (OSError, h11.ProtocolError) as e:
                    raise _Ended(RESET, f"{type(e).__name__}: {e}", in_flight=True) from e
                if closing:
                    return_evidence = f"Connection: close on response {self.requests} (HTTP {status})"
                    raise _Ended(CLEAN, return_evidence, in_flight=False)
                conn.start_next_cycle()
                if self._stop.wait(PACE_S):
                    return f"served {self.requests} requests on one connection"
                self._between()

    # ---- HTTP/2 ------------------------------------------------------------------------
    def _run_h2(self) -> str:
        """The held stream: h2 decodes the frames until a GOAWAY; after it h2 refuses every frame
        (it takes GOAWAY for the connection's end), so the held stream's last frames are read
        raw (hyperframe): END_STREAM on it is a clean close, end of file or RST_STREAM a reset."""
        import h2.events

        with self._connect() as s:
            conn = _h2_connection(window=0)
            s.sendall(conn.data_to_send())
            sid = _h2_request(conn, self)
            s.sendall(conn.data_to_send())
            self.requests += 1
            frames = _Frames()
            released = False  # the window opened: at the phase's end
            s.settimeout(0.2)
            while True:
                try:
                    data = s.recv(65536)
                except TimeoutError:
                    if self._stop.is_set() and not released:  # let the held response finish
                        conn.increment_flow_control_window(1 << 20, stream_id=sid)
                        s.sendall(conn.data_to_send())
                        released = True
                        s.settimeout(READ_TIMEOUT_S)
                    continue
                except OSError as e:
                    raise _Ended(RESET, f"{type(e).__name__}: {e}", in_flight=True) from e
                if not data:
                    raise _Ended(RESET, "end of file with the held stream open, no GOAWAY", in_flight=True)
                batch = frames.feed(data)
                for i, raw in enumerate(batch):
                    for ev in conn.receive_data(raw):
                        if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                            self._answer(_h2_status(ev.headers), ev.headers)
                            self.answered -= 1  # counted when its body completes
                        elif isinstance(ev, h2.events.DataReceived):
                            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                        elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                            self.answered += 1
                            status = self.last_status
                            return f"the held stream completed at the end of the phase (HTTP {status})"
                        elif isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
                            raise _Ended(
                                RESET, f"RST_STREAM {ev.error_code!r} on the held stream", in_flight=True
                            )
                        elif isinstance(ev, h2.events.ConnectionTerminated):
                            goaway = f"GOAWAY {ev.error_code!r}, last stream id {ev.last_stream_id}"
                            if ev.last_stream_id is not None and ev.last_stream_id < sid:
                                raise _Ended(RESET, goaway + ": the held stream refused", in_flight=True)
                            self._after_goaway(s, frames, sid, goaway, batch[i + 1 :])  # raises
                s.sendall(conn.data_to_send())

    def _after_goaway(
        self, s: socket.socket, frames: _Frames, sid: int, goaway: str, pending: list[bytes]
    ) -> None:
        """A graceful GOAWAY covering the held stream: open its window, read its last frames raw
        (``pending``: the frames read with the GOAWAY, after it)."""
        import hyperframe.frame as hf

        s.settimeout(READ_TIMEOUT_S)
        with contextlib.suppress(OSError):
            s.sendall(hf.WindowUpdateFrame(sid, window_increment=1 << 20).serialize())
        while True:
            for raw in pending:
                frame, _ = hf.Frame.parse_frame_header(memoryview(raw[:9]))
                if frame.stream_id != sid:
                    continue
                if isinstance(frame, hf.RstStreamFrame):
                    raise _Ended(RESET, f"{goaway}; then RST_STREAM on the held stream", in_flight=True)
                if isinstance(frame, hf.DataFrame | hf.HeadersFrame) and "END_STREAM" in frame.flags:
                    self.answered += 1
                    raise _Ended(CLEAN, f"{goaway}; the held stream completed", in_flight=False)
            try:
                data = s.recv(65536)
            except OSError as e:
                raise _Ended(RESET, f"{goaway}; then {type(e).__name__}: {e}", in_flight=True) from e
            if not data:
                raise _Ended(RESET, f"{goaway}; then end of file with the held stream open", in_flight=True)
            pending = frames.feed(data)


class _Frames:
    """Splits the bytes read into whole HTTP/2 frames (9-byte header: 24-bit length first)."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        self.buf += data
        out = []
        while len(self.buf) >= 9:
            size = 9 + int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < size:
                break
            out.append(self.buf[:size])
            self.buf = self.buf[size:]
        return out


class _H2Error(Exception):
    """A probe's request did not get a 2xx answer."""


def _text(v: bytes | str) -> str:
    return v.decode("latin-1") if isinstance(v, bytes) else v


def _closed_while_idle(s: socket.socket) -> bool:
    """The peer closed (or reset) the idle connection: readable with nothing to read."""
    readable, _, _ = select.select([s], [], [], 0)
    if not readable:
        return False
    try:
        return s.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _exchange_h1(s: socket.socket, conn: h11.Connection, held: HeldConnection | None) -> tuple[int, bool]:
    """One request and its whole response on ``conn``; (status, whether it closes the connection)."""
    authority = held.authority if held else ""
    req = h11.Request(
        method="GET",
        target=held.path if held else "/",
        headers=[("host", authority), ("user-agent", "meshproof-held/1")],
    )
    s.sendall(conn.send(req) + conn.send(h11.EndOfMessage()))
    status, headers = 0, []
    while True:
        ev = conn.next_event()
        if ev is h11.NEED_DATA:
            data = s.recv(65536)
            if not data:
                raise _Ended(RESET, "end of file with a request in flight", in_flight=True)
            conn.receive_data(data)
            continue
        if isinstance(ev, h11.Response):
            status, headers = ev.status_code, list(ev.headers)
        elif isinstance(ev, h11.EndOfMessage):
            break
        elif isinstance(ev, h11.ConnectionClosed):
            raise _Ended(RESET, "end of file with a request in flight", in_flight=True)
    if held is not None:
        held._answer(status, headers)
    return status, conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE


def _one_h1(held: HeldConnection) -> int:
    with socket.create_connection((held.host, held.port), timeout=5) as s:
        conn = h11.Connection(h11.CLIENT)
        probe = HeldConnection("http/1.1", held.host, held.port, held.path)
        status, _ = _exchange_h1(s, conn, probe)
        return status


def _h2_connection(window: int) -> Any:
    import h2.config
    import h2.connection
    import h2.settings

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
    )
    conn.initiate_connection()
    return conn


def _h2_request(conn: Any, held: HeldConnection) -> int:
    sid = int(conn.get_next_available_stream_id())
    conn.send_headers(
        sid,
        [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", held.authority),
            (":path", held.path),
            ("user-agent", "meshproof-held/1"),
        ],
        end_stream=True,
    )
    return sid


def _h2_status(headers: list[tuple[bytes, bytes]]) -> int:
    for k, v in headers:
        if _text(k) == ":status":
            return int(_text(v))
    return 0


def _h2_eof(goaway: str) -> str:
    return (
        f"end of file with the held stream open ({goaway})"
        if goaway
        else "end of file with the held stream open, no GOAWAY"
    )


def _one_h2(held: HeldConnection) -> int:
    import h2.events

    with socket.create_connection((held.host, held.port), timeout=5) as s:
        conn = _h2_connection(window=65535)
        sid = _h2_request(conn, held)
        s.sendall(conn.data_to_send())
        status = 0
        while True:
            data = s.recv(65536)
            if not data:
                raise _H2Error("end of file before the response ended")
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    status = _h2_status(ev.headers)
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    return status
                elif isinstance(ev, h2.events.StreamReset | h2.events.ConnectionTerminated):
                    raise _H2Error(repr(ev))
            s.sendall(conn.data_to_send())


def hold(protocols: tuple[str, ...], host: str, port: int) -> list[HeldConnection]:
    """Open one held connection per protocol to ``host:port`` (each has had its first response)."""
    out: list[HeldConnection] = []
    try:
        for p in protocols:
            out.append(HeldConnection(p, host, port).start())  # noqa: PERF401 - kept if a later one fails
    except BaseException:
        for h in out:
            h.stop()
        raise
    return out
