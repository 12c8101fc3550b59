"""The provider's clock as seen from this machine.

Times a provider shows (`created_at`, and the cut-off of a list) are on its own clock, which
may be minutes off ours. Every answer's `Date` header, and the `created_at` of a prediction
just created, say what its clock read while it answered; each gives a lower bound of the
offset (provider time minus local time): the provider stamped it before the answer arrived
here, and a `Date` is truncated to the second. A window computed with a lower bound starts
earlier than it must, never later, so nothing inside it is missed.

The latest reading wins: clocks are stepped (NTP, a laptop that slept), and an old reading
would then be wrong by the step.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable

import httpx


class ProviderClock:
    def __init__(self, now: Callable[[], float] = time.time) -> None:
        self.now = now
        self.offset: float | None = None  # provider time minus local time; None: not seen yet
        self._date: str | None = None
        self._date_epoch = 0.0

    def observe(self, provider_time: float, received: float | None = None) -> None:
        """A time the provider stamped no later than `received` (local; default now)."""
        self.offset = provider_time - (self.now() if received is None else received)

    def observe_date(self, header: str | None, received: float | None = None) -> None:
        """An answer's `Date` header (an HTTP date); an unreadable one is ignored."""
        if not header:
            return
        if header != self._date:  # parsed once per second of answers, not once per answer
            try:
                parsed = email.utils.parsedate_to_datetime(header)
            except (TypeError, ValueError):
                return
            if parsed is None or parsed.tzinfo is None:
                return
            self._date, self._date_epoch = header, parsed.timestamp()
        self.observe(self._date_epoch, received)

    async def on_response(self, response: httpx.Response) -> None:
        """An httpx response hook: every answer of the provider is a reading."""
        self.observe_date(response.headers.get("date"))

    def provider_time(self, local: float) -> float:
        """A local time on the provider's clock, as well as it is known (unknown: as it is)."""
        return local + (self.offset or 0.0)
