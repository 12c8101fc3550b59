"""The job state machine: states, legal moves, and what each event does to a job.

Every function here is pure: it takes a job snapshot, an event and the time, and returns a
`Change` (the state the job must still be in, the state it moves to, the columns to write). The
store applies a change with `UPDATE ... WHERE state = :expected`, so a move that raced with
another process is refused by the database, not by hope.

    queued -> submitting -> running -> downloading -> done
    terminal: done, failed, canceled, moderated, expired
    reconciling: a create got no usable answer; the runner looks for it at the provider
    uncertain: a create that may have been billed and cannot be looked up; only the user moves it
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field, fields, replace
from typing import Any

from runner.polling import Timing, generation_estimate, next_poll_delay, usable_progress
from runner.providers.base import ErrorKind, Phase, ProviderError, RemoteStatus, Submission
from runner.retry import RetryPolicy, backoff, local_retry_wait, time_scale


class State(enum.StrEnum):
    QUEUED = "queued"
    SUBMITTING = "submitting"
    RUNNING = "running"
    DOWNLOADING = "downloading"
    DONE = "done"
    FAILED = "failed"
    CANCELED = "canceled"
    MODERATED = "moderated"
    EXPIRED = "expired"
    RECONCILING = "reconciling"
    UNCERTAIN = "uncertain"


TERMINAL = frozenset({State.DONE, State.FAILED, State.CANCELED, State.MODERATED, State.EXPIRED})
# Nothing more happens to these without the user: the campaign is finished when all jobs are here.
SETTLED = TERMINAL | {State.UNCERTAIN}
# Occupying (or possibly occupying) a slot at the provider.
IN_FLIGHT = frozenset({State.SUBMITTING, State.RUNNING, State.RECONCILING})
# States a user may send back to the queue with `runner retry`.
RETRYABLE_BY_USER = frozenset(
    {State.FAILED, State.CANCELED, State.MODERATED, State.EXPIRED, State.UNCERTAIN}
)

MOVES: dict[State, frozenset[State]] = {
    # QUEUED -> DONE only by reuse (the very same input was already generated and saved);
    # QUEUED -> FAILED when an input file changed before anything was sent, or a bug came back
    # too often; QUEUED -> QUEUED waits out a bug's backoff.
    State.QUEUED: frozenset(
        {State.QUEUED, State.SUBMITTING, State.CANCELED, State.EXPIRED, State.DONE, State.FAILED}
    ),
    State.SUBMITTING: frozenset(
        {
            State.QUEUED,
            State.RUNNING,
            State.DOWNLOADING,
            State.FAILED,
            State.MODERATED,
            State.CANCELED,
            State.RECONCILING,
            State.UNCERTAIN,  # answered, but with nothing usable to find it by
        }
    ),
    # A prediction found by reconciling may be anywhere in its life, even finished.
    State.RECONCILING: frozenset(
        {
            State.RECONCILING,
            State.RUNNING,
            State.DOWNLOADING,
            State.QUEUED,
            State.UNCERTAIN,
            State.FAILED,
            State.MODERATED,
            State.CANCELED,
            State.EXPIRED,
        }
    ),
    State.RUNNING: frozenset(
        {
            State.RUNNING,
            State.DOWNLOADING,
            State.FAILED,
            State.CANCELED,
            State.MODERATED,
            State.EXPIRED,
        }
    ),
    State.DOWNLOADING: frozenset(
        {State.DOWNLOADING, State.RUNNING, State.DONE, State.FAILED, State.EXPIRED}
    ),
    State.UNCERTAIN: frozenset({State.QUEUED, State.RUNNING, State.CANCELED}),
    State.FAILED: frozenset({State.QUEUED}),
    State.CANCELED: frozenset({State.QUEUED}),
    State.MODERATED: frozenset({State.QUEUED}),
    State.EXPIRED: frozenset({State.QUEUED}),
    State.DONE: frozenset(),
}


class IllegalMove(ValueError):
    pass


@dataclass(frozen=True)
class Job:
    """A snapshot of one job row."""

    id: int
    campaign: str
    key: str
    index: int
    provider: str
    model: str
    input: dict[str, Any]
    meta: dict[str, Any]
    state: State
    attempts: int = 0
    polls: int = 0
    strikes: int = 0  # consecutive misses in the current phase (not-found polls, failed downloads)
    url_refreshes: int = 0  # output URLs re-read after a download found them gone
    input_hash: str | None = None
    remote_id: str | None = None
    polling_url: str | None = None
    output_urls: list[str] = field(default_factory=list)
    files: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    cost: float | None = None
    next_attempt_at: float = 0.0
    deadline_at: float | None = None
    submitted_at: float | None = None
    ready_at: float | None = None
    finished_at: float | None = None
    # Generation time: while running, as the provider's progress foretells it (if it does);
    # once ready, as the looks at it tell (see runner.polling.generation_estimate).
    generation_s: float | None = None
    bugs: int = 0  # unexpected errors met handling it since its state last changed
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0


@dataclass(frozen=True)
class Change:
    job_id: int
    expect: State
    to: State
    values: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.to not in MOVES[self.expect]:
            raise IllegalMove(f"job {self.job_id}: {self.expect} -> {self.to} is not allowed")


_JOB_FIELDS = frozenset(f.name for f in fields(Job))


def applied(job: Job, change: Change) -> Job:
    """`job` as it reads once `change` is written."""
    values = {k: v for k, v in change.values.items() if k in _JOB_FIELDS}
    return replace(job, state=change.to, **values)


@dataclass(frozen=True)
class Halt:
    """The campaign must stop: every further call would fail the same way.

    A refused key stops everything; no credit stops new creates only, so what is already
    paid for still finishes.
    """

    reason: str
    creates_only: bool = False


@dataclass(frozen=True)
class Outcome:
    change: Change
    halt: Halt | None = None


def _finish(job: Job, to: State, now: float, error: str | None, **values: Any) -> Change:
    return Change(job.id, job.state, to, {"error": error, "finished_at": now, **values})


# Without a deadline of its own, a job still ends: a status that never resolves (stuck
# `Pending`, a state never seen before) is given up after this long.
DEFAULT_DEADLINE = 2 * 3600.0


def begin_submit(job: Job, now: float, deadline_seconds: float | None) -> Change:
    """Persisted before the create call: if the process dies now, the job is not resent blindly."""
    deadline_at = job.deadline_at
    if deadline_at is None:
        deadline_at = now + (DEFAULT_DEADLINE if deadline_seconds is None else deadline_seconds)
    return Change(
        job.id,
        job.state,
        State.SUBMITTING,
        {"attempts": job.attempts + 1, "submitted_at": now, "deadline_at": deadline_at},
    )


def remaining_deadline(job: Job, now: float) -> float | None:
    return None if job.deadline_at is None else max(0.0, job.deadline_at - now)


def on_input_gone(job: Job, now: float, reason: str) -> Change:
    """An input image changed or vanished since the job was queued: sending something else
    than what the user checked would be wrong, and retrying cannot help."""
    return _finish(job, State.FAILED, now, f"input file changed since it was queued: {reason}")


def _generation(job: Job, now: float, timing: Timing | None) -> float | None:
    """The job's generation time as learned from its looks (its last write was the last look
    that found it unfinished, or the create's answer)."""
    if job.submitted_at is None:
        return None
    return generation_estimate(
        submitted=job.submitted_at,
        last_look=job.updated_at,
        planned=job.next_attempt_at,
        seen=now,
        foretold=job.generation_s,
        prior=timing,
    )


def _started(job: Job) -> float:
    """When the provider started the job's clock, as well as we know: before any query, the
    last write was the create's answer, and the clock started between sending and that answer
    (a `progress` counts from there)."""
    assert job.submitted_at is not None
    if job.polls == 0 and job.updated_at > job.submitted_at:
        return (job.submitted_at + job.updated_at) / 2
    return job.submitted_at


def _poll_at(
    job: Job, now: float, rng: random.Random, timing: Timing | None, progress: float | None = None
) -> float:
    elapsed = now - _started(job) if job.submitted_at is not None else 0.0
    return now + next_poll_delay(
        elapsed=elapsed,
        polls=job.polls,
        timing=timing,
        progress=progress,
        rng=rng,
        scale=time_scale(),
    )


def on_created(
    job: Job,
    submission: Submission,
    now: float,
    rng: random.Random,
    timing: Timing | None = None,
) -> Outcome:
    """The create answered: store the handle first; the answer may already be final."""
    values = {
        "remote_id": submission.handle.remote_id,
        "polling_url": submission.handle.polling_url,
        "cost": submission.cost,
        "error": None,
    }
    # The answer itself is the look: a result final in it was ready by now (`Prefer: wait`
    # answers the moment it is).
    looked = {"updated_at": now, "next_attempt_at": now}
    moved = Job(**{**job.__dict__, "state": State.RUNNING, **values, **looked})
    outcome = on_status(moved, submission.status, now, rng, timing)
    change = outcome.change
    return Outcome(Change(job.id, job.state, change.to, {**values, **change.values}), outcome.halt)


def on_create_error(
    job: Job, error: ProviderError, now: float, policy: RetryPolicy, rng: random.Random
) -> Outcome:
    """Decide what a failed create means. A create that may have been billed is never resent."""
    if error.kind in (ErrorKind.AUTH, ErrorKind.NO_CREDIT):
        # Not billed; give the attempt back and stop the campaign.
        back = {"attempts": max(0, job.attempts - 1), "error": str(error)}
        return Outcome(Change(job.id, job.state, State.QUEUED, back), _halt(error))
    if error.kind is ErrorKind.RATE_LIMITED:
        # The provider's own word on when to come back is taken as given, never scaled.
        wait = error.retry_after if error.retry_after is not None else backoff(1, policy, rng)
        back = {"attempts": max(0, job.attempts - 1), "next_attempt_at": now + wait}
        return Outcome(Change(job.id, job.state, State.QUEUED, back))
    if error.kind is ErrorKind.INVALID:
        return Outcome(_finish(job, State.FAILED, now, f"rejected by provider: {error}"))
    if error.kind is ErrorKind.NETWORK and not error.maybe_sent:
        return Outcome(_retry_or_fail(job, error, now, policy, rng))
    if error.kind is ErrorKind.OVERSIZED:
        # The provider answered, so a prediction may well exist, but not one runner can hold:
        # its answer (or id) is beyond any sane size, and a listing would show the same.
        reason = f"its create was answered, but runner cannot use the answer: {error}"
        return Outcome(on_reconcile_unavailable(job, reason))
    # Timeouts, resets, 5xx, unreadable answers: the provider may have created (and billed) it.
    return Outcome(to_reconcile(job, now, f"create got no usable answer ({error})"))


# How long after a create attempt the provider's list is trusted to show it.
RECONCILE_GRACE = 10.0
RECONCILE_TRIES = 5


def to_reconcile(job: Job, now: float, reason: str) -> Change:
    """Find out whether a create happened before deciding anything (never resend blindly)."""
    return Change(
        job.id,
        job.state,
        State.RECONCILING,
        {
            "error": f"{reason}; it may have been created and billed",
            "strikes": 0,
            "next_attempt_at": now + RECONCILE_GRACE * time_scale(),
        },
    )


def on_reconcile_found(job: Job, submission: Submission, now: float, rng: random.Random) -> Outcome:
    """The create did happen: adopt that prediction instead of paying again."""
    return on_created(job, submission, now, rng)


def on_reconcile_missing(
    job: Job, now: float, max_attempts: int = RetryPolicy.max_attempts
) -> Change:
    """The provider's list covers the attempt and does not have it: it was never created."""
    if job.attempts >= max_attempts:
        # every attempt was answered badly and never created: an outage, not this job
        last = (job.error or "").split("; it may have been", 1)[0]
        reason = f"gave up after {job.attempts} attempts, none of them created (last: {last})"
        return _finish(job, State.FAILED, now, reason)
    return Change(
        job.id,
        job.state,
        State.QUEUED,
        {"error": "the provider never created it; submitting again", "next_attempt_at": now},
    )


def on_reconcile_unavailable(job: Job, reason: str) -> Change:
    return Change(
        job.id,
        job.state,
        State.UNCERTAIN,
        {
            "error": f"{reason}. It may have been created and billed: check the provider, then "
            f"`runner retry {job.campaign} --uncertain` to submit it again"
        },
    )


# While a job with the same input is still being created, a reconcile waits this long between
# looks (scaled in tests), and gives up (uncertain) this long after its own attempt.
RECONCILE_WAIT = 2.0
RECONCILE_WAIT_LIMIT = 600.0


def on_reconcile_wait(job: Job, now: float, reason: str) -> Change:
    """Another job's create with this input is in the air: its prediction may be listed before
    it is held. Look again once that create has its answer."""
    waited = now - (job.submitted_at if job.submitted_at is not None else now)
    if waited > RECONCILE_WAIT_LIMIT * time_scale():
        return on_reconcile_unavailable(job, f"{reason} for too long to tell which is whose")
    return Change(
        job.id,
        job.state,
        State.RECONCILING,
        {"next_attempt_at": now + RECONCILE_WAIT * time_scale()},
    )


def on_prediction_taken(job: Job, remote_id: str, holder: str) -> Change:
    """The create answered with a prediction that another job already took as its own (which
    reconciliation never does while a create is in the air): which one is whose cannot be
    told any more."""
    return on_reconcile_unavailable(
        job,
        f"its create answered prediction {remote_id}, which job {holder} already holds",
    )


def on_reconcile_error(
    job: Job, error: ProviderError, now: float, policy: RetryPolicy, rng: random.Random
) -> Change:
    strikes = job.strikes + 1
    # A listing of many pages fails if any page does: transient errors get the patience polls
    # get, and a 429 waits as long as the provider asks.
    limit = POLL_GIVE_UP_TRANSIENT if error.kind in _TRANSIENT else RECONCILE_TRIES
    if strikes >= limit or error.kind in (ErrorKind.AUTH, ErrorKind.INVALID):
        return on_reconcile_unavailable(job, f"could not list the provider's predictions ({error})")
    wait = backoff(strikes, policy, rng)
    if error.kind is ErrorKind.RATE_LIMITED and error.retry_after is not None:
        wait = error.retry_after
    return Change(
        job.id,
        job.state,
        State.RECONCILING,
        {"strikes": strikes, "next_attempt_at": now + wait},
    )


def _retry_or_fail(
    job: Job, error: ProviderError, now: float, policy: RetryPolicy, rng: random.Random
) -> Change:
    if job.attempts >= policy.max_attempts:
        return _finish(job, State.FAILED, now, f"gave up after {job.attempts} attempts: {error}")
    wait = backoff(job.attempts, policy, rng)
    return Change(
        job.id, job.state, State.QUEUED, {"error": str(error), "next_attempt_at": now + wait}
    )


def on_status(
    job: Job,
    status: RemoteStatus,
    now: float,
    rng: random.Random,
    timing: Timing | None = None,
) -> Outcome:
    """A query (or a create answer) said where the prediction is."""
    phase = status.phase
    extra: dict[str, Any] = {}
    if status.cost is not None:
        extra["cost"] = status.cost
    if phase is Phase.SUCCEEDED:
        if not status.outputs:
            if status.data_removed:
                return Outcome(
                    _finish(job, State.EXPIRED, now, "outputs removed by the provider", **extra)
                )
            return Outcome(_finish(job, State.FAILED, now, "succeeded without outputs", **extra))
        return Outcome(
            Change(
                job.id,
                job.state,
                State.DOWNLOADING,
                {
                    "output_urls": list(status.outputs),
                    "ready_at": now,
                    "generation_s": _generation(job, now, timing),
                    "next_attempt_at": now,
                    "error": None,
                    "strikes": 0,
                    **extra,
                },
            )
        )
    if phase is Phase.FAILED:
        return Outcome(_finish(job, State.FAILED, now, status.error or status.raw_status, **extra))
    if phase is Phase.MODERATED:
        return Outcome(
            _finish(job, State.MODERATED, now, status.error or status.raw_status, **extra)
        )
    if phase is Phase.CANCELED:
        return Outcome(_finish(job, State.CANCELED, now, status.error or "canceled", **extra))
    if phase is Phase.ABORTED:
        reason = "aborted by the provider before it started (deadline); not billed"
        return Outcome(_finish(job, State.CANCELED, now, reason, **extra))
    if phase is Phase.NOT_FOUND:
        return Outcome(_lost_or_retry(job, "task not found at the provider", now, rng))
    # Pending, running, or a status never seen before: poll again later.
    note = None if phase is not Phase.UNKNOWN else f"unknown status {status.raw_status!r}"
    if usable_progress(status.progress) and job.submitted_at is not None:
        assert status.progress is not None
        started = _started(job)
        ready = started + (now - started) / status.progress  # when it will be, by its progress
        extra["generation_s"] = ready - job.submitted_at
    return Outcome(
        Change(
            job.id,
            job.state,
            State.RUNNING,
            {
                "polls": job.polls + 1,
                "next_attempt_at": _poll_at(job, now, rng, timing, status.progress),
                "error": note,
                "strikes": 0,
                **extra,
            },
        )
    )


LOST_AFTER = 3  # consecutive "not found" answers before a job counts as lost
# A task queried within this long of its create may not be known yet where it is asked (BFL
# answers `Task not found` for a while): such answers are no sign of a lost task.
NOT_FOUND_GRACE = 60.0


def _lost_or_retry(job: Job, reason: str, now: float, rng: random.Random) -> Change:
    grace = NOT_FOUND_GRACE * time_scale()
    young = job.submitted_at is not None and now - job.submitted_at < grace
    misses = job.strikes if young else job.strikes + 1
    if misses >= LOST_AFTER:
        return _finish(job, State.FAILED, now, f"lost: {reason} ({misses} times)")
    return Change(
        job.id,
        job.state,
        State.RUNNING,
        {
            "strikes": misses,
            "polls": job.polls + 1,
            "next_attempt_at": _poll_at(job, now, rng, None),
            "error": reason,
        },
    )


# Consecutive failed queries before a job is given up: answers that cannot get better (a 422,
# an unreadable body) fail fast; transient ones (5xx, timeouts, 429) get a long backoff first.
POLL_GIVE_UP_PERMANENT = 3
POLL_GIVE_UP_TRANSIENT = 20
_TRANSIENT = frozenset(
    {ErrorKind.SERVER, ErrorKind.TIMEOUT, ErrorKind.NETWORK, ErrorKind.RATE_LIMITED}
)


def on_poll_error(
    job: Job, error: ProviderError, now: float, policy: RetryPolicy, rng: random.Random
) -> Outcome:
    """A query failed. Queries are free to repeat, but not forever; auth stops the campaign."""
    if error.kind in (ErrorKind.AUTH, ErrorKind.NO_CREDIT):
        # Not due again soon: the campaign stops, and a resumed run retries it first thing.
        keep = {"error": str(error), "next_attempt_at": now + backoff(1, policy, rng)}
        return Outcome(Change(job.id, job.state, job.state, keep), _halt(error))
    if error.kind is ErrorKind.NOT_FOUND:
        return Outcome(_lost_or_retry(job, str(error), now, rng))
    strikes = job.strikes + 1
    limit = POLL_GIVE_UP_TRANSIENT if error.kind in _TRANSIENT else POLL_GIVE_UP_PERMANENT
    if strikes >= limit:
        reason = f"gave up after {strikes} failed status queries: {error}"
        return Outcome(_finish(job, State.FAILED, now, reason))
    if error.kind is ErrorKind.RATE_LIMITED and error.retry_after is not None:
        wait = error.retry_after
    else:
        wait = backoff(strikes, policy, rng)
    values = {"polls": job.polls + 1, "strikes": strikes, "next_attempt_at": now + wait}
    return Outcome(Change(job.id, job.state, job.state, {**values, "error": str(error)}))


def on_deadline(job: Job, now: float) -> Change:
    return _finish(job, State.EXPIRED, now, "the job's deadline passed before it finished")


def on_downloaded(job: Job, files: list[dict[str, Any]], now: float) -> Change:
    return _finish(job, State.DONE, now, None, files=files)


def on_download_error(
    job: Job,
    error: str,
    now: float,
    policy: RetryPolicy,
    rng: random.Random,
    *,
    url_gone: bool,
    can_refresh: bool = False,
    local: bool = False,
    local_tries: int = 1,
) -> Change:
    """A download failed. A gone URL never comes back: re-read the prediction for fresh URLs
    where the API gives them (Replicate), else the result is expired (resubmitting costs money,
    so only the user decides that). A local failure (a full disk), the `local_tries`-th in a
    row, is no fault of the result: it is tried again soon, strike-free, until space returns
    or the URL expires (the next fetch then finds it gone)."""
    if local:
        wait = local_retry_wait(local_tries, policy.scale)
        return Change(
            job.id, job.state, State.DOWNLOADING, {"next_attempt_at": now + wait, "error": error}
        )
    if url_gone and can_refresh and job.url_refreshes < MAX_URL_REFRESHES:
        return Change(
            job.id,
            job.state,
            State.RUNNING,
            {
                "url_refreshes": job.url_refreshes + 1,
                "next_attempt_at": now,
                "strikes": 0,
                "error": f"output URL gone ({error}); reading the prediction again",
            },
        )
    if url_gone:
        return _finish(job, State.EXPIRED, now, f"output URL no longer served: {error}")
    tried = job.strikes + 1
    if tried >= policy.max_download_attempts:
        return _finish(job, State.FAILED, now, f"download failed {tried} times: {error}")
    return Change(
        job.id,
        job.state,
        State.DOWNLOADING,
        {
            "strikes": tried,
            "next_attempt_at": now + backoff(tried, policy, rng),
            "error": error,
        },
    )


MAX_URL_REFRESHES = 2


# Unexpected errors (bugs: an exception no rule here expects) a job may meet in one state
# before it is given up. Each try waits as a retry does; a bug that comes back every time ends
# the job within a few minutes instead of being retried every 30 s until its deadline.
MAX_BUGS = 5


def on_bug(
    job: Job, error: str, now: float, policy: RetryPolicy, rng: random.Random
) -> Change | None:
    """A job's handler raised something unexpected; `job` as the database holds it now.

    Tried again later, `MAX_BUGS` times at most in one state, then given up: failed, or
    uncertain when it may have been created and billed (never resent). A create that may have
    gone out is never tried again blindly: it is reconciled at once. None: settled already,
    nothing to do.
    """
    if job.state in SETTLED:
        return None
    bugs = job.bugs + 1
    if job.state is State.SUBMITTING:
        change = to_reconcile(job, now, f"unexpected error while creating ({error})")
        return replace(change, values={**change.values, "bugs": bugs})
    if bugs >= MAX_BUGS:
        reason = f"gave up after {bugs} unexpected errors (last: {error})"
        if job.state is State.RECONCILING:
            change = on_reconcile_unavailable(job, reason)
            return replace(change, values={**change.values, "bugs": bugs})
        return _finish(job, State.FAILED, now, reason, bugs=bugs)
    return Change(
        job.id,
        job.state,
        job.state,
        {
            "bugs": bugs,
            "next_attempt_at": now + backoff(bugs, policy, rng),
            "error": f"unexpected error {bugs} of {MAX_BUGS} allowed, trying again: {error}",
        },
    )


def can_reuse(job: Job) -> bool:
    """Reuse only when asked and only for a fixed seed: without one, the same input is
    another image, and the user asked for another image."""
    return bool(job.meta.get("reuse")) and job.input.get("seed") is not None


def on_reused(job: Job, source: Job, files: list[dict[str, Any]], now: float) -> Change:
    return _finish(
        job,
        State.DONE,
        now,
        None,
        files=files,
        cost=0.0,
        meta={**job.meta, "reused_from": {"campaign": source.campaign, "key": source.key}},
    )


def user_cancel(job: Job, now: float) -> Change:
    return _finish(job, State.CANCELED, now, "canceled by the user")


def user_retry(job: Job, now: float) -> Change:
    """`runner retry`: the user's say-so to try again (for uncertain jobs: to pay again)."""
    return Change(
        job.id,
        job.state,
        State.QUEUED,
        {
            "attempts": 0,
            "polls": 0,
            "error": None,
            "next_attempt_at": now,
            "remote_id": None,
            "polling_url": None,
            "output_urls": [],
            "deadline_at": None,
            "finished_at": None,
            "strikes": 0,
            "url_refreshes": 0,
        },
    )


def _halt(error: ProviderError) -> Halt:
    if error.kind is ErrorKind.AUTH:
        return Halt(
            f"the provider refused the API key ({error}). Check that the environment variable "
            "holds a valid key for this provider, then run the same command again."
        )
    return Halt(
        f"the provider says the account is out of credit ({error}). Jobs already running "
        "were finished; add credit, then run the same command again. Nothing was lost.",
        creates_only=True,
    )
