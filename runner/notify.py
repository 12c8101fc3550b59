"""`on_finish`: tell someone when a campaign ends (every job settled) or pauses (stopped by the
provider, its budget, --max-runtime or a signal, with work left).

The job file names either a command, run without a shell (its words split like a shell would,
the summary JSON on its standard input and in the environment variable RUNNER_SUMMARY, at most
60 s), or a URL the summary JSON is POSTed to (at most 30 s). A hook that fails is logged, never
fatal: the images are on disk either way.

The summary: {"campaign", "outcome": "finished"|"paused", "reason", "states": {state: count},
"done", "total", "cost", "exit_code"}.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from runner.campaign import OnFinish
from runner.states import SETTLED, State
from runner.store import Store
from runner.worker.pool import RunReport

__all__ = ["COMMAND_TIMEOUT", "SUMMARY_ENV", "URL_TIMEOUT", "Notifier", "run_hook", "summary"]

log = logging.getLogger("runner.notify")

SUMMARY_ENV = "RUNNER_SUMMARY"
COMMAND_TIMEOUT = 60.0  # seconds
URL_TIMEOUT = 30.0  # seconds
_SHOWN = 500  # characters of a failing hook's output that are logged


def summary(store: Store, name: str, report: RunReport, exit_code: int) -> dict[str, Any]:
    """What a hook is told about campaign `name` after a run."""
    states = dict(sorted(store.counts(name).get(name, {}).items()))
    finished = all(State(state) in SETTLED for state in states)
    reason = report.halted.get(name)
    if reason is None and not finished:
        reason = (
            "stopped early (--max-runtime ran out, or a signal): run again to resume"
            if report.stopped_early
            else "work is left: run again to resume"
        )
    return {
        "campaign": name,
        "outcome": "finished" if finished else "paused",
        "reason": reason,
        "states": states,
        "done": states.get(State.DONE.value, 0),
        "total": sum(states.values()),
        "cost": store.costs(name).get(name),
        "exit_code": exit_code,
    }


def is_settled(store: Store, name: str) -> bool:
    return all(State(state) in SETTLED for state in store.counts(name).get(name, {}))


def run_hook(on_finish: OnFinish, data: dict[str, Any]) -> bool:
    """Run the command or POST to the URL; False (and a logged warning) when it failed."""
    text = json.dumps(data)
    if on_finish.command is not None:
        return _run_command(on_finish.command, text)
    assert on_finish.url is not None
    return _post(on_finish.url, text)


def _run_command(command: str, text: str) -> bool:
    words = shlex.split(command)
    try:
        done = subprocess.run(
            words,
            input=text,
            env={**os.environ, SUMMARY_ENV: text},
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        log.warning(
            "on_finish: %r did not finish within %.0f s; stopped it", command, COMMAND_TIMEOUT
        )
        return False
    except OSError as exc:
        log.warning("on_finish: cannot run %r: %s", command, exc)
        return False
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()[-_SHOWN:]
        log.warning(
            "on_finish: %r exited with %d%s",
            command,
            done.returncode,
            f": {output}" if output else "",
        )
        return False
    log.info("on_finish: ran %r", command)
    return True


def _post(url: str, text: str) -> bool:
    try:
        response = httpx.post(
            url,
            content=text,
            headers={"content-type": "application/json"},
            timeout=URL_TIMEOUT,
        )
    except httpx.HTTPError as exc:
        log.warning("on_finish: POST to %s failed: %s", url, exc or type(exc).__name__)
        return False
    if response.is_error:
        log.warning("on_finish: POST to %s answered HTTP %d", url, response.status_code)
        return False
    log.info("on_finish: posted the summary to %s", url)
    return True


class Notifier:
    """Runs each campaign's on_finish once per end: when it settles, or when the run stops."""

    def __init__(self, store: Store, exit_code: Callable[[str, RunReport], int]) -> None:
        self.store = store
        self.exit_code = exit_code
        self.sent: set[str] = set()

    def settled(self, names: Iterable[str], report: RunReport) -> None:
        """Notify the campaigns that have just settled (a long-running `runner work`)."""
        for name in names:
            if not is_settled(self.store, name):
                self.sent.discard(name)  # new jobs came: it will end again
            elif name not in self.sent:
                self._send(name, report)

    def final(self, names: Iterable[str], report: RunReport) -> None:
        """Notify every campaign not notified yet: the run is over."""
        for name in names:
            if name not in self.sent:
                self._send(name, report)

    def _send(self, name: str, report: RunReport) -> None:
        self.sent.add(name)
        on_finish = self.store.settings(name).on_finish
        if on_finish is not None:
            run_hook(on_finish, summary(self.store, name, report, self.exit_code(name, report)))
