"""Expiry: a notification created with `expires_at` or `ttl` leaves inboxes, counts and replays
the moment it expires (the store's reads compare `expires_at` with the time); this loop then
removes what has expired in small batches, one transaction each, writing each one's removal
into its tenant's stream, so that connections get `notification_deleted` (reason `expired`)
within one housekeeping interval, live or on resume. Every process runs one; two at once
remove each notification once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .background import Background
from .store import Removal, Store

log = logging.getLogger("tidings.expiry")

BATCH = 500  # notifications removed per transaction

Publish = Callable[[list[tuple[Removal, int]]], None]


class Expiry(Background):
    """The loop that removes expired notifications every `interval` seconds."""

    what = "expiry"

    def __init__(self, store: Store, publish: Publish, interval: float,
                 clock: Callable[[], float] = time.time, batch: int = BATCH) -> None:
        self.store = store
        self.publish = publish  # after each commit: the removals, to every process's streams
        self.interval = interval
        self.clock = clock
        self.batch = batch
        super().__init__()

    async def run_once(self) -> int:
        """Removes every notification expired by now; returns how many."""
        removed = 0
        while True:
            removals = await self.store.expire(self.clock(), self.batch)
            self.publish(removals)  # no await since the commit: in commit order
            removed += len(removals)
            if len(removals) < self.batch:
                break
            await asyncio.sleep(0)  # creates queued for the writer go first
        if removed:
            log.info("%d expired notifications removed", removed)
        return removed

    async def round(self) -> float:
        await self.run_once()
        return self.interval
