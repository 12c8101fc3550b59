"""The campaign row of an enqueue, inside its transaction: refusing a job file that clashes
with the campaign of the same name (`runner.clash`), moving the queued jobs over when asked,
keeping the list of jobs followed at an earlier account, and recording jobs done from their
sidecars (`runner.recovery`). `Store.enqueue` calls these; nothing here commits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection

from runner import clash as clashes
from runner import jsontext
from runner.campaign import Campaign, ProviderConfig
from runner.clash import Clash, Followed, Moved
from runner.states import State
from runner.store import bulk, queries
from runner.worker.liveness import owner_is_dead

# Created at the provider and not settled: followed at the account that created them.
CREATED_UNSETTLED = (State.SUBMITTING, State.RUNNING, State.RECONCILING, State.DOWNLOADING)


class CampaignClash(Exception):
    """The job file clashes with the campaign of its name (nothing was written)."""

    def __init__(self, clash: Clash, queued: int) -> None:
        super().__init__(clash.campaign)
        self.clash = clash
        self.queued = queued


class CampaignBusy(Exception):
    """The queued jobs cannot be moved now: a worker works the campaign (nothing was written).
    The message says who."""


@dataclass(frozen=True)
class Continued:
    """The settings JSON to write for the campaign, and what a move did."""

    settings: dict[str, Any]
    moved: Moved | None = None


def _ids(conn: Connection, name: str, states: Sequence[State]) -> list[tuple[int, str]]:
    return [(int(i), str(k)) for i, k in conn.execute(queries.job_ids_in(name, states))]


def continue_campaign(
    conn: Connection,
    campaign: Campaign,
    now: float,
    *,
    move_queued: bool,
    live_since: float,
) -> Continued:
    """Check the job file against the campaign of its name and say what to write. Raises
    CampaignClash, or CampaignBusy for a move while a worker is at it."""
    settings = campaign.settings
    name = settings.name
    models = frozenset(spec.model for spec in campaign.jobs)
    wanted = {**settings.to_dict(), clashes.MODELS_KEY: sorted(models)}
    row = conn.execute(queries.campaign_row(name)).first()
    if row is None:
        return Continued(wanted)
    stored: Mapping[str, Any] = row._mapping["settings"]
    recorded = ProviderConfig.from_dict(dict(stored["provider"]))
    recorded_models = stored.get(clashes.MODELS_KEY)
    if recorded_models is None:  # written before runner kept them: read them once
        recorded_models = list(conn.execute(queries.distinct_models(name)).scalars())
    # A campaign without jobs has no models to keep (its jobs were lost: see runner.recovery).
    known_models = frozenset(recorded_models) or models
    followed = clashes.followed_of(stored)
    found = clashes.find_clash(name, recorded, known_models, settings.provider, models)
    moved = None
    if found is not None:
        if not move_queued:
            queued = len(_ids(conn, name, [State.QUEUED]))
            raise CampaignClash(found, queued)
        moved, followed = _move(conn, campaign, found, followed, now, live_since)
    if followed:
        unsettled = frozenset(i for i, _ in _ids(conn, name, CREATED_UNSETTLED))
        followed = clashes.still_followed(followed, unsettled, settings.provider)
    if followed:
        wanted[clashes.FOLLOWED_KEY] = [f.to_dict() for f in followed]
    return Continued(wanted, moved)


def _move(
    conn: Connection,
    campaign: Campaign,
    found: Clash,
    followed: list[Followed],
    now: float,
    live_since: float,
) -> tuple[Moved, list[Followed]]:
    name = campaign.settings.name
    _refuse_while_worked(conn, name, now, live_since)
    created = frozenset(i for i, _ in _ids(conn, name, CREATED_UNSETTLED))
    if created and found.other_account:
        followed = [*followed, Followed(found.recorded, created)]
    plan = clashes.plan_move(
        _ids(conn, name, [State.QUEUED]), {spec.key: spec for spec in campaign.jobs}
    )
    for start in range(0, len(plan.withdraw), 500):
        conn.execute(queries.delete_queued(plan.withdraw[start : start + 500]))
    provider = campaign.settings.provider.name
    rows = [
        (
            job_id,
            State.QUEUED.value,
            spec.index,
            provider,
            spec.model,
            jsontext.dumps(spec.input),
            jsontext.dumps(spec.meta),
            spec.fingerprint(provider),
            now,
        )
        for job_id, spec in plan.update
    ]
    if rows:
        update = queries.update_queued(conn.dialect.name)
        bulk.execute_many(conn, update, queries.UPDATE_QUEUED, rows)
    moved = Moved(campaign.settings.provider, len(created), len(rows), len(plan.withdraw))
    return moved, followed


def _refuse_while_worked(conn: Connection, name: str, now: float, live_since: float) -> None:
    """A worker at the campaign holds its settings: it would go on creating the queued jobs
    at the account it started with, and the jobs would then be followed at the wrong one."""
    for worker in conn.execute(queries.select_workers()):
        m = worker._mapping
        if owner_is_dead(m["id"], ""):  # killed on this machine: holds nothing any more
            continue
        if name in (m["campaigns"] or []) and m["last_seen_at"] >= live_since:
            raise CampaignBusy(
                f"a worker is working campaign {name!r} now ({m['host']} pid {m['pid']}): "
                "stop it first (Ctrl-C or SIGTERM: it still saves what it created), then run "
                "again with --move-queued. Nothing was changed."
            )
    leased = conn.execute(queries.leased_jobs(name, now))
    held = next((row for row in leased if not owner_is_dead(row[1], "")), None)
    if held is not None:
        raise CampaignBusy(
            f"job {held[0]} of campaign {name!r} is in the hands of worker {held[1]}: stop "
            "that worker first, or wait a minute for its lease to run out, then run again "
            "with --move-queued. Nothing was changed."
        )


def recover(conn: Connection, name: str, done: Mapping[str, Mapping[str, Any]], now: float) -> int:
    """Record the queued jobs of `done` (key -> the values `runner.recovery` proved) as done."""
    rows = [
        {"job_key": key, "now": now, **{f"new_{k}": v for k, v in values.items()}}
        for key, values in done.items()
    ]
    if not rows:
        return 0
    return int(conn.execute(queries.recover_queued(name), rows).rowcount)


def followed(settings: Mapping[str, Any]) -> list[Followed]:
    return clashes.followed_of(settings)
