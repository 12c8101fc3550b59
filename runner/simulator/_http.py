"""HTTP plumbing shared by the simulated APIs: auth, admission (rate limits, injected faults),
error bodies in each provider's own shape, timestamps, and the connection-cutting response.
"""

from __future__ import annotations

import json
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


def sim_of(request: Request) -> Simulator:
    sim: Simulator = request.app.state.sim
    return sim


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


def _retry_headers(sim: Simulator, seconds: int) -> dict[str, str] | None:
    return {"Retry-After": str(seconds)} if sim.config.retry_after_header else None


def throttled(sim: Simulator, style: Style, seconds: int, detail: str | None = None) -> Response:
    headers = _retry_headers(sim, seconds)
    if style == "replicate":
        # Replicate's 429 is problem+json without a title, and promises no Retry-After header
        body = {
            "detail": detail or f"Request was throttled. Expected available in {seconds} seconds.",
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


def injected_error(sim: Simulator, style: Style, status: int) -> Response:
    if status == 429:
        return throttled(sim, style, 1)
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


async def admit(
    request: Request,
    *,
    style: Style,
    auth: Literal["bearer", "x-key"],
    route: str,
    bucket: Literal["create", "read"] | None,
) -> Admitted | Response:
    """Auth, then rate limit, then injected slowness and errors; or the answer refusing it."""
    sim = sim_of(request)
    key = bearer_token(request) if auth == "bearer" else request.headers.get("x-key")
    if not key or not sim.key_allowed(key):
        return unauthorized(sim, style, key_given=bool(key))
    if bucket is not None:
        wait = sim.check_rate(key, bucket)
        if wait is not None:
            return throttled(sim, style, wait)
    fault = sim.draw_fault(route)
    if fault.slow_seconds > 0:
        await anyio.sleep(fault.slow_seconds)
    if fault.error_status is not None:
        return injected_error(sim, style, fault.error_status)
    return Admitted(key, fault)


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
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        await send(
            {
                "type": "http.response.body",
                "body": self.body[: len(self.body) // 2],
                "more_body": True,
            }
        )
        # returning with the body unfinished makes the ASGI server close the connection
