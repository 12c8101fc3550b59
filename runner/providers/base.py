"""The provider protocol: the one small interface the worker uses to talk to any API.

Each query style (Replicate, BFL) implements it in its own module and translates its own field
names into the typed values below; no provider field name leaves its module. Errors are raised
as `ProviderError`, classified once in `runner.providers.errors`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from runner.bounds import clip


class Phase(enum.StrEnum):
    """Where a remote prediction is, in words common to both styles."""

    PENDING = "pending"  # accepted, not started
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"
    ABORTED = "aborted"  # deadline hit before it started; not billed
    MODERATED = "moderated"
    NOT_FOUND = "not_found"  # unknown or forgotten task (BFL answers this with HTTP 200)
    UNKNOWN = "unknown"  # a status this code has never seen: not terminal, keep polling


@dataclass(frozen=True)
class RemoteStatus:
    phase: Phase
    outputs: tuple[str, ...] = ()
    error: str | None = None
    raw_status: str = ""
    progress: float | None = None
    cost: float | None = None
    data_removed: bool = False


@dataclass(frozen=True)
class Handle:
    """What identifies a remote prediction; persisted before anything else happens to it.

    `echo` (not persisted): how many bytes of the job's input the provider's answers about it
    may carry back (a Replicate prediction shows its input), on top of what any answer may be.
    """

    remote_id: str
    polling_url: str | None = None
    echo: int = 0


@dataclass(frozen=True)
class Submission:
    handle: Handle
    status: RemoteStatus  # create answers may already be final (Replicate's Prefer: wait)
    cost: float | None = None


@dataclass(frozen=True)
class Candidate:
    """A listed prediction with the very model and input of a create that got no answer."""

    submission: Submission
    created_at: float  # on the provider's clock (epoch seconds)


@dataclass(frozen=True)
class Listing:
    """What the provider's list shows of the predictions made since a create attempt.

    `candidates`: those with the model and input asked for, oldest first, from `window_start`
    (on the provider's clock) to now. `removed`: the predictions of that model in the window
    whose input the provider has already removed (Replicate's `data_removed`): any of them may
    be the one asked about. `unknowable`: why the list cannot tell at all (the window
    reaches past the provider's retention, too many pages); then "no candidate" means nothing.
    """

    window_start: float
    candidates: tuple[Candidate, ...] = ()
    removed: tuple[Candidate, ...] = ()
    unknowable: str | None = None


class ErrorKind(enum.StrEnum):
    RATE_LIMITED = "rate_limited"  # 429: not billed, retry after a pause
    AUTH = "auth"  # 401/403: every further call would fail the same way
    NO_CREDIT = "no_credit"  # 402
    INVALID = "invalid"  # 400/422, or 404 on create: the provider refused this input
    NOT_FOUND = "not_found"  # 404 on a query
    SERVER = "server"  # 5xx
    TIMEOUT = "timeout"  # the request may have reached the server
    NETWORK = "network"  # the connection failed before the request was sent
    PROTOCOL = "protocol"  # an answer we cannot use (bad JSON, missing id)
    # An answer, or a field of one, beyond `runner.bounds` (a megabyte id, a 30 MB body): a
    # protocol error that asking again does not mend; on a create, it may have been billed.
    OVERSIZED = "oversized"
    UNSUPPORTED = "unsupported"  # 404/405 from an optional route (list, cancel, secret)


@dataclass
class ProviderError(Exception):
    kind: ErrorKind
    message: str
    status_code: int | None = None
    retry_after: float | None = None
    maybe_sent: bool = True  # False only when the request certainly never reached the server
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # what a provider said ends up in logs and a job's error: never more than a page of it
        self.message = clip(self.message)
        super().__init__(self.message)

    def __str__(self) -> str:
        code = f"HTTP {self.status_code}: " if self.status_code else ""
        return f"{code}{self.message}"


class Provider(Protocol):
    """One provider account, in one query style.

    `supports_cancel`: `cancel` works. `supports_list`: `list_matching` can tell whether a
    create that got no answer happened. `supports_webhooks`: it is a `WebhookSource` whose
    account gives a webhook secret. `refreshes_outputs`: querying a finished prediction again
    may give fresh output URLs. The first three are what the account serves: a style's route
    that an account does not document (an aggregator's list) is not used.
    """

    supports_cancel: bool
    supports_list: bool
    supports_webhooks: bool
    refreshes_outputs: bool

    async def create(
        self, model: str, input: dict[str, Any], *, deadline_seconds: float | None
    ) -> Submission: ...

    async def poll(self, handle: Handle) -> RemoteStatus: ...

    async def cancel(self, handle: Handle) -> None: ...

    async def list_matching(
        self, model: str, input: dict[str, Any], *, since: float
    ) -> Listing: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class WebhookSource(Protocol):
    """A provider that can push completions to a webhook (Replicate style), signed with a secret
    of the account. A webhook is only a hint to poll now: the poll decides.

    `webhook_account` names the account (two providers with the same one share the secret);
    `webhook_secret()` fetches the signing secret (`whsec_...`) with the API key;
    `use_webhook(url)` makes every later create ask for a `completed` webhook to `url`
    (None: no webhook).
    """

    @property
    def webhook_account(self) -> str: ...

    async def webhook_secret(self) -> str: ...

    def use_webhook(self, url: str | None) -> None: ...
