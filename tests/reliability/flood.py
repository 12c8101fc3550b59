"""Clients that hold connections open and do nothing useful with them: the idle (a connect and
then silence, or half a request line) and the slowloris (a request trickled a byte at a time).

Each socket is non-blocking and watched from one thread with a selector, so ten thousand of
them cost one thread; what is recorded is when the server closed each one (an end of file or
a reset), measured from when it connected.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Conn:
    sock: socket.socket
    started: float  # when connect() was called
    connected: float | None = None
    closed: float | None = None  # when the server's end of file or reset was seen
    head: bytes = b""  # sent at once when connected
    payload: bytes = b""  # sent after it (all at once, or a byte per `drip` seconds)
    sent: int = 0
    next_byte: float = 0.0
    answer: bytes = b""
    failed: bool = False  # the connect itself failed (counted in Flood.errors)

    @property
    def lasted(self) -> float | None:
        """Seconds from connect to the server closing it; None while it is open."""
        if self.closed is None or self.connected is None:
            return None
        return self.closed - self.connected


@dataclass
class Flood:
    """Connections to (host, port), opened by `open` and watched until `stop`."""

    host: str
    port: int
    drip: float | None = None  # seconds between two bytes of each payload; None: all at once
    conns: list[Conn] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # connect failures by errno name

    def __post_init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def open(self, count: int, payload: bytes = b"", head: bytes = b"") -> list[Conn]:
        """Start `count` non-blocking connects; each sends `head` then `payload` once
        connected."""
        started = []
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            code = sock.connect_ex((self.host, self.port))
            conn = Conn(sock, time.monotonic(), head=head, payload=payload)
            if code not in (0, errno.EINPROGRESS):
                self._failed(conn, code)
                continue
            started.append(conn)
        with self._lock:  # once: the watcher holds it while it selects
            for conn in started:
                self.conns.append(conn)
                self._selector.register(conn.sock, selectors.EVENT_WRITE, conn)
        if not self._thread.is_alive():
            self._thread.start()
        return started

    def _failed(self, conn: Conn, code: int) -> None:
        name = errno.errorcode.get(code, str(code))
        self.errors[name] = self.errors.get(name, 0) + 1
        conn.sock.close()

    def _watch(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                events = self._selector.select(timeout=0.02) if self._selector.get_map() else []
            now = time.monotonic()
            for key, mask in events:
                conn: Conn = key.data
                if conn.connected is None and mask & selectors.EVENT_WRITE:
                    self._connected(conn, now)
                elif mask & selectors.EVENT_READ:
                    self._readable(conn, now)
            if self.drip is not None:
                self._trickle(now)
            if not events:
                time.sleep(0.005)

    def _connected(self, conn: Conn, now: float) -> None:
        code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        with self._lock:
            self._selector.unregister(conn.sock)
            if code:
                conn.failed = True
                self._failed(conn, code)
                return
            conn.connected = now
            conn.next_byte = now
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)
        now_sent = conn.head + (conn.payload if self.drip is None else b"")
        if now_sent:
            with contextlib.suppress(OSError):
                conn.sock.sendall(now_sent)

    def _readable(self, conn: Conn, now: float) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            conn.answer += data
            return
        conn.closed = now
        with self._lock:
            self._selector.unregister(conn.sock)
        conn.sock.close()

    def _trickle(self, now: float) -> None:
        assert self.drip is not None
        for conn in self.conns:
            if (
                conn.closed is None
                and conn.connected is not None
                and conn.sent < len(conn.payload)
                and now >= conn.next_byte
            ):
                # closed by the server: its end of file is read next
                with contextlib.suppress(OSError):
                    conn.sent += conn.sock.send(conn.payload[conn.sent : conn.sent + 1])
                conn.next_byte = now + self.drip

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        for conn in self.conns:
            conn.sock.close()  # closing twice is harmless
        self._selector.close()

    def connected(self) -> list[Conn]:
        return [c for c in list(self.conns) if c.connected is not None]

    def closed_by_server(self) -> list[Conn]:
        return [c for c in list(self.conns) if c.closed is not None]


@contextmanager
def flooding(host: str, port: int, drip: float | None = None) -> Iterator[Flood]:
    flood = Flood(host, port, drip)
    try:
        yield flood
    finally:
        flood.stop()


def open_files(pid: int) -> int:
    """How many descriptors process `pid` has open now (Linux)."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return 0


@dataclass
class Peak:
    """The most descriptors `pid` held at once, sampled every few milliseconds."""

    pid: int
    most: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.most = max(self.most, open_files(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=10)
        return self.most
