"""Functions that build SQL statements. They run nothing; `runner.store.store` runs them.

Kept apart so each statement can be compiled and inspected for SQLite and PostgreSQL in tests,
and so the hot statements (claiming, applying a change) are visible in one place.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import Executable

from runner import jsontext
from runner.states import IN_FLIGHT, TERMINAL, State
from runner.store.schema import accounts, campaigns, jobs, workers


def _dialect_insert(dialect: str) -> Any:
    """The dialect's INSERT (with ON CONFLICT), imported only when a write needs it."""
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    from sqlalchemy.dialects import sqlite

    return sqlite.insert


def insert_jobs_ignoring_existing(dialect: str) -> sa.Insert:
    """INSERT that skips rows whose (campaign, key) already exists: enqueue is idempotent.

    Executed for a list of rows at once. The rows give `input` and `meta` as JSON text, under
    `input_json` and `meta_json`, and that text is stored as it is: each job's JSON is encoded
    once, by the caller, not once more by the JSON type. Inline: without a RETURNING of the new
    ids, which nothing reads.
    """

    def json_text(name: str) -> Any:
        text = sa.bindparam(name, type_=sa.Text)
        # SQLite keeps JSON as text; PostgreSQL takes text into a json column only by a cast.
        return sa.cast(text, sa.JSON) if dialect == "postgresql" else text

    insert = _dialect_insert(dialect)
    stmt = insert(jobs).values(input=json_text("input_json"), meta=json_text("meta_json"))
    return stmt.inline().on_conflict_do_nothing(index_elements=["campaign", "key"])


def existing_keys(campaign: str, keys: Sequence[str]) -> Executable:
    return sa.select(jobs.c.key).where(jobs.c.campaign == campaign, jobs.c.key.in_(keys))


def upsert_campaign(dialect: str, name: str, settings: dict[str, Any], now: float) -> Executable:
    values = {"name": name, "settings": settings, "created_at": now, "updated_at": now}
    stmt: Any = _dialect_insert(dialect)(campaigns).values(**values)
    return stmt.on_conflict_do_update(
        index_elements=["name"], set_={"settings": settings, "updated_at": now}
    )


def claim(
    dialect: str,
    *,
    state: State,
    campaigns_: Iterable[str],
    owner: str,
    now: float,
    lease_until: float,
    limit: int,
    oldest_ready_first: bool = False,
) -> tuple[Executable, dict[str, Any]]:
    """Lease up to `limit` due, unleased (or lease-expired) jobs of `state`, in one statement,
    and its parameters. Due jobs come in the order they fell due, or with `oldest_ready_first`
    the oldest result first (its signed URL is the first to expire).

    SQLite: `UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING`, under BEGIN IMMEDIATE.
    PostgreSQL: the same with `FOR UPDATE SKIP LOCKED`, so concurrent claimers never wait on
    each other nor take the same row.
    """
    stmt = _claim(dialect, state, tuple(campaigns_), oldest_ready_first)
    return stmt, {"owner": owner, "now": now, "lease_until": lease_until, "limit": limit}


def unleased(now: Any) -> sa.ColumnElement[bool]:
    """No live lease holds the job: nobody has it, or its holder's lease ran out before `now`.
    Claims take only such jobs, and only such jobs count as due, so the two always agree."""
    return sa.or_(jobs.c.lease_owner.is_(None), jobs.c.lease_expires_at < now)


@functools.lru_cache(maxsize=64)
def _claim(
    dialect: str, state: State, campaigns_: tuple[str, ...], oldest_ready_first: bool
) -> Executable:
    # Built once per kind of claim: building it took longer than running it. The values that
    # change from claim to claim are parameters.
    now = sa.bindparam("now", type_=sa.Float)
    order = (
        (jobs.c.ready_at, jobs.c.id) if oldest_ready_first else (jobs.c.next_attempt_at, jobs.c.id)
    )
    pick = (
        sa.select(jobs.c.id)
        .where(
            jobs.c.state == state.value,
            jobs.c.campaign.in_(list(campaigns_)),
            jobs.c.next_attempt_at <= now,
            unleased(now),
        )
        .order_by(*order)
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )
    if dialect == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    return (
        sa.update(jobs)
        .where(jobs.c.id.in_(pick.scalar_subquery()))
        .values(
            lease_owner=sa.bindparam("owner", type_=sa.String),
            lease_expires_at=sa.bindparam("lease_until", type_=sa.Float),
        )
        .returning(*jobs.c)
    )


# Columns of the JSON type: the driver-level UPDATE below encodes their values itself.
_JSON_COLUMNS = frozenset(c.name for c in jobs.c if isinstance(c.type, sa.JSON))


def apply_change(
    dialect: str,
    job_id: int,
    expect: State,
    owner: str | None,
    values: dict[str, Any],
    now: float,
) -> tuple[str, dict[str, Any]]:
    """Move one job, refused by the database unless it is still in `expect` (and still ours).

    The UPDATE as the database driver takes it, and its parameters. The worker writes about
    three of these per job, so they skip SQLAlchemy's execution of a statement (80 µs each
    here, against 12 µs for the driver alone). The text depends only on which columns change
    and is built once per such set; JSON values are encoded here, by `runner.jsontext`
    (None as JSON null)."""
    params = {
        f"v_{key}": jsontext.dumps(value) if key in _JSON_COLUMNS else value
        for key, value in values.items()
    }
    params.update(w_id=job_id, w_state=expect.value, v_updated_at=now)
    if owner is not None:
        params["w_owner"] = owner
    columns = tuple(sorted(values.keys() - {"updated_at"}))
    holds = values.get("remote_id") is not None
    return _change_sql(dialect, columns, owner is not None, holds), params


@functools.lru_cache(maxsize=512)
def _change_sql(dialect: str, columns: tuple[str, ...], owned: bool, holds: bool) -> str:
    """`holds`: the change gives the job a prediction, which is refused when another job
    holds that prediction already (two jobs never share one; see `runner.reconcile`)."""

    def param(name: str) -> str:
        return f"%({name})s" if dialect == "postgresql" else f":{name}"

    def value(column: str) -> str:
        if dialect == "postgresql" and column in _JSON_COLUMNS:
            return f"CAST({param('v_' + column)} AS JSON)"  # text goes into json by a cast
        return param(f"v_{column}")

    # jobs.c[...] refuses a name that is not a column of the table
    sets = ", ".join(f'"{jobs.c[c].name}" = {value(c)}' for c in (*columns, "updated_at"))
    where = f"id = {param('w_id')} AND state = {param('w_state')}"
    if owned:
        where += f" AND lease_owner = {param('w_owner')}"
    if holds:
        where += (
            f" AND NOT EXISTS (SELECT 1 FROM {jobs.name} AS other WHERE other.remote_id = "
            f"{param('v_remote_id')} AND other.id <> {param('w_id')})"
        )
    return f"UPDATE {jobs.name} SET {sets} WHERE {where}"


def release_lease(job_id: int, owner: str, due_at: float | None) -> Executable:
    values: dict[str, Any] = {"lease_owner": None, "lease_expires_at": None}
    if due_at is not None:
        values["next_attempt_at"] = due_at
    return sa.update(jobs).where(jobs.c.id == job_id, jobs.c.lease_owner == owner).values(**values)


def renew_leases(owner: str, lease_until: float) -> Executable:
    return sa.update(jobs).where(jobs.c.lease_owner == owner).values(lease_expires_at=lease_until)


def release_leases(owners: Sequence[str]) -> Executable:
    """Expire the leases of owners known to be dead, so their jobs are taken back at once."""
    return sa.update(jobs).where(jobs.c.lease_owner.in_(owners)).values(lease_expires_at=0.0)


def lease_owners() -> Executable:
    return sa.select(jobs.c.lease_owner).where(jobs.c.lease_owner.is_not(None)).distinct()


def orphaned_submits(now: float, error: str) -> Executable:
    """Creates whose process died mid-call may have been billed: find out before anything.
    A create nobody holds at all (its lease given back) is one too: nothing else moves it."""
    return (
        sa.update(jobs)
        .where(
            jobs.c.state == State.SUBMITTING.value,
            sa.or_(jobs.c.lease_expires_at < now, jobs.c.lease_expires_at.is_(None)),
        )
        .values(
            state=State.RECONCILING.value,
            lease_owner=None,
            lease_expires_at=None,
            error=error,
            strikes=0,
            bugs=0,
            next_attempt_at=now,
            updated_at=now,
        )
    )


def count_by_state(campaign: str | None = None) -> Executable:
    stmt = sa.select(jobs.c.campaign, jobs.c.state, sa.func.count()).group_by(
        jobs.c.campaign, jobs.c.state
    )
    if campaign is not None:
        stmt = stmt.where(jobs.c.campaign == campaign)
    return stmt


@functools.lru_cache(maxsize=64)
def any_job_in(campaign: str, states: tuple[State, ...]) -> Executable:
    """One job of `campaign` in one of `states`, if there is any (the worker asks whether
    anything is left after every round it found nothing to do)."""
    return (
        sa.select(jobs.c.id)
        .where(jobs.c.campaign == campaign, jobs.c.state.in_([s.value for s in states]))
        .limit(1)
    )


def count_created_by(
    campaigns_: Sequence[str], states: Sequence[State], before: float
) -> Executable:
    """Jobs of these campaigns in `states` whose create was sent at or before `before` (or at a
    time not known): what a worker that stopped then still waits for. Jobs created later are
    other workers' to follow; their number keeps growing while those work on."""
    return (
        sa.select(sa.func.count())
        .select_from(jobs)
        .where(
            jobs.c.campaign.in_(list(campaigns_)),
            jobs.c.state.in_([s.value for s in states]),
            sa.or_(jobs.c.submitted_at.is_(None), jobs.c.submitted_at <= before),
        )
    )


def cost_by_campaign(campaign: str | None = None) -> Executable:
    stmt = (
        sa.select(jobs.c.campaign, sa.func.sum(jobs.c.cost))
        .where(jobs.c.cost.is_not(None))
        .group_by(jobs.c.campaign)
    )
    if campaign is not None:
        stmt = stmt.where(jobs.c.campaign == campaign)
    return stmt


# Queued jobs that a worker has claimed to submit (parameters :now and :queued). SQLite's
# planner must be told to read them through the lease-owner index: see `count_slots_held`.
_CLAIMED = "lease_owner IS NOT NULL AND lease_expires_at >= :now AND state = :queued"


def _by_lease(dialect: str) -> str:
    """The jobs table, read through the lease-owner index."""
    return "jobs INDEXED BY ix_jobs_lease_owner" if dialect == "sqlite" else "jobs"


def spend(dialect: str, campaign: str, billed: Iterable[State], now: float) -> Executable:
    """One row for the budget: the cost reported so far, and how many jobs may have been (or
    are about to be) billed without a reported cost: in a billed state, or queued and claimed
    by a worker to submit.

    Index lookups, never a read of the queue: the scheduler asks before each claim. Costs are
    only ever reported past the queue, so the queued range of the index is skipped, and the
    claimed jobs are found through the lease-owner index (see `count_slots_held`). The sum of
    the reported costs does read every job that reported one.
    """
    return sa.text(
        "SELECT"
        " (SELECT sum(cost) FROM jobs WHERE campaign = :campaign AND state IN :past_queue"
        " AND cost IS NOT NULL),"
        " (SELECT count(*) FROM jobs WHERE campaign = :campaign AND state IN :billed"
        " AND cost IS NULL)"
        f" + (SELECT count(*) FROM {_by_lease(dialect)} WHERE {_CLAIMED}"
        " AND campaign = :campaign)"
    ).bindparams(
        sa.bindparam("campaign", campaign),
        sa.bindparam(
            "past_queue", [s.value for s in State if s is not State.QUEUED], expanding=True
        ),
        sa.bindparam("billed", [s.value for s in billed], expanding=True),
        sa.bindparam("now", now, type_=sa.Float),
        sa.bindparam("queued", State.QUEUED.value),
    )


def last_cost(campaign: str) -> Executable:
    """The most recently reported cost of one of the campaign's jobs: among the jobs not yet
    finished (a handful: BFL reports the cost at the create) and the last one finished with a
    cost, so that neither the queue nor the finished jobs are read whole."""
    started = [s.value for s in State if s is not State.QUEUED and s not in TERMINAL]
    with_cost = (jobs.c.cost, jobs.c.updated_at, jobs.c.id)
    live = sa.select(*with_cost).where(
        jobs.c.campaign == campaign, jobs.c.state.in_(started), jobs.c.cost.is_not(None)
    )
    finished = (
        sa.select(*with_cost)
        .where(
            jobs.c.campaign == campaign, jobs.c.finished_at.is_not(None), jobs.c.cost.is_not(None)
        )
        .order_by(jobs.c.finished_at.desc(), jobs.c.id.desc())
        .limit(1)
        .subquery()
    )
    both = sa.union_all(live, sa.select(finished)).subquery()
    return sa.select(both.c.cost).order_by(both.c.updated_at.desc(), both.c.id.desc()).limit(1)


def average_done_cost(models: Sequence[str]) -> Executable:
    """Per model, the average reported cost of done jobs (any campaign)."""
    return (
        sa.select(jobs.c.model, sa.func.avg(jobs.c.cost))
        .where(
            jobs.c.model.in_(list(models)),
            jobs.c.state == State.DONE.value,
            jobs.c.cost.is_not(None),
        )
        .group_by(jobs.c.model)
    )


def finished_since(since: float, campaign: str | None = None) -> Executable:
    stmt = (
        sa.select(jobs.c.campaign, sa.func.count(), sa.func.min(jobs.c.finished_at))
        .where(jobs.c.finished_at >= since, jobs.c.state == State.DONE.value)
        .group_by(jobs.c.campaign)
    )
    if campaign is not None:
        stmt = stmt.where(jobs.c.campaign == campaign)
    return stmt


def recent_in_states(campaigns_: Iterable[str], states: Iterable[State], limit: int) -> Executable:
    return (
        sa.select(jobs.c.campaign, jobs.c.key, jobs.c.state, jobs.c.error)
        .where(
            jobs.c.campaign.in_(list(campaigns_)),
            jobs.c.state.in_([s.value for s in states]),
        )
        .order_by(jobs.c.updated_at.desc(), jobs.c.id.desc())
        .limit(limit)
    )


def count_slots_held(dialect: str, campaigns_: Iterable[str], now: float) -> Executable:
    """Provider slots held per campaign: jobs in flight, plus queued jobs a worker has claimed
    to submit (they take a slot before their create goes out). Rows (campaign, count), one or
    two per campaign, to add up.

    One statement, so one snapshot on PostgreSQL: a job moving from claimed to submitting
    between two separate counts would be missed by both. The claimed part is read through the
    lease-owner index, so it costs the few jobs in hand, not the queue. SQLite's planner must be
    told (`INDEXED BY`, which SQLAlchemy's constructs cannot say): by itself it takes the
    (campaign, state) index and reads every queued job, 2 ms with 3,000 queued against
    0.01 ms, at every round of claims.
    """
    return sa.text(
        "SELECT campaign, count(*) AS n FROM jobs"
        " WHERE campaign IN :names AND state IN :in_flight GROUP BY campaign"
        f" UNION ALL SELECT campaign, count(*) AS n FROM {_by_lease(dialect)}"
        f" WHERE {_CLAIMED} AND campaign IN :names GROUP BY campaign"
    ).bindparams(
        sa.bindparam("names", list(campaigns_), expanding=True),
        sa.bindparam("in_flight", [s.value for s in IN_FLIGHT], expanding=True),
        sa.bindparam("now", now, type_=sa.Float),
        sa.bindparam("queued", State.QUEUED.value),
    )


def hint_due(remote_id: str, now: float) -> Executable:
    """A verified webhook says this prediction finished: its running job is due now. Only the
    time moves, never the state (nor the lease): the job's own poll confirms before anything
    changes. A job already due is left alone."""
    return (
        sa.update(jobs)
        .where(
            jobs.c.remote_id == remote_id,
            jobs.c.state == State.RUNNING.value,
            jobs.c.next_attempt_at > now,
        )
        .values(next_attempt_at=now)
    )


@functools.lru_cache(maxsize=64)
def due_by_state(campaigns_: tuple[str, ...], states: tuple[State, ...]) -> Executable:
    """The earliest due time of each state: which claims are worth a transaction now.

    One `ORDER BY next_attempt_at LIMIT 1` per state, each a seek into the (state,
    next_attempt_at) index, rather than a `min()` grouped by state: the database would read
    every row of each state for that (1.3 ms with 1,500 jobs queued, against 0.04 ms). The
    worker asks before every round of claims, always for the same campaigns and states: the
    statement is built once (building it cost more than running it), `now` is its parameter.

    A job under a live lease is not due: a task has it in hand already (a result its poller
    went on to download, a claim waiting for its create), and claims skip it. Counting it sent
    every round of claims at hundreds of jobs a second after downloads that were all in hand:
    a claim finding nothing, queued behind the writes for the database thread."""
    names = list(campaigns_)
    now = sa.bindparam("now", type_=sa.Float)
    per_state = [
        sa.select(
            sa.literal(state.value).label("state"),
            sa.select(jobs.c.next_attempt_at)
            .where(
                jobs.c.state == state.value,
                jobs.c.campaign.in_(names),
                jobs.c.next_attempt_at.is_not(None),
                unleased(now),
            )
            .order_by(jobs.c.next_attempt_at)
            .limit(1)
            .scalar_subquery()
            .label("due"),
        )
        for state in states
    ]
    return sa.union_all(*per_state)


def select_job(job_id: int) -> Executable:
    return sa.select(jobs).where(jobs.c.id == job_id)


def select_jobs(
    campaign: str, states: Iterable[State] | None = None, after_id: int = 0, limit: int = 1000
) -> Executable:
    stmt = sa.select(jobs).where(jobs.c.campaign == campaign, jobs.c.id > after_id)
    if states is not None:
        stmt = stmt.where(jobs.c.state.in_([s.value for s in states]))
    return stmt.order_by(jobs.c.id).limit(limit)


def campaign_row(name: str) -> Executable:
    return sa.select(campaigns).where(campaigns.c.name == name)


def campaign_names() -> Executable:
    return sa.select(campaigns.c.name).order_by(campaigns.c.name)


def set_halted(name: str, reason: str | None, now: float) -> Executable:
    return (
        sa.update(campaigns).where(campaigns.c.name == name).values(halted=reason, updated_at=now)
    )


def unresolved_attempts(input_hash: str, campaigns_: Sequence[str]) -> Executable:
    """The jobs with this input whose create may have made a prediction no job holds yet:
    being created, or being reconciled (see `runner.reconcile`)."""
    return sa.select(jobs.c.id, jobs.c.submitted_at, jobs.c.state).where(
        jobs.c.input_hash == input_hash,
        jobs.c.campaign.in_(list(campaigns_)),
        jobs.c.state.in_([State.SUBMITTING.value, State.RECONCILING.value]),
        jobs.c.remote_id.is_(None),
    )


def holders(remote_ids: Sequence[str]) -> Executable:
    """Which of these predictions some job holds, and which job."""
    return sa.select(jobs.c.remote_id, jobs.c.campaign, jobs.c.key).where(
        jobs.c.remote_id.in_(list(remote_ids))
    )


def campaign_settings() -> Executable:
    return sa.select(campaigns.c.name, campaigns.c.settings)


def done_with_input(input_hash: str, exclude_id: int) -> Executable:
    return (
        sa.select(jobs)
        .where(
            jobs.c.input_hash == input_hash,
            jobs.c.state == State.DONE.value,
            jobs.c.id != exclude_id,
        )
        .order_by(jobs.c.id)
        .limit(1)
    )


def recent_durations(provider: str, model: str, limit: int) -> Executable:
    """Generation times of a model's most recent results, for the poll schedule."""
    return (
        sa.select(jobs.c.generation_s)
        .where(
            jobs.c.model == model,
            jobs.c.provider == provider,
            jobs.c.ready_at.is_not(None),
            jobs.c.generation_s.is_not(None),
        )
        .order_by(jobs.c.ready_at.desc())
        .limit(limit)
    )


def upsert_worker(dialect: str, row: dict[str, Any]) -> Executable:
    stmt: Any = _dialect_insert(dialect)(workers).values(**row)
    return stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={"campaigns": row["campaigns"], "last_seen_at": row["last_seen_at"]},
    )


def touch_worker(worker_id: str, now: float) -> Executable:
    return sa.update(workers).where(workers.c.id == worker_id).values(last_seen_at=now)


def delete_workers(ids: Sequence[str]) -> Executable:
    return sa.delete(workers).where(workers.c.id.in_(list(ids)))


def delete_workers_unseen_since(before: float) -> Executable:
    return sa.delete(workers).where(workers.c.last_seen_at < before)


def select_workers() -> Executable:
    return sa.select(workers).order_by(workers.c.started_at, workers.c.id)


def set_worker_stopping(worker_id: str, stopping: dict[str, Any] | None) -> Executable:
    return sa.update(workers).where(workers.c.id == worker_id).values(stopping=stopping)


def account_facts(key: str) -> Executable:
    return sa.select(accounts.c.facts).where(accounts.c.key == key)


def upsert_account(dialect: str, key: str, facts: dict[str, Any], now: float) -> Executable:
    insert = _dialect_insert(dialect)(accounts).values(key=key, facts=facts, updated_at=now)
    return insert.on_conflict_do_update(
        index_elements=[accounts.c.key], set_={"facts": facts, "updated_at": now}
    )


# -- continuing a campaign: clashes, moves, recovery (`runner.store.campaigns`) -------------------


def distinct_models(name: str) -> Executable:
    return sa.select(jobs.c.model).where(jobs.c.campaign == name).distinct()


def job_ids_in(name: str, states: Iterable[State]) -> Executable:
    wanted = [s.value for s in states]
    return sa.select(jobs.c.id, jobs.c.key).where(jobs.c.campaign == name, jobs.c.state.in_(wanted))


def leased_jobs(name: str, now: float) -> Executable:
    """The jobs of the campaign some worker holds right now (key, owner)."""
    return sa.select(jobs.c.key, jobs.c.lease_owner).where(
        jobs.c.campaign == name,
        jobs.c.lease_owner.is_not(None),
        jobs.c.lease_expires_at > now,
    )


def delete_queued(ids: Sequence[int]) -> Executable:
    return sa.delete(jobs).where(jobs.c.id.in_(ids), jobs.c.state == State.QUEUED.value)


# The bound parameters of `update_queued`, in the order its rows give them.
UPDATE_QUEUED = (
    "job_id",
    "queued",
    "new_idx",
    "new_provider",
    "new_model",
    "new_input",
    "new_meta",
    "new_input_hash",
    "now",
)


def update_queued(dialect: str) -> sa.Update:
    """A queued job becomes another job file's job of the same key (executed for many rows,
    `UPDATE_QUEUED`; its input and meta given as JSON text, as enqueueing gives them)."""

    def json_text(name: str) -> Any:
        text = sa.bindparam(name, type_=sa.Text)
        return sa.cast(text, sa.JSON) if dialect == "postgresql" else text

    return (
        sa.update(jobs)
        .where(jobs.c.id == sa.bindparam("job_id"), jobs.c.state == sa.bindparam("queued"))
        .values(
            idx=sa.bindparam("new_idx"),
            provider=sa.bindparam("new_provider"),
            model=sa.bindparam("new_model"),
            input=json_text("new_input"),
            meta=json_text("new_meta"),
            input_hash=sa.bindparam("new_input_hash"),
            updated_at=sa.bindparam("now"),
        )
    )


def recover_queued(name: str) -> Executable:
    """A queued job recorded as done from its provenance sidecars (executed per row)."""
    return (
        sa.update(jobs)
        .where(
            jobs.c.campaign == name,
            jobs.c.key == sa.bindparam("job_key"),
            jobs.c.state == State.QUEUED.value,
        )
        .values(
            state=State.DONE.value,
            attempts=1,
            remote_id=sa.bindparam("new_remote_id"),
            files=sa.bindparam("new_files", type_=sa.JSON),
            created_at=sa.func.coalesce(sa.bindparam("new_created_at"), jobs.c.created_at),
            submitted_at=sa.bindparam("new_submitted_at"),
            ready_at=sa.bindparam("new_ready_at"),
            finished_at=sa.bindparam("new_finished_at"),
            updated_at=sa.bindparam("now"),
        )
    )
