"""Classifies every HTTP answer and transport failure of a provider call, in one place.

The rules (see PROVIDERS.md): 429 is a pause, never billed; 401/403 mean the key is wrong for
every job; 402 means no credit; 400/422 (and 404 on a create) are the provider refusing this
input; a 404 on a query means the prediction is unknown, and a 404 or 405 on a list, cancel
or webhook-secret route means the account does not serve that route; 5xx and any failure after
the request may have been sent are "maybe sent", which on a create means "maybe billed".
"""

from __future__ import annotations

import email.utils
import functools
import json
import time
from collections.abc import Iterable
from typing import Any, Literal

import aiohttp
import httpx

from runner.providers.base import ErrorKind, ProviderError
from runner.providers.redaction import (
    AUTH_HEADERS,
    NO_SECRETS,
    Secrets,
    header_secrets,
    secrets_of,
)
from runner.providers.redaction import REDACTED as REDACTED  # what a removed secret reads as

Operation = Literal["create", "poll", "cancel", "list", "secret"]
# Routes a style has but an account may not serve: a 404 or 405 there means "not here".
_OPTIONAL = ("cancel", "list", "secret")

# Transport failures that happen before a single byte of the request left this machine.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)
_AUTH_HEADERS = frozenset(name.encode() for name in AUTH_HEADERS)  # as httpx keeps them: bytes


def _header_text(value: bytes) -> str:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.decode("latin-1")


def credentials(headers: httpx.Headers) -> Secrets:
    """The secrets in a request's headers (each auth header's value and its token after the
    scheme, "Bearer <token>"), with every form an answer could echo them in. Run for every
    answer: the raw headers are read, which costs a quarter of decoding them all."""
    return header_secrets(
        (name.decode(), _header_text(value))
        for name, value in headers.raw
        if name.lower() in _AUTH_HEADERS
    )


def redact(text: str, secrets: Secrets | Iterable[str]) -> str:
    """`text` with every form of each secret (as is, base64, percent-encoded, hex: see
    `runner.providers.redaction.forms`) replaced by "[redacted]"."""
    if not isinstance(secrets, Secrets):
        secrets = secrets_of(secrets)
    return secrets.redact(text)


def _sent_credentials(message: httpx.Response | httpx.HTTPError) -> Secrets:
    try:
        request = message.request
    except RuntimeError:  # built without a request (unit tests)
        return NO_SECRETS
    return credentials(request.headers)


def _answer_bytes(content: bytes, secrets: Secrets) -> bytes:
    """An answer's body with the secrets' every form removed, before it is parsed: what a
    successful answer says (a failed generation's error, a URL) is stored and logged too."""
    encoding = json.detect_encoding(content)
    if encoding.startswith("utf-8"):
        return secrets.redact_bytes(content)
    # UTF-16 or UTF-32, which json reads as well: the forms are searched in its text
    text = content.decode(encoding, errors="replace")
    redacted = secrets.redact(text)
    return content if redacted is text else redacted.encode()


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _message(body: Any, response: httpx.Response, secrets: Secrets) -> str:
    """The provider's own words (problem+json `detail`/`title`, `invalid_fields`, BFL's list),
    redacted before it is cut short: a key cut in two would keep its first half."""
    if isinstance(body, dict):
        parts: list[str] = []
        detail = body.get("detail")
        if isinstance(detail, str):
            parts.append(detail)
        elif isinstance(detail, list):  # BFL / FastAPI validation errors
            for item in detail:
                if isinstance(item, dict):
                    loc = ".".join(str(x) for x in item.get("loc", []) if x != "body")
                    parts.append(f"{loc}: {item.get('msg', '')}".strip(": "))
        elif body.get("title"):
            parts.append(str(body["title"]))
        for field in body.get("invalid_fields") or []:
            if isinstance(field, dict):
                parts.append(f"{field.get('field', '?')}: {field.get('description', '')}")
        if parts:
            return secrets.redact("; ".join(parts))
    text = secrets.redact(response.text.strip())
    return text[:300] if text else secrets.redact(response.reason_phrase) or "no details"


def from_response(response: httpx.Response, op: Operation) -> ProviderError:
    """An error for a non-2xx answer."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    code = response.status_code
    message = _message(body, response, _sent_credentials(response))
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if retry_after is None and isinstance(body, dict):
        value = body.get("retry_after")
        if isinstance(value, int | float):
            retry_after = float(value)
    if code in (404, 405) and op in _OPTIONAL:
        kind = ErrorKind.UNSUPPORTED
    elif code == 429:
        kind = ErrorKind.RATE_LIMITED
    elif code in (401, 403):
        kind = ErrorKind.AUTH
    elif code == 402:
        kind = ErrorKind.NO_CREDIT
    elif code == 404:
        kind = ErrorKind.INVALID if op == "create" else ErrorKind.NOT_FOUND
    elif 400 <= code < 500 and code != 408:
        kind = ErrorKind.INVALID
    else:
        kind = ErrorKind.SERVER
    return ProviderError(kind, message, status_code=code, retry_after=retry_after)


def _never_sent(exc: httpx.HTTPError) -> bool:
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError):
        # httpx_aiohttp reports every lost connection as ConnectTimeout, even one the server
        # closed after the request went out: only aiohttp's own connect failures are unsent.
        return isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
    return isinstance(exc, _NOT_SENT)


def from_exception(exc: httpx.HTTPError) -> ProviderError:
    """An error for a request that got no answer at all."""
    name = type(exc).__name__
    secrets = _sent_credentials(exc)
    if _never_sent(exc):
        return ProviderError(ErrorKind.NETWORK, secrets.redact(f"{name}: {exc}"), maybe_sent=False)
    text = secrets.redact(f"{name}: {exc or 'no answer'}")
    return ProviderError(ErrorKind.TIMEOUT, text, maybe_sent=True)


@functools.lru_cache(maxsize=256)
def api_url(text: str) -> httpx.URL:
    """An endpoint's URL, parsed once (an httpx.URL does not change): httpx parses every
    string it is given, and the same create endpoint serves thousands of jobs."""
    return httpx.URL(text)


async def request_json(
    client: httpx.AsyncClient, method: str, url: str | httpx.URL, op: Operation, **kwargs: Any
) -> tuple[int, Any]:
    """Send one request; return (status, JSON body) or raise a classified ProviderError.

    No text of the answer reaches an error or the caller with the request's key in it, in any
    form (`runner.providers.redaction`), whatever the status. Errors
    are raised outside the `except` blocks so that they chain to nothing: the transport's own
    exceptions can carry the request's headers (aiohttp's repr shows them all).
    """
    failure: ProviderError | None = None
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        failure = from_exception(exc)
    except aiohttp.ClientError as exc:
        # A malformed answer the transport does not translate (a bad status line or header):
        # the request was sent, so on a create it may have been billed.
        secrets = credentials(httpx.Headers({**client.headers, **(kwargs.get("headers") or {})}))
        text = secrets.redact(f"{type(exc).__name__}: {exc}")
        failure = ProviderError(ErrorKind.TIMEOUT, text, maybe_sent=True)
    if failure is not None:
        raise failure
    if response.status_code >= 400:
        raise from_response(response, op)
    secrets = _sent_credentials(response)
    content = _answer_bytes(response.content, secrets)
    try:
        return response.status_code, json.loads(content)
    except ValueError:
        pass
    text = secrets.redact(response.text)
    raise ProviderError(
        ErrorKind.PROTOCOL, f"answer is not JSON: {text[:200]!r}", status_code=response.status_code
    )
