"""Which prediction, if any, a create that got no answer made: decided one to one.

A create whose answer was lost (a timeout, a cut connection, a 5xx, a process killed mid-call)
may have made a prediction, and billed it. The provider's list shows what was made with that
input since the attempt; this module decides, from that list and from what the database says,
which listed prediction is the job's, that none is, or that it cannot be told. Pure: no I/O.

The rules, each of which a listing alone cannot make safe:

- A prediction some job already holds is never another's: two jobs would share one image,
  and the other prediction would be paid for and never downloaded.
- Jobs with the very same input (unseeded variants of one prompt send it N times) compete for
  the same listed predictions. They are matched one to one, oldest attempt to oldest
  prediction; a job whose turn finds no prediction left was not created.
- While another job with that input is still being created, its prediction may be listed
  without being held yet: wait until that create has its answer.
- More free predictions than jobs competing for them, a prediction older than the job's own
  attempt, or a prediction made since that attempt whose input the provider removed: it
  cannot be told which is the job's. The job goes `uncertain`, with the candidates named,
  and is never resent blindly.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from runner.providers.base import Candidate, Listing


@dataclass(frozen=True)
class Attempt:
    """A job whose create may have made a prediction that no job holds yet."""

    job_id: int
    submitted_at: float  # local time of its latest create attempt
    pending: bool = False  # its create may still be in the air (the job is `submitting`)


@dataclass(frozen=True)
class Adopt:
    candidate: Candidate


@dataclass(frozen=True)
class Missing:
    """The create never happened: the job may be submitted again."""


@dataclass(frozen=True)
class Unknowable:
    reason: str


@dataclass(frozen=True)
class Wait:
    reason: str


Verdict = Adopt | Missing | Unknowable | Wait

_SHOWN_IDS = 5


def _ids(candidates: Sequence[Candidate] | Sequence[str]) -> str:
    ids = [c if isinstance(c, str) else c.submission.handle.remote_id for c in candidates]
    more = f" and {len(ids) - _SHOWN_IDS} more" if len(ids) > _SHOWN_IDS else ""
    return ", ".join(ids[:_SHOWN_IDS]) + more


def waiting(job_id: int, attempts: Sequence[Attempt]) -> Wait | None:
    """Whether another of `attempts` is still being created (decide nothing before it is)."""
    pending = [a for a in attempts if a.pending and a.job_id != job_id]
    if pending:
        return Wait(f"{len(pending)} other job(s) with the same input are being created")
    return None


def decide(
    job_id: int,
    attempts: Sequence[Attempt],
    listing: Listing,
    held: Collection[str],
    *,
    own_start: float,
) -> Verdict:
    """The verdict for job `job_id`, one of `attempts` (the jobs with its input on its account
    that may own a free prediction, itself included), given the provider's `listing` from the
    earliest of their windows, the ids of `held` predictions (held by some job), and the start
    of its own window on the provider's clock (`own_start`)."""
    wait = waiting(job_id, attempts)
    if wait is not None:
        return wait
    if listing.unknowable:
        return Unknowable(listing.unknowable)
    # one of them may be this job's only if made since its own attempt
    removed = [
        r
        for r in listing.removed
        if r.submission.handle.remote_id not in held and r.created_at >= own_start
    ]
    if removed:
        return Unknowable(
            f"the provider already removed the input of prediction(s) {_ids(removed)}, made "
            "in the same time, so they cannot be compared with it"
        )
    free = [c for c in listing.candidates if c.submission.handle.remote_id not in held]
    order = sorted(attempts, key=lambda a: (a.submitted_at, a.job_id))
    rank = next(n for n, a in enumerate(order) if a.job_id == job_id)
    if len(free) > len(order):
        return Unknowable(
            f"{len(free)} predictions with its model and input ({_ids(free)}) are held by no "
            f"job, for {len(order)} job(s) with that input whose create got no answer: it "
            "cannot be told which is this one's"
        )
    if rank >= len(free):
        return Missing()
    chosen = free[rank]
    if chosen.created_at < own_start:
        return Unknowable(
            f"prediction {_ids([chosen])} has its model and input but was made before this "
            f"job's attempt (candidates: {_ids(free)})"
        )
    return Adopt(chosen)
