"""Durations as people write them ("90s", "30m", "1h30m") and as Cancel-After headers take them.

Only parsing and formatting live here; nothing reads a clock. Both directions use the same small
grammar (hours, minutes, seconds, in that order) so that whatever `format_duration` writes,
`parse_duration` reads back.
"""

from __future__ import annotations

import math
import re

_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([hms])\s*")
_EXAMPLES = '"90s", "30m", "2h", "1h30m", "1h 30m" or a number of seconds'


def parse_duration(value: str | int | float) -> float:
    """Return `value` in seconds. Numbers are seconds; strings take h/m/s parts in that order.

    Raises ValueError (with a message fit for the user) when the value is not a duration or is not
    positive.
    """
    # bool is an int to Python, but `deadline: yes` is a mistake, not one second.
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as {_EXAMPLES}, found {value!r}")
    if isinstance(value, int | float):
        return _positive(float(value), value)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as {_EXAMPLES}, found {value!r}")
    text = value.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return _positive(float(text), value)
    total = 0.0
    seen: list[str] = []
    pos = 0
    while pos < len(text):
        match = _PART.match(text, pos)
        if match is None:
            raise ValueError(f"expected a duration such as {_EXAMPLES}, found {value!r}")
        number, unit = match.groups()
        # "30m1h" or "5m5m" is more likely a typo than a sum the user meant.
        if seen and "hms".index(unit) <= "hms".index(seen[-1]):
            raise ValueError(
                f"expected hours, minutes and seconds at most once each and in that order "
                f"(such as {_EXAMPLES}), found {value!r}"
            )
        seen.append(unit)
        total += float(number) * _UNIT_SECONDS[unit]
        pos = match.end()
    if not seen:
        raise ValueError(f"expected a duration such as {_EXAMPLES}, found {value!r}")
    return _positive(total, value)


def _positive(seconds: float, original: object) -> float:
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"expected a duration greater than zero, found {original!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """Write `seconds` as "1h30m", "5m", "30s" (whole seconds; "0s" for zero).

    A fraction of a second rounds up: this feeds deadlines such as Cancel-After, and cutting a job
    short by rounding down would be the wrong way to be inexact.
    """
    if isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"expected a finite number of seconds >= 0, found {seconds!r}")
    whole = math.ceil(seconds)
    if whole == 0:
        return "0s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts)
