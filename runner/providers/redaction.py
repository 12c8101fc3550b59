"""Every form in which an answer could echo an API key back, and their removal from text.

Debugging proxies and careless gateways echo the request's credentials in their answers, and
not always as sent: base64 of the header value (`Bearer KEY`, the `x-key` value) or of a whole
request dump, percent-encoded, hex. `Secrets` holds every such form of a request's keys,
computed once per key (`secrets_of` is cached), and finds them in text or bytes with one
pass of `bytes.find` per form of the bare key: every form of a longer value that contains the
key contains a form of the key itself, so only the rare text that holds one is rewritten.

Nothing here does I/O or knows HTTP beyond header names; `runner.providers.errors` runs every
provider text through it before anything is stored, logged or raised.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Callable, Iterable
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"
MIN_SECRET = 8  # shorter values are not keys, and replacing them would garble messages
# Headers that carry an API key; their values and the token after a scheme are secrets.
AUTH_HEADERS = frozenset({"authorization", "x-key", "proxy-authorization", "x-api-key", "api-key"})
# How many rewrites of one text may be needed: a form cut in two by a replacement of an
# overlapping one is found again on the next. Past this the whole text goes (fail closed).
_MAX_PASSES = 4
_ESCAPE = re.compile(r"%[0-9A-F]{2}")

_Encoder = Callable[[bytes], bytes]


def _b64_stable(encode: _Encoder, raw: bytes, shift: int) -> str:
    """The part of the base64 of `raw` that is the same wherever in a longer string `raw`
    starts, given that it starts `shift` bytes past a 3-byte boundary: the 4-character groups
    made of `raw`'s bytes alone (the first and last groups may mix in the neighbours')."""
    encoded = encode(b"\0" * shift + raw).decode()
    first = 1 if shift else 0
    last = (shift + len(raw)) // 3
    return encoded[4 * first : 4 * last]


def forms(secret: str) -> frozenset[str]:
    """The texts `secret` may appear as in an answer.

    As is; base64 and base64url, whole (with and without padding) and the stable middle at each
    of the three alignments it can have inside a longer encoded string; percent-encoded
    (`quote` with and without `/` safe, `quote_plus`, every byte escaped; upper- and lower-case
    escapes); hex, lower and upper case; and each of those as a JSON string escapes it (`\\"`,
    `\\\\`, and `\\/` as PHP writes a slash).
    """
    raw = secret.encode()
    found = {secret, raw.hex(), raw.hex().upper()}
    every_byte = "".join(f"%{byte:02X}" for byte in raw)
    for escaped in (quote(secret, safe=""), quote(secret), quote_plus(secret), every_byte):
        found.add(escaped)
        found.add(_ESCAPE.sub(lambda m: m.group().lower(), escaped))
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(raw).decode()
        found.update((whole, whole.rstrip("=")))
        for shift in range(3):
            found.add(_b64_stable(encode, raw, shift))
    for form in list(found):
        as_json = json.dumps(form)[1:-1]
        found.update((as_json, as_json.replace("/", "\\/")))
    return frozenset(form for form in found if len(form) >= MIN_SECRET)


class Secrets:
    """The forms of some secrets, ready to be found and replaced; empty when there are none.

    `values`: the secrets themselves, longest first. Its repr never shows them.
    """

    __slots__ = ("_find_bytes", "_find_text", "_pattern_bytes", "_pattern_text", "values")

    def __init__(self, values: Iterable[str]) -> None:
        self.values = tuple(sorted(set(values), key=len, reverse=True))
        # Only the forms of the innermost secrets are looked for: a form of "Bearer KEY" holds
        # a form of KEY (base64 of a longer string holds one of KEY's three stable middles).
        inner = [v for v in self.values if not any(o != v and o in v for o in self.values)]
        found = {form for value in inner for form in forms(value)}
        # and of those, none that holds another (the whole base64 holds its stable middle)
        find = [form for form in found if not any(o != form and o in form for o in found)]
        every = sorted({form for value in self.values for form in forms(value)})
        # longest first, so that at one position the whole encoding wins over its middle
        every.sort(key=len, reverse=True)
        self._find_text = tuple(find)
        self._find_bytes = tuple(form.encode() for form in find)
        alternatives = "|".join(map(re.escape, every))
        self._pattern_text = re.compile(alternatives) if every else None
        self._pattern_bytes = re.compile(alternatives.encode()) if every else None

    def __bool__(self) -> bool:
        return bool(self.values)

    def __repr__(self) -> str:
        return f"<Secrets: {len(self.values)} values>"

    def in_text(self, text: str) -> bool:
        return any(form in text for form in self._find_text)

    def in_bytes(self, data: bytes) -> bool:
        return any(form in data for form in self._find_bytes)

    def redact(self, text: str) -> str:
        """`text` with every form of every secret replaced by "[redacted]"."""
        if self._pattern_text is None or not self.in_text(text):
            return text
        for _ in range(_MAX_PASSES):
            text = self._pattern_text.sub(REDACTED, text)
            if not self.in_text(text):
                return text
        return REDACTED

    def redact_bytes(self, data: bytes) -> bytes:
        """`redact` for an ASCII-compatible encoding (UTF-8 and the like)."""
        if self._pattern_bytes is None or not self.in_bytes(data):
            return data
        for _ in range(_MAX_PASSES):
            data = self._pattern_bytes.sub(REDACTED.encode(), data)
            if not self.in_bytes(data):
                return data
        return REDACTED.encode()


NO_SECRETS = Secrets(())


@functools.lru_cache(maxsize=64)
def _secrets(values: frozenset[str]) -> Secrets:
    return Secrets(values)


def secrets_of(values: Iterable[str]) -> Secrets:
    """The `Secrets` of these values, built once for each set of them (a client sends the same
    key with thousands of requests)."""
    found = frozenset(values)
    return _secrets(found) if found else NO_SECRETS


def header_secrets(headers: Iterable[tuple[str, str]]) -> Secrets:
    """The secrets in a request's headers: each auth header's value and, after a scheme
    ("Bearer <token>"), the token."""
    found: set[str] = set()
    for name, value in headers:
        if name.lower() not in AUTH_HEADERS:
            continue
        value = value.strip()
        token = value.partition(" ")[2].strip() or value
        if len(token) >= MIN_SECRET:
            found.update((value, token))
    return secrets_of(found)
