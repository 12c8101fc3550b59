"""Limit decisions with an injectable clock, no I/O and no sleeping.

- `CreateRate`: creates per minute as providers count them (a sliding window) with a bounded
  burst, lowered on a 429 and recovered slowly (AIMD: halve on a throttle, add back a small
  step on each accepted create, never above the configured limit);
- `Share`: splits an account's free slots between the campaigns that use it, by priority, with
  a deficit round robin so that a low priority gets a smaller share but never none.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field

MIN_RATE_SHARE = 0.05  # a throttled rate never falls below 5% of the configured one
WINDOW_MARGIN = 0.03  # 1.8 s of a minute: a burst's creates arrive over a while, unevenly
RECOVERY_STEP = 0.02  # each accepted create gives back 2% of the configured rate


@dataclass
class CreateRate:
    """At most `limit` creates in any `window` seconds and at most `burst` at once.

    Two rules together. A log of the recent creates keeps every sliding window (how providers
    count) within the limit, so the steady rate is the whole limit, not the limit minus the
    burst. A token bucket at `limit / window` a second holding at most `burst` keeps creates
    evenly paced for a provider that meters with a bucket of its own (a burst of 1 was seen).
    A create counts from when it is claimed (`take`), and is logged when it is sent
    (`sending`): a claim may wait a while before its request goes out, and the window must hold
    the moments the provider sees. The window is counted a little longer than the provider's
    (`WINDOW_MARGIN`) for the way from here to there, which is not the same for every create
    when many go at once. On a 429 the allowed limit halves and creeps back on each accepted
    create (AIMD); a `retry_after` pauses everything until then.
    """

    limit: float
    window: float = 60.0
    burst: float = 1.0
    allowed: float = 0.0  # the limit AIMD currently allows, at most `limit`
    tokens: float = 0.0
    updated: float = 0.0
    paused_until: float = 0.0
    sent: deque[float] = field(default_factory=deque)
    reserved: int = 0  # claimed, not sent yet: they count against the window already

    @classmethod
    def per_minute(
        cls, per_minute: float, now: float, *, burst: float | None = None, minute: float = 60.0
    ) -> CreateRate:
        """`per_minute` creates in a minute of `minute` seconds (shorter under a time scale)."""
        burst = _within(per_minute, default_burst(per_minute) if burst is None else burst)
        window = max(minute, 1e-3) * (1.0 + WINDOW_MARGIN)
        return cls(
            limit=per_minute,
            window=window,
            burst=burst,
            allowed=per_minute,
            tokens=burst,
            updated=now,
        )

    @property
    def rate(self) -> float:
        """Creates a second the bucket allows now."""
        return self.allowed / self.window

    def resize(self, limit: float, burst: float, now: float) -> None:
        """A new limit (the account's, split between the workers sharing it). A throttled
        limit stays throttled in proportion; saved tokens never exceed the new burst."""
        burst = _within(limit, burst)
        if limit == self.limit and burst == self.burst:
            return
        self._refill(now)
        self.allowed = min(limit, self.allowed * limit / self.limit)
        self.limit, self.burst = limit, burst
        self.tokens = min(self.tokens, burst)

    def throttled(self, now: float, retry_after: float | None) -> None:
        """The provider answered 429: halve the limit, drop saved tokens, wait if told to."""
        self._refill(now)
        self.allowed = max(self.limit * MIN_RATE_SHARE, self.allowed / 2)
        self.tokens = min(self.tokens, 0.0)
        if retry_after is not None:
            self.pause(now + retry_after)

    def accepted(self) -> None:
        """A create went through: creep back towards the configured limit."""
        self.allowed = min(self.limit, self.allowed + self.limit * RECOVERY_STEP)

    def pause(self, until: float) -> None:
        self.paused_until = max(self.paused_until, until)

    def available(self, now: float) -> int:
        if now < self.paused_until:
            return 0
        self._refill(now)
        return max(0, min(int(self.tokens), self._in_window() - self._counted()))

    def take(self, now: float, n: int = 1) -> None:
        """Claim `n` creates; each is then either `sending` or `unclaimed`."""
        self._refill(now)
        self.tokens -= n
        self.reserved += n

    def sending(self, now: float) -> None:
        """A claimed create's request goes out now."""
        self.reserved = max(0, self.reserved - 1)
        if self.sent and now < self.sent[-1]:
            bisect.insort(self.sent, now)
        else:
            self.sent.append(now)

    def unclaimed(self) -> None:
        """A claimed create was not sent after all (its token is not given back)."""
        self.reserved = max(0, self.reserved - 1)

    def next_token_at(self, now: float) -> float:
        """When the next create will be allowed (for sleeping exactly long enough)."""
        self._refill(now)
        at = max(now, self.paused_until)
        if self.tokens < 1:
            at = max(at, now + (1 - self.tokens) / self.rate)
        excess = self._counted() - self._in_window()
        if 0 <= excess < len(self.sent):  # until enough of the logged creates leave the window
            at = max(at, self.sent[excess] + self.window)
        elif excess >= 0:  # claims yet to be sent fill the window: they will take a while
            at = max(at, now + self.window / self._in_window())
        return at

    def _in_window(self) -> int:
        return max(1, int(self.allowed))

    def _counted(self) -> int:
        return len(self.sent) + self.reserved

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
        while self.sent and self.sent[0] <= now - self.window:
            self.sent.popleft()


def _within(limit: float, burst: float) -> float:
    return max(1.0, min(burst, limit))


def default_burst(per_minute: float) -> float:
    """Creates sent at once unless the job file says otherwise: 5 seconds' worth, and at most
    5% of the limit (a provider that meters with a small bucket answers a big burst with 429s)."""
    return max(1.0, min(per_minute / 12.0, per_minute * 0.05))


@dataclass
class Share:
    """Splits free slots between campaigns by weight (priority), remembering past turns."""

    weights: dict[str, float]
    credit: dict[str, float] = field(default_factory=dict)

    def allocate(self, free: int, room: dict[str, int]) -> dict[str, int]:
        """Give out up to `free` slots; campaign c gets at most room[c]."""
        given = {name: 0 for name in room}
        total = sum(self.weights.get(name, 1.0) for name in room) or 1.0
        for _ in range(max(0, free)):
            open_ = [name for name in room if given[name] < room[name]]
            if not open_:
                break
            for name in open_:
                self.credit[name] = self.credit.get(name, 0.0) + self.weights.get(name, 1.0)
            pick = max(open_, key=lambda name: (self.credit[name], self.weights.get(name, 1.0)))
            self.credit[pick] -= total
            given[pick] += 1
        return {name: n for name, n in given.items() if n}
