"""Limit decisions with an injectable clock, no I/O and no sleeping.

- `TokenBucket`: creates per minute, lowered on a 429 and recovered slowly (AIMD: halve on a
  throttle, add back a small step on each accepted create, never above the configured rate);
- `Share`: splits an account's free slots between the campaigns that use it, by priority, with
  a deficit round robin so that a low priority gets a smaller share but never none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_RATE_SHARE = 0.05  # a throttled rate never falls below 5% of the configured one
RECOVERY_STEP = 0.02  # each accepted create gives back 2% of the configured rate


@dataclass
class TokenBucket:
    """`rate` tokens a second, at most `capacity` saved up. `pause_until` honours a 429."""

    rate: float
    capacity: float
    tokens: float = 0.0
    updated: float = 0.0
    paused_until: float = 0.0
    configured: float = 0.0  # the rate asked for; AIMD moves `rate` below it and back

    @classmethod
    def per_minute(cls, per_minute: float, now: float) -> TokenBucket:
        """At most `per_minute` creates in any 60 s window (providers count a sliding minute):
        the burst is paid for by a sustained rate that much lower."""
        rate, capacity = _rate_and_burst(per_minute)
        return cls(rate=rate, capacity=capacity, tokens=capacity, updated=now, configured=rate)

    def resize(self, per_minute: float, now: float) -> None:
        """A new limit (the account's rate split between the workers sharing it). A throttled
        rate stays throttled in proportion; saved tokens never exceed the new burst."""
        rate, capacity = _rate_and_burst(per_minute)
        if rate == self.configured:
            return
        self._refill(now)
        self.rate = min(rate, self.rate * rate / self.configured)
        self.configured, self.capacity = rate, capacity
        self.tokens = min(self.tokens, capacity)

    def throttled(self, now: float, retry_after: float | None) -> None:
        """The provider answered 429: halve the rate, drop saved tokens, wait if told to."""
        self._refill(now)
        self.rate = max(self.configured * MIN_RATE_SHARE, self.rate / 2)
        self.tokens = min(self.tokens, 0.0)
        if retry_after is not None:
            self.pause(now + retry_after)

    def accepted(self) -> None:
        """A create went through: creep back towards the configured rate."""
        self.rate = min(self.configured, self.rate + self.configured * RECOVERY_STEP)

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def available(self, now: float) -> int:
        if now < self.paused_until:
            return 0
        self._refill(now)
        return int(self.tokens)

    def take(self, now: float, n: int = 1) -> None:
        self._refill(now)
        self.tokens -= n

    def pause(self, until: float) -> None:
        self.paused_until = max(self.paused_until, until)

    def next_token_at(self, now: float) -> float:
        """When the next whole token will be there (for sleeping exactly long enough)."""
        self._refill(now)
        if now < self.paused_until:
            return self.paused_until
        if self.tokens >= 1:
            return now
        return now + (1 - self.tokens) / self.rate


def _rate_and_burst(per_minute: float, burst_seconds: float = 5.0) -> tuple[float, float]:
    capacity = max(1.0, min(per_minute / 60.0 * burst_seconds, per_minute * 0.05))
    return max(per_minute - capacity, 1.0) / 60.0, capacity


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
