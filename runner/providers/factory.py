"""Builds a provider from its configuration: the only code that picks a concrete adapter."""

from __future__ import annotations

import httpx

from runner.campaign import ProviderConfig
from runner.providers.base import Provider
from runner.providers.bfl import BflProvider
from runner.providers.replicate import ReplicateProvider

USER_AGENT = "runner/0.1 (+batch image generation)"


def auth_headers(config: ProviderConfig, api_key: str) -> dict[str, str]:
    if config.auth == "x-key":
        return {"x-key": api_key}
    return {"Authorization": f"Bearer {api_key}"}


def make_provider(
    config: ProviderConfig,
    api_key: str,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout: float = 30.0,
) -> Provider:
    wait = float(config.prefer_wait or 0)
    client = httpx.AsyncClient(
        headers={**auth_headers(config, api_key), "User-Agent": USER_AGENT},
        timeout=httpx.Timeout(timeout, read=timeout + wait),
        # The key must go to the API host only: never follow a redirect elsewhere with it.
        follow_redirects=False,
        transport=transport,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
    )
    if config.style == "bfl":
        return BflProvider(config, client)
    return ReplicateProvider(config, client)
