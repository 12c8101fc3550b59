"""The forms of a key that an answer may echo, each removed at every offset it can sit at.

The texts are built here with the standard library, the way a proxy would build them, and
checked with the search `tests/reliability/test_secrets.py` runs over every file a campaign
writes (its needles are computed apart from `runner.providers.redaction`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from urllib.parse import quote, quote_plus

import httpx
import pytest

from runner.providers.errors import credentials, redact
from runner.providers.redaction import (
    MIN_SECRET,
    REDACTED,
    Secrets,
    forms,
    header_secrets,
    secrets_of,
)
from tests.reliability.test_secrets import find_key, make_canary

KEY = make_canary()  # holds "/" and "+": its percent and JSON forms differ from it
VALUES = {"the key": KEY, "its Bearer header value": f"Bearer {KEY}"}
SECRETS = credentials(httpx.Headers({"Authorization": f"Bearer {KEY}", "Accept": "*/*"}))

_B64: dict[str, Callable[[bytes], str]] = {
    "base64": lambda b: base64.b64encode(b).decode(),
    "base64 without padding": lambda b: base64.b64encode(b).decode().rstrip("="),
    "base64url": lambda b: base64.urlsafe_b64encode(b).decode(),
    "base64url without padding": lambda b: base64.urlsafe_b64encode(b).decode().rstrip("="),
}
_TEXT: dict[str, Callable[[str], str]] = {
    "as is": lambda v: v,
    "quote": quote,
    "quote, nothing safe": lambda v: quote(v, safe=""),
    "quote_plus": quote_plus,
    "lower-case escapes": lambda v: quote(v, safe="").replace("%2F", "%2f").replace("%2B", "%2b"),
    "every byte escaped": lambda v: "".join(f"%{b:02X}" for b in v.encode()),
    "hex": lambda v: v.encode().hex(),
    "HEX": lambda v: v.encode().hex().upper(),
    "JSON with escaped slashes": lambda v: json.dumps(v)[1:-1].replace("/", "\\/"),
}


def _echoes() -> Iterator[tuple[str, str]]:
    """(what, text) for each value, encoding and offset."""
    for what, value in VALUES.items():
        for name, encode in _TEXT.items():
            yield f"{what} {name}", f"error: {encode(value)} (seen)"
        for name, encode64 in _B64.items():
            yield f"{what} {name}", f"error: {encode64(value.encode())} (seen)"
            # inside a longer encoded string: 0 to 5 bytes before it (each offset mod 3,
            # twice, with different neighbours) and 0 to 2 after it
            for before in range(6):
                for after in range(3):
                    dump = b"GET /"[:before] + value.encode() + b"\r\n"[:after]
                    yield (
                        f"{what} {name} at offset {before}+{after}",
                        f"dump={encode64(dump)}; next",
                    )


ECHOES = list(_echoes())


def test_the_echoes_hold_the_key_in_the_forms_the_search_looks_for() -> None:
    """Else the test below would pass for nothing."""
    for what, text in ECHOES:
        assert find_key(text.encode(), KEY), what


@pytest.mark.parametrize(("what", "text"), ECHOES, ids=[what for what, _ in ECHOES])
def test_every_form_of_the_key_at_every_offset_is_redacted(what: str, text: str) -> None:
    redacted = redact(text, SECRETS)
    assert not find_key(redacted.encode(), KEY), redacted
    assert REDACTED in redacted
    # only the key goes: what stood around it stays (the base64 groups it shares excepted)
    head, tail = ("error: ", " (seen)") if text.startswith("error") else ("dump=", "; next")
    assert redacted.startswith(head) and redacted.endswith(tail), redacted


def test_bytes_are_redacted_as_their_text_is() -> None:
    """An answer's body is searched before it is decoded (`request_json`), in one pass."""
    for _what, text in ECHOES:
        assert SECRETS.redact_bytes(text.encode()) == SECRETS.redact(text).encode()


def test_the_key_twice_in_a_row_and_in_several_forms_at_once_all_go() -> None:
    b64 = base64.b64encode(f"x-key: {KEY}".encode()).decode()
    text = f"{KEY}{KEY} {b64}{KEY.encode().hex()} {quote_plus('Bearer ' + KEY)}{KEY}"
    redacted = SECRETS.redact(text)
    assert not find_key(redacted.encode(), KEY), redacted
    assert redacted.count(REDACTED) >= 6


def test_text_without_the_key_is_returned_as_it_is() -> None:
    other = make_canary()
    unchanged = [
        "",
        "Simulated fault: internal server error.",
        f"another key: {other}, {base64.b64encode(other.encode()).decode()}",
        f"almost the key: {KEY[:-1]}-",  # one character short and changed
        KEY.encode().hex()[:-2],  # its hex, one byte short
        "Bearer " + "x" * 40,
    ]
    for text in unchanged:
        assert SECRETS.redact(text) is text
        assert SECRETS.redact_bytes(text.encode()) == text.encode()


def test_the_forms_are_built_once_per_set_of_values() -> None:
    first = secrets_of([KEY, f"Bearer {KEY}"])
    assert secrets_of([f"Bearer {KEY}", KEY]) is first
    assert header_secrets([("authorization", f"Bearer {KEY}")]) is first
    assert header_secrets([("x-key", KEY)]) is secrets_of([KEY])


def test_only_auth_headers_and_values_long_enough_to_be_keys_are_secrets() -> None:
    secrets = header_secrets(
        [
            ("X-Key", KEY),
            ("Authorization", "Bearer short"),  # "short": too short to be a key
            ("User-Agent", "runner/0.1 (+batch image generation)"),
            ("Proxy-Authorization", "Basic dXNlcjpwYXNzd29yZA=="),
        ]
    )
    assert set(secrets.values) == {"Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA==", KEY}
    assert [len(v) for v in secrets.values] == sorted(map(len, secrets.values), reverse=True)
    assert not header_secrets([("x-key", "k" * (MIN_SECRET - 1))])
    assert not Secrets(())
    assert Secrets(()).redact("anything") == "anything"


def test_no_form_is_shorter_than_a_key_can_be() -> None:
    """A form of a few characters would be found in ordinary words and garble them."""
    assert all(len(form) >= MIN_SECRET for form in forms("k" * MIN_SECRET))


def test_the_secrets_never_show_in_their_repr() -> None:
    assert KEY not in repr(SECRETS) and KEY not in str(SECRETS)
