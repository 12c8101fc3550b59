"""Named provider accounts (presets), their default limits, and the job file's `provider` field.

A preset bundles what a user should not have to look up: the query style, the base URL with the
aggregator's path prefix, how the key is sent and which environment variable holds it. The job file
names a preset or gives a mapping whose fields override one. Nothing here reads the environment or
talks to a network: the key itself is looked up by whoever sends requests.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from runner.campaign import Auth, Limits, PollMode, ProviderConfig, Style
from runner.errors import InputError

PRESETS: dict[str, ProviderConfig] = {
    "replicate": ProviderConfig(
        name="replicate",
        style="replicate",
        base_url="https://api.replicate.com",
        auth="bearer",
        api_key_env="REPLICATE_API_TOKEN",
        prefer_wait=5,
    ),
    "bfl": ProviderConfig(
        name="bfl",
        style="bfl",
        base_url="https://api.bfl.ai",
        auth="x-key",
        api_key_env="BFL_API_KEY",
        poll="polling_url",
    ),
    # DeerAPI's answers carry upstream URLs its key cannot use, hence get_result through DeerAPI.
    "deerapi-replicate": ProviderConfig(
        name="deerapi-replicate",
        style="replicate",
        base_url="https://api.deerapi.com/replicate",
        auth="bearer",
        api_key_env="DEERAPI_KEY",
        prefer_wait=5,
    ),
    "deerapi-flux": ProviderConfig(
        name="deerapi-flux",
        style="bfl",
        base_url="https://api.deerapi.com/flux",
        auth="bearer",
        api_key_env="DEERAPI_KEY",
        poll="get_result",
    ),
    "cometapi": ProviderConfig(
        name="cometapi",
        style="replicate",
        base_url="https://api.cometapi.com/replicate",
        auth="bearer",
        api_key_env="COMETAPI_KEY",
        prefer_wait=None,
    ),
}

# Replicate allows 600 creates a minute; BFL caps an account at 24 tasks in flight. Aggregators
# publish no numbers, so they get BFL's in-flight cap and a create rate well under Replicate's.
DEFAULT_LIMITS: dict[str, Limits] = {
    "replicate": Limits(max_in_flight=100, creates_per_minute=600.0, max_attempts=5),
    "bfl": Limits(max_in_flight=24, creates_per_minute=600.0, max_attempts=5),
    "deerapi-replicate": Limits(max_in_flight=24, creates_per_minute=120.0, max_attempts=5),
    "deerapi-flux": Limits(max_in_flight=24, creates_per_minute=120.0, max_attempts=5),
    "cometapi": Limits(max_in_flight=24, creates_per_minute=120.0, max_attempts=5),
}
# A custom endpoint is most likely a proxy or another aggregator: start as cautiously as those.
CUSTOM_LIMITS = Limits(max_in_flight=24, creates_per_minute=120.0, max_attempts=5)

# A Replicate-style API's routes beyond create and get, which runner uses where an account
# serves them: `list` (to find a create whose answer was lost), `cancel` (a job's deadline,
# `runner cancel`), `webhook_secret` (webhooks), `account` (`runner doctor`'s key check).
ROUTES = ("list", "cancel", "webhook_secret", "account")
# What each preset's provider documents. DeerAPI documents create, the legacy create and get;
# CometAPI create and get: their other routes may answer anything, so none is relied on. BFL's
# style has none of these. A custom endpoint is assumed to serve none unless its job file says.
PRESET_ROUTES: dict[str, tuple[str, ...]] = {"replicate": ROUTES}

PROVIDER_FIELDS = (
    "preset",
    "style",
    "base_url",
    "auth",
    "api_key_env",
    "poll",
    "prefer_wait",
    "routes",
)
_STYLES: tuple[Style, ...] = ("replicate", "bfl")
_AUTHS: tuple[Auth, ...] = ("bearer", "x-key")
_POLLS: tuple[PollMode, ...] = ("polling_url", "get_result")
_DEFAULT_AUTH: dict[Style, Auth] = {"replicate": "bearer", "bfl": "x-key"}
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
# Paths the simulator serves; any other prefix is specific to a real host and means nothing there.
_SIM_PATHS = {"replicate": "/replicate", "bfl": "/flux"}


def routes(provider: ProviderConfig) -> frozenset[str]:
    """The optional routes runner may call at this provider: as configured, else documented."""
    if provider.routes is not None:
        return frozenset(provider.routes)
    return frozenset(PRESET_ROUTES.get(provider.name, ()))


def default_limits(provider: ProviderConfig) -> Limits:
    """The limits a campaign gets for `provider` when the job file sets none."""
    return DEFAULT_LIMITS.get(provider.name, CUSTOM_LIMITS)


def resolve_provider(value: str | dict[str, Any], where: str) -> ProviderConfig:
    """Build the ProviderConfig for a job file's `provider` value: a preset name or a mapping.

    In a mapping, every field given overrides the preset's; without `preset`, `style`, `base_url`
    and `api_key_env` are required. `where` starts every error message (file, line, field).
    """
    if isinstance(value, str):
        return _preset(value, where)
    if not isinstance(value, dict):
        raise InputError(
            f"{where}: found {_show(value)}, expected a preset name "
            f"({_known_presets()}) or a mapping with the fields {', '.join(PROVIDER_FIELDS)}. "
            "Write for example `provider: bfl`."
        )
    for key in value:
        if key not in PROVIDER_FIELDS:
            raise InputError(
                f"{where}: unknown field {_show(key)} in the provider mapping; the known fields "
                f"are {', '.join(PROVIDER_FIELDS)}. Check its spelling or remove it."
            )

    preset_name = value.get("preset")
    if preset_name is not None:
        if not isinstance(preset_name, str):
            raise InputError(
                f"{where}, `preset`: found {_show(preset_name)}, expected a preset name "
                f"({_known_presets()})."
            )
        base = _preset(preset_name, f"{where}, `preset`")
    else:
        missing = [f for f in ("style", "base_url", "api_key_env") if value.get(f) is None]
        if missing:
            raise InputError(
                f"{where}: a provider mapping without `preset` needs "
                f"{', '.join(f'`{f}`' for f in missing)}. Add them, or add `preset:` naming one "
                f"of {_known_presets()} to start from."
            )
        base = None

    style = _choice(value, "style", _STYLES, where, base.style if base else None)
    assert style is not None  # guaranteed above: either a preset or an explicit style
    if base is not None and style != base.style and value.get("base_url") is None:
        # The preset's URL serves its own style only; the other style would fail on every call.
        raise InputError(
            f"{where}, `style`: preset {base.name!r} is {base.style} style, and its base URL "
            f"does not serve {style} style requests. Set `base_url` as well, or pick a "
            f"{style} style preset."
        )
    auth = _choice(value, "auth", _AUTHS, where, base.auth if base else _DEFAULT_AUTH[style])
    poll = _choice(value, "poll", _POLLS, where, None)
    if poll is not None and style != "bfl":
        raise InputError(
            f"{where}, `poll`: `poll` only applies to bfl style providers, this one is {style} "
            "style. Remove it."
        )
    if "prefer_wait" in value:
        prefer_wait = _prefer_wait(value["prefer_wait"], where)
        if prefer_wait is not None and style != "replicate":
            raise InputError(
                f"{where}, `prefer_wait`: `prefer_wait` only applies to replicate style providers, "
                f"this one is {style} style. Remove it."
            )
    elif base is not None and base.style == style:
        prefer_wait = base.prefer_wait
    else:
        prefer_wait = None

    if poll is None:
        # A preset's poll mode belongs to its host; a changed style starts from the default.
        poll = base.poll if base is not None and base.style == style else "polling_url"
    base_url = _base_url(value["base_url"], where) if value.get("base_url") is not None else None
    api_key_env = (
        _env_name(value["api_key_env"], where) if value.get("api_key_env") is not None else None
    )
    routes = _routes(value["routes"], style, where) if value.get("routes") is not None else None
    return ProviderConfig(
        name=base.name if base else "custom",
        style=style,
        base_url=base_url or (base.base_url if base else ""),
        auth=auth,
        api_key_env=api_key_env or (base.api_key_env if base else ""),
        poll=poll,
        prefer_wait=prefer_wait if style == "replicate" else None,
        routes=routes,
    )


def simulated(provider: ProviderConfig, sim_url: str) -> ProviderConfig:
    """The same provider pointed at the local simulator at `sim_url`.

    The path prefix of the real base URL is kept ("/flux", "/replicate", or none), because the
    simulator serves the same prefixes the aggregators use; an unfamiliar prefix is replaced by the
    one the simulator serves for the provider's style. Auth stays as it is so that the simulator
    checks the same header the real host would.
    """
    path = urlsplit(provider.base_url).path.rstrip("/")
    if path not in ("", *_SIM_PATHS.values()):
        path = _SIM_PATHS[provider.style]
    return replace(provider, base_url=sim_url.rstrip("/") + path)


def _preset(name: str, where: str) -> ProviderConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(
            f"{where}: unknown provider preset {_show(name)}; the known presets are "
            f"{_known_presets()}. Use one of them, or a mapping with `style`, `base_url` and "
            "`api_key_env` for another endpoint."
        ) from None


def _choice(
    value: dict[str, Any], field: str, allowed: tuple[str, ...], where: str, default: Any
) -> Any:
    found = value.get(field)
    if found is None:
        return default
    if found not in allowed:
        raise InputError(
            f"{where}, `{field}`: found {_show(found)}, expected one of "
            f"{', '.join(allowed)}. Use one of those values."
        )
    return found


def _prefer_wait(found: Any, where: str) -> int | None:
    if found is None:
        return None
    if isinstance(found, bool) or not isinstance(found, int) or not 1 <= found <= 60:
        raise InputError(
            f"{where}, `prefer_wait`: found {_show(found)}, expected a whole number of seconds "
            "from 1 to 60 (Replicate's limit for `Prefer: wait`), or null to not wait."
        )
    return found


def _base_url(found: Any, where: str) -> str:
    expected = "an http(s) URL such as https://api.example.com/replicate"
    if not isinstance(found, str) or not found or any(c.isspace() for c in found):
        raise InputError(f"{where}, `base_url`: found {_show(found)}, expected {expected}.")
    try:
        parts = urlsplit(found)
        parts.port  # noqa: B018 - parsing the port is what validates it
    except ValueError:
        raise InputError(
            f"{where}, `base_url`: found {_show(found)}, which is not a valid URL; expected "
            f"{expected}."
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"{where}, `base_url`: found {_show(found)}, expected {expected}.")
    if parts.query or parts.fragment or "?" in found or "#" in found:
        raise InputError(
            f"{where}, `base_url`: found {_show(found)}; a base URL takes no query or fragment. "
            "Remove the part from ? or # on."
        )
    if parts.username is not None or parts.password is not None:
        # A key in the URL would end up in the database and in logs.
        raise InputError(
            f"{where}, `base_url`: the URL carries credentials; remove them and name the "
            "environment variable that holds the key in `api_key_env`."
        )
    return found.rstrip("/")


def _routes(found: Any, style: Style, where: str) -> tuple[str, ...]:
    listed = ", ".join(ROUTES)
    if not isinstance(found, list) or not all(isinstance(r, str) for r in found):
        raise InputError(
            f"{where}, `routes`: found {_show(found)}, expected a list of the optional routes "
            f"this provider serves, among {listed} (e.g. `routes: [list, cancel]`), or [] for "
            "none."
        )
    unknown = [r for r in found if r not in ROUTES]
    if unknown:
        raise InputError(
            f"{where}, `routes`: unknown route {_show(unknown[0])}; the known ones are {listed}. "
            "Check its spelling or remove it."
        )
    if found and style != "replicate":
        raise InputError(
            f"{where}, `routes`: {style} style APIs have none of the routes {listed}. Remove "
            "`routes`."
        )
    return tuple(dict.fromkeys(found))


def _env_name(found: Any, where: str) -> str:
    if isinstance(found, str) and _ENV_NAME.fullmatch(found):
        return found
    if isinstance(found, str) and len(found) > 20 and not found.isupper():
        # Pasting the key itself here is the likely mistake: do not echo it into logs.
        shown = "found a value that looks like a key rather than a variable name"
    else:
        shown = f"found {_show(found)}"
    raise InputError(
        f"{where}, `api_key_env`: {shown}; expected the name of the environment variable that "
        "holds the key, in capitals, digits and underscores, such as BFL_API_KEY."
    )


def _known_presets() -> str:
    return ", ".join(PRESETS)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
