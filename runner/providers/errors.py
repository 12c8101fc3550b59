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
import zlib
from collections.abc import Iterable
from typing import Any, Literal

import aiohttp
import httpx

from runner import bounds
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


def oversized(what: str, length: int, limit: int, unit: str = "characters") -> ProviderError:
    """The protocol error for a field of an answer beyond `runner.bounds`, naming the limit."""
    return ProviderError(
        ErrorKind.OVERSIZED,
        f"{what} is {length:,} {unit} long, more than the {limit:,} runner takes",
    )


def checked_id(value: str, what: str = "the prediction id") -> str:
    if len(value) > bounds.MAX_ID:
        raise oversized(what, len(value), bounds.MAX_ID)
    return value


def checked_url(value: str, what: str) -> str:
    if len(value) > bounds.MAX_URL:
        raise oversized(what, len(value), bounds.MAX_URL)
    return value


def checked_outputs(urls: Iterable[str]) -> tuple[str, ...]:
    """A prediction's output URLs, each within `MAX_URL`, and no more than `MAX_OUTPUTS`."""
    outputs = tuple(urls)
    if len(outputs) > bounds.MAX_OUTPUTS:
        raise ProviderError(
            ErrorKind.OVERSIZED,
            f"the answer lists {len(outputs):,} output URLs, more than the "
            f"{bounds.MAX_OUTPUTS} runner takes of one prediction",
        )
    for url in outputs:
        checked_url(url, "an output URL")
    return outputs


def _request_size(request: httpx.Request) -> int:
    try:
        return len(request.content)
    except httpx.RequestNotRead:  # a streamed body: nobody here sends one
        return 0


# Content codings an API answer may come in: gzip and deflate, decoded here with a bound on
# what each piece may grow to (a small compressed piece can inflate a thousandfold).
ACCEPT_ENCODING = "gzip, deflate"
_ZLIB_ANY = 32 + zlib.MAX_WBITS  # a gzip or a zlib header, whichever it is


async def _read_at_most(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the (decoded) body, and whether that is all of it. A body
    announced, or found, to be longer is not read on: it is never held whole, nor inflated
    beyond the limit. An encoding other than gzip or deflate is refused."""
    if response.is_stream_consumed:  # read before it came here (an in-memory transport's)
        return response.content[:limit], len(response.content) <= limit
    coding = response.headers.get("content-encoding", "identity").strip().lower()
    if coding not in ("identity", "", "gzip", "x-gzip", "deflate"):
        raise ProviderError(
            ErrorKind.PROTOCOL,
            f"the answer is encoded as {coding[:40]!r}, which runner does not read",
            status_code=response.status_code,
        )
    inflate = zlib.decompressobj(_ZLIB_ANY) if coding not in ("identity", "") else None
    length = response.headers.get("content-length", "")
    if inflate is None and length.isdigit() and int(length) > limit:
        return b"", False
    body = bytearray()
    try:
        async for raw in response.aiter_raw():
            if inflate is None:
                body += raw
            else:
                pending = raw
                while pending and len(body) <= limit:
                    body += inflate.decompress(pending, limit + 1 - len(body))
                    pending = inflate.unconsumed_tail
            if len(body) > limit:
                return bytes(body[:limit]), False
        if inflate is not None:
            body += inflate.flush(limit + 1 - len(body))
    except zlib.error as exc:
        raise ProviderError(
            ErrorKind.PROTOCOL,
            f"the answer's {coding} encoding is broken: {exc}",
            status_code=response.status_code,
        ) from None
    if len(body) > limit:
        return bytes(body[:limit]), False
    return bytes(body), True


def _with_body(response: httpx.Response, content: bytes) -> httpx.Response:
    """`response` with the body read so far, for the classification of an error answer."""
    skip = ("content-length", "content-encoding", "transfer-encoding")
    headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in skip]
    return httpx.Response(
        response.status_code,
        headers=headers,
        content=content,
        request=response.request,
        extensions=response.extensions,
    )


async def request_json(
    client: httpx.AsyncClient,
    method: str,
    url: str | httpx.URL,
    op: Operation,
    *,
    echo: int = 0,
    limit: int | None = None,
    **kwargs: Any,
) -> tuple[int, Any]:
    """Send one request; return (status, JSON body) or raise a classified ProviderError.

    The body is read up to a bound (`limit`, else `bounds.answer_limit` of what the answer may
    echo: the request's own body and `echo` bytes more): a longer answer is an `OVERSIZED`
    protocol error, and is never held whole. No text of the answer reaches an error or the
    caller with the request's key in it, in any form (`runner.providers.redaction`), whatever
    the status. Errors are raised outside the `except` blocks so that they chain to nothing:
    the transport's own exceptions can carry the request's headers (aiohttp's repr shows them
    all).
    """
    failure: ProviderError | None = None
    try:
        request = client.build_request(method, url, **kwargs)
        if limit is None:
            echoed = echo + _request_size(request)
            allowed = bounds.answer_limit(echoed)
            bound = f"{bounds.size_text(bounds.MAX_ANSWER)} of an API answer"
            if echoed:
                bound += ", with twice what it may echo of the job's input"
        else:
            allowed, bound = limit, f"{bounds.size_text(limit)} of this answer"
        response = await client.send(request, stream=True)
        try:
            content, whole = await _read_at_most(response, allowed)
        finally:
            await response.aclose()
    except httpx.InvalidURL as exc:
        # raised before anything is sent (a URL too long or malformed to send at all)
        text = f"cannot send a request to this URL: {exc}"
        failure = ProviderError(ErrorKind.PROTOCOL, text, maybe_sent=False)
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
        # classified by its status whatever its size; its words, as far as they were read
        raise from_response(_with_body(response, content), op)
    if not whole:
        raise ProviderError(
            ErrorKind.OVERSIZED,
            f"the answer is longer than {allowed:,} bytes, the most runner reads ({bound})",
            status_code=response.status_code,
        )
    secrets = _sent_credentials(response)
    content = _answer_bytes(content, secrets)
    try:
        return response.status_code, json.loads(content)
    except ValueError:
        pass
    text = secrets.redact(content.decode("utf-8", "replace"))
    raise ProviderError(
        ErrorKind.PROTOCOL, f"answer is not JSON: {text[:200]!r}", status_code=response.status_code
    )
