"""Lookups per client address: a token bucket per address, kept in memory
for a bounded number of addresses. Time is an argument (seconds on any
monotonic clock), so tests drive it without sleeping."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    """`per_minute` lookups a minute from one address, up to `burst` at once.
    `per_minute` 0 turns the limit off."""

    per_minute: float = 120.0
    burst: int = 30

    def __post_init__(self) -> None:
        if not math.isfinite(self.per_minute) or self.per_minute < 0 or self.burst < 1:
            raise ValueError("a rate limit needs per_minute >= 0 and burst >= 1")


class AddressLimiter:
    """Thread-safe; forgets the least recently seen address beyond `max_addresses`
    (a forgotten address starts again with a full bucket)."""

    def __init__(self, limit: RateLimit, max_addresses: int = 100_000) -> None:
        self.limit = limit
        self._max = max_addresses
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, address: str, now_s: float, cost: float = 1.0) -> float | None:
        """Take `cost` tokens (at most the burst) for `address` at `now_s`:
        None when allowed, else the seconds to wait (for Retry-After)."""
        rate = self.limit.per_minute / 60.0
        if rate == 0:
            return None
        burst = float(self.limit.burst)
        with self._lock:
            tokens, last = self._buckets.pop(address, (burst, now_s))
            tokens = min(burst, tokens + max(0.0, now_s - last) * rate)
            wait = None
            if tokens >= cost:
                tokens -= cost
            else:
                wait = (cost - tokens) / rate
            self._buckets[address] = (tokens, now_s)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        return wait
