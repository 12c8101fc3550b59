"""Where a BFL `polling_url` may receive the key: each condition of `same_api_domain` is held by
a case that a change to it alone gets wrong (RELIABILITY.md lists which case caught which)."""

from __future__ import annotations

import pytest

from runner.providers.bfl import same_api_domain
from runner.providers.domains import registrable_domain

BFL = "https://api.bfl.ai"

# (why, url, base): the key may go there
ALLOWED = [
    ("a BFL region host", "https://api.eu2.bfl.ai/v1/get_result?id=1", BFL),
    ("BFL's gateway", "https://gateway.bfl.ai/v1/get_result?id=1", BFL),
    ("the registrable domain itself", "https://bfl.ai/v1/get_result", BFL),
    ("the base host itself, with a path", "https://api.bfl.ai/v1/get_result", BFL + "/"),
    ("an upper-case host", "https://API.EU2.BFL.AI/v1/get_result", BFL),
    ("a trailing dot on the host", "https://api.eu2.bfl.ai./v1/get_result", BFL),
    ("a trailing dot on the base", "https://api.eu2.bfl.ai/v1/get_result", "https://api.bfl.ai."),
    ("the default port written out", "https://api.eu2.bfl.ai:443/v1/get_result", BFL),
    ("two names under one co.uk owner", "https://flux.mycorp.co.uk/x", "https://api.mycorp.co.uk"),
    ("one github.io site and its subdomain", "https://x.a.github.io/r", "https://a.github.io"),
    ("https for an http base", "https://eu.api.example.com/r", "http://api.example.com"),
    ("the same address and port", "http://127.0.0.1:5/eu2/v1/get_result", "http://127.0.0.1:5"),
    ("the same IPv6 address and port", "http://[::1]:8000/eu2/x", "http://[::1]:8000"),
    ("a public suffix, as the base host itself", "http://localhost:5/eu2/x", "http://localhost:5"),
]

# (why, url, base): the key must not go there
REFUSED = [
    ("a name that ends like the domain", "https://evilbfl.ai/v1/get_result", BFL),
    ("the domain as a subdomain elsewhere", "https://bfl.ai.evil.com/v1/get_result", BFL),
    ("another owner under co.uk", "https://attacker.co.uk/x", "https://flux.mycorp.co.uk"),
    ("another site of github.io", "https://b.github.io/x", "https://a.github.io"),
    ("two public suffixes", "http://github.io:5/x", "http://localhost:5"),
    ("another subdomain of localhost", "http://evil.localhost:5/x", "http://localhost:5"),
    (
        "an upstream host for an aggregator",
        "https://api.eu2.bfl.ai/x",
        "https://api.deerapi.com/flux",
    ),
    ("a path that names the domain", "https://evil.example/bfl.ai", BFL),
    ("http for an https base", "http://api.eu2.bfl.ai/v1/get_result", BFL),
    ("another port", "https://api.eu2.bfl.ai:8443/v1/get_result", BFL),
    ("another port of the same address", "http://127.0.0.1:6/eu2/x", "http://127.0.0.1:5"),
    ("https on the http base's own port", "https://127.0.0.1:5/eu2/x", "http://127.0.0.1:5"),
    (
        "https on a port for an http base",
        "https://eu.api.example.com:8443/r",
        "http://api.example.com",
    ),
    ("another address", "http://127.0.0.2:5/x", "http://127.0.0.1:5"),
    ("another address, the same last octets", "https://5.2.3.4/x", "https://1.2.3.4"),
    ("an address written short (127.1)", "http://127.1:5/x", "http://127.0.0.1:5"),
    ("names a resolver reads as addresses", "http://9.2.3:5/x", "http://1.2.3:5"),
    ("a name for an address base", "http://localhost:5/x", "http://127.0.0.1:5"),
    ("user info that names the domain", "https://api.bfl.ai@evil.com/v1/get_result", BFL),
    ("user info on the right host", "https://user:pass@api.eu2.bfl.ai/v1/get_result", BFL),
    ("a port that is not a number", "https://api.eu2.bfl.ai:abc/v1/get_result", BFL),
    ("a port out of range", "https://api.eu2.bfl.ai:99999/v1/get_result", BFL),
    ("a backslash in the host", "https://evil.com\\.api.bfl.ai/v1/get_result", BFL),
    ("a percent sign in the host", "https://evil.com%2eapi.bfl.ai/v1/get_result", BFL),
    ("an empty label", "https://api..bfl.ai/v1/get_result", BFL),
    ("two trailing dots", "https://api.eu2.bfl.ai../v1/get_result", BFL),
    ("a look-alike letter (Cyrillic a)", "https://api.bfl.\u0430i/v1/get_result", BFL),
    ("no host", "https:///v1/get_result", BFL),
    ("no scheme", "//api.eu2.bfl.ai/v1/get_result", BFL),
    ("another scheme", "ftp://api.eu2.bfl.ai/v1/get_result", BFL),
    ("another scheme, for a base of it", "ftp://api.eu2.bfl.ai/x", "ftp://api.bfl.ai"),
    ("a file", "file:///etc/passwd", BFL),
    ("a malformed base", "https://api.eu2.bfl.ai/x", "https://api.bfl.ai:port"),
]


@pytest.mark.parametrize(("why", "url", "base"), ALLOWED, ids=[c[0] for c in ALLOWED])
def test_the_key_may_go_to(why: str, url: str, base: str) -> None:
    assert same_api_domain(url, base), why


@pytest.mark.parametrize(("why", "url", "base"), REFUSED, ids=[c[0] for c in REFUSED])
def test_the_key_never_goes_to(why: str, url: str, base: str) -> None:
    assert not same_api_domain(url, base), why


def test_the_registrable_domain_comes_from_the_public_suffix_list() -> None:
    assert registrable_domain("api.eu2.bfl.ai") == "bfl.ai"
    assert registrable_domain("flux.mycorp.co.uk") == "mycorp.co.uk"
    assert registrable_domain("x.a.github.io") == "a.github.io"  # a private suffix counts
    assert registrable_domain("bucket.s3.amazonaws.com") == "bucket.s3.amazonaws.com"
    assert registrable_domain("co.uk") is None
    assert registrable_domain("github.io") is None
