"""The one place that runs SQL: opens the database, migrates it, runs the statements.

Whether a database is fit to be opened (new, lost its tables, damaged, read-only) and how, is
`runner.store.health`'s and `runner.store.opening`'s. SQLite is opened in WAL mode with a busy
timeout, and every write transaction takes the write lock up front (BEGIN IMMEDIATE), so two
processes never deadlock upgrading a read lock; reads use a deferred BEGIN. The store is
synchronous: the async worker calls it from a worker thread. It never holds an API key; it
holds the name of the variable that does.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from runner import jsontext
from runner.bounds import clip
from runner.campaign import Campaign, CampaignSettings, JobSpec, ProviderConfig
from runner.clash import Clash, Followed, Moved
from runner.reconcile import Attempt
from runner.states import IN_FLIGHT, Change, Job, State
from runner.store import bulk, continuing, health, migrate, opening, queries
from runner.store.health import DatabaseError
from runner.store.schema import jobs, workers

ORPHANED_SUBMIT = (
    "the process submitting this job stopped before the provider's answer was saved; it may "
    "have been created and billed"
)


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    campaigns: list[str]
    started_at: float
    last_seen_at: float
    # While it stops, finishing what was paid for: {"reason", "since", "until", "grace"}
    # (epoch s; `runner.stopping.Stop.to_json`).
    stopping: dict[str, Any] | None = None


@dataclass(frozen=True)
class Spend:
    """A campaign's spending: reported costs, and jobs billed whose cost is not known yet."""

    known: float = 0.0  # the sum of the costs the provider reported
    unknown: int = 0  # jobs created (or about to be) without a reported cost
    last_cost: float | None = None  # the most recently reported cost of one job


@dataclass(frozen=True)
class EnqueueResult:
    added: int
    existing: int
    moved: Moved | None = None  # what --move-queued did
    recovered: int = 0  # jobs recorded as done from their sidecars


DB_ENV = "RUNNER_DB"


def resolve_db(db: str | None, jobfile: str | os.PathLike[str] | None = None) -> str:
    """--db, else $RUNNER_DB, else runner.db beside the job file, else ./runner.db."""
    if db:
        return db
    if os.environ.get(DB_ENV):
        return os.environ[DB_ENV]
    if jobfile is not None:
        return str(Path(jobfile).resolve().parent / "runner.db")
    return "runner.db"


def _migrate(engine: Engine, target: opening.Target) -> None:
    try:
        with opening.opening(target.path):
            migrate.upgrade(engine)
    except DatabaseError:
        raise
    except Exception as exc:
        raise DatabaseError(f"cannot open the database at {target.place.shown}: {exc}") from exc


# Commands check a SQLite file this size or smaller in full before using it (some 100,000
# jobs; 0.1 s): a bigger one costs a second or more for every page (20 s on a cold cache at
# 1,000,000 jobs), at every start of `run` or `work`, so they leave it to the pages they read
# and write, whose damage is reported all the same (one paragraph, exit 2). `doctor` and
# `db upgrade` always check in full.
READER_CHECK_BYTES = 64 * 1024 * 1024


def open_store(
    db: str,
    *,
    create: bool = True,
    before_create: Callable[[str], None] | None = None,
    check: bool | None = None,
) -> Store:
    """Open (and, when `create`, make) a database to write to, and bring its schema to the
    newest version. A database that lost its tables, is someone else's, is damaged (`check`:
    every page read first; None: when the file is at most READER_CHECK_BYTES) or cannot be
    written here raises DatabaseError, before anything is written. `before_create(where)` is
    called before a new one is made (and may refuse)."""
    target = opening.target(db)
    path = target.path
    if path is not None:
        size = target.size
        if check is None:
            check = (size or 0) <= READER_CHECK_BYTES
        if size is None and not create:
            raise opening.missing(target)
        if size == 0 and not create:
            raise DatabaseError(health.no_tables(target.place))
        if size:
            if opening.access_of(path) != "write":
                reason = opening.why_read_only(path)
                raise DatabaseError(health.read_only(target.place, reason))
            opening.refuse_unfit(target, opening.look(target, check=check))
        else:
            if before_create is not None:
                before_create(target.place.shown)
            opening.make_sqlite(target, migrate.upgrade)
    else:
        found = opening.look(target)
        opening.refuse_unfit(target, found)
        if found.kind == "new" and not create:
            raise DatabaseError(health.no_tables(target.place))
        if found.kind == "new" and before_create is not None:
            before_create(target.place.shown)
    engine = opening.make_engine(target)
    try:
        _migrate(engine, target)
    except BaseException:
        engine.dispose()
        raise
    return Store(engine)


def open_reader(db: str) -> Store:
    """Open an existing database to read it (`status`, `jobs`, `export`, `gallery`). Where it
    can be written it is opened as `open_store(create=False)` does; a read-only file or mount
    is read as it is (read-only, or immutable where SQLite could not keep its -wal beside it),
    and must then be at the newest schema."""
    target = opening.target(db)
    path = target.path
    if path is None:
        return open_store(db, create=False)
    size = target.size
    if size is None:
        raise opening.missing(target)
    if size == 0:
        raise DatabaseError(health.no_tables(target.place))
    access = opening.access_of(path)
    check = size <= READER_CHECK_BYTES
    if access == "write":
        return open_store(db, create=False, check=check)
    found = opening.look(target, access, check=check)
    opening.refuse_unfit(target, found)
    if found.revision != migrate.SCHEMA_REVISION:
        raise DatabaseError(
            f"the database at {target.place.shown} is at schema revision {found.revision}, "
            f"not {migrate.SCHEMA_REVISION}, and read-only here ({opening.why_read_only(path)}), "
            "so it cannot be upgraded: run `runner db upgrade --db PATH` where it can be "
            "written, or with an older runner."
        )
    return Store(opening.make_engine(target, access))


def peek_store(db: str, *, full_check: bool = True) -> Store | None:
    """Open an existing, current database to read it, creating, migrating and writing nothing
    (for `runner run --dry-run` and `runner doctor`). None when there is no runner database
    there yet. Without `full_check`, a big SQLite file is checked as `open_reader` does."""
    target = opening.target(db)
    path = target.path
    size = target.size
    if path is not None and not size:
        return None
    access = "read" if path is None else opening.access_of(path)
    check = full_check or (size or 0) <= READER_CHECK_BYTES
    found = opening.look(target, access, check=check)
    opening.refuse_unfit(target, found)
    if found.kind == "new":
        return None
    if found.revision != migrate.SCHEMA_REVISION:
        raise DatabaseError(
            f"the database at {target.place.shown} is at schema revision {found.revision}, "
            f"not {migrate.SCHEMA_REVISION}; run `runner db upgrade` (or a command that "
            "writes) first."
        )
    return Store(opening.make_engine(target, "read" if access == "write" else access))


def _row_to_job(row: Any) -> Job:
    m = row._mapping
    return Job(
        id=m["id"],
        campaign=m["campaign"],
        key=m["key"],
        index=m["idx"],
        provider=m["provider"],
        model=m["model"],
        input=m["input"],
        meta=m["meta"] or {},
        state=State(m["state"]),
        attempts=m["attempts"],
        polls=m["polls"],
        strikes=m["strikes"],
        url_refreshes=m["url_refreshes"],
        input_hash=m["input_hash"],
        remote_id=m["remote_id"],
        polling_url=m["polling_url"],
        output_urls=m["output_urls"] or [],
        files=m["files"] or [],
        error=m["error"],
        cost=m["cost"],
        next_attempt_at=m["next_attempt_at"],
        deadline_at=m["deadline_at"],
        submitted_at=m["submitted_at"],
        ready_at=m["ready_at"],
        generation_s=m["generation_s"],
        bugs=m["bugs"],
        finished_at=m["finished_at"],
        lease_owner=m["lease_owner"],
        lease_expires_at=m["lease_expires_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
    )


class Store:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.where = opening.place_of(
            engine.url
        ).shown  # for messages: the path, or the URL without its password

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def write(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect().execution_options(readonly=True) as conn, conn.begin():
            yield conn

    # -- campaigns -------------------------------------------------------------------------

    def enqueue(
        self,
        campaign: Campaign,
        now: float | None = None,
        *,
        move_queued: bool = False,
        live_since: float | None = None,
        recovered: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> EnqueueResult:
        """Add the campaign's new jobs in one transaction; jobs already there are left alone.

        A job file that clashes with the campaign of its name (another provider account, other
        models: `runner.clash`) raises CampaignClash, and nothing is written; `move_queued`
        makes the queued jobs the file's instead (refused with CampaignBusy while a worker seen
        since `live_since` works the campaign). `recovered` (key -> values, from
        `runner.recovery`) records those of the file's jobs that are queued as done."""
        now = time.time() if now is None else now
        name = campaign.settings.name
        count = sa.select(sa.func.count()).where(jobs.c.campaign == name)
        with self.write() as conn:
            continued = continuing.continue_campaign(
                conn,
                campaign,
                now,
                move_queued=move_queued,
                live_since=now - 60.0 if live_since is None else live_since,
            )
            conn.execute(queries.upsert_campaign(self.dialect, name, continued.settings, now))
            before = conn.execute(count).scalar_one()
            insert = queries.insert_jobs_ignoring_existing(self.dialect)
            with _page_cache_for_bulk_writes(conn, self.dialect):
                for chunk in _chunks(campaign.jobs, 5000):
                    bulk.execute_many(conn, insert, _ROW_COLUMNS, _job_rows(campaign, chunk, now))
            after = conn.execute(count).scalar_one()
            done = continuing.recover(conn, name, recovered or {}, now)
        added = after - before
        return EnqueueResult(
            added=added, existing=len(campaign.jobs) - added, moved=continued.moved, recovered=done
        )

    def clash_of(self, campaign: Campaign) -> tuple[Clash, int] | None:
        """How the job file clashes with the campaign of its name, and how many queued jobs
        that campaign has (`enqueue` would refuse it); None when it does not. Writes nothing."""
        with self.read() as conn:
            try:
                continuing.continue_campaign(
                    conn, campaign, time.time(), move_queued=False, live_since=0.0
                )
            except continuing.CampaignClash as clash:
                return clash.clash, clash.queued
        return None

    def followed(self, name: str) -> list[Followed]:
        """The campaign's jobs created at accounts it used before a move (`runner.clash`)."""
        with self.read() as conn:
            row = conn.execute(queries.campaign_row(name)).first()
        return [] if row is None else continuing.followed(row._mapping["settings"])

    def has_any_job(self, name: str) -> bool:
        return self.has_jobs(name, list(State))

    def count_new(self, campaign: Campaign) -> int:
        """How many of the campaign's jobs are not in the database yet (for --dry-run)."""
        keys = [spec.key for spec in campaign.jobs]
        seen = 0
        with self.read() as conn:
            for chunk in _chunks(keys, 500):
                stmt = queries.existing_keys(campaign.settings.name, chunk)
                seen += len(conn.execute(stmt).all())
        return len(keys) - seen

    def settings(self, name: str) -> CampaignSettings:
        with self.read() as conn:
            row = conn.execute(queries.campaign_row(name)).first()
        if row is None:
            raise DatabaseError(f"no campaign named {name!r} in this database")
        return CampaignSettings.from_dict(row._mapping["settings"])

    def halted(self, name: str) -> str | None:
        with self.read() as conn:
            row = conn.execute(queries.campaign_row(name)).first()
        return None if row is None else row._mapping["halted"]

    def set_halted(self, name: str, reason: str | None, now: float | None = None) -> None:
        with self.write() as conn:
            conn.execute(queries.set_halted(name, reason, time.time() if now is None else now))

    def campaign_names(self) -> list[str]:
        with self.read() as conn:
            return list(conn.execute(queries.campaign_names()).scalars())

    # -- the worker's statements -----------------------------------------------------------

    def claim(
        self,
        state: State,
        campaigns: Iterable[str],
        *,
        owner: str,
        now: float,
        lease_seconds: float,
        limit: int,
        oldest_ready_first: bool = False,
    ) -> list[Job]:
        if limit <= 0:
            return []
        stmt, params = queries.claim(
            self.dialect,
            state=state,
            campaigns_=campaigns,
            owner=owner,
            now=now,
            lease_until=now + lease_seconds,
            limit=limit,
            oldest_ready_first=oldest_ready_first,
        )
        with self.write() as conn:
            return [_row_to_job(row) for row in conn.execute(stmt, params)]

    def claim_submits(
        self,
        campaigns: Iterable[str],
        *,
        owner: str,
        now: float,
        lease_seconds: float,
        plan: Callable[[dict[str, int]], dict[str, int]],
        lock: str,
    ) -> list[Job]:
        """Claim queued jobs to submit without ever taking more provider slots than are free,
        however many workers share the database.

        The slots held per campaign (jobs in flight, plus queued jobs some worker has claimed to
        submit) are counted and the claim is made in one transaction under one lock per
        provider account (`lock`): the write lock on SQLite, an advisory lock on PostgreSQL.
        So two workers never both see the same free slot. `plan(held)` says how many jobs to
        claim per campaign.
        """
        names = list(campaigns)
        claimed: list[Job] = []
        with self.write() as conn:
            if self.dialect == "postgresql":
                lock_sql = sa.text("SELECT pg_advisory_xact_lock(:key)")
                conn.execute(lock_sql, {"key": _lock_key(lock)})
            held: Counter[str] = Counter()
            for name, n in conn.execute(queries.count_slots_held(self.dialect, names, now)):
                held[name] += int(n)
            for name, n in plan({name: held[name] for name in names}).items():
                if n <= 0:
                    continue
                stmt, params = queries.claim(
                    self.dialect,
                    state=State.QUEUED,
                    campaigns_=[name],
                    owner=owner,
                    now=now,
                    lease_until=now + lease_seconds,
                    limit=n,
                )
                claimed.extend(_row_to_job(row) for row in conn.execute(stmt, params))
        return claimed

    def apply(self, change: Change, *, owner: str | None, release: bool = True) -> bool:
        """Write a state change; False when the job was no longer where the change expected."""
        return self.apply_many([(change, release)], owner=owner)[0]

    def apply_many(
        self, changes: Sequence[tuple[Change, bool]], *, owner: str | None
    ) -> list[bool]:
        """Write the state changes of several jobs in one transaction (one commit), each
        releasing its job's lease or not; per change, whether its job was still where the
        change expected (a job that was not is left as it is, the others are written)."""
        now = time.time()
        with self.write() as conn:
            if self.dialect == "postgresql":
                # Two workers giving two jobs one prediction must not both see it free: each
                # prediction's lock, in one order for all (no deadlock), until the commit.
                # (SQLite's writers take turns already: BEGIN IMMEDIATE.)
                given = {c.values.get("remote_id") for c, _ in changes} - {None}
                for key in sorted(_lock_key(f"remote:{rid}") for rid in given):
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            return [_write_change(conn, c, owner, release, now) == 1 for c, release in changes]

    def release(self, job_id: int, owner: str, due_at: float | None = None) -> None:
        """Give a leased job back unchanged (optionally not due before `due_at`)."""
        with self.write() as conn:
            conn.execute(queries.release_lease(job_id, owner, due_at))

    def heartbeat(self, owner: str, lease_until: float, now: float) -> None:
        """Renew the leases of every job `owner` holds, and say the worker is alive."""
        with self.write() as conn:
            conn.execute(queries.renew_leases(owner, lease_until))
            conn.execute(queries.touch_worker(owner, now))

    # -- workers ---------------------------------------------------------------------------

    def register_worker(
        self, worker_id: str, host: str, pid: int, campaigns: list[str], now: float
    ) -> None:
        row = {
            "id": worker_id,
            "host": host,
            "pid": pid,
            "campaigns": campaigns,
            "started_at": now,
            "last_seen_at": now,
        }
        with self.write() as conn:
            conn.execute(queries.upsert_worker(self.dialect, row))

    def unregister_worker(self, worker_id: str) -> None:
        with self.write() as conn:
            conn.execute(queries.delete_workers([worker_id]))

    def forget_workers(self, ids: Sequence[str] = (), unseen_since: float | None = None) -> None:
        """Drop the rows of workers known to be gone, or not seen since a time."""
        with self.write() as conn:
            if ids:
                conn.execute(queries.delete_workers(ids))
            if unseen_since is not None:
                conn.execute(queries.delete_workers_unseen_since(unseen_since))

    def workers(self) -> list[WorkerInfo]:
        with self.read() as conn:
            rows = conn.execute(queries.select_workers()).all()
        return [WorkerInfo(**{c.name: row._mapping[c.name] for c in workers.c}) for row in rows]

    def set_worker_stopping(self, worker_id: str, stopping: dict[str, Any] | None) -> None:
        """Say (or stop saying) that a worker is stopping, for `runner status`."""
        with self.write() as conn:
            conn.execute(queries.set_worker_stopping(worker_id, stopping))

    # -- provider accounts -------------------------------------------------------------------

    def account_facts(self, key: str) -> dict[str, Any]:
        """What was learned about a provider account (empty when nothing yet)."""
        with self.read() as conn:
            facts = conn.execute(queries.account_facts(key)).scalar()
        return dict(facts) if isinstance(facts, dict) else {}

    def note_unsupported(self, key: str, route: str, now: float | None = None) -> list[str]:
        """Record that a provider account does not serve `route` (it answered 404 or 405);
        every route so recorded."""

        def add(known: dict[str, Any]) -> dict[str, Any]:
            return {**known, "unsupported": sorted({*known.get("unsupported", []), route})}

        return list(self._update_account(key, add, now)["unsupported"])

    def learn_account(self, key: str, facts: dict[str, Any], now: float | None = None) -> None:
        """Lay `facts` over what is known of a provider account."""
        self._update_account(key, lambda known: {**known, **facts}, now)

    def _update_account(
        self,
        key: str,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        now: float | None,
    ) -> dict[str, Any]:
        """Read, change and write an account's facts in one transaction (on PostgreSQL under
        the account's advisory lock, so two workers' facts are both kept)."""
        with self.write() as conn:
            if self.dialect == "postgresql":
                lock_sql = sa.text("SELECT pg_advisory_xact_lock(:key)")
                conn.execute(lock_sql, {"key": _lock_key("account:" + key)})
            known = conn.execute(queries.account_facts(key)).scalar()
            facts = change(dict(known) if isinstance(known, dict) else {})
            stamp = time.time() if now is None else now
            conn.execute(queries.upsert_account(self.dialect, key, facts, stamp))
        return facts

    def release_leases_of(self, is_dead: Any) -> int:
        """Expire leases whose owner `is_dead(owner)` says is gone (a killed process)."""
        with self.read() as conn:
            owners = list(conn.execute(queries.lease_owners()).scalars())
        dead = [owner for owner in owners if is_dead(owner)]
        if not dead:
            return 0
        with self.write() as conn:
            return int(conn.execute(queries.release_leases(dead)).rowcount)

    def mark_orphaned_submits(self, now: float) -> int:
        with self.write() as conn:
            result = conn.execute(queries.orphaned_submits(now, ORPHANED_SUBMIT))
            return int(result.rowcount)

    def recent_durations(self, provider: str, model: str, limit: int = 500) -> list[float]:
        with self.read() as conn:
            stmt = queries.recent_durations(provider, model, limit)
            return [float(v) for v in conn.execute(stmt).scalars() if v is not None]

    def find_done(self, input_hash: str, exclude_id: int) -> Job | None:
        """A done job, in any campaign, that generated exactly this input."""
        with self.read() as conn:
            row = conn.execute(queries.done_with_input(input_hash, exclude_id)).first()
        return None if row is None else _row_to_job(row)

    def reconcile_view(
        self, job: Job, account: tuple[str, str, str], candidates: Sequence[str] = ()
    ) -> tuple[list[Attempt], dict[str, str]]:
        """What `runner.reconcile.decide` needs from the database, read at one moment: the jobs
        on `job`'s provider account with its input whose create may have made a prediction no
        job holds yet (`job` among them), and which of the `candidates` some job holds (id ->
        "campaign/key")."""
        with self.read() as conn:
            names = [
                name
                for name, settings in conn.execute(queries.campaign_settings())
                if ProviderConfig.from_dict(settings["provider"]).account == account
            ]
            attempts: list[Attempt] = []
            if job.input_hash is not None:
                rows = conn.execute(queries.unresolved_attempts(job.input_hash, names))
                attempts = [
                    Attempt(int(i), float(at or 0.0), state == State.SUBMITTING.value)
                    for i, at, state in rows
                    if i != job.id
                ]
            attempts.append(Attempt(job.id, job.submitted_at or 0.0))
            return attempts, _holders(conn, candidates)

    def holders(self, remote_ids: Sequence[str]) -> dict[str, str]:
        """Which of these predictions some job holds: id -> "campaign/key"."""
        with self.read() as conn:
            return _holders(conn, remote_ids)

    def hint_due(self, remote_id: str, now: float) -> bool:
        """Make the running job of this prediction due at `now` (a webhook's hint); whether
        one was moved."""
        with self.write() as conn:
            return bool(conn.execute(queries.hint_due(remote_id, now)).rowcount)

    def due_by_state(
        self, campaigns: Iterable[str], states: Iterable[State], now: float
    ) -> dict[State, float]:
        """The earliest due time of each state among the jobs no live lease holds."""
        with self.read() as conn:
            statement = queries.due_by_state(tuple(campaigns), tuple(states))
            rows = conn.execute(statement, {"now": now})
            return {State(state): float(due) for state, due in rows if due is not None}

    # -- reading ---------------------------------------------------------------------------

    def counts(self, campaign: str | None = None) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        with self.read() as conn:
            for name, state, n in conn.execute(queries.count_by_state(campaign)):
                out.setdefault(name, {})[state] = n
        return out

    def has_jobs(self, campaign: str, states: Iterable[State]) -> bool:
        """Whether any job of `campaign` is in one of `states`: a seek per state, where
        `counts` reads every job (130 ms with 1,000,000 queued)."""
        with self.read() as conn:
            return conn.execute(queries.any_job_in(campaign, tuple(states))).first() is not None

    def count_created_by(
        self, campaigns: Iterable[str], states: Iterable[State], before: float
    ) -> int:
        """Jobs of `campaigns` in `states` whose create was sent at or before `before` (see
        `runner.stopping`: what a worker that stopped then still waits for)."""
        names, wanted = list(campaigns), list(states)
        if not names:
            return 0
        with self.read() as conn:
            return int(conn.execute(queries.count_created_by(names, wanted, before)).scalar_one())

    def costs(self, campaign: str | None = None) -> dict[str, float]:
        """What each campaign's jobs cost, where the provider reported it."""
        with self.read() as conn:
            rows = conn.execute(queries.cost_by_campaign(campaign))
            return {name: float(total) for name, total in rows if total is not None}

    def spend(self, campaign: str, now: float) -> Spend:
        """What a campaign has spent, for its budget (see `runner.budget`)."""
        # Created, or maybe created: each of these may have been billed.
        billed = IN_FLIGHT | {State.DOWNLOADING, State.DONE, State.UNCERTAIN}
        with self.read() as conn:
            known, unknown = conn.execute(queries.spend(self.dialect, campaign, billed, now)).one()
            last = conn.execute(queries.last_cost(campaign)).scalar()
        return Spend(
            known=float(known or 0.0),
            unknown=int(unknown or 0),
            last_cost=None if last is None else float(last),
        )

    def average_done_cost(self, models: Sequence[str]) -> dict[str, float]:
        """Per model, the average reported cost of done jobs in this database."""
        with self.read() as conn:
            rows = conn.execute(queries.average_done_cost(models))
            return {model: float(avg) for model, avg in rows if avg is not None}

    def finished_since(
        self, since: float, campaign: str | None = None
    ) -> dict[str, tuple[int, float]]:
        """Jobs done since a time per campaign, and when the first of them finished."""
        with self.read() as conn:
            rows = conn.execute(queries.finished_since(since, campaign))
            return {name: (int(n), float(first)) for name, n, first in rows}

    def recent_problems(
        self, campaigns: Iterable[str], states: Iterable[State], limit: int = 3
    ) -> list[dict[str, Any]]:
        """The latest jobs that ended in one of `states`, newest first (campaign, key, state,
        error)."""
        with self.read() as conn:
            rows = conn.execute(queries.recent_in_states(campaigns, states, limit))
            return [dict(row._mapping) for row in rows]

    def job(self, job_id: int) -> Job | None:
        """One job as the database holds it now."""
        with self.read() as conn:
            row = conn.execute(queries.select_job(job_id)).first()
        return None if row is None else _row_to_job(row)

    def jobs(
        self, campaign: str, states: Iterable[State] | None = None, batch: int = 1000
    ) -> Iterator[Job]:
        """Every job of a campaign in id order, read in batches (memory stays flat)."""
        wanted = None if states is None else list(states)
        after = 0
        while True:
            with self.read() as conn:
                rows = conn.execute(queries.select_jobs(campaign, wanted, after, batch)).all()
            if not rows:
                return
            for row in rows:
                yield _row_to_job(row)
            after = rows[-1]._mapping["id"]

    def retry(self, campaign: str, states: Iterable[State], now: float | None = None) -> int:
        """Send jobs in `states` back to the queue (the user's decision). Returns how many."""
        from runner.states import user_retry

        now = time.time() if now is None else now
        moved = 0
        with self.write() as conn:
            stmt = sa.select(jobs).where(
                jobs.c.campaign == campaign,
                jobs.c.state.in_([s.value for s in states]),
                queries.unleased(now),
            )
            for row in conn.execute(stmt).all():
                change = user_retry(_row_to_job(row), now)
                moved += _write_change(conn, change, None, False, now)
        return moved


def _holders(conn: Connection, remote_ids: Sequence[str]) -> dict[str, str]:
    held: dict[str, str] = {}
    for chunk in _chunks(list(remote_ids), 500):
        for remote_id, campaign, key in conn.execute(queries.holders(chunk)):
            held[remote_id] = f"{campaign}/{key}"
    return held


def _write_change(
    conn: Connection, change: Change, owner: str | None, release: bool, now: float
) -> int:
    """Write one state change (releasing the job's lease or not); the rows it moved (0 when
    the job was not where the change expected, or not `owner`'s)."""
    values = {"state": change.to.value, **change.values}
    if values.get("error") is not None:
        # every error text, a provider's words or ours, is stored within one size
        values["error"] = clip(str(values["error"]))
    if change.to is not change.expect:
        values.setdefault("bugs", 0)  # a job that moves on starts its count of bugs again
    if release:
        values.update(lease_owner=None, lease_expires_at=None)
    sql, params = queries.apply_change(
        conn.dialect.name, change.job_id, change.expect, owner, values, now
    )
    driver = conn.connection.driver_connection  # sqlite3's or psycopg's own connection
    assert driver is not None
    try:
        return int(driver.execute(sql, params).rowcount)
    except Exception as exc:  # below SQLAlchemy, so its handle_error does not see this
        text = health.explain(str(exc), opening.place_of(conn.engine.url))
        if text is None:
            raise
        raise DatabaseError(text) from exc


# The columns of `_job_rows`, in the order SQLite's INSERT takes them (no reordering there).
_ROW_COLUMNS = (
    "campaign",
    "key",
    "idx",
    "provider",
    "model",
    "input_json",
    "meta_json",
    "state",
    "next_attempt_at",
    "created_at",
    "updated_at",
    "input_hash",
)


def _job_rows(campaign: Campaign, specs: Sequence[JobSpec], now: float) -> list[tuple[Any, ...]]:
    """The rows of `specs` for `queries.insert_jobs_ignoring_existing`, JSON already encoded,
    as tuples of the `_ROW_COLUMNS`.

    The JSON text differs from what the JSON column type would have written in spacing only, so
    rows read the same whichever way they were stored.
    """
    name = campaign.settings.name
    provider = campaign.settings.provider.name
    queued = State.QUEUED.value
    dumps = jsontext.dumps
    return [
        (
            name,
            spec.key,
            spec.index,
            provider,
            spec.model,
            dumps(spec.input),
            dumps(spec.meta),
            queued,
            0.0,
            now,
            now,
            spec.fingerprint(provider),
        )
        for spec in specs
    ]


# Room for the key and fingerprint indexes of 100,000 jobs (13 MB) and what else is changed.
_BULK_CACHE_KIB = 32 * 1024


@contextmanager
def _page_cache_for_bulk_writes(conn: Connection, dialect: str) -> Iterator[None]:
    """On SQLite, a page cache big enough for many inserts into one transaction, meanwhile.

    Keys and fingerprints are hashes, so each new job lands at another place in their indexes.
    With the default cache (2 MB), SQLite writes those index pages out to the WAL again and
    again before the commit. Set back before the commit: the pages the inserts changed stay
    until then whatever the size, and are let go once written.
    """
    if dialect != "sqlite":
        yield
        return
    before = conn.exec_driver_sql("PRAGMA cache_size").scalar_one()
    conn.exec_driver_sql(f"PRAGMA cache_size=-{_BULK_CACHE_KIB}")  # negative: in KiB
    try:
        yield
    finally:
        conn.exec_driver_sql(f"PRAGMA cache_size={int(before)}")


def _lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
