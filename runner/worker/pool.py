"""The async worker: claims due jobs from the store and drives them through the providers.

One task group owns every task: a scheduler loop that claims work in batches, a heartbeat that
renews the leases of jobs in hand, and one short task per job in hand (bounded by the pool's
sizes, so the number of tasks never grows with the queue). Decisions come from `runner.states`;
this module only sequences I/O: persist, call, persist. It never branches on the provider: the
adapter behind the `Provider` protocol decides.

Stopping (`runner.stopping`): `request_stop(stop)` (`--max-runtime`, a first Ctrl-C) stops
claiming queued work at once; during the stop's grace the worker still claims, polls and
downloads every created job of its campaigns, and exits when none created by the stop is left
unsettled, or when the grace ends.
Cancelling the task group (the grace ending, a second Ctrl-C) interrupts the jobs in hand, and
each job's shielded cleanup still leaves the database consistent (an interrupted create is to be
reconciled, never taken as unsent).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio

from runner import reconcile, states
from runner.budget import allowance
from runner.campaign import CampaignSettings, ProviderConfig, Style
from runner.inputs import FileChangedError, has_files, materialize, sent_size
from runner.limits import CreateRate, Share
from runner.naming import job_fields, render_filename
from runner.polling import Timing, usable_progress
from runner.providers.base import ErrorKind, Handle, Provider, ProviderError
from runner.report.provenance import after_download
from runner.retry import RetryPolicy, lease_seconds, local_retry_wait, time_scale
from runner.saving import (
    PROBE_EVERY,
    Pause,
    SavePauses,
    describe,
    held_by,
    pause_warning,
    paused_campaigns,
    resume_message,
    scope_of,
)
from runner.states import SETTLED, Change, Halt, Job, Outcome, State
from runner.stopping import CREATED, Next, Stop, after_stop, expired_warning, notice
from runner.store import Store
from runner.store.store import WorkerInfo
from runner.worker.batch import GroupCommit
from runner.worker.bugs import bug_site, bug_text, bug_trace, key_of
from runner.worker.download import (
    DownloadError,
    Fetched,
    FileClient,
    SavedFile,
    copy_file,
    device_of,
    fetch,
    probe,
    sweep_stale_temps,
)
from runner.worker.liveness import owner_is_dead, pid_is_dead

log = logging.getLogger("runner.worker")
CLAIMABLE = (State.QUEUED, State.RUNNING, State.DOWNLOADING, State.RECONCILING)
COALESCE = 0.002  # seconds: finished tasks within this window share one round of claims
PROBE_FLOOR = 0.05  # seconds between probes even when waits are scaled to nothing
T = TypeVar("T")


@dataclass(frozen=True)
class PoolOptions:
    # Create calls at once (also bounded by each campaign's max in flight). With `Prefer: wait`
    # a create lasts as long as its generation, so this must cover a minute's creates of a
    # few seconds each, or it, not the provider, would set the pace.
    submitters: int = 128
    pollers: int = 32
    # Downloads at once. A finished result waits for one of these, and its URL is expiring:
    # at a few hundred results a second each download also waits its turn on the event loop
    # and the database, so 32 left results queued for seconds; 128 keeps that under a second.
    # Memory stays bounded: each holds about download.SPOOL bytes at most (128 x 1 MiB).
    downloaders: int = 128
    tick: float = 0.5  # longest sleep between looks at the queue
    # A dead worker's jobs return to the others when its lease runs out; the heartbeat renews
    # leases every quarter of it. Scaled down with every wait in tests, but never below 10 s.
    lease_seconds: float = field(default_factory=lease_seconds)
    sweep_every: float = 5.0


@dataclass
class Account:
    """One provider account: every campaign using it shares its create rate and slots."""

    bucket: CreateRate
    share: Share
    max_in_flight: int
    names: list[str] = field(default_factory=list)
    per_minute: float = 0.0  # the account's create rate, split between the live workers
    burst: float = 1.0  # ... and its creates at once
    key: str = ""  # names the account's lock for claims across processes

    def room(
        self,
        held: dict[str, int],
        local: int,
        limits: dict[str, int],
        caps: dict[str, int] | None = None,
    ) -> dict[str, int]:
        """How many queued jobs to claim per campaign, given the slots `held` in the database:
        at most `local` (this process's submitters and tokens), within the account's and each
        campaign's max in flight and budget (`caps`), shared by priority."""
        free = min(local, self.max_in_flight - sum(held.values()))
        room = {name: limits[name] - held.get(name, 0) for name in limits}
        for name, cap in (caps or {}).items():
            if name in room:
                room[name] = min(room[name], cap)
        return self.share.allocate(free, room)


@dataclass
class CampaignRuntime:
    settings: CampaignSettings
    provider: Provider
    account: Account
    halt: Halt | None = None
    # Jobs created at an account the campaign used before `--move-queued` (`runner.clash`),
    # by id, with that account and its provider: polled, reconciled and canceled there.
    earlier: dict[int, tuple[ProviderConfig, Provider]] = field(default_factory=dict)

    def provider_for(self, job: Job) -> Provider:
        found = self.earlier.get(job.id)
        return self.provider if found is None else found[1]

    def account_of(self, job: Job) -> tuple[str, str, str]:
        found = self.earlier.get(job.id)
        return (self.settings.provider if found is None else found[0]).account

    @property
    def submits(self) -> bool:
        return self.halt is None

    @property
    def follows(self) -> bool:
        """Still polls and downloads what it has in flight."""
        return self.halt is None or self.halt.creates_only


@dataclass
class RunReport:
    submitted: int = 0
    polled: int = 0
    downloaded: int = 0
    halted: dict[str, str] = field(default_factory=dict)
    stopped_early: bool = False
    stopped_by: str | None = None  # why a stop was asked for: a signal, or the max runtime


def make_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def creating(workers: Iterable[WorkerInfo], live_since: float) -> list[WorkerInfo]:
    """The workers that may create: seen since `live_since`, and not stopping (a stopping
    worker creates nothing any more: the others share its part of each create rate)."""
    return [w for w in workers if w.last_seen_at >= live_since and not w.stopping]


class Worker:
    def __init__(
        self,
        store: Store,
        campaigns: dict[str, CampaignRuntime],
        files: FileClient,
        options: PoolOptions | None = None,
        *,
        owner: str | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.campaigns = campaigns
        self.files = files
        self.options = options or PoolOptions()
        self.owner = owner or make_owner()
        self.rng = rng or random.Random()
        self.clock = clock
        scale = time_scale()
        self.policy = RetryPolicy(scale=scale)
        # Each campaign's own max_attempts (job file `limits`), the rest shared.
        self.policies = {
            name: dataclasses.replace(self.policy, max_attempts=rt.settings.limits.max_attempts)
            for name, rt in campaigns.items()
        }
        self.report = RunReport()
        self.in_hand = {"submit": 0, "poll": 0, "download": 0}
        self.stop: Stop | None = None  # once a stop was asked for
        self._stop = anyio.Event()
        # What a stop waits for: jobs created by then, or by the last create that was in hand
        # when it came (a create already under way when the stop came is followed too).
        self._created_by = float("-inf")
        self._wake = anyio.Event()
        self._db = anyio.CapacityLimiter(1)  # one store call at a time: SQLite writes serialise
        self._writes = GroupCommit(partial(self._db_call, self.store.apply_many, owner=self.owner))
        self._timings: dict[tuple[str, str], Timing] = {}
        self._token_at = float("inf")  # when the next create is allowed, if one had to wait
        # Per campaign, for budget.max_jobs: creates made in this run, and jobs held to submit.
        self.created: Counter[str] = Counter()
        self.submitting: Counter[str] = Counter()
        self._tasks: anyio.abc.TaskGroup | None = None  # where jobs in hand run
        # Backpressure from saving (runner.saving), in memory: another machine has another
        # disk. Each campaign's output file system, as last looked at when a save failed.
        self.pauses = SavePauses()
        self._devices: dict[str, int] = {}
        self._local_tries: Counter[int] = Counter()  # per job: saves failed locally in a row
        self._bug_sites: set[tuple[str, str]] = set()  # bugs whose traceback was logged

    # -- plumbing --------------------------------------------------------------------------

    async def _db_call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await anyio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self._db)

    async def _apply(self, change: Change, *, release: bool = True) -> bool:
        ok = await self._writes.apply(change, release)  # shielded: persisting is never cut short
        if not ok:
            log.warning("job %s changed under us; left as it is", change.job_id)
        return ok

    async def _release(self, job: Job, due_at: float | None = None) -> None:
        """Give a job back untouched: it keeps its state and is claimable again (at `due_at`)."""
        with anyio.CancelScope(shield=True):
            await self._db_call(self.store.release, job.id, self.owner, due_at)

    def wake(self) -> None:
        self._wake.set()

    async def hint(self, remote_id: str) -> bool:
        """A verified webhook says this prediction finished: make its running job due now and
        look at once. Only a hint: the job's normal poll confirms before anything changes.
        Whether a job was made due. (A hint that lands while that job's poll is in flight may
        be overtaken by the poll's answer; the job is then found on its schedule.)"""
        hinted = await self._db_call(self.store.hint_due, remote_id, self.clock())
        if hinted:
            self.wake()
        return hinted

    def request_stop(self, stop: Stop | None = None) -> None:
        """Stop claiming queued work; follow what was created as `stop` says (by default only
        the jobs in hand finish). The first stop asked for is the one kept."""
        if self.stop is None:
            self.stop = stop or Stop("asked", self.clock(), grace=0.0)
            self.report.stopped_by = self.stop.reason
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- main loop -------------------------------------------------------------------------

    async def run(self) -> RunReport:
        names = list(self.campaigns)
        await self._db_call(
            self.store.register_worker,
            self.owner,
            socket.gethostname(),
            os.getpid(),
            names,
            self.clock(),
        )
        try:
            await self._take_back_from_dead()
            for folder in {Path(r.settings.output_dir) for r in self.campaigns.values()}:
                await anyio.to_thread.run_sync(sweep_stale_temps, folder, pid_is_dead)
            async with anyio.create_task_group() as tg:
                self._tasks = tg
                tg.start_soon(self._heartbeat)
                try:
                    await self._schedule(tg, names)
                finally:
                    tg.cancel_scope.cancel()
                    self._tasks = None
        finally:
            with anyio.CancelScope(shield=True):
                await self._db_call(self.store.unregister_worker, self.owner)
        return self.report

    async def _take_back_from_dead(self) -> None:
        """Free at once the jobs of processes on this machine that died holding them (another
        machine's dead worker frees its jobs when its leases run out), and forget the worker
        rows of both."""
        dead = await self._db_call(
            self.store.release_leases_of, lambda o: owner_is_dead(o, self.owner)
        )
        if dead:
            log.info("took back %d jobs held by a stopped process", dead)
        rows = await self._db_call(self.store.workers)
        gone = [w.id for w in rows if owner_is_dead(w.id, self.owner)]
        forget_before = self.clock() - 4 * self.options.lease_seconds
        await self._db_call(self.store.forget_workers, gone, forget_before)

    async def _share_rates(self) -> None:
        """Split each account's create rate between the live workers that use it."""
        live_since = self.clock() - self.options.lease_seconds
        alive = creating(await self._db_call(self.store.workers), live_since)
        accounts = {id(r.account): r.account for r in self.campaigns.values()}
        for account in accounts.values():
            sharing = sum(1 for w in alive if set(w.campaigns) & set(account.names))
            if account.per_minute > 0:
                share = max(1, sharing)
                limit, burst = account.per_minute / share, account.burst / share
                account.bucket.resize(limit, burst, self.clock())

    async def _schedule(self, tg: anyio.abc.TaskGroup, names: list[str]) -> None:
        last_sweep = 0.0
        noted: Stop | None = None
        while True:
            now = self.clock()
            follow = [n for n in names if self.campaigns[n].follows]
            due: dict[State, float] = {}
            waiting: set[State] = set()
            stop = self.stop
            if stop is not None and noted is None:
                noted = stop
                last_sweep = 0.0  # a dead worker's creates are to be reconciled: sweep now
                await self._stopping(stop, follow)
            claims = CLAIMABLE if stop is None else stop.claims
            if claims:
                if now - last_sweep >= self.options.sweep_every:
                    await self._db_call(self.store.mark_orphaned_submits, now)
                    last_sweep = now
                if follow:
                    due = await self._db_call(self.store.due_by_state, follow, claims, now)
                    waiting = await self._claim_and_start(tg, follow, now, due)
            in_hand = sum(self.in_hand.values())
            if stop is not None:
                unsettled = False
                if stop.follows and in_hand == 0:  # with jobs in hand it waits anyway
                    unsettled = await self._left_to_save(stop, follow) > 0
                step = after_stop(stop, self.clock(), in_hand=in_hand, unsettled=unsettled)
                if step is not Next.WAIT:
                    self.report.stopped_early = True
                    if step is Next.OUT_OF_TIME:
                        await self._out_of_time(stop, follow)
                    return
            elif in_hand == 0 and await self._finished(names):
                return
            await self._sleep(due, waiting)

    async def _left_to_save(self, stop: Stop, names: list[str]) -> int:
        """Created jobs of `names` a stop still waits for (in hand or not, whoever holds them)."""
        created_by = max(stop.since, self._created_by)
        return await self._db_call(self.store.count_created_by, names, CREATED, created_by)

    async def _stopping(self, stop: Stop, names: list[str]) -> None:
        """Say that this worker stops, why, what for and until when: in the log, and in the
        database for `runner status` (which counts what is left from the jobs themselves)."""
        with anyio.CancelScope(shield=True):
            await self._db_call(self.store.set_worker_stopping, self.owner, stop.to_json())
            left = await self._left_to_save(stop, names)
        log.warning("%s", notice(stop, left, self.clock()))

    async def _out_of_time(self, stop: Stop, names: list[str]) -> None:
        left = await self._left_to_save(stop, names)
        if left:
            log.warning("%s", expired_warning(stop, left))

    async def _finished(self, names: list[str]) -> bool:
        return await self._db_call(self._nothing_left, names)

    def _nothing_left(self, names: Iterable[str]) -> bool:
        """Every campaign is settled, or halted with nothing it may still do."""
        for name in names:
            runtime = self.campaigns[name]
            if not runtime.follows:
                continue
            waiting = SETTLED if runtime.submits else SETTLED | {State.QUEUED}
            if self.store.has_jobs(name, [s for s in State if s not in waiting]):
                return False
        return True

    async def _sleep(self, due: dict[State, float], waiting: set[State]) -> None:
        """Until the next job falls due, a task finishes, or a tick passes; after a task
        finished, a short pause more, so that a burst of finished tasks is answered with one
        round of claims (a job falling due is looked at at once)."""
        self._wake = anyio.Event()
        targets = [at for state, at in due.items() if state not in waiting]
        if State.QUEUED in waiting:
            targets.append(self._token_at)
        self._token_at = float("inf")
        delay = self.options.tick
        if targets:
            delay = min(delay, max(0.0, min(targets) - self.clock()))
        if delay > 0:
            with anyio.move_on_after(delay):
                await self._wake.wait()
        # A task finished: others finishing with it share the round. Or something is due
        # still (another worker claimed it first, or more than this round took): no spinning.
        if self._wake.is_set() or delay <= 0:
            await anyio.sleep(COALESCE)

    async def _claim_and_start(
        self, tg: anyio.abc.TaskGroup, active: list[str], now: float, due: dict[State, float]
    ) -> set[State]:
        """Claim what is due and there is room for; return the states left waiting for room."""
        opts = self.options
        claim = partial(
            self.store.claim, owner=self.owner, now=now, lease_seconds=opts.lease_seconds
        )
        waiting: set[State] = set()

        def is_due(state: State) -> bool:
            return due.get(state, float("inf")) <= now

        # Downloads first: a finished result is paid for and its URL is about to expire.
        kinds = (
            (State.DOWNLOADING, "download", opts.downloaders, self._download),
            (State.RUNNING, "poll", opts.pollers, self._poll),
            (State.RECONCILING, "poll", opts.pollers, self._reconcile),
        )
        for state, kind, capacity, handler in kinds:
            if not is_due(state):
                continue
            free = capacity - self.in_hand[kind]
            if free <= 0:
                waiting.add(state)
                continue
            # Downloads oldest result first: its signed URL is the first to expire.
            oldest = kind == "download"
            for job in await self._db_call(
                claim, state, active, limit=free, oldest_ready_first=oldest
            ):
                self._start(tg, kind, handler, job)
        if not is_due(State.QUEUED):
            return waiting
        accounts = {id(self.campaigns[n].account): self.campaigns[n].account for n in active}
        held = paused_campaigns(self._devices, self.pauses.by_scope) if self.pauses else {}
        for account in accounts.values():
            names = [
                n
                for n in account.names
                if n in active and self.campaigns[n].submits and n not in held
            ]
            tokens = account.bucket.available(now)
            if tokens <= 0:  # look again as soon as the rate allows, not a tick later
                self._token_at = min(self._token_at, account.bucket.next_token_at(now))
            local = min(opts.submitters - self.in_hand["submit"], tokens)
            if names and local > 0:  # budgets are read only when something could be claimed
                caps = await self._budget_caps(names, now)
                names = [n for n in names if self.campaigns[n].submits]
            if not names or local <= 0:
                waiting.add(State.QUEUED)  # a token or a submitter frees up later
                continue
            limits = {n: self.campaigns[n].settings.limits.max_in_flight for n in names}
            claimed = await self._db_call(
                self.store.claim_submits,
                names,
                owner=self.owner,
                now=now,
                lease_seconds=opts.lease_seconds,
                plan=partial(account.room, local=local, limits=limits, caps=caps),
                lock=account.key,
            )
            if not claimed:
                waiting.add(State.QUEUED)  # no free slot: one frees up later, a tick or a wake
            for job in claimed:
                account.bucket.take(now)
                self.submitting[job.campaign] += 1
                self._start(tg, "submit", self._submit, job)
        return waiting

    async def _budget_caps(self, names: list[str], now: float) -> dict[str, int]:
        """Creates each campaign with a budget may still claim; pauses those at their limit."""
        caps: dict[str, int] = {}
        for name in names:
            budget = self.campaigns[name].settings.budget
            if budget.max_jobs is None and budget.max_cost is None:
                continue
            spend = None
            if budget.max_cost is not None:
                spend = await self._db_call(self.store.spend, name, now)
            allowed = allowance(name, budget, spend, self.created[name], self.submitting[name])
            if allowed.paused is not None:
                await self._halt(name, Halt(allowed.paused, creates_only=True))
            elif allowed.room is not None:
                caps[name] = allowed.room
        return caps

    def _start(
        self, tg: anyio.abc.TaskGroup, kind: str, fn: Callable[[Job], Any], job: Job
    ) -> None:
        self.in_hand[kind] += 1

        async def run() -> None:
            try:
                await fn(job)
            except Exception as exc:  # a bug must not take the other jobs down, nor spin on one
                with anyio.CancelScope(shield=True):
                    await self._bug(job, kind, exc)
            finally:
                self.in_hand[kind] -= 1
                if kind == "submit":
                    self.submitting[job.campaign] -= 1
                self.wake()

        tg.start_soon(run)

    async def _bug(self, job: Job, kind: str, exc: Exception) -> None:
        """A job's handler raised something unexpected: retry it a few times, then give it up
        (`states.on_bug`), with one log line each time and the traceback only the first time
        that bug is seen (every time at -v). Should even that fail (the database is gone), the
        job's lease runs out and it is taken back then."""
        secrets = key_of(self.campaigns[job.campaign].settings)
        text = bug_text(exc, secrets)
        site = bug_site(exc)
        trace = ""
        if site not in self._bug_sites or log.isEnabledFor(logging.DEBUG):
            self._bug_sites.add(site)
            trace = "\n" + bug_trace(exc, secrets)
        try:
            fresh = await self._db_call(self.store.job, job.id)
            change = None
            if fresh is not None and fresh.lease_owner == self.owner:
                change = states.on_bug(fresh, text, self.clock(), self.policy, self.rng)
            if change is None:
                log.error("unexpected error on job %s (%s): %s%s", job.key, kind, text, trace)
                await self._release(job)
                return
            if change.to is change.expect:
                wait = max(0.0, change.values["next_attempt_at"] - self.clock())
                log.warning(
                    "unexpected error on job %s (%s), %d of %d allowed; trying again in %.1fs: "
                    "%s%s",
                    job.key,
                    kind,
                    change.values["bugs"],
                    states.MAX_BUGS,
                    wait,
                    text,
                    trace,
                )
            else:
                log.error(
                    "unexpected error on job %s (%s); it is now %s: %s%s",
                    job.key,
                    kind,
                    change.to,
                    change.values.get("error"),
                    trace,
                )
            await self._apply(change)
        except Exception as again:
            log.error(
                "unexpected error on job %s (%s): %s; and it could not be recorded (%s): the job "
                "is taken back when its lease runs out%s",
                job.key,
                kind,
                text,
                bug_text(again, secrets),
                trace,
            )

    async def _heartbeat(self) -> None:
        interval = self.options.lease_seconds / 4
        while True:
            await self._share_rates()
            await anyio.sleep(interval)
            now = self.clock()
            await self._db_call(
                self.store.heartbeat, self.owner, now + self.options.lease_seconds, now
            )
            await self._take_back_from_dead()

    async def _settle(self, job: Job, outcome: Outcome) -> bool:
        """Write the outcome of a look at a job. A result found ready is downloaded at once by
        a task of its own when a downloader is free: the job keeps its lease, instead of going
        back to the queue to be claimed again in the next round."""
        change = outcome.change
        tasks = self._tasks
        chain = (
            change.to is State.DOWNLOADING
            and tasks is not None
            and self.in_hand["download"] < self.options.downloaders
        )
        if chain:
            self.in_hand["download"] += 1  # the slot is held while the change is written
        try:
            ok = await self._apply(change, release=not chain)
        finally:
            if chain:
                self.in_hand["download"] -= 1
        if chain and ok and tasks is not None:
            self._start(tasks, "download", self._download, states.applied(job, change))
        elif change.to is State.DOWNLOADING:
            self.wake()  # the scheduler claims it
        if outcome.halt is not None:
            await self._halt(job.campaign, outcome.halt)
        return ok

    async def _halt(self, name: str, halt: Halt) -> None:
        """Stop a campaign's creates (or everything), here and in the database for `status`."""
        runtime = self.campaigns[name]
        if runtime.halt is None or not halt.creates_only:
            runtime.halt = halt
            self.report.halted[name] = halt.reason
            log.error("campaign %s stopped: %s", name, halt.reason)
            with anyio.CancelScope(shield=True):
                await self._db_call(self.store.set_halted, name, halt.reason)

    async def _timing(self, job: Job) -> Timing:
        """The model's learned generation times, read from finished jobs the first time."""
        key = (job.provider, job.model)
        if key not in self._timings:
            durations = await self._db_call(self.store.recent_durations, *key)
            self._timings.setdefault(key, Timing.of(reversed(durations)))
        return self._timings[key]

    def _learn(self, job: Job, change: Change, progress: float | None) -> None:
        timing = self._timings.get((job.provider, job.model))
        if timing is None:
            return
        if usable_progress(progress):
            timing.reports_progress = True
        generation = change.values.get("generation_s")
        if change.to is State.DOWNLOADING and generation is not None:
            timing.add(generation)

    # -- one job ---------------------------------------------------------------------------

    async def _submit(self, job: Job) -> None:
        """Create the job's prediction. Its create was claimed from the account's rate: the
        claim becomes a send just before the request goes out, or is given up."""
        rate = self.campaigns[job.campaign].account.bucket
        sent = False

        def sending() -> None:
            nonlocal sent
            sent = True
            rate.sending(self.clock())

        try:
            if self.stopping:  # claimed just before a stop: nothing was sent, nothing is paid
                await self._release(job)
                return
            await self._create(job, sending)
        finally:
            if not sent:
                rate.unclaimed()
            elif self.stopping:
                self._created_by = self.clock()

    async def _create(self, job: Job, sending: Callable[[], None]) -> None:
        runtime = self.campaigns[job.campaign]
        now = self.clock()
        if job.deadline_at is not None and now > job.deadline_at:
            await self._apply(states.on_deadline(job, now))
            return
        if states.can_reuse(job) and await self._reuse(job):
            return
        try:
            body = await _provider_body(job, runtime.settings.provider.style)
        except FileChangedError as error:
            await self._apply(states.on_input_gone(job, now, str(error)))
            return
        begin = states.begin_submit(job, now, runtime.settings.deadline_seconds)
        if not await self._apply(begin, release=False):
            return
        job = states.applied(job, begin)
        # Cancel-After goes out only for the user's own deadline, not the default one.
        remaining = (
            states.remaining_deadline(job, now) if runtime.settings.deadline_seconds else None
        )
        try:
            sending()
            submission = await runtime.provider.create(job.model, body, deadline_seconds=remaining)
        except ProviderError as error:
            policy = self.policies[job.campaign]
            outcome = states.on_create_error(job, error, self.clock(), policy, self.rng)
            if error.kind is ErrorKind.RATE_LIMITED:
                # The whole account is throttled, not just this job: slow every create down.
                runtime.account.bucket.throttled(self.clock(), error.retry_after)
            log.info("create %s: %s -> %s", job.key, error, outcome.change.to)
        except Exception:
            raise  # a bug: `_bug` reconciles it, the job still ours
        except BaseException:
            # Cancelled (second Ctrl-C) while the request may have been out: the provider
            # may have created and billed it. Never resend blindly.
            with anyio.CancelScope(shield=True):
                await self._apply(
                    states.to_reconcile(job, self.clock(), "interrupted while creating")
                )
            raise
        else:
            self.report.submitted += 1
            self.created[job.campaign] += 1
            runtime.account.bucket.accepted()
            timing = await self._timing(job)
            outcome = states.on_created(job, submission, self.clock(), self.rng, timing)
            self._learn(job, outcome.change, submission.status.progress)
            if not await self._settle(job, outcome):
                await self._taken(job, submission.handle.remote_id)
            return
        await self._settle(job, outcome)

    async def _taken(self, job: Job, remote_id: str) -> None:
        """A create's answer could not be written. When another job holds its prediction (the
        database refuses a second holder), this job cannot simply take it: say so."""
        holder = (await self._db_call(self.store.holders, [remote_id])).get(remote_id)
        if holder is not None and holder != f"{job.campaign}/{job.key}":
            log.error("job %s: its prediction %s is held by job %s", job.key, remote_id, holder)
            await self._apply(states.on_prediction_taken(job, remote_id, holder))

    async def _poll(self, job: Job) -> None:
        runtime = self.campaigns[job.campaign]
        provider = runtime.provider_for(job)
        now = self.clock()
        if job.deadline_at is not None and now > job.deadline_at:
            if provider.supports_cancel and job.remote_id:
                try:
                    await provider.cancel(Handle(job.remote_id, job.polling_url))
                except ProviderError as error:
                    log.info("cancel of %s after its deadline failed: %s", job.key, error)
                    if error.kind is ErrorKind.UNSUPPORTED and job.id not in runtime.earlier:
                        await self.note_unsupported(job.campaign, "cancel", error)
            await self._apply(states.on_deadline(job, self.clock()))
            return
        assert job.remote_id is not None
        try:
            # the answer may show the job's input (Replicate's does): it is allowed that much more
            handle = Handle(job.remote_id, job.polling_url, echo=sent_size(job.input))
            status = await provider.poll(handle)
        except ProviderError as error:
            outcome = states.on_poll_error(job, error, self.clock(), self.policy, self.rng)
        except Exception:
            raise  # a bug: `_bug` decides, the job still ours
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._release(job)
            raise
        else:
            self.report.polled += 1
            timing = await self._timing(job)
            outcome = states.on_status(job, status, self.clock(), self.rng, timing)
            self._learn(job, outcome.change, status.progress)
            if status.phase.value == "unknown":
                log.warning("job %s: unknown status %r, polling on", job.key, status.raw_status)
        await self._settle(job, outcome)

    async def _reuse(self, job: Job) -> bool:
        """Take the files of a done job with the very same input instead of paying again.
        Whether the job is dealt with: reused, or given back while its files cannot be written."""
        if job.input_hash is None:
            return False
        source = await self._db_call(self.store.find_done, job.input_hash, job.id)
        if source is None:
            return False
        settings = self.campaigns[job.campaign].settings
        fields = job_fields(settings.name, job)
        saved = []
        try:
            for n, record in enumerate(source.files, start=1):

                def name_for(ext: str, n: int = n) -> str:
                    return render_filename(
                        settings.filename_template, fields, ext=ext, n=n, outputs=len(source.files)
                    )

                tag = f"{settings.name}.{job.key}.{n}"
                saved.append(
                    await anyio.to_thread.run_sync(
                        copy_file, Path(record["path"]), Path(settings.output_dir), name_for, tag
                    )
                )
        except DownloadError as error:
            if error.local:
                # Generating it instead would pay for a result that cannot be saved either.
                await self._save_failed(job.campaign, Path(settings.output_dir), error)
                wait = local_retry_wait(1, self.policy.scale)
                log.info("job %s: cannot reuse %s now (%s)", job.key, source.key, error)
                await self._release(job, due_at=self.clock() + wait)
                return True
            log.warning("job %s: cannot reuse %s (%s); generating it", job.key, source.key, error)
            return False
        except OSError as error:
            log.warning("job %s: cannot reuse %s (%s); generating it", job.key, source.key, error)
            return False
        files = [f.to_dict() for f in saved]
        await self._apply(states.on_reused(job, source, files, self.clock()))
        log.info("job %s: reused the result of %s/%s", job.key, source.campaign, source.key)
        return True

    async def _reconcile(self, job: Job) -> None:
        """Did a create that got no answer happen? Adopt its prediction, submit it again, or
        ask the user: decided one to one among the jobs with its input (`runner.reconcile`)."""
        runtime = self.campaigns[job.campaign]
        provider = runtime.provider_for(job)
        if not provider.supports_list:
            reason = "this provider lists no predictions here, so the runner cannot find out"
            await self._apply(states.on_reconcile_unavailable(job, reason))
            return
        account = runtime.account_of(job)
        try:
            attempts, _ = await self._db_call(self.store.reconcile_view, job, account)
            verdict: reconcile.Verdict | None = reconcile.waiting(job.id, attempts)
            if verdict is None:
                since = min(a.submitted_at for a in attempts)
                # The provider echoes what it was sent: compare with the same bytes.
                body = await _provider_body(job, runtime.settings.provider.style)
                listing = await provider.list_matching(job.model, body, since=since)
                ids = [
                    c.submission.handle.remote_id for c in (*listing.candidates, *listing.removed)
                ]
                attempts, held = await self._db_call(self.store.reconcile_view, job, account, ids)
                own_start = listing.window_start + (job.submitted_at or since) - since
                verdict = reconcile.decide(job.id, attempts, listing, held, own_start=own_start)
        except FileChangedError as error:
            reason = f"its input file changed, so it cannot be matched ({error})"
            await self._apply(states.on_reconcile_unavailable(job, reason))
            return
        except ProviderError as error:
            if error.kind is ErrorKind.UNSUPPORTED:
                if job.id not in runtime.earlier:
                    await self.note_unsupported(job.campaign, "list", error)
                reason = f"the provider does not serve its list route ({error})"
                await self._apply(states.on_reconcile_unavailable(job, reason))
                return
            change = states.on_reconcile_error(job, error, self.clock(), self.policy, self.rng)
            await self._apply(change)
            return
        except Exception:
            raise  # a bug: `_bug` decides, the job still ours
        except BaseException:
            await self._release(job)
            raise
        now = self.clock()
        if isinstance(verdict, reconcile.Wait):
            await self._apply(states.on_reconcile_wait(job, now, verdict.reason))
        elif isinstance(verdict, reconcile.Unknowable):
            log.warning(
                "job %s: cannot tell whether its create happened: %s", job.key, verdict.reason
            )
            await self._apply(states.on_reconcile_unavailable(job, verdict.reason))
        elif isinstance(verdict, reconcile.Missing):
            log.info("job %s: not created at the provider; queued to be submitted again", job.key)
            limit = self.policies[job.campaign].max_attempts
            await self._apply(states.on_reconcile_missing(job, now, max_attempts=limit))
        else:
            found = verdict.candidate.submission
            log.info("job %s: found its prediction %s", job.key, found.handle.remote_id)
            outcome = states.on_reconcile_found(job, found, now, self.rng)
            if not await self._settle(job, outcome):
                # another job took that prediction meanwhile: look again with that known
                await self._release(job, due_at=self.clock())

    async def note_unsupported(self, name: str, route: str, error: ProviderError) -> None:
        """An account answered 404/405 to an optional route: say so once, and record it so
        that no run relies on that route again."""
        provider = self.campaigns[name].settings.provider
        key = ":".join(provider.account)
        routes = await self._db_call(self.store.note_unsupported, key, route)
        for runtime in self.campaigns.values():
            if runtime.settings.provider.account == provider.account:
                runtime.provider.supports_list &= "list" not in routes
                runtime.provider.supports_cancel &= "cancel" not in routes
                runtime.provider.supports_webhooks &= "webhook_secret" not in routes
        log.warning(
            "provider %s at %s does not serve its %s route (%s): recorded, and not used again "
            "for this account",
            provider.name,
            provider.base_url,
            route,
            error,
        )

    async def _download(self, job: Job) -> None:
        settings = self.campaigns[job.campaign].settings
        folder = Path(settings.output_dir)
        fields = job_fields(settings.name, job)
        outputs = len(job.output_urls)

        def name_for(n: int) -> Callable[[str], str]:
            def name(ext: str) -> str:
                template = settings.filename_template
                return render_filename(template, fields, ext=ext, n=n, outputs=outputs)

            return name

        saved: list[SavedFile] = []
        fetched: Fetched | None = None
        try:
            for n, url in enumerate(job.output_urls, start=1):
                if fetched is not None:  # saved before the next is fetched: memory stays bounded
                    saved.append(await anyio.to_thread.run_sync(fetched.save, name_for(n - 1)))
                fetched = await fetch(self.files, url, folder, f"{settings.name}.{job.key}.{n}")
            # the last file, its job's change and the sidecars: one trip to a thread
            change = await anyio.to_thread.run_sync(
                self._downloaded, job, saved, fetched, name_for(outputs)
            )
        except DownloadError as error:
            tries = 0
            if error.local:
                self._local_tries[job.id] += 1
                tries = self._local_tries[job.id]
                await self._save_failed(job.campaign, folder, error)
            else:
                self._local_tries.pop(job.id, None)
            change = states.on_download_error(
                job,
                str(error),
                self.clock(),
                self.policy,
                self.rng,
                url_gone=error.gone,
                can_refresh=self.campaigns[job.campaign].provider_for(job).refreshes_outputs,
                local=error.local,
                local_tries=tries,
            )
            log.info("download %s: %s -> %s", job.key, error, change.to)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                if fetched is not None:  # harmless once saved: its temporary file is gone
                    await anyio.to_thread.run_sync(fetched.discard)
                if not isinstance(exc, Exception):  # a bug: `_bug` decides, the job still ours
                    await self._release(job)
            raise
        else:
            self.report.downloaded += 1
            self._local_tries.pop(job.id, None)
            if self.pauses:
                self._save_worked(job.campaign)
        await self._apply(change)

    # -- backpressure from saving ----------------------------------------------------------

    def paused_saving(self) -> dict[str, str]:
        """The campaigns whose new creates wait for saving to work again, each with why."""
        if not self.pauses:
            return {}
        held = paused_campaigns(self._devices, self.pauses.by_scope)
        return {name: describe(pause) for name, pause in held.items()}

    async def _save_failed(self, name: str, folder: Path, error: DownloadError) -> None:
        """A save of campaign `name` in `folder` failed for a local reason: pause the creates
        of every campaign whose results would go to the same file system (runner.saving), and
        say so once an episode."""
        known = self._devices.get(name)
        if known is not None and self.pauses.by_scope.get(scope_of(error.code, known)):
            return  # paused already: this is the episode's next failure, not news
        # Looked at again for each episode: a folder made, or a disk mounted, since the last.
        folders = {n: Path(r.settings.output_dir) for n, r in self.campaigns.items()}
        self._devices = await anyio.to_thread.run_sync(_devices_of, folders)
        device = self._devices[name]
        pause = Pause(scope_of(error.code, device), device, str(folder), error.code, self.clock())
        if not self.pauses.failed(pause):
            return
        log.warning(pause_warning(pause, held_by(pause, self._devices, self.pauses.by_scope)))
        if self._tasks is not None:
            self._tasks.start_soon(self._probe, pause)

    def _save_worked(self, name: str) -> None:
        device = self._devices.get(name)
        if device is not None:
            self._lift(device)

    def _lift(self, device: int) -> None:
        before = paused_campaigns(self._devices, self.pauses.by_scope)
        for pause in self.pauses.saved(device):
            now_held = paused_campaigns(self._devices, self.pauses.by_scope)
            names = [n for n, p in before.items() if p is pause and n not in now_held]
            log.info(resume_message(pause, names, self.clock()))
            self.wake()  # queued jobs may be claimed now

    async def _probe(self, pause: Pause) -> None:
        """While `pause` lasts and nothing of its campaigns is left to download (so no save
        can end it), try a small write in its folder every few seconds."""
        folder = Path(pause.folder)
        every = max(PROBE_FLOOR, PROBE_EVERY * self.policy.scale)
        try:
            while self.pauses.lasts(pause):
                await anyio.sleep(every)
                if not self.pauses.lasts(pause):
                    return
                names = held_by(pause, self._devices, self.pauses.by_scope)
                if await self._db_call(self._downloads_left, names):
                    continue  # a retried download will end it, or find it still failing
                try:
                    await anyio.to_thread.run_sync(probe, folder)
                except DownloadError:
                    continue
                if self.pauses.lasts(pause):
                    self._lift(pause.device)
        except Exception:  # a bug here must not take the jobs down; a save still ends it
            log.exception("probing %s failed", folder)

    def _downloads_left(self, names: Iterable[str]) -> bool:
        return any(self.store.has_jobs(name, [State.DOWNLOADING]) for name in names)

    def _downloaded(
        self,
        job: Job,
        saved: list[SavedFile],
        last: Fetched | None,
        name_for: Callable[[str], str],
    ) -> Change:
        """(In a thread) save the last file of a job, then write the provenance sidecars: before
        `done`, so a crash in between downloads again, and writes them then."""
        files = [*saved, last.save(name_for)] if last is not None else saved
        change = states.on_downloaded(job, [f.to_dict() for f in files], self.clock())
        after_download(job, change)
        return change


def _devices_of(folders: dict[str, Path]) -> dict[str, int]:
    return {name: device_of(folder) for name, folder in folders.items()}


async def _provider_body(job: Job, style: Style) -> dict[str, Any]:
    """The job's input as a provider of `style` takes it: input images are stored as
    references, and their bytes are read (in a thread) only when there are some. Raises
    FileChangedError."""
    if not has_files(job.input):
        return job.input
    return await anyio.to_thread.run_sync(materialize, job.input, style)
