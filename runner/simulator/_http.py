"""HTTP plumbing shared by the simulated APIs: auth, admission (rate limits, injected faults),
error bodies in each provider's own shape, timestamps, and the responses that misbehave on
purpose (a connection closed without an answer, an answer cut short, bytes that trickle).
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Literal

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from runner.simulator.state import FaultDraw, Simulator, Style

PROBLEM_JSON = "application/problem+json"

# Set in the `http.response.start` message of an answer that will be cut off on purpose: such an
# answer is the server losing its way, and gets none of the headers a finished answer has.
CUT_OFF = "runner.simulator.cut_off"


def sim_of(request: Request) -> Simulator:
    sim: Simulator = request.app.state.sim
    return sim


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def http_date(epoch: float) -> str:
    """An RFC 7231 IMF-fixdate, whole seconds truncated as a clock's reading would be."""
    return email.utils.formatdate(math.floor(epoch), usegmt=True)


def parse_iso(value: str) -> float:
    """ISO 8601 to epoch seconds; a time without zone is taken as UTC."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def json_type(value: Any) -> str:
    """The JSON Schema name of a value's type, for validation messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def has_credentials(request: Request) -> bool:
    return "authorization" in request.headers or "x-key" in request.headers


# -- error bodies ---------------------------------------------------------------------------


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    invalid_fields: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An RFC 7807 answer, as Replicate gives."""
    body: dict[str, Any] = {"title": title, "detail": detail, "status": status}
    if invalid_fields is not None:
        body["invalid_fields"] = invalid_fields
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def replicate_invalid(invalid_fields: list[dict[str, str]]) -> JSONResponse:
    detail = "".join(f"- {f['field']}: {f['description']}\n" for f in invalid_fields)
    return problem(422, "Input validation failed", detail, invalid_fields=invalid_fields)


def bfl_error(status: int, detail: Any, *, headers: dict[str, str] | None = None) -> JSONResponse:
    """A FastAPI-style answer, as BFL gives."""
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def seconds_text(seconds: float) -> str:
    """1.0 -> "1", 0.25 -> "0.25": whole seconds read as the integers HTTP expects."""
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _retry_headers(sim: Simulator, seconds: float) -> dict[str, str] | None:
    return {"Retry-After": seconds_text(seconds)} if sim.config.retry_after_header else None


def throttled(sim: Simulator, style: Style, seconds: float, detail: str | None = None) -> Response:
    headers = _retry_headers(sim, seconds)
    if float(seconds).is_integer():
        seconds = int(seconds)
    if style == "replicate":
        # Replicate's 429 is problem+json without a title, and promises no Retry-After header
        body = {
            "detail": detail
            or f"Request was throttled. Expected available in {seconds_text(seconds)} seconds.",
            "status": 429,
            "retry_after": seconds,
        }
        return JSONResponse(body, status_code=429, media_type=PROBLEM_JSON, headers=headers)
    return bfl_error(429, detail or "Rate limit exceeded. Please slow down.", headers=headers)


def unauthorized(sim: Simulator, style: Style, key_given: bool) -> Response:
    sim.note_auth_failure()
    if style == "replicate":
        return problem(401, "Unauthenticated", "You did not pass a valid authentication token")
    return bfl_error(401, "Invalid API key" if key_given else "Not authenticated")


def injected_error(sim: Simulator, style: Style, status: int, retry_after: float = 1) -> Response:
    if status == 429:
        return throttled(sim, style, retry_after)
    phrase = _phrase(status)
    if style == "replicate":
        return problem(status, phrase, f"Simulated fault: {phrase.lower()}.")
    return bfl_error(status, phrase)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# -- admission ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Admitted:
    key: str
    fault: FaultDraw


async def authorize(
    request: Request,
    *,
    style: Style,
    auth: Literal["bearer", "x-key"],
    bucket: Literal["create", "read"] | None,
) -> str | Response:
    """The caller's key after auth and rate limits; or the answer refusing the request."""
    sim = sim_of(request)
    key = bearer_token(request) if auth == "bearer" else request.headers.get("x-key")
    if not key or not sim.key_allowed(key):
        return unauthorized(sim, style, key_given=bool(key))
    if bucket is not None:
        wait = sim.check_rate(key, bucket)
        if wait is not None:
            return throttled(sim, style, wait)
    return key


async def inject(
    request: Request, *, style: Style | None, route: str, prompt: str | None
) -> FaultDraw | Response:
    """Draw this request's faults and play the ones that strike before anything is done.

    Returns the draw for the caller to play the rest (faults after a create, a download's
    faults), or the answer that ends the request here. `style` None: a file host's plain
    answers instead of an API's error bodies.
    """
    sim = sim_of(request)
    fault = sim.draw_fault(route, prompt)
    if fault.slow_seconds > 0 and not await stall(request, fault.slow_seconds):
        # the client gave up waiting: like a request dropped from a queue, nothing is done
        return ResetResponse()
    if fault.kind == "reset":
        return ResetResponse()
    if fault.kind == "rate_limit":
        if style is None:
            headers = {"Retry-After": seconds_text(fault.retry_after)}
            return Response("Too Many Requests\n", 429, headers=headers, media_type="text/plain")
        return throttled(sim, style, fault.retry_after)
    if fault.error_status is not None:
        if style is None:
            return Response(f"simulated fault {fault.error_status}\n", fault.error_status)
        return injected_error(sim, style, fault.error_status, fault.retry_after)
    return fault


async def admit(
    request: Request,
    *,
    style: Style,
    auth: Literal["bearer", "x-key"],
    route: str,
    bucket: Literal["create", "read"] | None,
    prompt: str | None = None,
) -> Admitted | Response:
    """Auth, then rate limit, then injected slowness and errors; or the answer refusing it."""
    key = await authorize(request, style=style, auth=auth, bucket=bucket)
    if isinstance(key, Response):
        return key
    fault = await inject(request, style=style, route=route, prompt=prompt)
    if isinstance(fault, Response):
        return fault
    return Admitted(key, fault)


async def stall(request: Request, seconds: float) -> bool:
    """Hold the request for `seconds`; False as soon as the client hangs up (or the server
    stops), so a stalled request never outlives the one who made it."""
    await request.body()  # read first: watching for a hang-up must not swallow the body
    until = time.monotonic() + seconds
    while (left := until - time.monotonic()) > 0:
        if await request.is_disconnected() or request.app.state.stopping:
            return False
        await anyio.sleep(min(left, 0.02))
    return not await request.is_disconnected()


async def read_json(request: Request) -> tuple[bool, Any]:
    """(True, value) for a JSON body, (False, None) when the body is not JSON."""
    raw = await request.body()
    try:
        return True, json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return False, None


class DroppedResponse(Response):
    """A response that promises more bytes than it sends, after which the server hangs up.

    This is how the simulator loses an answer after the work was done: the client sees a
    protocol error (incomplete body), never a status it could trust.
    """

    def __init__(self, content: dict[str, Any], status_code: int) -> None:
        super().__init__(json.dumps(content).encode(), status_code, media_type="application/json")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        promised = len(self.body) + 256
        headers = [
            (name, value) for name, value in self.raw_headers if name.lower() != b"content-length"
        ]
        headers.append((b"content-length", str(promised).encode()))
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": headers,
                CUT_OFF: True,
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": self.body[: len(self.body) // 2],
                "more_body": True,
            }
        )
        # returning with the body unfinished makes the ASGI server close the connection


class ResetResponse(Response):
    """No answer at all: the connection is closed before a single byte of it, as a reset or a
    proxy that lost its upstream does. The client cannot tell whether anything was done."""

    def __init__(self) -> None:
        super().__init__(b"", 502)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # uvicorn's receive is a method of the request's cycle, which holds the transport
        cycle = getattr(receive, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if transport is None or not hasattr(transport, "abort"):
            # another server: cut the answer short instead, the nearest thing
            await DroppedResponse({"detail": "connection reset"}, 502)(scope, receive, send)
            return
        transport.abort()
        # let the server see the connection is gone, so that it does not answer for us
        for _ in range(100):
            if getattr(cycle, "disconnected", True):
                break
            await anyio.sleep(0)


class TruncatedResponse(Response):
    """A file answer whose Content-Length is the whole file but whose body stops halfway,
    after which the server hangs up."""

    def __init__(self, body: bytes, media_type: str) -> None:
        super().__init__(body, 200, media_type=media_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": self.raw_headers,
                CUT_OFF: True,
            }
        )
        await send(
            {
                "type": "http.response.body",
                "body": self.body[: len(self.body) // 2],
                "more_body": True,
            }
        )


class CountedFileResponse(Response):
    """A file answer that reports when its last byte went out (`on_whole`), so that a
    download the client gave up on halfway is not counted as one that happened."""

    def __init__(self, body: bytes, media_type: str, on_whole: Callable[[], None]) -> None:
        super().__init__(body, 200, media_type=media_type)
        self.on_whole = on_whole

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)
        self.on_whole()


class DripResponse(CountedFileResponse):
    """A file answer whose bytes trickle out over `seconds`, in small pieces; a client that
    hangs up meanwhile stops it."""

    PIECES = 16

    def __init__(
        self, body: bytes, media_type: str, seconds: float, on_whole: Callable[[], None]
    ) -> None:
        super().__init__(body, media_type, on_whole)
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        whole = False
        async with anyio.create_task_group() as tg:

            async def until_hang_up() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(until_hang_up)
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            size = max(1, -(-len(self.body) // self.PIECES))
            pieces = [self.body[i : i + size] for i in range(0, len(self.body), size)] or [b""]
            for n, piece in enumerate(pieces):
                last = n == len(pieces) - 1
                await send({"type": "http.response.body", "body": piece, "more_body": not last})
                if not last:
                    await anyio.sleep(self.seconds / len(pieces))
            whole = True
            tg.cancel_scope.cancel()
        if whole:
            self.on_whole()
