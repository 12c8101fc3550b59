"""Budget guards: how many creates a run may still make, and what a campaign has spent.

Pure decisions, no I/O: the worker reads the figures from the store and asks `allowance()`
before it claims jobs to submit; `runner run --dry-run` asks `estimate_cost()`.

How cost is counted (conservatively, so that a limit is not overshot by a whole batch):

- a job whose cost the provider reported (BFL does, in its create answer) counts at that cost,
  whatever its state;
- a job that was, or may have been, created without a reported cost (submitting, running,
  reconciling, downloading, done, uncertain), and a queued job a worker has claimed to submit,
  counts at the job file's `price_per_image`, else at the last cost the provider reported for
  one of the campaign's jobs;
- when neither is known yet, jobs are submitted one at a time until the first cost is reported.

A job is only submitted when its estimated cost still fits under `max_cost`; when none fits,
submissions pause (jobs in flight are still polled and downloaded) and the run ends with exit
code 3. `max_jobs` counts the creates of one run (one `runner run` or `runner work` process),
including the ones in hand.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from runner.campaign import Budget
from runner.store.store import Spend

__all__ = ["Allowance", "allowance", "estimate_cost", "per_job_cost", "spent"]

_EPSILON = 1e-9  # sums of decimal prices are not exact: 0.1 * 3 < 0.3


@dataclass(frozen=True)
class Allowance:
    """How many creates a campaign may claim now (None: no limit), or why it must pause."""

    room: int | None = None
    paused: str | None = None


def per_job_cost(budget: Budget, spend: Spend) -> float | None:
    """What one more job is taken to cost: the configured price, else the last reported."""
    if budget.price_per_image is not None:
        return budget.price_per_image
    return spend.last_cost


def spent(budget: Budget, spend: Spend) -> float:
    """The reported costs plus every billed job without a reported cost at the per-job cost."""
    return spend.known + spend.unknown * (per_job_cost(budget, spend) or 0.0)


def allowance(
    name: str, budget: Budget, spend: Spend | None, created: int, in_hand: int
) -> Allowance:
    """The creates campaign `name` may claim now, under its budget.

    `created`: creates this run has made for it; `in_hand`: jobs this run holds to submit.
    `spend` is needed only when the budget has a `max_cost`.
    """
    room: int | None = None
    if budget.max_jobs is not None:
        if created >= budget.max_jobs:
            return Allowance(
                0,
                f"campaign {name} reached its max_jobs of {budget.max_jobs} for this run "
                f"({created} submitted): submissions paused; run again to submit up to "
                f"{budget.max_jobs} more, or raise budget.max_jobs in the job file",
            )
        room = max(0, budget.max_jobs - created - in_hand)
    if budget.max_cost is not None and spend is not None:
        limit = budget.max_cost
        total = spent(budget, spend)
        per_job = per_job_cost(budget, spend)
        fits: int | None
        if per_job is None:
            # No cost known yet: one create at a time until the provider reports one.
            fits = 0 if spend.unknown else 1
        elif per_job <= 0:
            fits = None if total < limit - _EPSILON else 0
        else:
            fits = max(0, math.floor((limit - total) / per_job + _EPSILON))
        if fits == 0 and (per_job is not None or total >= limit - _EPSILON):
            more = (
                f", and one more job costs about {per_job:.2f}"
                if per_job is not None and total < limit - _EPSILON
                else ""
            )
            return Allowance(
                0,
                f"campaign {name} reached its max_cost of {limit:.2f} (spent {total:.2f}{more}): "
                "submissions paused; raise budget.max_cost in the job file and run again",
            )
        if fits is not None:
            room = fits if room is None else min(room, fits)
    return Allowance(room)


def estimate_cost(
    new_by_model: Mapping[str, int], price_per_image: float | None, averages: Mapping[str, float]
) -> float | None:
    """The estimated cost of new jobs: `price_per_image` each when given, else the average
    cost of done jobs of the same model; None when some model has neither."""
    if price_per_image is not None:
        return price_per_image * sum(new_by_model.values())
    total = 0.0
    for model, count in new_by_model.items():
        if count == 0:
            continue
        if model not in averages:
            return None
        total += averages[model] * count
    return total
