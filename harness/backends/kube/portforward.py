"""A local port that forwards every TCP connection to a pod port through the Kubernetes API.

``PortForward`` listens on 127.0.0.1 on a free port the OS picks (no guessed ports). Each
accepted connection gets its own stream from ``opener`` (``KubeApi.open_port``: one API
port-forward websocket per connection, so connections never share a stream) and one thread
pumping bytes both ways. An optional ``preamble`` is written to the stream before any client
byte (the sidecar relay uses it to name its target); with ``confirm`` the forward then waits for
the relay's ``OK`` line (it has connected to the target) before it copies a client byte.

A client's connection is accepted locally before its stream opens, so a stream that fails to open
(or a relay that cannot connect) would look to the client like a connection accepted and then
closed: exactly what STRICT mTLS does to plaintext. With ``answer_unreached`` such a connection
is answered instead with ``HTTP 502`` carrying the header :data:`harness.mesh.UNREACHED_HEADER`
(the reason), which no target sends, so the caller can tell "never reached" from the target's
own answer.

:class:`Forwards` is the backend's set of them: one per pod port (and relay target), made on first
use and closed by the backend when their pod goes.

Lifecycle: ``start()`` binds and accepts (no cluster traffic yet, so forwards are cheap to create
eagerly and only cost a stream when used); ``wait_ready()`` polls an HTTP request through the
forward with ``wait.until``; ``stop()`` closes the listener and every live connection and joins
the threads. ``with PortForward(...) as pf`` does start + wait_ready, and stops on any failure.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Callable
from typing import Self

import httpx

from harness import httpclient, wait
from harness.backends.kube import relay
from harness.backends.kube.api import Channel, KubeApi
from harness.errors import BackendError
from harness.mesh import UNREACHED_HEADER, State


class Unreached(BackendError):
    """The stream to the target did not open, or the relay could not connect to the target."""


def pipe(a: Channel, b: Channel, stop: threading.Event, *, bufsize: int = 65536, poll: float = 0.5) -> None:
    """Copy bytes both ways until either side closes or ``stop`` is set."""
    ends = [a, b]
    while not stop.is_set():
        try:
            readable, _, _ = select.select(ends, [], [], poll)
        except (OSError, ValueError):  # a side was closed under us
            return
        for src in readable:
            dst = b if src is a else a
            try:
                data = src.recv(bufsize)
                if not data:
                    return
                dst.sendall(data)
            except (OSError, ValueError):
                return


def _close(s: Channel | socket.socket | None) -> None:
    if s is None:
        return
    shutdown = getattr(s, "shutdown", None)  # wakes a thread blocked in select() on this socket
    if shutdown is not None:
        with contextlib.suppress(OSError, ValueError):
            shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError, ValueError):
        s.close()


def unreached_response(reason: str) -> bytes:
    """The HTTP answer to a connection whose target was never reached (see the module docstring)."""
    why = " ".join(reason.split())[:300].encode("ascii", "replace")
    body = b"meshproof port-forward: the target was not reached: " + why + b"\n"
    return (
        b"HTTP/1.1 502 Bad Gateway\r\n"
        + UNREACHED_HEADER.encode()
        + b": "
        + why
        + b"\r\nContent-Type: text/plain\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body
    )


def await_confirmation(remote: Channel, timeout: float, *, limit: int = 512) -> bytes:
    """Read the relay's first line: ``OK`` returns what followed it; ``ERR <why>`` or anything else,
    end of stream or ``timeout`` seconds of silence raise :class:`Unreached`."""
    head = b""
    while b"\n" not in head:
        readable, _, _ = select.select([remote], [], [], timeout)
        if not readable:
            raise Unreached(f"the relay did not confirm the connection within {timeout:g} s")
        chunk = remote.recv(4096)
        if not chunk:
            raise Unreached("the relay closed the stream before confirming the connection")
        head += chunk
        if len(head) > limit:
            raise Unreached("the relay answered something that is not a confirmation line")
    line, _, rest = head.partition(b"\n")
    text = line.decode("utf-8", "replace").strip()
    if text == "OK":
        return rest
    raise Unreached(f"the relay could not connect: {text.removeprefix('ERR ').strip() or 'no reason'}")


def _read_request_head(client: socket.socket, timeout: float) -> None:
    """Consume the client's request head (bounded), so closing after an answer sends no RST over it."""
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        readable, _, _ = select.select([client], [], [], timeout)
        if not readable:
            return
        chunk = client.recv(65536)
        if not chunk:
            return
        data += chunk


def http_ready(path: str = "/", timeout: float = 5.0) -> Callable[[str], bool]:
    """A readiness check: any HTTP response at ``path`` means the forward reaches the pod port."""

    def check(base_url: str) -> bool:
        with httpclient.client(timeout=timeout) as c:
            c.get(base_url + path)
        return True

    return check


def answers(http: httpx.Client, path: str) -> Callable[[str], bool]:
    """Readiness of a forward: any HTTP response at ``path`` (through ``http``)."""

    def check(base_url: str) -> bool:
        http.get(base_url + path)
        return True

    return check


class PortForward:
    def __init__(
        self,
        opener: Callable[[], Channel],
        *,
        what: str,
        preamble: bytes = b"",
        confirm: bool = False,
        answer_unreached: bool = False,
        ready: Callable[[str], bool] | None = None,
        host: str = "127.0.0.1",
        ready_timeout: float = 30.0,
        confirm_timeout: float = 15.0,
    ) -> None:
        self._opener = opener
        self.what = what
        self._preamble = preamble
        self._confirm = confirm
        self._answer_unreached = answer_unreached
        self.confirm_timeout = confirm_timeout
        self.unreached = 0  # connections whose target was never reached
        self._ready = ready or http_ready()
        self.host = host
        self.ready_timeout = ready_timeout
        self.port = 0
        self.state = State.NEW
        self.errors: list[str] = []  # last few stream-open failures, for messages
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._live: set[Channel | socket.socket] = set()
        self._threads: set[threading.Thread] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"PortForward({self.what} at {self.host}:{self.port}, {self.state.value})"

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> Self:
        if self.state is not State.NEW:
            raise BackendError(f"port-forward to {self.what} is {self.state.value}; create a new one")
        self.state = State.STARTING
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind((self.host, 0))
            listener.listen(64)
            listener.settimeout(
                0.5
            )  # lets the accept loop notice stop() on platforms where close doesn't wake it
        except OSError:
            listener.close()
            self.state = State.STOPPED
            raise
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"port-forward {self.what} :{self.port}", daemon=True
        )
        self._accept_thread.start()
        self.state = State.RUNNING
        return self

    def probe(self) -> bool:
        return self._ready(self.url)

    def wait_ready(self, *, timeout: float | None = None, clock: wait.Clock = wait.REAL_CLOCK) -> Self:
        timeout = self.ready_timeout if timeout is None else timeout
        if self.state is not State.RUNNING:
            raise BackendError(f"port-forward to {self.what} is {self.state.value}, not running")
        try:
            wait.until(
                self.probe,
                what=f"port-forward to {self.what} to answer",
                timeout=timeout,
                interval=0.25,
                retry_on=(httpx.HTTPError, OSError, BackendError),
                clock=clock,
                hint="is the pod running and listening on that port?",
            )
        except BaseException as e:
            if self.errors:
                e.add_note("stream errors: " + "; ".join(self.errors[-3:]))
            raise
        return self

    def stop(self) -> None:
        if self.state is State.STOPPED:
            return
        self.state = State.STOPPED
        self._stop.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        with self._lock:
            live = list(self._live)
            threads = list(self._threads)
        for s in live:
            _close(s)
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        for t in threads:
            t.join(timeout=5)

    def __enter__(self) -> Self:
        try:
            return self.start().wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def connections(self) -> int:
        """Connections being served right now."""
        with self._lock:
            return sum(1 for t in self._threads if t.is_alive())

    # ---- workers ------------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            t = threading.Thread(target=self._serve, args=(client,), name=f"{self.what} conn", daemon=True)
            with self._lock:
                if self._stop.is_set():
                    _close(client)
                    return
                self._threads = {x for x in self._threads if x.is_alive()}
                self._threads.add(t)
                self._live.add(client)
            t.start()

    def _serve(self, client: socket.socket) -> None:
        remote: Channel | None = None
        try:
            try:
                remote, first = self._open()
            except Exception as e:  # noqa: BLE001 - the client is told (or sees a close); keep the reason
                self._record(e, unreached=True)
                if self._answer_unreached and not self._stop.is_set():
                    with contextlib.suppress(OSError, ValueError):
                        _read_request_head(client, timeout=2.0)
                        client.sendall(unreached_response(f"{self.what}: {type(e).__name__}: {e}"))
                        client.shutdown(socket.SHUT_WR)
                return
            if first:
                client.sendall(first)
            pipe(client, remote, self._stop)
        except Exception as e:  # noqa: BLE001 - the client sees a closed connection; keep the reason
            self._record(e)
        finally:
            with self._lock:
                self._live.discard(client)
                if remote is not None:
                    self._live.discard(remote)
            _close(client)
            _close(remote)

    def _open(self) -> tuple[Channel, bytes]:
        """The stream for one connection (confirmed by the relay when ``confirm``), and any bytes the
        stream sent after the confirmation line."""
        remote = self._opener()
        with self._lock:
            if self._stop.is_set():
                _close(remote)
                raise Unreached("the port-forward is stopping")
            self._live.add(remote)
        rest = b""
        try:
            if self._preamble:
                remote.sendall(self._preamble)
            if self._confirm:
                rest = await_confirmation(remote, self.confirm_timeout)
        except BaseException:
            with self._lock:
                self._live.discard(remote)
            _close(remote)
            raise
        return remote, rest

    def _record(self, e: Exception, *, unreached: bool = False) -> None:
        with self._lock:
            self.errors = [*self.errors[-9:], f"{type(e).__name__}: {e}"]
            if unreached:
                self.unreached += 1


ForwardKey = tuple[str, str, int, bytes]  # namespace, pod, port, relay preamble (b"": direct)


class Forwards:
    """The port-forwards of one backend, keyed by :data:`ForwardKey`, made on first use.

    ``api`` is asked for the cluster only when a forward is made; ``lock`` is the backend's (a
    forward is made, and the set changed, while holding it)."""

    def __init__(
        self,
        api: Callable[[], KubeApi],
        http: httpx.Client,
        *,
        lock: threading.RLock,
        clock: wait.Clock = wait.REAL_CLOCK,
    ) -> None:
        self._api, self._http, self._lock, self._clock = api, http, lock, clock
        self._forwards: dict[ForwardKey, PortForward] = {}

    def __len__(self) -> int:
        return len(self._forwards)

    def get(
        self,
        namespace: str,
        pod: str,
        port: int,
        *,
        via: bytes = b"",
        ready_path: str = "/",
        ready_within: float = 0.0,
    ) -> PortForward:
        """The port-forward to ``pod:port`` (made on first use). With ``ready_within`` a new forward is
        first checked to answer HTTP at ``ready_path``; otherwise a stream opens only on first connection."""
        key = (namespace, pod, port, via)
        with self._lock:
            pf = self._forwards.get(key)
            if pf is None:
                api = self._api()
                if via:
                    what = f"{namespace}/{pod}:{port} via the sidecar relay"

                    def opener() -> Channel:
                        return api.open_port(
                            relay.RELAY_NAMESPACE, relay.ready_pod(self._api()), relay.RELAY_PORT
                        )
                else:
                    what = f"{namespace}/{pod}:{port}"

                    def opener() -> Channel:
                        return api.open_port(namespace, pod, port)

                # Through the relay (sidecar_url, the plaintext probe): the relay confirms it reached
                # the target, and a connection that never did is answered as such, not closed.
                pf = PortForward(
                    opener,
                    what=what,
                    preamble=via,
                    confirm=bool(via),
                    answer_unreached=bool(via),
                    ready=answers(self._http, ready_path),
                ).start()
                if ready_within:
                    try:
                        pf.wait_ready(timeout=ready_within, clock=self._clock)
                    except BaseException:
                        pf.stop()
                        raise
                self._forwards[key] = pf
            return pf

    def close(self, keep: Callable[[ForwardKey], bool] = lambda _k: False) -> None:
        """Stop every forward whose key ``keep`` does not accept (all of them by default)."""
        with self._lock:
            doomed = {k: pf for k, pf in self._forwards.items() if not keep(k)}
            for k in doomed:
                del self._forwards[k]
        for pf in doomed.values():
            pf.stop()
