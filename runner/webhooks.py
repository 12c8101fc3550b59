"""Webhooks: an optional receiver through which Replicate-style providers push completions.

`runner work --webhook-listen HOST:PORT --webhook-url PUBLIC_URL` starts a small HTTP server
inside the worker's task group, and every Replicate-style create then asks for a `completed`
webhook at `PUBLIC_URL/webhooks/replicate`. A webhook is only a hint: one that verifies makes
the running job with that prediction id due at once and wakes the worker, whose normal poll
then confirms before anything changes. So a webhook can make a result noticed sooner, never
make the runner believe something the provider's own API does not say.

Verification is Replicate's (the Standard Webhooks scheme), as pure functions below:

- headers `webhook-id`, `webhook-timestamp` (epoch seconds) and `webhook-signature` (one or
  more space-separated `v1,<base64>` entries);
- the signed content is `"{webhook-id}.{webhook-timestamp}.{raw body}"`, HMAC-SHA256 keyed with
  the base64-decoded part of the account's secret after `whsec_`; entries are compared in
  constant time and one match is enough;
- a timestamp more than 5 minutes from this machine's clock (either way) is refused;
- a `webhook-id` seen within that window is refused (a replay changes nothing).

The secret comes from the provider's `GET /v1/webhooks/default/secret` with the API key, once
when the worker starts; it stays in memory only (never in the database, a file or a log).
Answers: 204 accepted; 400 missing or malformed headers, a replayed id, a body that is not a
prediction; 401 a stale timestamp or no valid signature; 404 another path; 413 a body over 1 MB.

Anyone who can reach the receiver can open connections to it: it holds them within bounds
(`runner.bounded_http`: so many at once, from what the worker leaves spare of its limit of open
files, `runner.descriptors`; a read deadline; idle ones closed), so that they cannot take the
descriptors the worker's downloads need.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from urllib.parse import urlsplit

import anyio
import anyio.abc
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from runner.bounded_http import Bounds, Gate
from runner.errors import InputError
from runner.providers.base import ErrorKind, ProviderError, WebhookSource
from runner.sockets import bind_tcp, url_of, uvicorn_running

log = logging.getLogger("runner.webhooks")

SECRET_PREFIX = "whsec_"
TOLERANCE = 300.0  # seconds between a webhook's timestamp and this machine's clock, either way
MAX_BODY = 1_000_000  # bytes
PATH = "/webhooks/replicate"
MAX_REMEMBERED = 100_000  # webhook ids kept against replays (each for the tolerance window)
# Replicate's terminal statuses: only these make a job due (a `start` event would waste a poll).
TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})

Hint = Callable[[str], Awaitable[bool]]


class WebhookRejected(Exception):
    """A webhook that must change nothing, with the HTTP status to answer and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Delivery:
    """A webhook whose signature verified."""

    id: str
    timestamp: int


# -- verification (pure) ----------------------------------------------------------------------


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret; ValueError when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is base64 after whsec_") from None
    if not key:
        raise ValueError("the webhook secret is empty")
    return key


def sign(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """The base64 HMAC-SHA256 of `"{id}.{timestamp}.{body}"` (without the `v1,` prefix)."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def verify(
    keys: Iterable[bytes],
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance: float = TOLERANCE,
) -> Delivery:
    """The delivery when `body` with these headers was signed with one of `keys` within
    `tolerance` seconds of `now`; otherwise raises WebhookRejected. `headers` is looked up by
    lower-case name (Starlette's headers are case-insensitive). Replays are `ReplayGuard`'s."""
    msg_id = headers.get("webhook-id", "").strip()
    stamp = headers.get("webhook-timestamp", "").strip()
    signatures = headers.get("webhook-signature", "").strip()
    missing = [
        name
        for name, value in (
            ("webhook-id", msg_id),
            ("webhook-timestamp", stamp),
            ("webhook-signature", signatures),
        )
        if not value
    ]
    if missing:
        raise WebhookRejected(400, f"missing {', '.join(missing)}")
    if not stamp.isdigit() or len(stamp) > 12:
        raise WebhookRejected(400, "webhook-timestamp is not epoch seconds")
    timestamp = int(stamp)
    if abs(now - timestamp) > tolerance:
        raise WebhookRejected(401, "webhook-timestamp too far from now")
    given = [
        entry.partition(",")[2].encode()
        for entry in signatures.split()
        if entry.partition(",")[0] == "v1"
    ]
    matched = False
    for key in keys:
        expected = sign(key, msg_id, stamp, body).encode()
        for candidate in given:
            # no early exit: every comparison runs, each in constant time
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookRejected(401, "no valid signature")
    return Delivery(msg_id, timestamp)


class ReplayGuard:
    """Remembers the ids of verified webhooks while their timestamps are within the tolerance
    (after that the timestamp check refuses them anyway), so each is acted on once."""

    def __init__(self, tolerance: float = TOLERANCE, max_ids: int = MAX_REMEMBERED) -> None:
        self.tolerance = tolerance
        self.max_ids = max_ids
        self._until: dict[str, float] = {}
        self._order: deque[tuple[float, str]] = deque()

    def first_time(self, delivery: Delivery, now: float) -> bool:
        """True the first time a delivery's id is seen (and remembers it); False for a replay."""
        self._forget(now)
        until = self._until.get(delivery.id)
        if until is not None and until >= now:
            return False
        expires = delivery.timestamp + self.tolerance
        self._until[delivery.id] = expires
        self._order.append((expires, delivery.id))
        return True

    def _forget(self, now: float) -> None:
        order, until = self._order, self._until
        while order and (order[0][0] < now or len(until) > self.max_ids):
            expires, msg_id = order.popleft()
            if until.get(msg_id) == expires:
                del until[msg_id]

    def __len__(self) -> int:
        return len(self._until)


# -- the receiver ---------------------------------------------------------------------------


@dataclass
class ReceiverStats:
    accepted: int = 0  # verified, first time
    hinted: int = 0  # of which made a running job due
    rejected: dict[str, int] = field(default_factory=dict)  # reason -> count


class Receiver:
    """The webhook endpoint as an ASGI app (`app`): verifies, then hints.

    `keys` are the HMAC keys of the accounts' secrets (a webhook verifies against any of
    them); `hint(prediction_id)` makes that prediction's running job due and says whether
    there was one.
    """

    def __init__(
        self,
        keys: Iterable[bytes],
        hint: Hint,
        *,
        clock: Callable[[], float] = time.time,
        tolerance: float = TOLERANCE,
        max_body: int = MAX_BODY,
    ) -> None:
        self._keys = tuple(keys)
        self._hint = hint
        self._clock = clock
        self._tolerance = tolerance
        self._max_body = max_body
        self._guard = ReplayGuard(tolerance)
        self.stats = ReceiverStats()
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["POST"])])

    def __repr__(self) -> str:  # never show the keys
        return f"Receiver(accounts={len(self._keys)}, stats={self.stats})"

    def _refuse(self, request: Request, status: int, reason: str) -> Response:
        self.stats.rejected[reason] = self.stats.rejected.get(reason, 0) + 1
        client = request.client.host if request.client else "?"
        log.warning("webhook from %s refused (%d): %s", client, status, reason)
        return Response(reason + "\n", status, media_type="text/plain")

    async def _body(self, request: Request) -> bytes | None:
        """The raw body, or None when it is over the cap (read no further than that).
        ClientDisconnect when the connection ends first (its read deadline among others)."""
        length = request.headers.get("content-length", "")
        if length and (not length.isdigit() or int(length) > self._max_body):
            return None
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self._max_body:
                return None
        return bytes(body)

    async def _handle(self, request: Request) -> Response:
        if not request.url.path.rstrip("/").endswith(PATH):
            return Response("not found\n", 404, media_type="text/plain")
        try:
            body = await self._body(request)
        except ClientDisconnect:  # nobody is left to answer: nothing to refuse either
            return Response(status_code=400)
        if body is None:
            return self._refuse(request, 413, f"body over {self._max_body} bytes")
        now = self._clock()
        try:
            delivery = verify(self._keys, request.headers, body, now, self._tolerance)
        except WebhookRejected as rejected:
            return self._refuse(request, rejected.status, rejected.reason)
        if not self._guard.first_time(delivery, now):
            return self._refuse(request, 400, "replayed webhook-id")
        try:
            prediction = json.loads(body)
        except ValueError:
            prediction = None
        if not isinstance(prediction, dict) or not isinstance(prediction.get("id"), str):
            return self._refuse(request, 400, "body is not a prediction")
        self.stats.accepted += 1
        status = prediction.get("status")
        if status in TERMINAL and await self._hint(prediction["id"]):
            self.stats.hinted += 1
            log.debug("webhook: prediction %s is %s; polling it now", prediction["id"], status)
        return Response(status_code=204)


# -- serving --------------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn without its own SIGINT/SIGTERM handlers: the runner's handle those (first
    Ctrl-C finishes the jobs in hand), and the receiver stops with the worker's task group."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def parse_listen(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 in brackets: `[::1]:8080`) to (host, port); ValueError if not one."""
    host, sep, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT (e.g. 0.0.0.0:8788), got {text!r}")
    return host, int(port)


def check_public_url(url: str) -> str:
    """The public URL without a trailing slash; ValueError unless it is http(s)://host[/path]."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"expected an http:// or https:// URL without query, got {url!r}")
    return url.strip().rstrip("/")


async def serve(
    app: Starlette,
    host: str,
    port: int,
    *,
    bounds: Bounds | None = None,
    gate: Gate | None = None,
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on HOST:PORT until cancelled; reports `http://host:port` once listening.
    Connections are held within `bounds` (`runner.bounded_http`); `gate`, when given, is the
    one that counts them (tests read it)."""
    gate = gate or Gate(bounds or Bounds())
    try:
        sock = bind_tcp(host, port, backlog=gate.bounds.backlog)
    except OSError as exc:
        raise InputError(f"--webhook-listen: cannot listen on {host}:{port}: {exc}") from None
    config = uvicorn.Config(
        app,
        http=gate.protocol(),
        timeout_keep_alive=gate.bounds.keep_alive,
        h11_max_incomplete_event_size=gate.bounds.max_head,
        # asyncio listens again with this one, whatever the socket was bound with
        backlog=gate.bounds.backlog,
        log_level="warning",
        lifespan="off",
        ws="none",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = _Server(config)
    async with uvicorn_running(server, sock, "the webhook receiver") as stopped:
        task_status.started(url_of(sock))
        await stopped.wait()


# -- wiring ---------------------------------------------------------------------------------


@dataclass
class WebhookOptions:
    """Where to listen, and the URL providers are told (None: the address listened on, for
    tests and a simulator on this machine). Secrets fetched are kept here, in memory, so a
    worker that starts again (`runner work` looking for new campaigns) asks once."""

    host: str
    port: int
    public_url: str | None = None
    keys: dict[str, bytes] = field(default_factory=dict, repr=False)


# Told of an account that answered 404/405 to the secret route: (campaign, route, error).
Unsupported = Callable[[str, str, ProviderError], Awaitable[None]]


async def _key_of(
    options: WebhookOptions, name: str, provider: WebhookSource, unsupported: Unsupported | None
) -> bytes | None:
    account = provider.webhook_account
    if account not in options.keys:
        try:
            options.keys[account] = secret_key(await provider.webhook_secret())
        except (ProviderError, ValueError) as error:
            route_missing = isinstance(error, ProviderError) and error.kind is ErrorKind.UNSUPPORTED
            if route_missing and unsupported is not None:
                assert isinstance(error, ProviderError)
                await unsupported(name, "webhook_secret", error)
            log.warning(
                "campaign %s: no webhooks (cannot get the webhook signing secret: %s); its jobs "
                "are polled as usual",
                name,
                error,
            )
            return None
    return options.keys[account]


async def start(
    tg: anyio.abc.TaskGroup,
    options: WebhookOptions,
    providers: Mapping[str, object],
    hint: Hint,
    unsupported: Unsupported | None = None,
    bounds: Bounds | None = None,
) -> Receiver | None:
    """Fetch each account's secret, start the receiver in `tg` (its connections held within
    `bounds`), and point the providers that can send webhooks at it. None when no campaign
    can use webhooks (they poll as usual)."""
    keys: list[bytes] = []
    enabled: list[WebhookSource] = []
    for name, provider in providers.items():
        if not isinstance(provider, WebhookSource) or not getattr(
            provider, "supports_webhooks", False
        ):
            log.info("campaign %s: its provider sends no webhooks; polled as usual", name)
            continue
        key = await _key_of(options, name, provider, unsupported)
        if key is not None:
            enabled.append(provider)
            if key not in keys:
                keys.append(key)
    if not enabled:
        log.warning("webhooks: no campaign here can use them (Replicate style only); polling")
        return None
    receiver = Receiver(keys, hint)
    bounds = bounds or Bounds()
    url = await tg.start(partial(serve, bounds=bounds), receiver.app, options.host, options.port)
    target = (options.public_url or url).rstrip("/") + PATH
    for provider in enabled:
        provider.use_webhook(target)
    log.info(
        "webhooks: listening on %s (at most %d connections at once); providers post to %s",
        url,
        bounds.connections,
        target,
    )
    return receiver
