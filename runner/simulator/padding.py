"""Answer fields blown up beyond any sane size, as `SimConfig.oversized` asks (see `Oversize`).

Only the text of answers changes: the prediction keeps its own id, so the simulator's record of
what was created (and billed) stays as it was.
"""

from __future__ import annotations

from runner.simulator.config import Oversize
from runner.simulator.state import Prediction

_FILLER = "0123456789abcdef"


def _filler(count: int) -> str:
    return (_FILLER * (count // len(_FILLER) + 1))[:count]


def text(value: str, length: int) -> str:
    """`value` made `length` characters long (never shorter than it is)."""
    return value + _filler(length - len(value)) if length > len(value) else value


def url(value: str, length: int) -> str:
    """`value` made `length` characters long by a query parameter the server ignores."""
    joined = value + ("&" if "?" in value else "?") + "pad="
    return text(joined, length) if length > len(joined) else value


def size(oversize: Oversize, name: str, prediction: Prediction) -> int:
    """The length (or count) `oversize` asks of the field `name` in answers about
    `prediction`; 0 when it leaves the field as it is."""
    value: int = getattr(oversize, name)
    return value if value and oversize.applies_to(prediction.prompt) else 0


def shown_id(oversize: Oversize, prediction: Prediction) -> str:
    return text(prediction.id, size(oversize, "id", prediction))


def outputs(oversize: Oversize, prediction: Prediction, urls: list[str]) -> list[str]:
    """The output URLs as answers show them: each padded, and as many as `outputs` asks."""
    length = size(oversize, "output_url", prediction)
    shown = [url(u, length) for u in urls]
    count = size(oversize, "outputs", prediction)
    if count and shown:
        shown = [shown[i % len(shown)] for i in range(count)]
    return shown


def error(oversize: Oversize, prediction: Prediction, value: str) -> str:
    return text(value, size(oversize, "error", prediction))
