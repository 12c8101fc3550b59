"""The validated shape of a campaign: plain, immutable values shared by every layer.

The job-file loader (`runner.jobfile`) produces these; the store persists them; the worker and
the providers read them. Nothing here does I/O, and nothing here holds an API key: a provider
names the environment variable that holds its key.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import InitVar, asdict, dataclass, field
from typing import Any, Literal

Style = Literal["replicate", "bfl"]
Auth = Literal["bearer", "x-key"]
PollMode = Literal["polling_url", "get_result"]


@dataclass(frozen=True)
class ProviderConfig:
    """How to talk to one provider account. Built from a preset plus the job file's overrides."""

    name: str  # the preset's name, or "custom"
    style: Style
    base_url: str  # root under which /v1/... lives; may carry a path prefix (aggregators)
    auth: Auth
    api_key_env: str  # the environment variable that holds the key; never the key itself
    poll: PollMode = "polling_url"  # bfl style only
    prefer_wait: int | None = None  # replicate style only: Prefer: wait=N on creates (1..60)
    # The style's optional routes this account serves (`runner.presets.ROUTES`); None: what
    # its preset documents (`runner.presets.routes`). A route not listed is never called.
    routes: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProviderConfig:
        routes = data.get("routes")
        return cls(**{**data, "routes": None if routes is None else tuple(routes)})

    @property
    def account(self) -> tuple[str, str, str]:
        """Which provider account this is: campaigns with the same one share its limits."""
        return (self.style, self.base_url, self.api_key_env)


@dataclass(frozen=True)
class Limits:
    max_in_flight: int = 24  # jobs submitted and not yet finished at the provider
    creates_per_minute: float = 600.0
    max_attempts: int = 5  # creates that got a retryable answer count as attempts
    # Creates sent at once. None: a few seconds' worth (runner.limits.default_burst), safe
    # with a provider that meters with a small bucket; up to creates_per_minute when the
    # provider counts a sliding minute.
    create_burst: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


DEFAULT_PRIORITY = 10


@dataclass(frozen=True)
class Budget:
    """Spending guards (`budget:` in the job file); see `runner.budget` for how they count."""

    max_jobs: int | None = None  # creates per run (one `runner run` or `runner work`)
    max_cost: float | None = None  # per campaign, in the provider's unit (BFL: credits)
    price_per_image: float | None = None  # the cost of one job where the provider reports none

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OnFinish:
    """What to do when a campaign ends or pauses: run `command` or POST to `url` (one of)."""

    command: str | None = None
    url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CampaignSettings:
    """Everything about a campaign except its jobs. Persisted as JSON with the campaign row."""

    name: str
    provider: ProviderConfig
    output_dir: str  # absolute path
    filename_template: str  # see runner.naming for its fields
    deadline_seconds: float | None = None  # per job, from its first submission
    limits: Limits = field(default_factory=Limits)
    # Campaigns sharing a provider account split its slots in proportion to their priority.
    priority: int = DEFAULT_PRIORITY
    budget: Budget = field(default_factory=Budget)
    on_finish: OnFinish | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "provider": self.provider.to_dict(),
            "output_dir": self.output_dir,
            "filename_template": self.filename_template,
            "deadline_seconds": self.deadline_seconds,
            "limits": self.limits.to_dict(),
            "priority": self.priority,
            "budget": self.budget.to_dict(),
            "on_finish": None if self.on_finish is None else self.on_finish.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CampaignSettings:
        return cls(
            name=data["name"],
            provider=ProviderConfig.from_dict(data["provider"]),
            output_dir=data["output_dir"],
            filename_template=data["filename_template"],
            deadline_seconds=data.get("deadline_seconds"),
            limits=Limits(**data.get("limits", {})),
            priority=data.get("priority", DEFAULT_PRIORITY),
            budget=Budget(**(data.get("budget") or {})),
            on_finish=OnFinish(**data["on_finish"]) if data.get("on_finish") else None,
        )


@dataclass(frozen=True)
class JobSpec:
    """One job to enqueue: one create call at the provider, one or more images back.

    `key` is stable across runs of the same file (the user's id, or a hash of the effective
    input), so enqueueing is idempotent. `meta` holds what produced the job and what file names
    are made from: prompt, user id, variant, seed, index, slug.
    """

    key: str
    index: int  # 1-based position in the expanded job list of the file
    model: str
    input: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    # `input_view(input)`, when whoever makes the spec has it already: the loader encodes it to
    # hash the key, and the store then hashes it for the fingerprint without encoding the input
    # again. An argument, not a field, so that `dataclasses.replace` with another input cannot
    # carry over a view that no longer matches.
    view: InitVar[str | None] = None
    _view: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self, view: str | None) -> None:
        if view is not None:
            object.__setattr__(self, "_view", view)

    def fingerprint(self, provider: str) -> str:
        """`input_fingerprint(provider, self.model, self.input)`."""
        view = self._view if self._view is not None else input_view(self.input)
        return view_fingerprint(provider, self.model, view)


@dataclass(frozen=True)
class Campaign:
    settings: CampaignSettings
    jobs: list[JobSpec]
    source: str = ""  # the job file's path, for messages
    duplicates: int = 0  # prompts whose effective input repeated an earlier one (skipped)


# One encoder for every call: json.dumps with options builds a new one each time.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(data: Any) -> str:
    return _CANONICAL.encode(data)


def input_view(input: dict[str, Any]) -> str:
    """The input as job keys and fingerprints see it, as canonical JSON: each local image by its
    content, not by where the file happens to be (see `runner.inputs.key_view`)."""
    from runner.inputs import key_view

    return canonical_json(key_view(input))


def input_fingerprint(provider: str, model: str, input: dict[str, Any]) -> str:
    """Identifies "the very same generation": used to reuse a done result instead of paying.

    Input images count by content (their sha256), not by where the file happens to be.
    """
    return view_fingerprint(provider, model, input_view(input))


def view_fingerprint(provider: str, model: str, view: str) -> str:
    """`input_fingerprint` of the input whose `input_view` is `view`."""
    text = f'{{"input":{view}{_fingerprint_tail(model, provider)}'
    return hashlib.sha256(text.encode()).hexdigest()


@functools.lru_cache(maxsize=256)
def _fingerprint_tail(model: str, provider: str) -> str:
    # canonical_json({"provider": provider, "model": model, "input": input}) is written around
    # the input's canonical text rather than encoding the input again: members in key order, no
    # spaces, as canonical_json writes them. The rest is the same for every job of a model.
    return f',"model":{canonical_json(model)},"provider":{canonical_json(provider)}}}'
