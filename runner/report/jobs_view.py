"""`runner jobs`: one line (or one JSON object) per job, streamed from the store."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TextIO

from runner.errors import InputError
from runner.report.records import listing_record, one_line, prompt_of
from runner.states import Job, State

KEY_WIDTH = 22
PROMPT_WIDTH = 40
STATE_WIDTH = 11
ATTEMPTS_WIDTH = 5
REMOTE_WIDTH = 36
ERROR_WIDTH = 160

HEADER = (
    f"{'KEY':<{KEY_WIDTH}}  {'PROMPT':<{PROMPT_WIDTH}}  {'STATE':<{STATE_WIDTH}}  "
    f"{'TRIES':>{ATTEMPTS_WIDTH}}  {'REMOTE ID':<{REMOTE_WIDTH}}  ERROR"
)


def parse_states(text: str | None) -> list[State] | None:
    """`--state failed,expired` as states; None (every state) when not given."""
    if text is None:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    try:
        wanted = [State(name) for name in names]
    except ValueError:
        allowed = ", ".join(s.value for s in State)
        raise InputError(
            f"--state takes a comma-separated list of states, from: {allowed}; got {text!r}."
        ) from None
    if not wanted:
        raise InputError("--state needs at least one state, e.g. --state failed,expired.")
    return wanted


def format_line(job: Job) -> str:
    """Key, prompt (shortened), state, attempts, remote id, error: always exactly one line."""
    return (
        f"{one_line(job.key, 200):<{KEY_WIDTH}}  "
        f"{one_line(prompt_of(job), PROMPT_WIDTH):<{PROMPT_WIDTH}}  "
        f"{job.state.value:<{STATE_WIDTH}}  "
        f"{job.attempts:>{ATTEMPTS_WIDTH}}  "
        f"{one_line(job.remote_id, 80) or '-':<{REMOTE_WIDTH}}  "
        f"{one_line(job.error, ERROR_WIDTH)}"
    ).rstrip()


def write_listing(jobs: Iterable[Job], out: TextIO, *, as_json: bool) -> int:
    """Write each job as it comes (text with a header line, or JSON lines); return the count."""
    count = 0
    if not as_json:
        out.write(HEADER + "\n")
    for job in jobs:
        if as_json:
            out.write(json.dumps(listing_record(job), ensure_ascii=False) + "\n")
        else:
            out.write(format_line(job) + "\n")
        count += 1
    out.flush()
    return count
