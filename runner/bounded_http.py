"""uvicorn's HTTP/1.1 protocol (its h11 one) with the bounds a server open to anyone needs, for
the webhook receiver: however many connections strangers open and however slowly they send,
the receiver holds a bounded number of descriptors, each for a bounded time.

Taken from uvicorn as it is (`uvicorn.Config`):

- `timeout_keep_alive`: a connection that stays quiet after a response is closed (KEEP_ALIVE);
- `h11_max_incomplete_event_size`: a request line and headers over MAX_HEAD bytes are answered
  400 and closed. uvicorn's other parser, httptools, has no such cap: hence h11 (the receiver
  gets one small request per job, where h11's speed does not matter);
- `backlog`: the kernel's queue of connections not accepted yet.

Written here, because uvicorn lacks it:

- **A cap on connections open at once.** uvicorn's `limit_concurrency` is looked at only once a
  request's headers are in, and answers 503: a connection that never sends them keeps its
  descriptor. Here a connection beyond the cap is dealt with the moment it is accepted: of the
  connections that still owe a whole request (silent, or halfway through one), the one that
  has waited longest is closed to make room; when every connection has sent its request (the
  app is answering them all) the new one is closed instead. A sender that sends its request at
  once (in milliseconds) therefore gets through a flood of idle or slow connections: it would
  have to wait behind as many newer ones as the cap before it could be the one closed.
- **Idle from the first moment.** uvicorn arms its keep-alive timer only after a response: a
  connection that never sends a byte stays open for ever. The same timer is armed at accept.
- **A read deadline.** A request (its line, headers and body) must arrive whole within DEADLINE
  seconds of the moment the connection began waiting for it (accepted, or its previous response
  sent). uvicorn stops its keep-alive timer at the first byte that arrives, so a client sending
  a byte a second (slowloris) was never cut off. One that has not finished its headers is told
  408 as it is closed.

Nothing here knows about webhooks; `runner.webhooks` serves its app through `Gate.protocol()`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("runner.webhooks")

KEEP_ALIVE = 5  # seconds a connection may stay quiet, before its first request or after one
DEADLINE = 10.0  # seconds to receive a whole request once the connection waits for one
MAX_HEAD = 16 * 1024  # bytes of request line and headers (h11's own default, made explicit)
TELL_EVERY = 60.0  # seconds between two warnings about connections turned away
# A request is still owed by the client in these states of its side of the connection.
_OWED = (h11.IDLE, h11.SEND_BODY)
_TOO_SLOW = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 25\r\n"
    b"connection: close\r\n\r\nrequest not sent in time\n"
)


@dataclass(frozen=True)
class Bounds:
    connections: int = 512  # open at once
    backlog: int = 128
    keep_alive: int = KEEP_ALIVE
    deadline: float = DEADLINE
    max_head: int = MAX_HEAD


@dataclass
class Counts:
    opened: int = 0  # connections accepted (each then kept, or refused)
    evicted: int = 0  # connections owing a request closed to make room for a new one
    refused: int = 0  # new connections closed at once: at the cap, none owing a request
    too_slow: int = 0  # closed at the read deadline
    idle: int = 0  # closed after KEEP_ALIVE seconds without a byte

    def minus(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))


class Gate:
    """What the connections of one server share: its bounds, the connections waiting for a
    request (longest first), the counts of those turned away, and the warnings about them."""

    def __init__(self, bounds: Bounds, clock: Callable[[], float] = time.monotonic) -> None:
        self.bounds = bounds
        self.counts = Counts()
        # the connections that owe a request, in the order they began waiting for it
        self.waiting: dict[BoundedH11Protocol, None] = {}
        self._clock = clock
        self._told_at: float | None = None
        self._told = Counts()

    def protocol(self) -> type[BoundedH11Protocol]:
        """The protocol class to give uvicorn (`Config(http=...)`), bound to this gate."""
        gate = self

        class Protocol(BoundedH11Protocol):
            _gate = gate

        return Protocol

    def make_room(self) -> bool:
        """Close the connection that has waited longest for its request; False when none
        owes one."""
        if not self.waiting:
            return False
        next(iter(self.waiting)).evict()
        self.counts.evicted += 1
        self.tell()
        return True

    def tell(self) -> None:
        """Warn of connections turned away: the first at once, then at most every TELL_EVERY
        seconds with what happened since (a flood would otherwise write a line a connection)."""
        now = self._clock()
        if self._told_at is not None and now - self._told_at < TELL_EVERY:
            return
        new = self.counts.minus(self._told)
        since = "so far" if self._told_at is None else f"in the last {now - self._told_at:.0f} s"
        self._told_at, self._told = now, Counts(**vars(self.counts))
        log.warning(
            "webhook receiver: %s, %d connection(s) that had not sent a request closed to make "
            "room and %d new one(s) refused (it keeps at most %d open, from the limit of open "
            "files), %d closed for not sending a whole request within %g s; senders retry, "
            "and jobs are polled as usual",
            since,
            new.evicted,
            new.refused,
            self.bounds.connections,
            new.too_slow,
            self.bounds.deadline,
        )


class BoundedH11Protocol(H11Protocol):
    """One connection (see the module's docstring). uvicorn makes one per connection."""

    _gate: ClassVar[Gate]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        gate = self._gate
        gate.counts.opened += 1
        if len(self.connections) >= gate.bounds.connections and not gate.make_room():
            # never registered with uvicorn: it holds its descriptor until the next loop turn
            self._refused = True
            transport.abort()
            gate.counts.refused += 1
            gate.tell()
            return
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_deadline()
        if not self._refused:
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self._gate.counts.idle += 1
        super().timeout_keep_alive_handler()

    def evict(self) -> None:
        """Close at once to make room. Its descriptor is freed on the next turn of the loop;
        until then it no longer counts among the open connections, or a burst of new ones
        would each evict the same one."""
        self.connections.discard(self)
        self._stop_deadline()
        self._unset_keepalive_if_required()
        self.transport.abort()

    def _watch(self) -> None:
        """Keep the read deadline running, and the connection among the waiting ones, exactly
        while the client owes a request."""
        if self.transport.is_closing() or self.conn.their_state not in _OWED:
            self._stop_deadline()
        elif self._deadline is None:
            self._deadline = self.loop.call_later(self._gate.bounds.deadline, self._too_slow)
            self._gate.waiting[self] = None

    def _stop_deadline(self) -> None:
        self._gate.waiting.pop(self, None)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        self._gate.waiting.pop(self, None)
        if self.transport.is_closing():
            return
        self._gate.counts.too_slow += 1
        self._gate.tell()
        if self.conn.their_state is h11.IDLE:  # no request began for the app: answer it
            self.transport.write(_TOO_SLOW)
            self.transport.close()
        else:  # the app is reading the body: it sees the disconnect
            self.transport.abort()
