"""Per-key rate limits: a token bucket for each tenant's creates, bounded in memory.

A tenant at its limit only waits on its own bucket: nothing here is shared between keys
but the table, which forgets the least recently used buckets past ``max_keys`` (a bucket
that was forgotten comes back full, which is what an idle tenant's bucket would be)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable


class RateLimiter:
    """``rate`` tokens a second per key, ``burst`` at most (twice the rate unless given);
    a rate of 0 allows everything."""

    def __init__(self, rate: float, burst: float | None = None, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(2 * rate, 1.0)
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def take(self, key: str, cost: float = 1.0) -> float:
        """0 when ``key`` may go on (a token is spent), else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after(wait: float) -> int:
        """Whole seconds for a Retry-After header (at least 1)."""
        return max(1, math.ceil(wait))
