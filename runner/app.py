"""Wiring: the one module that assembles store, providers, simulator and worker pool.

Every CLI command is a thin layer over a function here, and so is the Python API. Nothing else
imports concrete provider adapters or starts servers.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from runner import progress, recovery
from runner.campaign import Campaign, CampaignSettings, JobSpec, ProviderConfig
from runner.clash import Moved
from runner.descriptors import Reserve, raise_soft_limit, receiver_share, shortfall
from runner.errors import EXIT_JOBS_FAILED, EXIT_OK, EXIT_STOPPED, InputError
from runner.jobfile import load_jobfile
from runner.limits import CreateRate, Share
from runner.presets import simulated
from runner.providers.base import ErrorKind, Handle, Provider, ProviderError
from runner.retry import lease_seconds, time_scale
from runner.states import SETTLED, TERMINAL, State, user_cancel
from runner.stopping import DEFAULT_GRACE, SIGNALS, Stop
from runner.store import Store, open_store, opening, peek_store, resolve_db
from runner.store.continuing import CREATED_UNSETTLED, CampaignBusy, CampaignClash

# The worker, the HTTP stack and the simulator are imported where they are used: `submit`,
# `status` and friends start sooner without them.
if TYPE_CHECKING:
    import httpx

    from runner.bounded_http import Bounds
    from runner.simulator import SimConfig
    from runner.webhooks import WebhookOptions
    from runner.worker.pool import CampaignRuntime, PoolOptions, RunReport, Worker

log = logging.getLogger("runner")

SIMULATOR_KEY = "simulator-placeholder-key"


def api_key(provider: ProviderConfig, campaign: str) -> str:
    """The key from the environment variable the provider names; a clear error when unset."""
    value = os.environ.get(provider.api_key_env, "").strip()
    if not value:
        raise InputError(
            f"campaign {campaign!r} uses provider {provider.name!r}, whose API key is read from "
            f"the environment variable {provider.api_key_env}, which is not set. Set it (for "
            f"example `export {provider.api_key_env}=...`) and run the command again, or add "
            "--simulate to try the campaign against the built-in simulator. Nothing was changed."
        )
    return value


def check_keys(settings: Iterable[CampaignSettings], simulate: bool) -> None:
    if not simulate:
        for s in settings:
            api_key(s.provider, s.name)


@dataclass(frozen=True)
class Enqueued:
    # The settings, not the campaign: its jobs are in the database now, and `runner run` would
    # keep a list of up to 100,000 of them in memory while it works.
    settings: CampaignSettings
    added: int
    existing: int
    moved: Moved | None = None  # what --move-queued did
    recovered: int = 0  # jobs recorded as done from their sidecars (--from-sidecars)


def submit(
    jobfile: str,
    db: str | None,
    *,
    simulate: bool = False,
    move_queued: bool = False,
    from_sidecars: bool = False,
) -> tuple[Store, Enqueued]:
    """Validate a job file and enqueue its new jobs. Nothing is written when anything is wrong:
    a bad file, a clash with the campaign of the same name in the database (`runner.clash`;
    `move_queued` moves its queued jobs over instead), or a campaign the database has no job
    of whose images are on disk (`runner.recovery`; `from_sidecars` records those as done)."""
    campaign = load_jobfile(jobfile)
    settings = campaign.settings
    check_keys([settings], simulate)

    def refuse_if_bought(where: str) -> None:
        if not from_sidecars:
            _refuse_if_bought(campaign, where)

    store = open_store(resolve_db(db, jobfile), before_create=refuse_if_bought)
    try:
        if not store.has_any_job(settings.name):
            refuse_if_bought(store.where)
        if not simulate:
            _check_followed_keys(store, settings, move_queued)
        recovered = None
        if from_sidecars:
            found = recovery.sidecars(Path(settings.output_dir), settings.name)
            recovered = recovery.proven_done(campaign, found)
        result = store.enqueue(
            campaign,
            move_queued=move_queued,
            live_since=time.time() - lease_seconds(),
            recovered=recovered,
        )
    except CampaignClash as clash:
        store.close()
        raise InputError(clash.clash.describe(store.where, campaign.source, clash.queued)) from None
    except CampaignBusy as busy:
        store.close()
        raise InputError(str(busy)) from None
    except BaseException:
        store.close()
        raise
    store.set_halted(settings.name, None)
    enqueued = Enqueued(settings, result.added, result.existing, result.moved, result.recovered)
    return store, enqueued


def _refuse_if_bought(campaign: Campaign, where: str) -> None:
    """The database at `where` has no job of the campaign: were its images bought already?"""
    settings = campaign.settings
    found = recovery.first_sidecar(Path(settings.output_dir), settings.name)
    if found is not None:
        raise InputError(recovery.lost_campaign(settings.name, where, found, campaign.source))


def _check_followed_keys(store: Store, settings: CampaignSettings, move_queued: bool) -> None:
    """The key of every account the campaign's created jobs are followed at must be set,
    also of the account a move is about to leave."""
    for entry in store.followed(settings.name):
        api_key(entry.provider, settings.name)
    if move_queued and store.has_jobs(settings.name, CREATED_UNSETTLED):
        recorded = store.settings(settings.name).provider
        if recorded.account != settings.provider.account:
            api_key(recorded, settings.name)


@dataclass(frozen=True)
class DryRun:
    campaign: Campaign
    added: int  # jobs the file would add
    existing: int  # jobs of the file already in the database
    cost: float | None  # the estimated cost of the new jobs; None when unknown


def dry_run(
    jobfile: str,
    db: str | None,
    *,
    simulate: bool = False,
    move_queued: bool = False,
    from_sidecars: bool = False,
) -> DryRun:
    """What `submit` would add and roughly cost, creating and changing nothing; what `submit`
    would refuse (a clash, a campaign whose images are on disk) is refused the same way."""
    from runner.budget import estimate_cost

    campaign = load_jobfile(jobfile)
    settings = campaign.settings
    check_keys([settings], simulate)
    where = resolve_db(db, jobfile)
    store = peek_store(where, full_check=False)
    by_model: dict[str, list[JobSpec]] = {}
    for job in campaign.jobs:
        by_model.setdefault(job.model, []).append(job)
    if store is None and not from_sidecars:
        _refuse_if_bought(campaign, opening.target(where).place.shown)
    if store is None:
        new_by_model = {m: len(jobs) for m, jobs in by_model.items()}
        averages: dict[str, float] = {}
    else:
        try:
            if not from_sidecars and not store.has_any_job(settings.name):
                _refuse_if_bought(campaign, store.where)
            clash = None if move_queued else store.clash_of(campaign)
            if clash is not None:
                found_clash, queued = clash
                raise InputError(found_clash.describe(store.where, campaign.source, queued))
            new_by_model = {
                m: store.count_new(replace(campaign, jobs=jobs)) for m, jobs in by_model.items()
            }
            averages = store.average_done_cost(list(by_model))
        finally:
            store.close()
    added = sum(new_by_model.values())
    price = campaign.settings.budget.price_per_image
    cost = estimate_cost(new_by_model, price, averages)
    return DryRun(campaign, added, len(campaign.jobs) - added, cost)


@asynccontextmanager
async def _simulator(
    enabled: bool, config: SimConfig | None, url: str | None
) -> AsyncIterator[str | None]:
    if url or not enabled:
        yield url
        return
    from runner.simulator import SimConfig, Simulator, serve

    async with anyio.create_task_group() as tg:
        url = await tg.start(serve, Simulator(config or SimConfig()))
        log.info("simulator listening on %s", url)
        try:
            yield url
        finally:
            tg.cancel_scope.cancel()


def _runtimes(
    store: Store,
    names: Iterable[str],
    sim_url: str | None,
    transport: httpx.AsyncBaseTransport | None,
) -> dict[str, CampaignRuntime]:
    from runner.providers.factory import make_provider
    from runner.worker.pool import Account, CampaignRuntime

    out: dict[str, CampaignRuntime] = {}
    every = {name: store.settings(name) for name in names}
    accounts: dict[tuple[str, str, str], Account] = {}
    for settings in every.values():
        sharing = [s for s in every.values() if s.provider.account == settings.provider.account]
        if settings.provider.account not in accounts:
            # The strictest rate and the largest slot count of the campaigns on the account:
            # each campaign also keeps its own max_in_flight.
            rate = min(s.limits.creates_per_minute for s in sharing)
            bursts = [s.limits.create_burst for s in sharing if s.limits.create_burst]
            burst = min(bursts) if bursts else None
            minute = 60.0 * time_scale()
            bucket = CreateRate.per_minute(rate, time.time(), burst=burst, minute=minute)
            accounts[settings.provider.account] = Account(
                bucket=bucket,
                share=Share({s.name: float(s.priority) for s in sharing}),
                max_in_flight=max(s.limits.max_in_flight for s in sharing),
                names=[s.name for s in sharing],
                per_minute=rate,
                burst=bucket.burst,
                key=":".join(settings.provider.account),
            )

    def provider_of(config: ProviderConfig, name: str) -> Provider:
        key = SIMULATOR_KEY if sim_url else api_key(config, name)
        # routes this account answered 404/405 to before are not relied on again
        facts = store.account_facts(":".join(config.account))
        unsupported = facts.get("unsupported", [])
        if sim_url:
            config = simulated(config, sim_url)
        return make_provider(config, key, transport=transport, unsupported=unsupported)

    for name, settings in every.items():
        earlier: dict[int, tuple[ProviderConfig, Provider]] = {}
        for entry in store.followed(name):  # jobs created before a --move-queued
            provider = provider_of(entry.provider, name)
            earlier.update((job_id, (entry.provider, provider)) for job_id in entry.jobs)
        out[name] = CampaignRuntime(
            settings=settings,
            provider=provider_of(settings.provider, name),
            account=accounts[settings.provider.account],
            earlier=earlier,
        )
    return out


def _providers(runtimes: dict[str, CampaignRuntime]) -> list[Provider]:
    """Every provider of the runtimes, each once (a followed account's serves many jobs)."""
    seen: dict[int, Provider] = {}
    for runtime in runtimes.values():
        seen[id(runtime.provider)] = runtime.provider
        for _, provider in runtime.earlier.values():
            seen[id(provider)] = provider
    return list(seen.values())


class Stops:
    """How one command stops, across all its rounds of work (`runner work` starts another a few
    seconds after one ends, for campaigns submitted meanwhile).

    The first signal, or `--max-runtime` running out, asks for a stop that keeps what was paid
    for (`runner.stopping`): the worker of the round in progress stops taking new work and
    follows what was created for `grace` seconds; a round started later starts stopping. Any
    signal after that stops at once: the round's task group is cancelled.
    """

    def __init__(self, grace: float = DEFAULT_GRACE) -> None:
        self.grace = grace
        self.asked: Stop | None = None
        self.at_once = False
        self._asked = anyio.Event()
        self._worker: Worker | None = None
        self._scope: anyio.CancelScope | None = None

    def ask(self, reason: str) -> None:
        if self.asked is None:
            self.asked = Stop(reason, time.time(), self.grace)
            self._asked.set()
        if self._worker is not None:
            self._worker.request_stop(self.asked)

    def now(self) -> None:
        self.at_once = True
        self._asked.set()
        if self._worker is not None:
            self._worker.report.stopped_early = True
        if self._scope is not None:
            self._scope.cancel()

    @contextmanager
    def working(self, worker: Worker, scope: anyio.CancelScope) -> Iterator[None]:
        """The round of `worker`, in `scope`, is the one a stop now applies to."""
        self._worker, self._scope = worker, scope
        if self.asked is not None:
            worker.request_stop(self.asked)
        try:
            yield
        finally:
            self._worker = self._scope = None

    async def pause(self, seconds: float) -> bool:
        """Wait between two rounds of work; whether a stop was asked for (before or meanwhile).
        Nothing is in hand then, and nothing created is left: such a stop is immediate."""
        with anyio.move_on_after(seconds):
            await self._asked.wait()
        if self.asked is not None:
            log.warning("stopping (%s): nothing in flight", self.asked.reason)
        return self._asked.is_set()


async def _watch_signals(stops: Stops) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if stops.asked is None:
                stops.ask(name)  # the worker says what it still waits for
            else:
                log.warning("%s: stopping now; the database stays consistent", name)
                stops.now()


async def _stop_after(stops: Stops, seconds: float) -> None:
    """--max-runtime: when the time is up, stop as a first Ctrl-C would."""
    await anyio.sleep(seconds)
    stops.ask("max runtime reached")


@asynccontextmanager
async def stopping(
    grace: float = DEFAULT_GRACE,
    *,
    max_runtime: float | None = None,
    handle_signals: bool = True,
) -> AsyncIterator[Stops]:
    """Signals and `--max-runtime` for as long as the block runs: pass the `Stops` it gives to
    every `work()` of the block (and `Stops.pause` between them)."""
    stops = Stops(grace)
    async with anyio.create_task_group() as tg:
        if handle_signals:
            tg.start_soon(_watch_signals, stops)
        if max_runtime is not None:
            tg.start_soon(_stop_after, stops, max_runtime)
        try:
            yield stops
        finally:
            tg.cancel_scope.cancel()


_warned: set[str] = set()


def _receiver_bounds(soft: int, downloads: int, pools: int, simulate: bool) -> Bounds:
    """The webhook receiver's share of the descriptors: what the worker's own work leaves
    (`runner.descriptors`); a warning, once a process, when even that work does not fit."""
    from runner.bounded_http import Bounds

    reserve = Reserve(downloads=downloads, provider_pools=pools, simulator=simulate)
    warning = shortfall(soft, reserve)
    if warning is not None and warning not in _warned:
        _warned.add(warning)
        log.warning("%s", warning)
    share = receiver_share(soft, reserve.total)
    return Bounds(connections=share.connections, backlog=share.backlog)


async def work(
    store: Store,
    names: list[str],
    *,
    simulate: bool = False,
    sim_config: SimConfig | None = None,
    sim_url: str | None = None,
    options: PoolOptions | None = None,
    handle_signals: bool = True,
    progress_every: float = 60.0,
    live: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    max_runtime: float | None = None,
    grace: float = DEFAULT_GRACE,
    stops: Stops | None = None,
    webhooks: WebhookOptions | None = None,
) -> RunReport:
    """Work the named campaigns until every job is settled (or the campaigns are halted, or
    the work is stopped).

    A stop (after `max_runtime` seconds, or a first SIGINT or SIGTERM with `handle_signals`)
    ends new work at once, then keeps polling and downloading what was already created until
    it settles or `grace` seconds have passed (0: only the jobs in hand finish); a second
    signal stops at once. `stops` (from `stopping()`) replaces those three, for a caller that
    works several rounds under one stop.

    `simulate` starts the built-in simulator in this process; `sim_url` uses one already
    running (`runner simulate`) instead. Either way every provider is pointed at it. `live`
    draws a progress table on the terminal; otherwise a log line every `progress_every` s.
    `webhooks` starts the webhook receiver beside the worker (see `runner.webhooks`).
    """
    from runner.webhooks import start as start_webhooks
    from runner.worker.download import file_client
    from runner.worker.pool import Worker

    soft = raise_soft_limit()

    async def one_round(stops: Stops) -> RunReport:
        async with _simulator(simulate, sim_config, sim_url) as url:
            runtimes = _runtimes(store, names, url, transport)
            files = file_client()
            worker = Worker(store, runtimes, files, options)
            pools, in_process = len(runtimes), simulate and not sim_url
            bounds = _receiver_bounds(soft, worker.options.downloaders, pools, in_process)

            def stop() -> Stop | None:
                return worker.stop

            try:
                async with anyio.create_task_group() as tg:
                    with stops.working(worker, tg.cancel_scope):
                        if stops.at_once:
                            return worker.report
                        held = worker.paused_saving
                        if live:
                            tg.start_soon(progress.live, store, names, 1.0, held, stop)
                        elif progress_every > 0:
                            every = progress_every
                            tg.start_soon(progress.log_lines, store, names, every, held, stop)
                        if webhooks is not None:
                            providers = {name: r.provider for name, r in runtimes.items()}
                            await start_webhooks(
                                tg,
                                webhooks,
                                providers,
                                worker.hint,
                                worker.note_unsupported,
                                bounds,
                            )
                        await worker.run()
                        tg.cancel_scope.cancel()
            finally:
                with anyio.CancelScope(shield=True):
                    await files.aclose()
                    for provider in _providers(runtimes):
                        await provider.aclose()
            return worker.report

    if stops is not None:
        return await one_round(stops)
    async with stopping(grace, max_runtime=max_runtime, handle_signals=handle_signals) as own:
        return await one_round(own)


@dataclass(frozen=True)
class CancelReport:
    canceled: int  # jobs moved to `canceled`
    remote: int  # of which the provider was asked to cancel the prediction
    remote_failed: int  # cancels the provider refused or did not answer
    kept: int  # jobs left alone: being downloaded (already paid for) or in a worker's hands


async def cancel(store: Store, name: str, *, sim_url: str | None = None) -> CancelReport:
    """Stop a campaign: cancel predictions where the API allows it, drop the rest of its queue.

    Results already being downloaded are kept (they are paid for). A job a worker holds at
    this moment is left to it; run the command again once that worker has let go. A job
    created at an account the campaign used before a `--move-queued` is canceled there.
    """
    from runner.providers.factory import make_provider

    settings = store.settings(name)
    followed = {i: entry.provider for entry in store.followed(name) for i in entry.jobs}
    providers: dict[tuple[str, str, str], Provider] = {}

    def provider_of(config: ProviderConfig) -> Provider:
        if config.account not in providers:
            key = SIMULATOR_KEY if sim_url else api_key(config, name)
            facts = store.account_facts(":".join(config.account))
            target = simulated(config, sim_url) if sim_url else config
            unsupported = facts.get("unsupported", [])
            providers[config.account] = make_provider(target, key, unsupported=unsupported)
        return providers[config.account]

    provider_of(settings.provider)  # its key is checked before anything is canceled
    canceled = remote = remote_failed = kept = 0
    wanted = (State.QUEUED, State.RUNNING, State.RECONCILING, State.UNCERTAIN)
    try:
        for job in list(store.jobs(name, wanted)):
            now = time.time()
            if job.lease_owner is not None and (job.lease_expires_at or 0) > now:
                kept += 1
                continue
            config = followed.get(job.id, settings.provider)
            provider = provider_of(config)
            if job.state is State.RUNNING and job.remote_id and provider.supports_cancel:
                try:
                    await provider.cancel(Handle(job.remote_id, job.polling_url))
                    remote += 1
                except ProviderError as error:
                    log.warning("cancel of %s at the provider failed: %s", job.key, error)
                    remote_failed += 1
                    if error.kind is ErrorKind.UNSUPPORTED:  # not served here: do not ask again
                        store.note_unsupported(":".join(config.account), "cancel")
                        provider.supports_cancel = False
            change = user_cancel(job, time.time())
            if await anyio.to_thread.run_sync(partial(store.apply, change, owner=None)):
                canceled += 1
        kept += sum(1 for _ in store.jobs(name, [State.DOWNLOADING, State.SUBMITTING]))
    finally:
        for provider in providers.values():
            await provider.aclose()
    return CancelReport(canceled, remote, remote_failed, kept)


def exit_code(store: Store, names: Iterable[str], report: RunReport) -> int:
    """0 all done; 1 some jobs ended badly or need a decision; 3 stopped before the end (or
    by a signal: whoever sent it asked for an early stop, whatever was left)."""
    counts = store.counts()
    settled = all(State(state) in SETTLED for name in names for state in counts.get(name, {}))
    if report.halted or not settled or report.stopped_by in SIGNALS:
        return EXIT_STOPPED
    bad = {s.value for s in (TERMINAL | {State.UNCERTAIN}) - {State.DONE}}
    if any(counts.get(name, {}).get(state) for name in names for state in bad):
        return EXIT_JOBS_FAILED
    return EXIT_OK
