"""Whether a job file may continue a campaign the database already holds, and what moving the
campaign's queued jobs over to the file changes. No I/O: the store reads and writes.

A campaign is its provider account (`ProviderConfig.account`: style, base URL, key variable)
and its models. A job file whose `campaign:` names one with another account or other models is
most likely another campaign that took the same name: continuing it silently would send its
queued jobs (made for one API) to the other. So that is refused, unless the user moves the
queued jobs over (`--move-queued`). Jobs already created stay with the account that created
them, and are followed there until they settle. Everything else (limits, budget, priority,
output, deadline) may change from one run to the next.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runner.campaign import JobSpec, ProviderConfig

# Keys the store adds to a campaign's settings JSON beside `CampaignSettings.to_dict()`.
MODELS_KEY = "models"
FOLLOWED_KEY = "followed"


def account_text(provider: ProviderConfig) -> str:
    style, base_url, key_env = provider.account
    return f"provider {provider.name} ({style} style at {base_url}, key in {key_env})"


def models_text(models: Iterable[str]) -> str:
    names = sorted(models)
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return f"model{'s' if len(names) != 1 else ''} {shown}"


@dataclass(frozen=True)
class Clash:
    """How a job file differs from the campaign of the same name in the database."""

    campaign: str
    recorded: ProviderConfig
    recorded_models: frozenset[str]
    wanted: ProviderConfig
    wanted_models: frozenset[str]

    @property
    def other_account(self) -> bool:
        return self.recorded.account != self.wanted.account

    def describe(self, where: str, jobfile: str, queued: int) -> str:
        """The paragraph: both sides, and the two ways on."""
        has = [account_text(self.recorded)] if self.other_account else []
        says = [account_text(self.wanted)] if self.other_account else []
        if self.recorded_models != self.wanted_models:
            has.append(models_text(self.recorded_models))
            says.append(models_text(self.wanted_models))
        return (
            f"campaign {self.campaign!r} in the database at {where} uses {' and '.join(has)}, "
            f"but {jobfile} gives it {' and '.join(says)}. Nothing was changed. If the file "
            "is another campaign, give it a name of its own (`campaign:`). To make the file "
            f"this campaign's from now on, run it again with --move-queued: its {queued} "
            "queued job(s), never created, follow the file (those it no longer lists are "
            "withdrawn), and the jobs already created stay with the account that created them "
            "and are followed there."
        )


def find_clash(
    campaign: str,
    recorded: ProviderConfig,
    recorded_models: frozenset[str],
    wanted: ProviderConfig,
    wanted_models: frozenset[str],
) -> Clash | None:
    if recorded.account == wanted.account and recorded_models == wanted_models:
        return None
    return Clash(campaign, recorded, recorded_models, wanted, wanted_models)


@dataclass(frozen=True)
class Followed:
    """Jobs of a campaign created at an account it used before a move, by id: they are polled,
    reconciled and canceled there until they settle."""

    provider: ProviderConfig
    jobs: frozenset[int]

    def to_dict(self) -> dict[str, Any]:
        return {"provider": self.provider.to_dict(), "jobs": sorted(self.jobs)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Followed:
        return cls(ProviderConfig.from_dict(dict(data["provider"])), frozenset(data["jobs"]))


def followed_of(settings: Mapping[str, Any]) -> list[Followed]:
    return [Followed.from_dict(f) for f in settings.get(FOLLOWED_KEY) or []]


def still_followed(
    followed: Sequence[Followed], unsettled: frozenset[int], current: ProviderConfig
) -> list[Followed]:
    """What is left to follow: only jobs not settled yet, and none at the campaign's own
    account (its provider follows those)."""
    out = []
    for entry in followed:
        left = entry.jobs & unsettled
        if left and entry.provider.account != current.account:
            out.append(Followed(entry.provider, left))
    return out


@dataclass(frozen=True)
class MovePlan:
    """What `--move-queued` does to the campaign's queued jobs (none of them was created)."""

    update: list[tuple[int, JobSpec]] = field(default_factory=list)  # (job id, the file's job)
    withdraw: list[int] = field(default_factory=list)  # job ids the file no longer lists


def plan_move(queued: Iterable[tuple[int, str]], specs: Mapping[str, JobSpec]) -> MovePlan:
    """`queued`: (id, key) of the campaign's queued jobs no worker holds; `specs`: the file's
    jobs by key. A queued job the file lists becomes the file's job; the others go."""
    plan = MovePlan()
    for job_id, key in queued:
        spec = specs.get(key)
        if spec is None:
            plan.withdraw.append(job_id)
        else:
            plan.update.append((job_id, spec))
    return plan


@dataclass(frozen=True)
class Moved:
    """What a move did, for the user."""

    to: ProviderConfig
    followed: int  # jobs created before, followed at the account that created them
    updated: int  # queued jobs now the file's
    withdrawn: int  # queued jobs dropped (not in the file)

    def describe(self, campaign: str) -> str:
        text = (
            f"{campaign}: moved to {account_text(self.to)}: {self.updated} queued job(s) "
            f"follow the job file, {self.withdrawn} withdrawn (not in it, never created)"
        )
        if self.followed:
            text += (
                f"; {self.followed} job(s) already created stay with the account that created "
                "them and are followed there"
            )
        return text
