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
        """0 when ``key`` may go on (``cost`` tokens are spent), else the seconds until it
        may. A cost larger than what is left (a big batch) may overdraw the bucket while at
        least one token is there: the key then waits until the debt is paid."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= min(cost, 1.0):
            tokens -= cost
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    @staticmethod
    def retry_after(wait: float) -> int:
        """Whole seconds for a Retry-After header (at least 1)."""
        return max(1, math.ceil(wait))


class Bucket:
    """One key's token bucket, as RateLimiter keeps one per key: ``rate`` tokens a second,
    ``burst`` at most (twice the rate unless given), a token per call. For a limit on one
    thing (a connection's frames) without the table."""

    __slots__ = ("rate", "burst", "_clock", "_tokens", "_at")

    def __init__(self, rate: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(2 * rate, 1.0)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()

    def take(self) -> bool:
        """True when the call may go on (a token is spent), False when it is over the limit."""
        now = self._clock()
        tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False


class LoginGuard:
    """Failed dashboard logins per client address, decided before any wait: an attempt is
    counted when it starts, so parallel attempts cannot all pass while the first ones are
    still being checked. Past ``free`` failures (attempts under way count as failures until
    they are known) the address is refused, for a time that doubles per failure up to
    ``max_lock`` seconds; a success forgets the address. The table is bounded."""

    def __init__(self, free: int = 3, max_lock: float = 300.0, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free, self.max_lock, self._max_keys, self._clock = free, max_lock, max_keys, clock
        self._state: OrderedDict[str, list[float]] = OrderedDict()  # failures, running, last

    def begin(self, address: str) -> float:
        """0 and the attempt is counted as under way; else the seconds to wait (refused)."""
        failures, running, last = self._state.pop(address, [0.0, 0.0, 0.0])
        now = self._clock()
        if failures + running >= self.free:
            lock: float = min(2.0 ** float(max(failures - self.free, 0)), self.max_lock)
            wait = last + lock - now
            if running or wait > 0:
                self._keep(address, [failures, running, last])
                return max(wait, 1.0)
        self._keep(address, [failures, running + 1, last])
        return 0.0

    def end(self, address: str, succeeded: bool) -> int:
        """Records the attempt's outcome; returns the failures in a row (0 after a success)."""
        failures, running, last = self._state.pop(address, [0.0, 1.0, 0.0])
        if succeeded:
            return 0
        self._keep(address, [failures + 1, max(running - 1, 0), self._clock()])
        return int(failures + 1)

    def _keep(self, address: str, state: list[float]) -> None:
        self._state[address] = state
        while len(self._state) > self._max_keys:
            self._state.popitem(last=False)
