"""The webhook receiver's bounds over real sockets: connections that send nothing, half a
request or a request a byte a second are closed at their deadlines; beyond its cap the
receiver closes the connection that has waited longest for its request, so a real webhook gets
through; a head over 16 KiB is refused; and the worker raises its limit of open files.

The receiver (`runner.webhooks.serve`) runs in a thread of its own (an anyio portal); the
clients are plain non-blocking sockets watched from one thread (`tests.reliability.flood`).
"""

from __future__ import annotations

import json
import logging
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit

import anyio
import anyio.from_thread
import httpx
import pytest

from runner.bounded_http import DEADLINE, KEEP_ALIVE, Bounds, Gate
from runner.webhooks import PATH, Receiver, secret_key, serve, sign
from tests.reliability.flood import Conn, flooding

SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGhlLXRlc3Rz"  # base64 of a test key


@dataclass
class Served:
    url: str
    host: str
    port: int
    gate: Gate
    receiver: Receiver


@contextmanager
def receiving(
    bounds: Bounds, hint: Callable[[str], Awaitable[bool]] | None = None
) -> Iterator[Served]:
    async def hinted(prediction_id: str) -> bool:
        return True

    receiver = Receiver([secret_key(SECRET)], hint or hinted)
    gate = Gate(bounds)
    with anyio.from_thread.start_blocking_portal() as portal:
        future, url = portal.start_task(partial(serve, gate=gate), receiver.app, "127.0.0.1", 0)
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        try:
            yield Served(url, parts.hostname, parts.port, gate, receiver)
        finally:
            future.cancel()


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.01)


def signed(body: bytes) -> dict[str, str]:
    msg_id = "msg_" + secrets.token_hex(8)
    stamp = str(int(time.time()))
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + sign(secret_key(SECRET), msg_id, stamp, body),
    }


def webhook_body(n: int = 0) -> bytes:
    return json.dumps({"id": f"p{n}", "status": "succeeded"}).encode()


def lasted(conns: list[Conn]) -> list[float]:
    return sorted(c.lasted for c in conns if c.lasted is not None)


REQUEST_HEAD = (
    b"POST /webhooks/replicate HTTP/1.1\r\nhost: receiver\r\ncontent-type: application/json\r\n"
    b"webhook-id: msg_0123456789\r\nwebhook-timestamp: 1700000000\r\n\r\n"
)
NOWHERE = b"POST /nowhere HTTP/1.1\r\nhost: receiver\r\ncontent-length: 0\r\n\r\n"


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_silent_half_sent_and_trickled_requests_are_cut_off_at_their_deadlines() -> None:
    """With the receiver's own deadlines (KEEP_ALIVE 5 s quiet, DEADLINE 10 s for a whole
    request), at once: connections that send nothing; half a request line and then nothing;
    headers a byte a second (slowloris); whole headers and then the body a byte a second; and
    a request answered, then the next one a byte a second."""
    assert (KEEP_ALIVE, DEADLINE) == (5, 10.0)
    with receiving(Bounds()) as served, flooding(served.host, served.port) as at_once:
        silent = at_once.open(10)
        half_line = at_once.open(10, b"POST /webhooks/repl")
        with flooding(served.host, served.port, drip=1.0) as trickle:
            slowloris = trickle.open(10, REQUEST_HEAD)
            body = b'{"id": "p0", "status": "succeeded"}'
            head = REQUEST_HEAD.replace(b"\r\n\r\n", b"\r\ncontent-length: %d\r\n\r\n" % len(body))
            slow_body = trickle.open(10, body, head=head)
            after_one = trickle.open(10, REQUEST_HEAD, head=NOWHERE)
            everyone = [*silent, *half_line, *slowloris, *slow_body, *after_one]
            wait_until(
                lambda: all(c.closed is not None for c in everyone),
                DEADLINE + 5,
                "close of every slow connection",
            )
    figures = {
        name: (min(lasted(conns)), max(lasted(conns)))
        for name, conns in [
            ("silent", silent),
            ("half a request line", half_line),
            ("headers a byte a second", slowloris),
            ("body a byte a second", slow_body),
            ("a second request a byte a second", after_one),
        ]
    }
    print(f"\nseconds from connect to close (fastest, slowest): {figures}")
    # a connection that never sent a byte: the keep-alive timer, armed at accept
    assert all(KEEP_ALIVE - 0.2 < t < KEEP_ALIVE + 1.0 for t in lasted(silent)), figures
    assert all(c.answer == b"" for c in silent)
    # once a byte came, the whole request is owed within the deadline, trickle or not
    for conns in (half_line, slowloris, slow_body, after_one):
        assert all(DEADLINE - 0.2 < t < DEADLINE + 1.0 for t in lasted(conns)), figures
    assert all(c.sent < len(c.payload) for c in slowloris + slow_body + after_one)
    # told 408 when no request had begun; the one whose body was being read is just closed
    for conn in half_line + slowloris:
        assert conn.answer.startswith(b"HTTP/1.1 408 "), conn.answer
    assert all(c.answer == b"" for c in slow_body)
    for conn in after_one:
        first, _, second = conn.answer.partition(b"not found\n")
        assert first.startswith(b"HTTP/1.1 404 ") and second.startswith(b"HTTP/1.1 408 ")
    assert served.gate.counts.too_slow == 40 and served.gate.counts.idle == 10
    assert served.receiver.stats.accepted == 0  # the slow body never reached the verifier


@pytest.mark.timeout(60)
def test_beyond_its_cap_the_receiver_closes_the_longest_waiting_and_a_webhook_gets_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="runner.webhooks")
    cap = 8
    with (
        receiving(Bounds(connections=cap, backlog=8)) as served,
        flooding(served.host, served.port) as flood,
    ):
        idle: list[Conn] = []
        for batch in range(1, 7):  # in fives, within the listening backlog of 8
            idle += flood.open(5)
            wait_until(lambda: served.gate.counts.opened == 5 * batch, 5, "the connections")  # noqa: B023
        wait_until(lambda: len(flood.closed_by_server()) == 30 - cap, 5, "room made")
        time.sleep(0.3)  # the quiet ones that are left stay (KEEP_ALIVE is 5 s)
        left = [c for c in idle if c.closed is None]
        assert left == idle[-cap:]  # the newest stay: the oldest made room
        assert served.gate.counts.evicted == 30 - cap and served.gate.counts.refused == 0
        # the one that waited longest makes room for a sender that sends its request at once
        answer = httpx.post(
            served.url + PATH, content=webhook_body(), headers=signed(webhook_body()), timeout=5
        )
        assert answer.status_code == 204, answer.text
        assert served.receiver.stats.accepted == 1
        wait_until(lambda: sum(c.closed is not None for c in left) == 1, 5, "one more made room")
        assert served.gate.counts.evicted == 30 - cap + 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # one line for the whole flood, not one per connection
    assert len(warnings) == 1, warnings
    assert "closed to make room" in warnings[0] and f"at most {cap} open" in warnings[0]


@pytest.mark.timeout(60)
def test_when_every_connection_has_sent_its_request_a_new_one_is_refused() -> None:
    """Eight webhooks whose handling waits (the hint blocks) hold the eight connections: they
    owe nothing, so none is closed for the ninth, which is closed at once instead."""
    cap = 8
    release = threading.Event()

    async def slow_hint(prediction_id: str) -> bool:
        while not release.is_set():
            await anyio.sleep(0.01)
        return True

    bounds = Bounds(connections=cap, backlog=8)
    with receiving(bounds, slow_hint) as served, flooding(served.host, served.port) as busy:
        for n in range(cap):
            body = webhook_body(n)
            head = b"".join(
                [
                    b"POST /webhooks/replicate HTTP/1.1\r\nhost: receiver\r\n",
                    *(f"{k}: {v}\r\n".encode() for k, v in signed(body).items()),
                    b"content-length: %d\r\n\r\n" % len(body),
                ]
            )
            busy.open(1, body, head=head)
        # all eight verified, each waiting in its hint
        wait_until(lambda: served.receiver.stats.accepted == cap, 5, "eight webhooks")
        with flooding(served.host, served.port) as late:
            (ninth,) = late.open(1)
            wait_until(lambda: ninth.closed is not None, 5, "the ninth closed")
        assert ninth.answer == b"" and ninth.lasted is not None and ninth.lasted < 1.0
        assert served.gate.counts.refused == 1 and served.gate.counts.evicted == 0
        assert all(c.closed is None for c in busy.conns)
        release.set()
        wait_until(
            lambda: all(c.answer.startswith(b"HTTP/1.1 204 ") for c in busy.conns),
            5,
            "the eight answers",
        )


@pytest.mark.timeout(30)
def test_an_unfinished_request_head_over_16_kib_is_refused_at_once() -> None:
    """A head that keeps growing is answered 400 as soon as it passes 16 KiB, not kept in
    memory until the deadline."""
    with receiving(Bounds()) as served, flooding(served.host, served.port) as flood:
        padding = b"x-padding: " + b"a" * 17_000  # and no end of the line or of the head
        (conn,) = flood.open(1, head=b"POST /nowhere HTTP/1.1\r\nhost: receiver\r\n" + padding)
        wait_until(lambda: conn.closed is not None, 5, "the answer")
        assert conn.answer.startswith(b"HTTP/1.1 400 "), conn.answer
        assert conn.lasted is not None and conn.lasted < 2.0
        small = httpx.post(served.url + "/nowhere", headers={"x-padding": "a" * 8_000}, timeout=5)
        assert small.status_code == 404


def _limits_after_raising(nofile: str) -> tuple[int, int]:
    code = (
        "import resource; from runner.descriptors import raise_soft_limit; "
        "after = raise_soft_limit(); "
        "print(after, *resource.getrlimit(resource.RLIMIT_NOFILE))"
    )
    out = subprocess.run(
        ["prlimit", f"--nofile={nofile}", "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    after, soft, hard = map(int, out)
    assert after == soft
    return soft, hard


@pytest.mark.skipif(sys.platform != "linux", reason="prlimit is Linux's")
def test_the_soft_limit_is_raised_to_the_hard_one_where_allowed() -> None:
    assert _limits_after_raising("1024:4096") == (4096, 4096)
    assert _limits_after_raising("1024:1024") == (1024, 1024)
    assert _limits_after_raising("512:8000") == (8000, 8000)
