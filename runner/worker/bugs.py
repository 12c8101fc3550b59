"""How an unexpected exception in a job's handler is told: in one line, without the API key,
cut short; and which bug it is, so that its traceback is logged once, not with every retry.
What is done about it is `runner.states.on_bug`'s to decide, and `Worker._bug`'s to carry out.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable

from runner.bounds import clip
from runner.campaign import CampaignSettings
from runner.providers.errors import redact

BUG_TEXT = 500  # characters of an unexpected exception kept in a job's error and its log line


def key_of(settings: CampaignSettings) -> tuple[str, ...]:
    """The campaign's API key, which an exception's text must never carry into a log or the
    database (a transport's error can show the request's headers)."""
    key = os.environ.get(settings.provider.api_key_env, "").strip()
    return (key,) if len(key) >= 8 else ()


def bug_text(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """An unexpected exception in a line: its type and words, without a secret, cut short."""
    return clip(redact(f"{type(exc).__name__}: {exc}", secrets), BUG_TEXT)


def bug_trace(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """Its traceback, without a secret."""
    return redact("".join(traceback.format_exception(exc)), secrets).rstrip()


def bug_site(exc: BaseException) -> tuple[str, str]:
    """What makes two unexpected exceptions the same bug: the type, and where it was raised."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return type(exc).__name__, where
