"""Where an API key may be sent: the decision, as a pure function of two URLs.

A BFL answer names the URL to poll (`polling_url`), and its host varies by region
(api.eu2.bfl.ai, gateway.bfl.ai), so the key is sent to hosts other than the configured one.
Only to those of the same owner: the URL's registrable domain (eTLD+1, by the Public Suffix
List, whose private section makes `a.github.io` and `b.github.io` two owners, as `co.uk` does
for its names) must be the base URL's, over a scheme at least as safe, on the same port. An IP
address, or a name that only a resolver would read as one, matches only itself. Anything
unusual (user info, a malformed port, a character no hostname has) is refused:
the caller then asks through the base URL instead, which costs nothing but the region's host.

The list is the one bundled by `publicsuffixlist`, read once per process; nothing is fetched.
"""

from __future__ import annotations

import functools
import ipaddress
import re

import httpx
from publicsuffixlist import PublicSuffixList

_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# What a URL parser following WHATWG reads as an IPv4 address when it ends a host: "127.1",
# "0x7f.1" and "2130706433" all reach 127.0.0.1.
_NUMERIC = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")


@functools.cache
def _suffixes() -> PublicSuffixList:
    # the bundled list, private section included: nothing is fetched (0.1 s to read)
    return PublicSuffixList()


@functools.lru_cache(maxsize=1024)
def registrable_domain(host: str) -> str | None:
    """The host's eTLD+1 (`api.eu2.bfl.ai` -> `bfl.ai`, `x.github.io` -> itself), or None for
    a public suffix itself (`co.uk`, `github.io`, `localhost`)."""
    found = _suffixes().privatesuffix(host)
    return found if isinstance(found, str) else None


def _host(url: httpx.URL) -> str | None:
    """The host a request to `url` connects to, in a form two URLs can be compared by: an IP
    address as the address, a name in lower-case ASCII without its final dot; None when it is
    neither (empty labels, percent signs, backslashes: where URL parsers disagree). httpx has
    lower-cased the name and IDNA-encoded it already."""
    try:
        raw = url.raw_host.decode("ascii")
    except UnicodeDecodeError:
        return None
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        pass
    name = raw[:-1] if raw.endswith(".") else raw
    labels = name.split(".")
    if not name or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    return name


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_NUMERIC.fullmatch(host.rsplit(".", 1)[-1]))
    return True


def _port(url: httpx.URL) -> int:
    return url.port if url.port is not None else _DEFAULT_PORTS[url.scheme]


def same_api_domain(url: str | httpx.URL, base_url: str | httpx.URL) -> bool:
    """Whether a request to `url` may carry the key of the API at `base_url`."""
    try:
        target, base = httpx.URL(url), httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError):
        return False
    # https for an https base; for an http one (a local proxy, the simulator), either
    if target.scheme != base.scheme and (target.scheme, base.scheme) != ("https", "http"):
        return False
    if target.scheme not in _DEFAULT_PORTS or target.userinfo:
        return False
    host, base_host = _host(target), _host(base)
    if host is None or base_host is None:
        return False
    if target.scheme == base.scheme:
        if _port(target) != _port(base):
            return False
    elif target.port is not None or base.port is not None:
        return False  # upgraded to https: only from the default port to the default port
    if host == base_host:
        return True
    if _is_address(host) or _is_address(base_host):
        return False
    domain = registrable_domain(host)
    return domain is not None and domain == registrable_domain(base_host)
