"""Configuration of the provider simulator: accounts, timings, limits, lifetimes and faults.

`SimConfig` is a plain dataclass so tests can build it in code, and it round-trips through JSON
(`from_dict` / `to_dict`) so the CLI and the `/_sim/config` control route can set it too.
`FaultSpec` describes what goes wrong, per route, and with what probability.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

FAULT_ROUTES = ("create", "get", "cancel", "list", "download")

# Every path the real providers expose for a BFL model, as found in bfl-openapi.json and in
# DeerAPI's `/flux/v1/{model}` list. The finetune paths are left out: nothing here simulates them.
DEFAULT_BFL_MODELS = (
    "flux-pro-1.1",
    "flux-pro-1.1-ultra",
    "flux-pro",
    "flux-dev",
    "flux-kontext-pro",
    "flux-kontext-max",
    "flux-2-pro",
    "flux-2-pro-preview",
    "flux-2-flex",
    "flux-2-max",
    "flux-2-klein-4b",
    "flux-2-klein-9b",
    "flux-2-klein-9b-preview",
    "flux-pro-1.0-fill",
    "flux-pro-1.0-canny",
    "flux-pro-1.0-depth",
    "flux-pro-1.0-expand",
)

# Replicate's official FLUX models that return one URL string instead of a list.
DEFAULT_SINGLE_OUTPUT_MODELS = (
    "black-forest-labs/flux-1.1-pro",
    "black-forest-labs/flux-1.1-pro-ultra",
    "black-forest-labs/flux-pro",
    "black-forest-labs/flux-kontext-pro",
    "black-forest-labs/flux-kontext-max",
    "black-forest-labs/flux-2-pro",
    "black-forest-labs/flux-2-max",
    "black-forest-labs/flux-2-flex",
    "black-forest-labs/flux-2-dev",
)


def _rate(name: str, value: Any) -> float:
    number = _number(name, value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return number


def _number(name: str, value: Any) -> float:
    # bool is an int subclass; a JSON `true` where a number belongs is a mistake, not 1.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return value


# Faults that decide the answer to one request; at most one of them hits a request, so on a
# route their rates add up to at most 1. In this order they share one random draw.
ANSWER_FAULTS = (
    "error",  # an HTTP error (`error_status`) before anything was done
    "rate_limit",  # 429 with `retry_after`, before anything was done
    "reset",  # the connection is closed without a byte of answer, before anything was done
    "not_found",  # get: the prediction is unknown (Replicate 404, BFL `Task not found`)
    "gone",  # download: the file is gone (`gone_status`: 410, 404 or 403)
    "truncate",  # download: fewer bytes than the Content-Length promised, then the line drops
    "not_image",  # download: 200 with an HTML page instead of the image
    "wrong_type",  # download: the image, labelled with a wrong Content-Type
    "drop_after_create",  # create: created, then the answer is cut off halfway
    "error_after_create",  # create: created, then answered with `error_status`
    "reset_after_create",  # create: created, then the connection is closed without an answer
    "slow_after_create",  # create: created, then the answer stalls for `slow_seconds`
)
# What a prediction turns out to be, drawn once at create (create route only), in this order.
OUTCOME_FAULTS = ("request_moderate", "moderate", "fail", "abort", "cancel", "expire")

# The routes a fault can happen on; a fault not listed here can happen on every route.
_ONLY_ON: dict[str, tuple[str, ...]] = {
    "not_found_rate": ("get",),
    "gone_rate": ("download",),
    "truncate_rate": ("download",),
    "not_image_rate": ("download",),
    "wrong_type_rate": ("download",),
    "drip_rate": ("download",),
    **{f"{name}_rate": ("create",) for name in ANSWER_FAULTS if name.endswith("_after_create")},
    **{f"{name}_rate": ("create",) for name in OUTCOME_FAULTS},
}
_GONE_STATUSES = (403, 404, 410)

# How the simulator sends the webhooks a create asked for (`webhook_mode`): as Replicate does,
# or spoiled in one way, so tests can show a receiver that refuses them changes nothing.
WEBHOOK_MODES = (
    "valid",  # signed as Replicate signs them (Standard Webhooks)
    "off",  # never sent
    "unsigned",  # without a webhook-signature header
    "forged",  # signed with a secret that is not the account's
    "tampered",  # signed, then the body changed
    "stale",  # correctly signed, with a timestamp ten minutes old
    "replay",  # the valid request, then the very same request again
)

# How a debugging proxy in front of the API may echo the caller's key (`echo_key`), as
# `runner.simulator.echo` writes it.
ECHO_ENCODINGS = ("plain", "base64", "base64url", "url", "hex")

# Routes that DeerAPI and CometAPI do not document under `/replicate` and `/flux`; the
# simulator's aggregator mounts answer them 404 unless `aggregator_routes` names them.
AGGREGATOR_ROUTES = (
    "list",  # GET /replicate/v1/predictions
    "cancel",  # POST /replicate/v1/predictions/{id}/cancel
    "webhook_secret",  # GET /replicate/v1/webhooks/default/secret
    "account",  # GET /replicate/v1/account
    "credits",  # GET /flux/v1/credits
)
# What an aggregator's undocumented list shows, when it serves one (`aggregator_list`).
AGGREGATOR_LISTS = (
    "real",  # this key's predictions, as Replicate's own list
    "empty",  # never anything, whatever was created
    "foreign",  # everyone else's on that aggregator (its upstream account), never this key's
)


@dataclass
class FaultSpec:
    """What goes wrong on one route, each as a probability drawn per request or per prediction.

    Per request, on every route: `error_rate` (answered `error_status`), `rate_limit_rate`
    (429 saying `retry_after` seconds), `reset_rate` (connection closed without an answer) and
    `slow_rate` (the answer stalls `slow_seconds` first; a client that gives up meanwhile gets
    nothing and nothing is done, like a request dropped from a queue). Only on `get`:
    `not_found_rate`. Only on `download`: `gone_rate` (`gone_status`), `truncate_rate`,
    `not_image_rate`, `wrong_type_rate`, and `drip_rate` (the bytes trickle over
    `drip_seconds`). Only on `create`: the `*_after_create_rate` faults, which hit after the
    prediction was created (and billed), and the generation outcomes drawn per prediction
    (`request_moderate_rate`, `moderate_rate`, `fail_rate`, `abort_rate` (never starts; not
    billed), `cancel_rate` (canceled while running), `expire_rate` (its outputs are gone the
    moment it finishes: Replicate `data_removed`, BFL an already expired sample URL)).

    `match` limits the faults to requests about a prediction whose prompt contains that text
    (a list request is about none, so a fault with a `match` never hits it); `times` limits the
    request faults to that many hits per prompt (per route), which makes a fault transient.
    """

    error_rate: float = 0.0
    error_status: int = 500
    rate_limit_rate: float = 0.0
    retry_after: float = 1.0
    reset_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 0.0
    not_found_rate: float = 0.0
    gone_rate: float = 0.0
    gone_status: int = 410
    truncate_rate: float = 0.0
    not_image_rate: float = 0.0
    wrong_type_rate: float = 0.0
    drip_rate: float = 0.0
    drip_seconds: float = 1.0
    drop_after_create_rate: float = 0.0
    error_after_create_rate: float = 0.0
    reset_after_create_rate: float = 0.0
    slow_after_create_rate: float = 0.0
    fail_rate: float = 0.0
    moderate_rate: float = 0.0
    request_moderate_rate: float = 0.0
    abort_rate: float = 0.0
    cancel_rate: float = 0.0
    expire_rate: float = 0.0
    match: str | None = None
    times: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "fault") -> FaultSpec:
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be an object, got {data!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            label = f"{where}.{name}"
            if name == "error_status":
                status = _integer(label, value)
                if not 400 <= status <= 599:
                    raise ValueError(f"{label} must be an HTTP error status, got {value!r}")
                values[name] = status
            elif name == "gone_status":
                if _integer(label, value) not in _GONE_STATUSES:
                    raise ValueError(f"{label} must be one of {_GONE_STATUSES}, got {value!r}")
                values[name] = value
            elif name in ("slow_seconds", "drip_seconds", "retry_after"):
                values[name] = max(0.0, _number(label, value))
            elif name == "match":
                if value is not None and (not isinstance(value, str) or not value):
                    raise ValueError(f"{label} must be a non-empty string or null, got {value!r}")
                values[name] = value
            elif name == "times":
                if value is not None and _integer(label, value) < 1:
                    raise ValueError(f"{label} must be at least 1 or null, got {value!r}")
                values[name] = value
            else:
                values[name] = _rate(label, value)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def applies_to(self, prompt: str | None) -> bool:
        """Whether a request about a prediction with this prompt may be hit (see `match`)."""
        return self.match is None or (prompt is not None and self.match in prompt)

    def validate(self, route: str) -> None:
        where = f"faults.{route}"
        FaultSpec.from_dict(self.to_dict(), where=where)  # the same checks as JSON gets
        for name, routes in _ONLY_ON.items():
            if getattr(self, name) and route not in routes:
                raise ValueError(f"{where}.{name} applies to the {' and '.join(routes)} route only")
        for group in (ANSWER_FAULTS, OUTCOME_FAULTS):
            total = sum(getattr(self, f"{name}_rate") for name in group)
            if total > 1.0 + 1e-9:
                names = ", ".join(f"{name}_rate" for name in group if getattr(self, f"{name}_rate"))
                raise ValueError(f"{where}: {names} add up to {total:g}, more than 1")


# The answer fields `Oversize` can blow up, each to a length (characters; `outputs`: a count).
OVERSIZED_FIELDS = ("id", "polling_url", "output_url", "outputs", "error")


@dataclass
class Oversize:
    """Answers that carry a field far beyond any sane size, as a broken or hostile provider's
    might: each field set above 0 is made that long (`match`: only in answers about a
    prediction whose prompt contains that text).

    `id`: the prediction's id, in every answer that shows it (create, get, list); `polling_url`:
    BFL's `polling_url` in the create answer; `output_url`: each output URL (Replicate's
    `output`, BFL's `result.sample`); `outputs`: the number of output URLs of a succeeded
    Replicate prediction (a list, whatever the model); `error`: a failed prediction's error
    text (Replicate's `error`, BFL's `details`). Lengths are characters; a URL stays a working
    URL (the padding is a query parameter the file host ignores).
    """

    id: int = 0
    polling_url: int = 0
    output_url: int = 0
    outputs: int = 0
    error: int = 0
    match: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> Oversize:
        if not isinstance(data, dict):
            raise ValueError(f"oversized must be an object, got {data!r}")
        unknown = sorted(set(data) - {*OVERSIZED_FIELDS, "match"})
        if unknown:
            raise ValueError(
                f"oversized: unknown field(s) {', '.join(unknown)}, use some of {OVERSIZED_FIELDS}"
            )
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name == "match":
                if value is not None and (not isinstance(value, str) or not value):
                    raise ValueError(
                        f"oversized.match must be a non-empty string or null, got {value!r}"
                    )
                values[name] = value
            elif _integer(f"oversized.{name}", value) < 0:
                raise ValueError(f"oversized.{name} must not be negative")
            else:
                values[name] = value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def applies_to(self, prompt: str) -> bool:
        return self.match is None or self.match in prompt


@dataclass
class SimConfig:
    """Everything that shapes the simulator's answers; every field has a realistic default.

    Every field can change while it runs (`POST /_sim/config`). Changing `clock_offset` is a
    clock step: what happened before keeps the time the provider's clock showed then.
    """

    seed: int = 0
    # None: any non-empty key is an account of its own
    api_keys: list[str] | None = None
    max_side: int = 256
    # timing of each generation, drawn at create
    queue_delay: float = 0.0
    duration_median: float = 2.0
    duration_sigma: float = 0.3
    list_page_size: int = 100
    # the provider's clock minus the true one, in seconds: every time an answer shows (its
    # `Date` header, created_at, BFL's start_time, signed URLs' expiry) and the list filters
    # are on the provider's clock; `stats()` stays on the true one
    clock_offset: float = 0.0
    # lifetimes, in seconds from completion
    replicate_output_ttl: float = 3600.0
    bfl_url_ttl: float = 600.0
    bfl_forget_after: float = 1800.0
    # seconds from *creation* after which Replicate removes a finished prediction's input,
    # output, logs and files (`data_removed`), whatever `replicate_output_ttl` says
    replicate_data_retention: float = 3600.0
    # BFL: for this many seconds after its create, every get_result of a task answers
    # `Task not found`; `bfl_not_found_rate` of the tasks do so (drawn once per task)
    bfl_not_found_after_create: float = 0.0
    bfl_not_found_rate: float = 1.0
    # money: credits are per key; None means unlimited
    credits: float | None = None
    bfl_cost: float | None = 4.0
    replicate_cost: float = 4.0
    # limits
    bfl_max_in_flight: int = 24
    bfl_model_max_in_flight: dict[str, int] = field(default_factory=lambda: {"flux-kontext-max": 6})
    replicate_create_limit: int | None = 600
    replicate_read_limit: int | None = 3000
    rate_limit_window: float = 60.0
    retry_after_header: bool = False
    # models
    single_output_models: list[str] = field(
        default_factory=lambda: list(DEFAULT_SINGLE_OUTPUT_MODELS)
    )
    unknown_models: list[str] = field(default_factory=lambda: ["acme/does-not-exist"])
    bfl_models: list[str] = field(default_factory=lambda: list(DEFAULT_BFL_MODELS))
    bfl_region: str = "eu2"
    # the undocumented routes the aggregator mounts serve anyway (see AGGREGATOR_ROUTES), and
    # what their list shows when "list" is one of them (see AGGREGATOR_LISTS)
    aggregator_routes: list[str] = field(default_factory=list)
    aggregator_list: str = "real"
    faults: dict[str, FaultSpec] = field(default_factory=dict)
    # webhooks (Replicate style): how they are sent, and how long after completion
    webhook_mode: str = "valid"
    webhook_delay: float = 0.0
    # a debugging proxy that copies the caller's Authorization / x-key value into error answers
    # and predictions' logs and errors, in these encodings (one of ECHO_ENCODINGS, or a list)
    echo_key: str | list[str] | None = None
    # answers with fields far beyond any sane size (see `Oversize`); all off by default
    oversized: Oversize = field(default_factory=Oversize)

    def __post_init__(self) -> None:
        if isinstance(self.oversized, dict):
            self.oversized = Oversize.from_dict(self.oversized)
        if isinstance(self.faults, dict):
            # let code write faults={"create": {"error_rate": 0.1}} as JSON would
            self.faults = {
                route: FaultSpec.from_dict(spec, where=f"faults.{route}")
                if isinstance(spec, dict)
                else spec
                for route, spec in self.faults.items()
            }
        # a dataclass does not check types, and a config built in code should fail as early as
        # one read from JSON
        self._validate()

    def fault(self, route: str) -> FaultSpec:
        return self.faults.get(route) or FaultSpec()

    @property
    def echo_encodings(self) -> tuple[str, ...]:
        """The encodings `echo_key` asks for, none when it is off."""
        if self.echo_key is None:
            return ()
        return (self.echo_key,) if isinstance(self.echo_key, str) else tuple(self.echo_key)

    def _validate(self) -> None:
        for name in (
            "queue_delay",
            "duration_median",
            "duration_sigma",
            "replicate_output_ttl",
            "bfl_url_ttl",
            "bfl_forget_after",
            "replicate_data_retention",
            "bfl_not_found_after_create",
            "replicate_cost",
            "rate_limit_window",
            "webhook_delay",
        ):
            if _number(name, getattr(self, name)) < 0:
                raise ValueError(f"{name} must not be negative")
        # any number of seconds, either way: a provider's clock may run behind the true one
        if not math.isfinite(_number("clock_offset", self.clock_offset)):
            raise ValueError(f"clock_offset must be a finite number, got {self.clock_offset!r}")
        _rate("bfl_not_found_rate", self.bfl_not_found_rate)
        for name in ("seed", "max_side", "list_page_size", "bfl_max_in_flight"):
            _integer(name, getattr(self, name))
        if self.max_side < 16:
            raise ValueError("max_side must be at least 16")
        if self.list_page_size < 1:
            raise ValueError("list_page_size must be at least 1")
        for name in ("credits", "bfl_cost"):
            value = getattr(self, name)
            if value is not None:
                _number(name, value)
        for name in ("replicate_create_limit", "replicate_read_limit"):
            value = getattr(self, name)
            if value is not None and _integer(name, value) < 1:
                raise ValueError(f"{name} must be at least 1 or null")
        if not isinstance(self.retry_after_header, bool):
            raise ValueError("retry_after_header must be true or false")
        if self.webhook_mode not in WEBHOOK_MODES:
            raise ValueError(
                f"webhook_mode must be one of {WEBHOOK_MODES}, got {self.webhook_mode!r}"
            )
        if self.echo_key is not None:
            echoed = [self.echo_key] if isinstance(self.echo_key, str) else self.echo_key
            _string_list("echo_key", echoed)
            unknown_encodings = [e for e in echoed if e not in ECHO_ENCODINGS]
            if unknown_encodings or not echoed:
                raise ValueError(
                    f"echo_key must be null, one of {ECHO_ENCODINGS} or a non-empty list of "
                    f"them, got {self.echo_key!r}"
                )
        _string_list("aggregator_routes", self.aggregator_routes)
        unknown_routes = [r for r in self.aggregator_routes if r not in AGGREGATOR_ROUTES]
        if unknown_routes:
            raise ValueError(
                f"aggregator_routes: unknown route(s) {', '.join(map(repr, unknown_routes))}, "
                f"use some of {AGGREGATOR_ROUTES}"
            )
        if self.aggregator_list not in AGGREGATOR_LISTS:
            raise ValueError(
                f"aggregator_list must be one of {AGGREGATOR_LISTS}, got {self.aggregator_list!r}"
            )
        if not isinstance(self.bfl_region, str) or not self.bfl_region.isalnum():
            raise ValueError("bfl_region must be a short alphanumeric path segment")
        if self.api_keys is not None:
            _string_list("api_keys", self.api_keys)
        for name in ("single_output_models", "unknown_models", "bfl_models"):
            _string_list(name, getattr(self, name))
        if not isinstance(self.bfl_model_max_in_flight, dict):
            raise ValueError("bfl_model_max_in_flight must be an object")
        for model, limit in self.bfl_model_max_in_flight.items():
            _integer(f"bfl_model_max_in_flight.{model}", limit)
        if not isinstance(self.faults, dict):
            raise ValueError("faults must be an object mapping a route to its faults")
        for route, spec in self.faults.items():
            if route not in FAULT_ROUTES:
                raise ValueError(f"faults: unknown route {route!r}, use one of {FAULT_ROUTES}")
            if not isinstance(spec, FaultSpec):
                raise ValueError(f"faults.{route} must be a FaultSpec")
            spec.validate(route)
        if not isinstance(self.oversized, Oversize):
            raise ValueError("oversized must be an object")
        Oversize.from_dict(self.oversized.to_dict())  # the same checks as JSON gets

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimConfig:
        """Build a config from JSON-like data; missing fields take their defaults."""
        if not isinstance(data, dict):
            raise ValueError(f"the simulator config must be an object, got {data!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(unknown)}")
        # fault objects become FaultSpecs in __post_init__
        values = dict(data)
        for name in (
            "api_keys",
            "single_output_models",
            "unknown_models",
            "bfl_models",
            "aggregator_routes",
            "echo_key",
        ):
            if isinstance(values.get(name), tuple):
                values[name] = list(values[name])
        if isinstance(values.get("bfl_model_max_in_flight"), dict):
            values["bfl_model_max_in_flight"] = dict(values["bfl_model_max_in_flight"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["faults"] = {route: spec.to_dict() for route, spec in self.faults.items()}
        data["oversized"] = self.oversized.to_dict()
        return data

    def merged(self, partial: dict[str, Any]) -> SimConfig:
        """This config with `partial` laid over it; fault settings merge per route and field."""
        if not isinstance(partial, dict):
            raise ValueError(f"a config update must be an object, got {partial!r}")
        data = self.to_dict()
        for name, value in partial.items():
            if name == "faults" and isinstance(value, dict):
                faults = data["faults"]
                for route, spec in value.items():
                    if spec is None:
                        faults.pop(route, None)
                    elif isinstance(spec, dict):
                        faults[route] = {**faults.get(route, {}), **spec}
                    else:
                        raise ValueError(f"faults.{route} must be an object or null")
            else:
                data[name] = value
        return SimConfig.from_dict(data)


def _string_list(name: str, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{name} must be a list of strings")
