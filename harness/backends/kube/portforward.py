"""A local port that forwards every TCP connection to a pod port through the Kubernetes API.

``PortForward`` listens on 127.0.0.1 on a free port the OS picks (no guessed ports). Each
accepted connection gets its own stream from ``opener`` (``KubeApi.open_port``: one API
port-forward websocket per connection, so connections never share a stream) and one thread
pumping bytes both ways. An optional ``preamble`` is written to the stream before any client
byte (the sidecar relay uses it to name its target).

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

from harness import wait
from harness.backends.kube.api import Channel
from harness.errors import BackendError
from harness.mesh import State


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


def http_ready(path: str = "/", timeout: float = 5.0) -> Callable[[str], bool]:
    """A readiness check: any HTTP response at ``path`` means the forward reaches the pod port."""

    def check(base_url: str) -> bool:
        with httpx.Client(timeout=timeout, trust_env=False) as c:
            c.get(base_url + path)
        return True

    return check


class PortForward:
    def __init__(
        self,
        opener: Callable[[], Channel],
        *,
        what: str,
        preamble: bytes = b"",
        ready: Callable[[str], bool] | None = None,
        host: str = "127.0.0.1",
        ready_timeout: float = 30.0,
    ) -> None:
        self._opener = opener
        self.what = what
        self._preamble = preamble
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
            remote = self._opener()
            with self._lock:
                if self._stop.is_set():
                    return
                self._live.add(remote)
            if self._preamble:
                remote.sendall(self._preamble)
            pipe(client, remote, self._stop)
        except Exception as e:  # noqa: BLE001 - the client sees a closed connection; keep the reason
            with self._lock:
                self.errors = [*self.errors[-9:], f"{type(e).__name__}: {e}"]
        finally:
            with self._lock:
                self._live.discard(client)
                if remote is not None:
                    self._live.discard(remote)
            _close(client)
            _close(remote)
