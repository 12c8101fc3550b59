"""Builds a provider from its configuration: the only code that picks a concrete adapter."""

from __future__ import annotations

from collections.abc import Iterable

import httpx

from runner.campaign import ProviderConfig
from runner.descriptors import PROVIDER_CONNECTIONS
from runner.presets import routes
from runner.providers.base import Provider
from runner.providers.bfl import BflProvider
from runner.providers.clock import ProviderClock
from runner.providers.errors import ACCEPT_ENCODING
from runner.providers.replicate import ReplicateProvider

USER_AGENT = "runner/0.1 (+batch image generation)"


def auth_headers(config: ProviderConfig, api_key: str) -> dict[str, str]:
    if config.auth == "x-key":
        return {"x-key": api_key}
    return {"Authorization": f"Bearer {api_key}"}


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        """Keeps nothing."""


_NO_COOKIES = _NoCookies()


class CookielessClient(httpx.AsyncClient):
    """An httpx client that keeps no cookies. Neither API sets any, and a file host's cookie
    has no business in the next request. httpx's jar runs every response through urllib's
    cookie machinery, which was 7% of a busy worker's CPU."""

    @property
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        raise TypeError("this client keeps no cookies")


def fast_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    """httpx's API over aiohttp's connection handling: four times less CPU per request here
    than httpcore's pool (0.8 ms against 3 ms measured against the simulator), which is what
    lets one worker keep up with hundreds of jobs a second."""
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return AiohttpTransport(limits=limits, trust_env=False)


def make_provider(
    config: ProviderConfig,
    api_key: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: float = 30.0,
    unsupported: Iterable[str] = (),
) -> Provider:
    """The adapter for `config`'s style, calling only the optional routes the account serves:
    those configured or documented (`runner.presets.routes`), less those it answered 404 or
    405 to before (`unsupported`, as recorded in the database)."""
    wait = float(config.prefer_wait or 0)
    clock = ProviderClock()
    client = CookielessClient(
        headers={
            **auth_headers(config, api_key),
            "User-Agent": USER_AGENT,
            # what `request_json` decodes within its bound (not br, not zstd)
            "Accept-Encoding": ACCEPT_ENCODING,
        },
        timeout=httpx.Timeout(timeout, read=timeout + wait),
        # The key must go to the API host only: never follow a redirect elsewhere with it.
        follow_redirects=False,
        # the worker's creates (PoolOptions.submitters) and queries at once, and some room;
        # runner.descriptors keeps this many descriptors for each provider
        transport=transport or fast_transport(PROVIDER_CONNECTIONS),
        event_hooks={"response": [clock.on_response]},
    )
    if config.style == "bfl":
        return BflProvider(config, client)
    allowed = routes(config) - set(unsupported)
    return ReplicateProvider(config, client, routes=allowed, clock=clock)
