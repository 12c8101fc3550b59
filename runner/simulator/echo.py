"""A debugging proxy in front of the simulated APIs: answers that echo the caller's key.

Some proxies and gateways copy the request's `Authorization` or `x-key` header into what they
answer, and not always as sent: base64 of the value or of a dump of the request, percent- or
hex-encoded. `SimConfig.echo_key` turns that on, in the encodings it names, so that tests can
show that none of those forms reaches anything the runner writes. The echo goes where the
runner reads a provider's words: an error answer's `detail`, a prediction's `error` and
`logs`, a BFL task's `details`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runner.simulator._http import CUT_OFF
from runner.simulator.state import Simulator

_CREDENTIAL_HEADERS = (b"authorization", b"x-key")
_JSON_TYPES = (b"application/json", b"application/problem+json")


def echoes(name: str, value: str, encodings: Iterable[str]) -> list[str]:
    """What a proxy adds for the header `name: value` in each encoding: the value alone, and
    the header line as a dump of the request holds it (for base64, at each of the three byte
    alignments it can have there, which encode it three different ways)."""
    line = f"{name}: {value}"
    pieces: list[str] = []
    for encoding in encodings:
        if encoding == "plain":
            pieces += [value, line]
        elif encoding in ("base64", "base64url"):
            url = encoding == "base64url"
            encode = base64.urlsafe_b64encode if url else base64.b64encode
            for text in (value, line, f">{line}", f">>{line}"):
                encoded = encode(text.encode()).decode()
                pieces.append(encoded.rstrip("=") if url else encoded)  # as JWTs write it
        elif encoding == "url":
            pieces += [quote(value, safe=""), quote_plus(line)]
        elif encoding == "hex":
            pieces += [value.encode().hex(), line.encode().hex().upper()]
        else:
            raise ValueError(f"unknown echo encoding {encoding!r}")
    return pieces


def with_echo(body: Any, status: int, note: str) -> Any:
    """`body` with `note` where the runner reads an answer's words; as it was where there are
    none (a create's answer, a list)."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    if status >= 400:
        detail = body.get("detail")
        if isinstance(detail, list):  # FastAPI's validation errors (BFL)
            body["detail"] = [*detail, {"loc": ["header"], "msg": note, "type": "debug"}]
        else:
            body["detail"] = f"{detail} {note}" if isinstance(detail, str) else note
        return body
    if isinstance(body.get("logs"), str):  # a Replicate prediction
        body["logs"] = f"{body['logs']}{note}\n"
    if isinstance(body.get("error"), str) and body["error"]:
        body["error"] = f"{body['error']} {note}"
    if isinstance(body.get("details"), dict):  # a BFL task that failed or was moderated
        body["details"] = {**body["details"], "debug": note}
    return body


class EchoKey:
    """ASGI middleware: with `echo_key` set, every JSON answer of an API route carries the
    request's credential header in those encodings (`with_echo`). Off, it costs one lookup."""

    def __init__(self, app: ASGIApp, sim: Simulator) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        encodings = self.sim.config.echo_encodings
        credential = _credential(scope) if encodings else None
        if credential is None:
            await self.app(scope, receive, send)
            return
        note = "(proxy echo: " + "; ".join(echoes(*credential, encodings)) + ")"
        start: Message | None = None
        chunks: list[bytes] = []

        async def echoing_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and _is_whole_json(message):
                start = message  # held until the body is known, for its length
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = _echoed(b"".join(chunks), start["status"], note)
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, echoing_send)


def _credential(scope: Scope) -> tuple[str, str] | None:
    if scope["type"] != "http" or scope["path"].startswith(("/_sim", "/files/")):
        return None
    headers = dict(scope["headers"])
    for name in _CREDENTIAL_HEADERS:
        if name in headers:
            return name.decode(), headers[name].decode("latin-1")
    return None


def _is_whole_json(start: Message) -> bool:
    if start.get(CUT_OFF):  # cut off on purpose: left as the fault made it
        return False
    headers = dict(start.get("headers", []))
    return headers.get(b"content-type", b"").split(b";")[0].strip() in _JSON_TYPES


def _echoed(body: bytes, status: int, note: str) -> bytes:
    try:
        parsed = json.loads(body)
    except ValueError:
        return body
    return json.dumps(with_echo(parsed, status, note)).encode()
