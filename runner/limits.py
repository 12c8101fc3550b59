"""Rate limiting decisions: a token bucket with an injectable clock, no I/O and no sleeping."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    """`rate` tokens a second, at most `capacity` saved up. `pause_until` honours a 429."""

    rate: float
    capacity: float
    tokens: float = 0.0
    updated: float = 0.0
    paused_until: float = 0.0

    @classmethod
    def per_minute(cls, per_minute: float, now: float, burst_seconds: float = 5.0) -> TokenBucket:
        rate = per_minute / 60.0
        capacity = max(1.0, rate * burst_seconds)
        return cls(rate=rate, capacity=capacity, tokens=capacity, updated=now)

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
