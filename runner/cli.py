"""The `runner` command line. Each command parses, calls one function of `runner.app`, formats.

Exit codes: 0 every job done; 1 some jobs failed, were refused, expired or are uncertain;
2 bad input or usage (nothing was changed); 3 stopped early (run the same command again to
resume).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import click

from runner.durations import parse_duration
from runner.errors import EXIT_BAD_INPUT, EXIT_STOPPED, InputError
from runner.overview import format_counts
from runner.states import RETRYABLE_BY_USER, State
from runner.store import DatabaseError, open_reader, open_store, resolve_db

if TYPE_CHECKING:
    from runner.app import RunReport
    from runner.webhooks import WebhookOptions

# Commands that talk to providers import `runner.app` (HTTP clients, the simulator, the worker)
# when they run: `runner status` and `--help` stay quick.

log = logging.getLogger("runner")

T = TypeVar("T")
IDLE_LOOK = 5  # seconds between looks for new work of an idle `runner work`

EPILOG = (
    "Exit codes: 0 all jobs done; 1 some jobs failed, were moderated, expired, were canceled or "
    "are uncertain; 2 bad input or usage (nothing changed); 3 stopped early (resumable: run the "
    "same command again)."
)


def _run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Runs `fn` on uvloop where it is installed (it is a dependency except on Windows): a
    busy worker spends about a tenth less CPU per job than on asyncio's own loop."""
    _quiet_collector()
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return anyio.run(fn)
    return anyio.run(fn, backend_options={"use_uvloop": True})


@functools.cache
def _quiet_collector() -> None:
    """Once a process, before its event loop: what it holds by then (modules, settings, the
    database's metadata) is set aside from Python's cyclic garbage collector, which would walk
    all of it again at every full collection, and young objects are collected less often.

    A busy worker makes and drops a few dozen objects a job; with the default thresholds the
    collector ran 2,400 times in a run of 10,000 jobs, 2.3 s in all, against 0.7 s with these.
    """
    gc.collect()
    gc.freeze()
    # Handed back at exit, so that the final collection still closes what is in cycles: the
    # database's connections among them, whose close checkpoints SQLite's WAL into the file.
    atexit.register(gc.unfreeze)
    gc.set_threshold(10_000, 20, 20)


def setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO)
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger("runner")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # httpx logs every request at INFO: noise, except with -vv.
    requests = logging.getLogger("httpx")
    requests.handlers[:] = [handler]
    requests.propagate = False
    requests.setLevel(logging.INFO if verbose > 1 else logging.WARNING)


class RunnerGroup(click.Group):
    """Turns user mistakes into one paragraph and exit code 2, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (InputError, DatabaseError) as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_BAD_INPUT)
        except BaseExceptionGroup as group:
            # raised inside a task group (the worker's, the simulator's): the same paragraph
            first = _user_error(group)
            if first is None:
                raise
            click.echo(f"error: {first}", err=True)
            ctx.exit(EXIT_BAD_INPUT)


def _user_error(group: BaseExceptionGroup[Any]) -> Exception | None:
    """The user's mistake (or the database's fault) a task group's exceptions hold, if any."""
    matched, _ = group.split((InputError, DatabaseError))
    found: BaseException | None = matched
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found if isinstance(found, Exception) else None


simulate_option = click.option(
    "--simulate", is_flag=True, help="Run against the built-in simulator (no account needed)."
)
simulator_url_option = click.option(
    "--simulator-url",
    metavar="URL",
    envvar="RUNNER_SIMULATOR_URL",
    help="Like --simulate, but use a simulator already running at URL (`runner simulate`).",
)


class Duration(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class Grace(Duration):
    """A duration, or 0 for none."""

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, str) and value.strip().rstrip("hms").strip() in ("0", "0.0"):
            return 0.0
        return super().convert(value, param, ctx)


max_runtime_option = click.option(
    "--max-runtime",
    type=Duration(),
    help="Stop after this long (e.g. 6h, 90m) as a first Ctrl-C does: no new work is started, "
    "and predictions already created are still polled and downloaded for --grace. Exit code 3 "
    "when work is left: the next run resumes it.",
)
grace_option = click.option(
    "--grace",
    type=Grace(),
    default="15m",
    show_default=True,
    help="After a stop (--max-runtime, a first Ctrl-C or SIGTERM), keep polling and downloading "
    "the predictions already created (they are paid for) for at most this long; 0: only finish "
    "the jobs in hand (30 s at most). A second Ctrl-C stops at once.",
)

webhook_listen_option = click.option(
    "--webhook-listen",
    metavar="HOST:PORT",
    help="Receive Replicate-style webhooks on this address (e.g. 0.0.0.0:8788), with "
    "--webhook-url. A signed webhook only makes its job be polled at once.",
)
webhook_url_option = click.option(
    "--webhook-url",
    metavar="URL",
    help="The public URL that reaches --webhook-listen (e.g. https://runner.example.com); "
    "creates ask for webhooks at URL/webhooks/replicate.",
)


def _webhooks(listen: str | None, url: str | None) -> WebhookOptions | None:
    """The webhook options, or None without them; both or neither must be given."""
    if listen is None and url is None:
        return None
    if listen is None or url is None:
        raise InputError("--webhook-listen and --webhook-url go together: give both or neither.")
    from runner.webhooks import WebhookOptions, check_public_url, parse_listen

    try:
        host, port = parse_listen(listen)
        public = check_public_url(url)
    except ValueError as exc:
        raise InputError(f"webhooks: {exc}.") from None
    return WebhookOptions(host, port, public)


move_queued_option = click.option(
    "--move-queued",
    is_flag=True,
    help="The campaign of this name in the database uses another provider account or other "
    "models: make the job file the campaign's from now on. Its queued jobs (never created) "
    "follow the file, those the file no longer lists are withdrawn; jobs already created stay "
    "with the account that created them and are followed there.",
)
from_sidecars_option = click.option(
    "--from-sidecars",
    is_flag=True,
    help="For a database that lost the campaign's jobs: record each job whose images and .json "
    "sidecars are in the output folder as done (sha256 checked) instead of buying it again.",
)


def _enqueued(enq: Any) -> None:
    name = enq.settings.name
    if enq.moved is not None:
        click.echo(enq.moved.describe(name))
    if enq.recovered:
        click.echo(f"{name}: {enq.recovered} job(s) recorded as done from their sidecars")
    click.echo(f"{name}: {enq.added} new job(s), {enq.existing} already known")


db_option = click.option(
    "--db",
    metavar="PATH|URL",
    help="Database file or SQLAlchemy URL. Default: $RUNNER_DB, else runner.db beside the job "
    "file (or in the current folder for commands without one).",
)


@click.group(
    cls=RunnerGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="runner")
@click.option("-v", "--verbose", count=True, help="More log output (-vv: every HTTP request).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(verbose: int, quiet: bool) -> None:
    """Durable batch runner for image-generation APIs (Replicate, BFL, DeerAPI, CometAPI)."""
    setup_logging(verbose, quiet)


def _summary(store: Any, name: str) -> None:
    counts = store.counts(name).get(name, {})
    click.echo(f"{name}: {format_counts(counts)}")
    if counts.get(State.UNCERTAIN.value):
        click.echo(
            f"{counts[State.UNCERTAIN.value]} job(s) are uncertain: their create got no answer "
            "and may have been billed. Check the provider's dashboard, then "
            f"`runner retry {name} --uncertain` to submit them again.",
            err=True,
        )


def _live() -> bool:
    """A live progress table: on a terminal, unless --quiet."""
    return sys.stderr.isatty() and log.getEffectiveLevel() <= logging.INFO


def _this_process(report: RunReport) -> None:
    click.echo(
        f"this process: {report.submitted} submitted, {report.polled} polls, "
        f"{report.downloaded} downloaded"
    )


def _notifier(store: Any) -> Any:
    """Runs the campaigns' on_finish hooks (see `runner.notify`)."""
    from runner import app, notify

    return notify.Notifier(store, lambda name, report: app.exit_code(store, [name], report))


def _dry_run(
    jobfile: str, db: str | None, simulate: bool, move_queued: bool, from_sidecars: bool
) -> None:
    from runner import app

    plan = app.dry_run(
        jobfile, db, simulate=simulate, move_queued=move_queued, from_sidecars=from_sidecars
    )
    settings = plan.campaign.settings
    click.echo(f"{settings.name}: {plan.added} new job(s), {plan.existing} already known")
    price = settings.budget.price_per_image
    if plan.cost is None:
        models = ", ".join(sorted({job.model for job in plan.campaign.jobs}))
        click.echo(
            "estimated cost of the new jobs: unknown (no budget.price_per_image in the job "
            f"file, and no done job of {models} with a reported cost in the database)"
        )
    elif price is not None or plan.added == 0:
        each = f" ({price:g} each, budget.price_per_image)" if price is not None else ""
        click.echo(f"estimated cost of the new jobs: {plan.cost:.2f}{each}")
    else:
        click.echo(
            f"estimated cost of the new jobs: {plan.cost:.2f} (the average cost of done jobs "
            "of the same model in the database)"
        )
    click.echo("dry run: nothing was submitted, and the database was not created or changed")


@cli.command(epilog=EPILOG)
@click.argument("jobfile", type=click.Path(dir_okay=False))
@db_option
@max_runtime_option
@grace_option
@simulate_option
@simulator_url_option
@webhook_listen_option
@webhook_url_option
@move_queued_option
@from_sidecars_option
@click.option(
    "--dry-run",
    is_flag=True,
    help="Validate, count the new and already known jobs and estimate their cost; submit "
    "nothing and create or change no database.",
)
def run(
    jobfile: str,
    db: str | None,
    max_runtime: float | None,
    grace: float,
    simulate: bool,
    simulator_url: str | None,
    webhook_listen: str | None,
    webhook_url: str | None,
    move_queued: bool,
    from_sidecars: bool,
    dry_run: bool,
) -> None:
    """Enqueue JOBFILE's new jobs and work until every job of the campaign is settled.

    Running the same command again resumes: nothing is submitted twice. Two runs of the same
    job file on one database (an overnight cron run that is still going when the next one
    starts) share the work.
    """
    from runner import app

    simulate = simulate or bool(simulator_url)
    if dry_run:
        _dry_run(jobfile, db, simulate, move_queued, from_sidecars)
        return
    webhooks = _webhooks(webhook_listen, webhook_url)
    store, enq = app.submit(
        jobfile, db, simulate=simulate, move_queued=move_queued, from_sidecars=from_sidecars
    )
    name = enq.settings.name
    _enqueued(enq)
    report = _run_async(
        lambda: app.work(
            store,
            [name],
            simulate=simulate,
            sim_url=simulator_url,
            max_runtime=max_runtime,
            grace=grace,
            live=_live(),
            webhooks=webhooks,
        )
    )
    _summary(store, name)
    _this_process(report)
    for reason in report.halted.values():
        click.echo(f"stopped: {reason}", err=True)
    _notifier(store).final([name], report)
    sys.exit(app.exit_code(store, [name], report))


@cli.command(epilog=EPILOG)
@click.argument("jobfile", type=click.Path(dir_okay=False))
@db_option
@move_queued_option
@from_sidecars_option
def submit(jobfile: str, db: str | None, move_queued: bool, from_sidecars: bool) -> None:
    """Validate JOBFILE and enqueue its new jobs without working them."""
    from runner import app

    _, enq = app.submit(
        jobfile, db, simulate=True, move_queued=move_queued, from_sidecars=from_sidecars
    )
    _enqueued(enq)


@cli.command(epilog=EPILOG)
@db_option
@click.option("--campaign", "campaigns", multiple=True, help="Only this campaign (repeatable).")
@click.option(
    "--until-empty",
    is_flag=True,
    help="Exit when every job is settled, instead of waiting for new campaigns.",
)
@max_runtime_option
@grace_option
@simulate_option
@simulator_url_option
@webhook_listen_option
@webhook_url_option
def work(
    db: str | None,
    campaigns: tuple[str, ...],
    until_empty: bool,
    max_runtime: float | None,
    grace: float,
    simulate: bool,
    simulator_url: str | None,
    webhook_listen: str | None,
    webhook_url: str | None,
) -> None:
    """Work the queue of an existing database, beside any number of other workers (on this
    machine or others, sharing a PostgreSQL database)."""
    from runner import app

    simulate = simulate or bool(simulator_url)
    webhooks = _webhooks(webhook_listen, webhook_url)
    store = open_store(resolve_db(db), create=False)
    unknown = sorted(set(campaigns) - set(store.campaign_names()))
    if unknown:
        raise InputError(f"no campaign named {', '.join(unknown)} in this database.")

    def current() -> list[str]:
        return list(campaigns) or store.campaign_names()

    app.check_keys([store.settings(n) for n in current()], simulate)

    live = _live()
    notifier = _notifier(store)

    async def loop() -> RunReport:
        # One stop for every round: a signal or the max runtime between two rounds ends the
        # command at once (nothing is in flight then), during one it stops that round.
        async with app.stopping(grace, max_runtime=max_runtime) as stops:
            said = False  # that it is idle, since it last did something
            while True:
                names = current()
                app.check_keys([store.settings(n) for n in names], simulate)
                report = await app.work(
                    store,
                    names,
                    simulate=simulate,
                    sim_url=simulator_url,
                    stops=stops,
                    live=live,
                    webhooks=webhooks,
                )
                notifier.settled(names, report)
                if until_empty or report.stopped_early or report.halted:
                    return report
                if not said or report.submitted or report.polled or report.downloaded:
                    log.info(
                        "every campaign is settled; looking for new work every %ds (Ctrl-C "
                        "to stop)",
                        IDLE_LOOK,
                    )
                    said = True
                if await stops.pause(IDLE_LOOK):
                    report.stopped_early = True
                    report.stopped_by = stops.asked.reason if stops.asked else None
                    return report

    report = _run_async(loop)
    names = current()
    for name in names:
        _summary(store, name)
    _this_process(report)
    notifier.final(names, report)
    sys.exit(app.exit_code(store, names, report))


@cli.command(epilog=EPILOG)
@click.argument("campaign", required=False)
@db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(campaign: str | None, db: str | None, as_json: bool) -> None:
    """Per campaign: jobs per state, cost, recent rate and time left; and the live workers.

    --json prints {"campaigns": {NAME: {total, done, states, halted, cost, rate_per_minute,
    eta_seconds}}, "workers": [{id, host, pid, campaigns, started_at, last_seen_at,
    stopping}]}; `stopping` is null, or {reason, since, until, grace, waiting} while the worker
    stops.
    """
    from runner import overview

    store = open_reader(resolve_db(db))
    if campaign and campaign not in store.campaign_names():
        raise InputError(f"no campaign named {campaign!r} in this database.")
    view = overview.overview(store, campaign)
    if as_json:
        click.echo(json.dumps(overview.to_json(view), indent=2))
    else:
        click.echo("\n".join(overview.to_text(view)))


@cli.command(epilog=EPILOG)
@click.argument("campaign")
@db_option
@click.option(
    "--state",
    "states_",
    default=None,
    help="Comma-separated states to send back to the queue (default: failed,expired; with "
    "--uncertain alone: none).",
)
@click.option(
    "--uncertain",
    is_flag=True,
    help="Resubmit uncertain jobs (creates that may have been billed: you may pay twice); "
    "alone, only those.",
)
def retry(campaign: str, db: str | None, states_: str | None, uncertain: bool) -> None:
    """Send finished-but-unsuccessful jobs of CAMPAIGN back to the queue."""
    if states_ is None:
        states_ = "" if uncertain else "failed,expired"
    try:
        wanted = {State(s.strip()) for s in states_.split(",") if s.strip()}
    except ValueError:
        allowed = ", ".join(sorted(s.value for s in RETRYABLE_BY_USER - {State.UNCERTAIN}))
        raise InputError(f"--state takes a comma-separated list of: {allowed}.") from None
    if uncertain:
        wanted.add(State.UNCERTAIN)
    if not wanted:
        raise InputError("--state names no state: give at least one, or --uncertain.")
    if not wanted <= RETRYABLE_BY_USER:
        bad = ", ".join(sorted(s.value for s in wanted - RETRYABLE_BY_USER))
        raise InputError(f"jobs in state {bad} cannot be retried; they are not finished.")
    if State.UNCERTAIN in wanted and not uncertain:
        raise InputError("uncertain jobs may have been billed: say so with --uncertain.")
    store = open_store(resolve_db(db), create=False)
    if campaign not in store.campaign_names():
        raise InputError(f"no campaign named {campaign!r} in this database.")
    moved = store.retry(campaign, wanted)
    click.echo(f"{campaign}: {moved} job(s) queued again")


@cli.command(epilog=EPILOG)
@click.argument("campaign")
@db_option
@simulator_url_option
def cancel(campaign: str, db: str | None, simulator_url: str | None) -> None:
    """Stop CAMPAIGN: cancel its predictions where the API allows, drop its queue.

    Results already being downloaded are kept: they are paid for.
    """
    from runner import app

    store = open_store(resolve_db(db), create=False)
    if campaign not in store.campaign_names():
        raise InputError(f"no campaign named {campaign!r} in this database.")
    report = _run_async(lambda: app.cancel(store, campaign, sim_url=simulator_url))
    click.echo(
        f"{campaign}: {report.canceled} job(s) canceled ({report.remote} at the provider"
        + (f", {report.remote_failed} refused there" if report.remote_failed else "")
        + f"); {report.kept} left to finish"
    )


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8787, show_default=True, help="0 picks a free port.")
@click.option("--config", "config_file", type=click.File(), help="SimConfig as JSON.")
def simulate(host: str, port: int, config_file: Any) -> None:
    """Serve the provider simulator (Replicate, BFL and aggregator routes) until stopped."""
    from runner.simulator import SimConfig, Simulator, serve

    config = SimConfig.from_dict(json.load(config_file)) if config_file else SimConfig()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            url = await tg.start(serve, Simulator(config), host, port)
            click.echo(f"simulator listening on {url}", err=False)
            sys.stdout.flush()

    with contextlib.suppress(KeyboardInterrupt):
        _run_async(main)


@cli.command(
    epilog="Exit codes: 0 every check passed (warnings allowed); 1 a check failed; 2 bad input."
)
@click.argument("jobfile", required=False, type=click.Path(dir_okay=False))
@db_option
@simulate_option
@simulator_url_option
def doctor(jobfile: str | None, db: str | None, simulate: bool, simulator_url: str | None) -> None:
    """Check that campaigns can run here: the database, the API keys in the environment, each
    provider accepting its key, and free disk space in the output folders.

    Providers are those of JOBFILE, else those of every campaign in the database. One line per
    check, ok, WARN or FAIL; keys are never printed.
    """
    from runner.doctor import diagnose

    checks = _run_async(lambda: diagnose(jobfile, db, simulate=simulate, sim_url=simulator_url))
    for check in checks:
        click.echo(check.line)
    sys.exit(1 if any(check.status == "FAIL" for check in checks) else 0)


@cli.group()
def db() -> None:
    """Database maintenance."""


@db.command()
@db_option
def upgrade(db: str | None) -> None:
    """Create the database or bring its schema to the newest version."""
    from runner.store.migrate import current_revision, head_revision

    store = open_store(resolve_db(db), check=True)
    click.echo(f"database at revision {current_revision(store.engine)} (head {head_revision()})")


@cli.command("jobs")
@click.argument("campaign")
@db_option
@click.option(
    "--state",
    "states_",
    metavar="S[,S]",
    help="Only jobs in these states (comma-separated), e.g. failed,moderated.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per line (fields in the README)."
)
def jobs_command(campaign: str, db: str | None, states_: str | None, as_json: bool) -> None:
    """List the jobs of CAMPAIGN: key, prompt, state, attempts, remote id, error.

    One line per job, in job order, streamed from the database.
    """
    from runner.report.files import stdout_pipe
    from runner.report.jobs_view import parse_states, write_listing

    wanted = parse_states(states_)
    store = open_reader(resolve_db(db))
    if campaign not in store.campaign_names():
        raise InputError(f"no campaign named {campaign!r} in this database.")
    with stdout_pipe() as out:
        write_listing(store.jobs(campaign, wanted), out, as_json=as_json)


@cli.command("export")
@click.argument("campaign")
@db_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="JSON lines (one object per job) or CSV with a header row.",
)
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Write to FILE (atomically: complete or not at all) instead of standard output.",
)
@click.option(
    "--sidecars",
    is_flag=True,
    help="Instead of a manifest, (re)write the provenance sidecar <image>.json beside every "
    "image of the campaign's done jobs.",
)
def export_command(
    campaign: str, db: str | None, fmt: str, output: str | None, sidecars: bool
) -> None:
    """Write a manifest of CAMPAIGN: one record per job.

    Each record holds the key, prompt, full input, seed, provider, model, remote id, state,
    files with their sha256, timings, cost and error (fields in the README).
    """
    from pathlib import Path

    from runner.report.export import write_manifest
    from runner.report.files import atomic_text, stdout_pipe
    from runner.report.provenance import write_all_sidecars

    store = open_reader(resolve_db(db))
    if campaign not in store.campaign_names():
        raise InputError(f"no campaign named {campaign!r} in this database.")
    if sidecars:
        if output:
            raise InputError("--sidecars writes beside the images; it takes no -o FILE.")
        done = write_all_sidecars(store.jobs(campaign, [State.DONE]))
        click.echo(
            f"{campaign}: {done.written} sidecar(s) written, {done.unchanged} already up to date"
            + (f", {done.missing} image(s) missing on disk" if done.missing else "")
        )
        return
    if output is None:
        with stdout_pipe() as out:
            write_manifest(store.jobs(campaign), out, fmt)
        return
    target = Path(output)
    if not target.parent.is_dir():
        raise InputError(f"cannot write {output}: the folder {target.parent} does not exist.")
    with atomic_text(target, newline="" if fmt == "csv" else None) as out:
        count = write_manifest(store.jobs(campaign), out, fmt)
    click.echo(f"{campaign}: {count} record(s) written to {target}", err=True)


@cli.command("gallery")
@click.argument("campaign")
@db_option
@click.option(
    "-o",
    "--output",
    "out_dir",
    metavar="DIR",
    type=click.Path(file_okay=False),
    help="Folder to write gallery.html into. Default: the campaign's output folder (the page "
    "links each thumbnail to its full-size image by a relative path).",
)
def gallery_command(campaign: str, db: str | None, out_dir: str | None) -> None:
    """Render CAMPAIGN as one self-contained HTML page (gallery.html).

    A grid of thumbnails with their prompts, failed, moderated and expired jobs as cards with
    their reason, filters by state and a search box; it opens offline.
    """
    from pathlib import Path

    from runner.report.gallery import render_gallery

    store = open_reader(resolve_db(db))
    if campaign not in store.campaign_names():
        raise InputError(f"no campaign named {campaign!r} in this database.")
    page, count = render_gallery(store, campaign, Path(out_dir) if out_dir else None)
    click.echo(f"{campaign}: {count} job(s) in {page}")


def main() -> None:
    try:
        cli(prog_name="runner")
    except KeyboardInterrupt:
        # Ctrl-C before the worker's own handler is installed: nothing was in hand yet.
        click.echo("interrupted", err=True)
        sys.exit(EXIT_STOPPED)
