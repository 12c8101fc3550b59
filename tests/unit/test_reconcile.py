"""`runner.reconcile.decide`: which listed prediction a create that got no answer made.

Each rule of the module's docstring has a test here that fails when that rule is dropped.
"""

from __future__ import annotations

from runner.providers.base import Candidate, Handle, Listing, Phase, RemoteStatus, Submission
from runner.reconcile import Adopt, Attempt, Missing, Unknowable, Wait, decide, waiting

START = 1000.0  # the listing's window start, on the provider's clock


def candidate(remote_id: str, created_at: float) -> Candidate:
    status = RemoteStatus(Phase.RUNNING, raw_status="processing")
    return Candidate(Submission(Handle(remote_id), status), created_at)


def listing(*candidates: Candidate, removed: tuple[Candidate, ...] = ()) -> Listing:
    return Listing(START, tuple(candidates), removed)


def adopted(verdict: object) -> str:
    assert isinstance(verdict, Adopt), verdict
    return verdict.candidate.submission.handle.remote_id


def test_the_only_free_prediction_is_adopted() -> None:
    verdict = decide(
        1, [Attempt(1, 10.0)], listing(candidate("p1", START + 5)), set(), own_start=START
    )
    assert adopted(verdict) == "p1"


def test_no_prediction_means_never_created() -> None:
    assert isinstance(decide(1, [Attempt(1, 10.0)], listing(), set(), own_start=START), Missing)


def test_a_prediction_another_job_holds_is_never_adopted() -> None:
    verdict = decide(
        1, [Attempt(1, 10.0)], listing(candidate("p1", START + 5)), {"p1"}, own_start=START
    )
    assert isinstance(verdict, Missing)


def test_identical_inputs_are_matched_oldest_attempt_to_oldest_prediction() -> None:
    attempts = [Attempt(3, 30.0), Attempt(1, 10.0), Attempt(2, 20.0)]  # any order
    found = listing(
        candidate("p-b", START + 25), candidate("p-a", START + 15), candidate("p-c", START + 35)
    )
    # `listing` holds them oldest first, as the provider module returns them
    ordered = Listing(START, tuple(sorted(found.candidates, key=lambda c: c.created_at)))
    assert [adopted(decide(j, attempts, ordered, set(), own_start=START)) for j in (1, 2, 3)] == [
        "p-a",
        "p-b",
        "p-c",
    ]


def test_with_fewer_predictions_than_jobs_the_newest_attempts_were_not_created() -> None:
    attempts = [Attempt(1, 10.0), Attempt(2, 20.0), Attempt(3, 30.0)]
    found = listing(candidate("p-a", START + 15), candidate("p-b", START + 25))
    verdicts = [decide(j, attempts, found, set(), own_start=START) for j in (1, 2, 3)]
    assert adopted(verdicts[0]) == "p-a" and adopted(verdicts[1]) == "p-b"
    assert isinstance(verdicts[2], Missing)


def test_held_predictions_leave_the_turns_to_the_jobs_still_looking() -> None:
    # job 1 took p-a already (and is no attempt any more): job 2 is now the oldest
    attempts = [Attempt(2, 20.0)]
    found = listing(candidate("p-a", START + 15), candidate("p-b", START + 25))
    assert adopted(decide(2, attempts, found, {"p-a"}, own_start=START)) == "p-b"


def test_more_free_predictions_than_jobs_cannot_be_told_apart() -> None:
    found = listing(candidate("p-a", START + 15), candidate("p-b", START + 25))
    verdict = decide(1, [Attempt(1, 10.0)], found, set(), own_start=START)
    assert isinstance(verdict, Unknowable)
    assert "p-a" in verdict.reason and "p-b" in verdict.reason  # the candidates are named


def test_a_prediction_older_than_the_jobs_own_attempt_is_not_its_own() -> None:
    # job 2's turn falls on a prediction made before job 2 even tried
    attempts = [Attempt(1, 10.0), Attempt(2, 500.0)]
    found = listing(candidate("p-a", START + 15), candidate("p-b", START + 20))
    verdict = decide(2, attempts, found, set(), own_start=START + 490)
    assert isinstance(verdict, Unknowable) and "p-b" in verdict.reason
    assert adopted(decide(1, attempts, found, set(), own_start=START)) == "p-a"


def test_another_create_with_the_same_input_in_the_air_makes_it_wait() -> None:
    attempts = [Attempt(1, 10.0), Attempt(2, 20.0, pending=True)]
    found = listing(candidate("p-a", START + 15), candidate("p-b", START + 25))
    assert isinstance(decide(1, attempts, found, set(), own_start=START), Wait)
    assert isinstance(waiting(1, attempts), Wait)
    # its own create being recorded as in the air does not make a job wait for itself
    assert waiting(2, attempts) is None


def test_a_removed_prediction_since_the_attempt_means_it_cannot_be_told() -> None:
    gone = (candidate("p-gone", START + 130),)
    verdict = decide(1, [Attempt(1, 10.0)], listing(removed=gone), set(), own_start=START)
    assert isinstance(verdict, Unknowable) and "p-gone" in verdict.reason
    # ... unless a job holds it: then it is not this one's
    held = decide(1, [Attempt(1, 10.0)], listing(removed=gone), {"p-gone"}, own_start=START)
    assert isinstance(held, Missing)
    # ... or it was made before this job's own attempt (a sibling's window reached it)
    early = decide(1, [Attempt(1, 10.0)], listing(removed=gone), set(), own_start=START + 200)
    assert isinstance(early, Missing)


def test_a_listing_that_cannot_tell_is_unknowable_whatever_it_holds() -> None:
    found = Listing(START, (candidate("p1", START + 5),), unknowable="more than 50 pages")
    verdict = decide(1, [Attempt(1, 10.0)], found, set(), own_start=START)
    assert isinstance(verdict, Unknowable) and verdict.reason == "more than 50 pages"
    empty = Listing(START, unknowable="too old")
    assert isinstance(decide(1, [Attempt(1, 10.0)], empty, set(), own_start=START), Unknowable)
