"""Classifies every HTTP answer and transport failure of a provider call, in one place.

The rules (see PROVIDERS.md): 429 is a pause, never billed; 401/403 mean the key is wrong for
every job; 402 means no credit; 400/422 (and 404 on a create) are the provider refusing this
input; a 404 on a query means the prediction is unknown; 5xx and any failure after the request
may have been sent are "maybe sent", which on a create means "maybe billed".
"""

from __future__ import annotations

import email.utils
import time
from typing import Any, Literal

import httpx

from runner.providers.base import ErrorKind, ProviderError

Operation = Literal["create", "poll", "cancel", "list"]

# Transport failures that happen before a single byte of the request left this machine.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


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


def _message(body: Any, response: httpx.Response) -> str:
    """The provider's own words: problem+json `detail`/`title`, `invalid_fields`, BFL's list."""
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
            return "; ".join(parts)
    text = response.text.strip()
    return text[:300] if text else response.reason_phrase or "no details"


def from_response(response: httpx.Response, op: Operation) -> ProviderError:
    """An error for a non-2xx answer."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    code = response.status_code
    message = _message(body, response)
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if retry_after is None and isinstance(body, dict):
        value = body.get("retry_after")
        if isinstance(value, int | float):
            retry_after = float(value)
    if code == 429:
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


def from_exception(exc: httpx.HTTPError) -> ProviderError:
    """An error for a request that got no answer at all."""
    name = type(exc).__name__
    if isinstance(exc, _NOT_SENT):
        return ProviderError(ErrorKind.NETWORK, f"{name}: {exc}", maybe_sent=False)
    return ProviderError(ErrorKind.TIMEOUT, f"{name}: {exc or 'no answer'}", maybe_sent=True)


async def request_json(
    client: httpx.AsyncClient, method: str, url: str | httpx.URL, op: Operation, **kwargs: Any
) -> tuple[int, Any]:
    """Send one request; return (status, JSON body) or raise a classified ProviderError."""
    try:
        response = await client.request(method, url, **kwargs)
    except httpx.HTTPError as exc:
        raise from_exception(exc) from None
    if response.status_code >= 400:
        raise from_response(response, op)
    try:
        return response.status_code, response.json()
    except ValueError:
        raise ProviderError(
            ErrorKind.PROTOCOL,
            f"answer is not JSON: {response.text[:200]!r}",
            status_code=response.status_code,
        ) from None
