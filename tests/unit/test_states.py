"""The state machine, without I/O: every event's effect, and the moves it refuses."""

from __future__ import annotations

import random

import pytest

from runner import states
from runner.providers.base import (
    ErrorKind,
    Handle,
    Phase,
    ProviderError,
    RemoteStatus,
    Submission,
)
from runner.retry import RetryPolicy
from runner.states import MOVES, TERMINAL, Change, IllegalMove, Job, State

NOW = 1_000_000.0
POLICY = RetryPolicy(max_attempts=3)


def job(state: State = State.QUEUED, **kw: object) -> Job:
    base: dict[str, object] = dict(
        id=1,
        campaign="c",
        key="k",
        index=1,
        provider="bfl",
        model="m",
        input={"prompt": "p"},
        meta={},
        state=state,
    )
    base.update(kw)
    return Job(**base)  # type: ignore[arg-type]


def rng() -> random.Random:
    return random.Random(7)


def test_done_is_final_and_terminals_only_go_back_to_queue() -> None:
    assert MOVES[State.DONE] == frozenset()
    for state in TERMINAL - {State.DONE}:
        assert MOVES[state] == {State.QUEUED}


def test_illegal_move_is_refused() -> None:
    with pytest.raises(IllegalMove):
        Change(1, State.QUEUED, State.DOWNLOADING)
    with pytest.raises(IllegalMove):
        Change(1, State.UNCERTAIN, State.SUBMITTING)  # resending needs the user's retry
    with pytest.raises(IllegalMove):
        Change(1, State.DONE, State.QUEUED)


def test_without_a_deadline_a_job_still_ends_eventually() -> None:
    change = states.begin_submit(job(), NOW, deadline_seconds=None)
    assert change.values["deadline_at"] == NOW + states.DEFAULT_DEADLINE


def test_begin_submit_counts_attempt_and_sets_deadline_once() -> None:
    change = states.begin_submit(job(attempts=1), NOW, deadline_seconds=60)
    assert change.to is State.SUBMITTING
    assert change.values["attempts"] == 2
    assert change.values["deadline_at"] == NOW + 60
    again = states.begin_submit(job(attempts=2, deadline_at=NOW + 5), NOW + 10, 60)
    assert again.values["deadline_at"] == NOW + 5  # from the first submission, not reset


def test_created_persists_handle_and_goes_running() -> None:
    sub = Submission(Handle("r1", "http://x/poll"), RemoteStatus(Phase.PENDING), cost=1.5)
    outcome = states.on_created(job(State.SUBMITTING, attempts=1), sub, NOW, rng())
    assert outcome.change.expect is State.SUBMITTING
    assert outcome.change.to is State.RUNNING
    assert outcome.change.values["remote_id"] == "r1"
    assert outcome.change.values["polling_url"] == "http://x/poll"
    assert outcome.change.values["cost"] == 1.5
    assert outcome.change.values["next_attempt_at"] > NOW


def test_created_already_finished_goes_straight_to_download() -> None:
    sub = Submission(Handle("r1"), RemoteStatus(Phase.SUCCEEDED, outputs=("http://f/1.png",)))
    outcome = states.on_created(job(State.SUBMITTING), sub, NOW, rng())
    assert outcome.change.to is State.DOWNLOADING
    assert outcome.change.values["remote_id"] == "r1"
    assert outcome.change.values["output_urls"] == ["http://f/1.png"]


def test_what_is_learned_is_when_a_result_became_ready_not_when_it_was_seen() -> None:
    ready = RemoteStatus(Phase.SUCCEEDED, outputs=("http://f/1.png",))
    # Submitted at NOW-10, last seen unfinished at NOW-4, looked again on time at NOW.
    polled = job(State.RUNNING, submitted_at=NOW - 10, updated_at=NOW - 4, next_attempt_at=NOW)
    change = states.on_status(polled, ready, NOW, rng()).change
    assert change.values["generation_s"] == pytest.approx(8.0)  # between 6 and 10
    assert change.values["ready_at"] == NOW  # seen now
    # A look an hour late (a restart between the two) is too wide to learn from.
    late = job(
        State.RUNNING, submitted_at=NOW - 3600, updated_at=NOW - 3595, next_attempt_at=NOW - 3590
    )
    assert states.on_status(late, ready, NOW, rng()).change.values["generation_s"] is None
    # A running answer with progress foretells the generation time; the ready one keeps it.
    running = RemoteStatus(Phase.RUNNING, progress=0.25)
    looked = job(State.RUNNING, submitted_at=NOW - 2, updated_at=NOW - 1, polls=1)
    foretold = states.on_status(looked, running, NOW, rng()).change.values["generation_s"]
    assert foretold == pytest.approx(8.0)  # a quarter done after 2 s
    seen = job(
        State.RUNNING,
        submitted_at=NOW - 8.3,
        updated_at=NOW - 6.3,
        next_attempt_at=NOW,
        generation_s=foretold,
    )
    assert states.on_status(seen, ready, NOW, rng()).change.values["generation_s"] == foretold
    # An answer to the create itself (`Prefer: wait`) was ready when it came.
    sub = Submission(Handle("r1"), ready)
    sent = job(State.SUBMITTING, submitted_at=NOW - 3, updated_at=NOW - 3, next_attempt_at=0.0)
    created = states.on_created(sent, sub, NOW, rng()).change
    assert created.values["generation_s"] == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("kind", "maybe_sent", "expected"),
    [
        (ErrorKind.TIMEOUT, True, State.RECONCILING),
        (ErrorKind.SERVER, True, State.RECONCILING),
        (ErrorKind.PROTOCOL, True, State.RECONCILING),
        (ErrorKind.NETWORK, False, State.QUEUED),
        (ErrorKind.INVALID, True, State.FAILED),
        (ErrorKind.RATE_LIMITED, True, State.QUEUED),
    ],
)
def test_create_errors_never_resend_what_may_be_billed(
    kind: ErrorKind, maybe_sent: bool, expected: State
) -> None:
    error = ProviderError(kind, "boom", maybe_sent=maybe_sent)
    outcome = states.on_create_error(job(State.SUBMITTING, attempts=1), error, NOW, POLICY, rng())
    assert outcome.change.to is expected
    assert outcome.halt is None


def test_rate_limit_waits_retry_after_and_gives_the_attempt_back() -> None:
    error = ProviderError(ErrorKind.RATE_LIMITED, "slow down", status_code=429, retry_after=10)
    outcome = states.on_create_error(job(State.SUBMITTING, attempts=2), error, NOW, POLICY, rng())
    assert outcome.change.values["next_attempt_at"] == NOW + 10
    assert outcome.change.values["attempts"] == 1


def test_unsent_create_fails_after_max_attempts() -> None:
    error = ProviderError(ErrorKind.NETWORK, "refused", maybe_sent=False)
    outcome = states.on_create_error(job(State.SUBMITTING, attempts=3), error, NOW, POLICY, rng())
    assert outcome.change.to is State.FAILED
    assert "3 attempts" in outcome.change.values["error"]


@pytest.mark.parametrize("kind", [ErrorKind.AUTH, ErrorKind.NO_CREDIT])
def test_auth_and_credit_errors_halt_the_campaign_without_losing_the_job(kind: ErrorKind) -> None:
    error = ProviderError(kind, "no", status_code=401)
    outcome = states.on_create_error(job(State.SUBMITTING, attempts=1), error, NOW, POLICY, rng())
    assert outcome.change.to is State.QUEUED
    assert outcome.change.values["attempts"] == 0
    assert outcome.halt is not None
    poll = states.on_poll_error(job(State.RUNNING, remote_id="r"), error, NOW, POLICY, rng())
    assert poll.change.to is State.RUNNING
    assert poll.halt is not None
    assert poll.change.values["next_attempt_at"] > NOW  # a halted poll must not spin
    assert poll.halt.creates_only is (kind is ErrorKind.NO_CREDIT)


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (Phase.FAILED, State.FAILED),
        (Phase.MODERATED, State.MODERATED),
        (Phase.CANCELED, State.CANCELED),
        (Phase.ABORTED, State.CANCELED),
        (Phase.PENDING, State.RUNNING),
        (Phase.RUNNING, State.RUNNING),
        (Phase.UNKNOWN, State.RUNNING),
    ],
)
def test_status_mapping(phase: Phase, expected: State) -> None:
    outcome = states.on_status(job(State.RUNNING, remote_id="r"), RemoteStatus(phase), NOW, rng())
    assert outcome.change.to is expected
    if expected in TERMINAL:
        assert outcome.change.values["finished_at"] == NOW


def test_unknown_status_is_recorded_and_polled_again() -> None:
    status = RemoteStatus(Phase.UNKNOWN, raw_status="Reasoning")
    outcome = states.on_status(job(State.RUNNING, polls=4), status, NOW, rng())
    assert outcome.change.values["polls"] == 5
    assert "Reasoning" in outcome.change.values["error"]
    assert outcome.change.values["next_attempt_at"] > NOW


def test_not_found_is_lost_only_after_repeated_answers() -> None:
    status = RemoteStatus(Phase.NOT_FOUND, raw_status="Task not found")
    first = states.on_status(job(State.RUNNING), status, NOW, rng()).change
    assert first.to is State.RUNNING and first.values["strikes"] == 1
    last = states.on_status(job(State.RUNNING, strikes=2), status, NOW, rng()).change
    assert last.to is State.FAILED
    assert "lost" in last.values["error"]


def test_succeeded_without_outputs_and_removed_data() -> None:
    removed = RemoteStatus(Phase.SUCCEEDED, data_removed=True)
    assert states.on_status(job(State.RUNNING), removed, NOW, rng()).change.to is State.EXPIRED
    empty = RemoteStatus(Phase.SUCCEEDED)
    assert states.on_status(job(State.RUNNING), empty, NOW, rng()).change.to is State.FAILED


def test_download_errors_retry_then_fail_and_gone_urls_expire() -> None:
    change = states.on_download_error(
        job(State.DOWNLOADING), "reset", NOW, POLICY, rng(), url_gone=False
    )
    assert change.to is State.DOWNLOADING and change.values["strikes"] == 1
    exhausted = states.on_download_error(
        job(State.DOWNLOADING, strikes=POLICY.max_download_attempts - 1),
        "reset",
        NOW,
        POLICY,
        rng(),
        url_gone=False,
    )
    assert exhausted.to is State.FAILED
    gone = states.on_download_error(
        job(State.DOWNLOADING), "403", NOW, POLICY, rng(), url_gone=True
    )
    assert gone.to is State.EXPIRED


def test_a_full_disk_is_retried_without_strikes() -> None:
    """The result is paid for and its URL still works: a full disk must not use it up."""
    tired = job(State.DOWNLOADING, strikes=POLICY.max_download_attempts - 1)
    change = states.on_download_error(
        tired, "the disk is full", NOW, POLICY, rng(), url_gone=False, local=True
    )
    assert change.to is State.DOWNLOADING
    assert "strikes" not in change.values
    assert change.values["next_attempt_at"] > NOW


def test_downloaded_is_done_with_files() -> None:
    files = [{"path": "/o/1.png", "sha256": "ab", "bytes": 3, "url": "u"}]
    change = states.on_downloaded(job(State.DOWNLOADING), files, NOW)
    assert change.to is State.DONE and change.values["files"] == files


def test_user_retry_clears_the_remote_handle() -> None:
    change = states.user_retry(job(State.UNCERTAIN, remote_id="r", attempts=2, strikes=2), NOW)
    assert change.to is State.QUEUED
    assert change.values["remote_id"] is None
    assert change.values["attempts"] == 0 and change.values["strikes"] == 0


def test_poll_errors_give_up_instead_of_looping_forever() -> None:
    bad = ProviderError(ErrorKind.INVALID, "query.id: Field required", status_code=422)
    first = states.on_poll_error(job(State.RUNNING), bad, NOW, POLICY, rng()).change
    assert first.to is State.RUNNING and first.values["strikes"] == 1
    last = states.on_poll_error(job(State.RUNNING, strikes=2), bad, NOW, POLICY, rng()).change
    assert last.to is State.FAILED and "422" in last.values["error"]
    flaky = ProviderError(ErrorKind.SERVER, "busy", status_code=503)
    still = states.on_poll_error(job(State.RUNNING, strikes=10), flaky, NOW, POLICY, rng()).change
    assert still.to is State.RUNNING  # transient errors get many more chances
    assert (
        states.on_poll_error(job(State.RUNNING, strikes=19), flaky, NOW, POLICY, rng()).change.to
        is State.FAILED
    )
