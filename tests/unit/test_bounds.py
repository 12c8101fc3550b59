"""Bounded answers and bounded bugs, without I/O: the sizes, the checks where answers are
parsed, and what an oversized answer or an unexpected error does to a job."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from runner import bounds, states
from runner.inputs import make_marker, materialize, sent_size
from runner.jsontext import dumps
from runner.providers.base import ErrorKind, ProviderError
from runner.providers.bfl import parse_result
from runner.providers.replicate import parse_prediction
from runner.retry import RetryPolicy
from runner.states import MOVES, SETTLED, Job, State
from runner.store.schema import jobs

NOW = 1_000_000.0
POLICY = RetryPolicy(max_attempts=3)
URL = "https://replicate.delivery/x/out-0.png"


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


# -- sizes ----------------------------------------------------------------------------------


def test_clip_keeps_short_text_and_cuts_long_text_to_the_limit_saying_so() -> None:
    assert bounds.clip("short") == "short"
    text = "x" * 1_000_000
    clipped = bounds.clip(text)
    assert len(clipped) == bounds.MAX_ERROR
    assert clipped.endswith("(1,000,000 characters, cut to 4,096)")
    assert len(bounds.clip(text, 100)) == 100


def test_an_id_the_store_takes_is_an_id_the_parsers_take() -> None:
    # PostgreSQL refuses a remote_id longer than its column: the parsers must refuse it first
    assert jobs.c.remote_id.type.length == bounds.MAX_ID  # type: ignore[attr-defined]


def test_an_answer_may_echo_what_was_sent_twice_over() -> None:
    assert bounds.answer_limit() == bounds.MAX_ANSWER == 1024 * 1024
    assert bounds.answer_limit(1000) == bounds.MAX_ANSWER + 2000


def test_sent_size_counts_files_as_the_data_urls_they_become(tmp_path: Path) -> None:
    image = tmp_path / "in.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200_000))
    marker = make_marker(image, "replicate")
    job_input = {"prompt": "p", "input_images": [marker, marker]}
    sent = dumps(materialize(job_input, "replicate")).encode()
    assert sent_size(job_input) == pytest.approx(len(sent), abs=16)
    assert sent_size({"prompt": "p"}) == len(b'{"prompt":"p"}')


# -- where answers are parsed ---------------------------------------------------------------


def test_more_outputs_than_one_prediction_has_are_a_protocol_error() -> None:
    body = {"status": "succeeded", "output": [URL] * (bounds.MAX_OUTPUTS + 1)}
    with pytest.raises(ProviderError) as caught:
        parse_prediction(body)
    assert caught.value.kind is ErrorKind.OVERSIZED
    assert "17 output URLs, more than the 16" in caught.value.message
    assert len(parse_prediction({**body, "output": [URL] * 16}).outputs) == 16


@pytest.mark.parametrize(
    "body",
    [
        {"status": "succeeded", "output": URL + "?" + "p" * bounds.MAX_URL},
        {"status": "succeeded", "output": [URL, URL + "?" + "p" * bounds.MAX_URL]},
    ],
)
def test_an_output_url_beyond_8_kib_is_a_protocol_error(body: dict[str, object]) -> None:
    with pytest.raises(ProviderError) as caught:
        parse_prediction(body)
    assert caught.value.kind is ErrorKind.OVERSIZED
    assert "an output URL is 8," in caught.value.message and "8,192" in caught.value.message


def test_a_bfl_sample_url_beyond_8_kib_is_a_protocol_error() -> None:
    body = {"status": "Ready", "result": {"sample": URL + "?" + "p" * 10_000}}
    with pytest.raises(ProviderError) as caught:
        parse_result(body)
    assert caught.value.kind is ErrorKind.OVERSIZED
    assert parse_result({"status": "Ready", "result": {"sample": URL}}).outputs == (URL,)


def test_error_texts_and_status_words_are_cut_to_size_not_refused() -> None:
    huge = "e" * 2_000_000
    failed = parse_prediction({"status": "failed", "error": huge})
    assert failed.error is not None and len(failed.error) == bounds.MAX_ERROR
    moderated = parse_result({"status": "Error", "details": {"error": huge}})
    assert moderated.error is not None and len(moderated.error) == bounds.MAX_ERROR
    strange = parse_prediction({"status": "s" * 1_000_000})
    assert len(strange.raw_status) == bounds.MAX_STATUS


def test_a_provider_error_never_carries_more_than_a_page_of_text() -> None:
    error = ProviderError(ErrorKind.INVALID, "d" * 1_000_000, status_code=422)
    assert len(error.message) == bounds.MAX_ERROR
    assert len(str(error)) < bounds.MAX_ERROR + 20


# -- what it does to a job ------------------------------------------------------------------


def test_an_oversized_create_answer_is_uncertain_never_resent() -> None:
    error = ProviderError(
        ErrorKind.OVERSIZED, "the prediction id is 1,000,000 characters long, more than the 200"
    )
    change = states.on_create_error(job(State.SUBMITTING, attempts=1), error, NOW, POLICY, rng())
    assert change.change.to is State.UNCERTAIN
    reason = change.change.values["error"]
    assert "more than the 200" in reason and "runner retry c --uncertain" in reason


def test_an_oversized_poll_answer_is_a_failed_query_with_few_strikes() -> None:
    error = ProviderError(ErrorKind.OVERSIZED, "an output URL is 9,000 characters long")
    first = states.on_poll_error(job(State.RUNNING), error, NOW, POLICY, rng()).change
    assert first.to is State.RUNNING and first.values["strikes"] == 1
    last = states.on_poll_error(job(State.RUNNING, strikes=2), error, NOW, POLICY, rng()).change
    assert last.to is State.FAILED and "9,000 characters" in last.values["error"]


@pytest.mark.parametrize(
    ("state", "given_up"),
    [
        (State.QUEUED, State.FAILED),
        (State.RUNNING, State.FAILED),
        (State.DOWNLOADING, State.FAILED),
        (State.RECONCILING, State.UNCERTAIN),  # it may have been created: never resent
    ],
)
def test_a_bug_is_tried_again_a_few_times_then_the_job_is_given_up(
    state: State, given_up: State
) -> None:
    current = job(state, remote_id="r1")
    waits = []
    for n in range(1, states.MAX_BUGS):
        change = states.on_bug(current, "RuntimeError: boom", NOW, POLICY, rng())
        assert change is not None and change.to is state, n
        assert change.values["bugs"] == n
        assert f"{n} of {states.MAX_BUGS}" in change.values["error"]
        waits.append(change.values["next_attempt_at"] - NOW)
        current = states.applied(current, change)
    last = states.on_bug(current, "RuntimeError: boom", NOW, POLICY, rng())
    assert last is not None and last.to is given_up
    assert last.values["bugs"] == states.MAX_BUGS
    assert "gave up after 5 unexpected errors (last: RuntimeError: boom)" in last.values["error"]
    # the same seed each time: the ceilings of the waits grow as a retry's do
    assert waits == sorted(waits) and waits[-1] > 0


def test_a_bug_while_creating_is_reconciled_never_tried_again_blindly() -> None:
    sending = job(State.SUBMITTING, attempts=1, bugs=0)
    change = states.on_bug(sending, "RuntimeError: boom", NOW, POLICY, rng())
    assert change is not None and change.to is State.RECONCILING
    assert change.values["bugs"] == 1
    assert "unexpected error while creating (RuntimeError: boom)" in change.values["error"]
    # however many bugs came before: a create that may have gone out is not sent again
    again = states.on_bug(job(State.SUBMITTING, bugs=9), "x", NOW, POLICY, rng())
    assert again is not None and again.to is State.RECONCILING


def test_a_bug_after_the_job_settled_changes_nothing() -> None:
    for state in SETTLED:
        assert states.on_bug(job(state), "x", NOW, POLICY, rng()) is None


def test_a_create_answered_unusably_may_go_straight_to_uncertain() -> None:
    assert State.UNCERTAIN in MOVES[State.SUBMITTING]
