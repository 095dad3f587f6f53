"""Retention: how long a tenant keeps its notifications, and honesty about what it no longer has.

A tenant's `retention_days` and `retention_count` (PUT /api/tenant; None is forever) are
enforced by `Retention`, a background loop that removes the oldest notifications in small
batches, one transaction each, so that creates (which need the same writer) never wait for
long. Every process runs one; two removing at once remove each notification once.

The store raises the tenant's `pruned_through` in the transaction that removes, so a stream
can tell a client resuming with an older cursor that part of what came after it is gone
(`resume_reset`), instead of silently replaying a partial history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from . import errors
from .background import Background
from .models import Principal
from .store import Store

log = logging.getLogger("tidings.retention")

BATCH = 500             # notifications removed per transaction
MAX_DAYS = 3650         # ten years: beyond that, say null (forever)
MAX_COUNT = 10_000_000
DAY = 86400.0
CURSOR_EXPIRED, CURSOR_UNKNOWN = "cursor_expired", "cursor_unknown"
_LIMITS = {"retention_days": MAX_DAYS, "retention_count": MAX_COUNT}


def validate(body: dict[str, Any]) -> dict[str, int | None]:
    """A PUT /api/tenant body: each field optional, null for no limit, else a whole number
    from 1 to its maximum; anything else is a 400 naming the field."""
    unknown = sorted(set(body) - set(_LIMITS))
    if unknown:
        raise errors.invalid(unknown[0], "unknown field; expected retention_days or "
                                         "retention_count")
    changes: dict[str, int | None] = {}
    for field, most in _LIMITS.items():
        if field not in body:
            continue
        value = body[field]
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                  or not 1 <= value <= most):
            raise errors.invalid(field, f"must be null (forever) or a whole number from 1 "
                                        f"to {most}")
        changes[field] = value
    return changes


async def resume_reset(store: Store, who: Principal, since: int) -> dict[str, Any] | None:
    """What a stream resuming after `since` must say first, or None: `cursor_unknown` when
    the cursor is past the newest id there is (nothing is replayed), `cursor_expired` when
    retention removed notifications after it (what is left is replayed). `oldest_id` is the
    smallest id this user can still get, 0 for none."""
    if since > await store.last_id():
        reason = CURSOR_UNKNOWN
    elif since < (await store.tenant_settings(who.tenant_id))["pruned_through"]:
        reason = CURSOR_EXPIRED
    else:
        return None
    oldest = await store.after(who, 0, 1)
    return {"reason": reason, "oldest_id": oldest[0]["id"] if oldest else 0}


class Retention(Background):
    """The loop that enforces every tenant's retention, at least every `interval` seconds
    (and at once after a tenant changes its settings)."""

    what = "retention"

    def __init__(self, store: Store, interval: float,
                 clock: Callable[[], float] = time.time, batch: int = BATCH) -> None:
        self.store = store
        self.interval = interval
        self.clock = clock  # wall-clock seconds; the tests move it to age notifications
        self.batch = batch
        super().__init__()

    async def run_once(self) -> int:
        """Removes what each tenant's settings no longer keep; returns how many it removed."""
        removed = 0
        for tenant in await self.store.retention_tenants():
            days = tenant["retention_days"]
            older_than = self.clock() - days * DAY if days is not None else None
            gone = 0
            while True:
                n = await self.store.prune(tenant["tenant_id"], older_than=older_than,
                                           keep=tenant["retention_count"], limit=self.batch)
                gone += n
                if n < self.batch:
                    break
                await asyncio.sleep(0)  # creates queued for the writer go first
            if gone:
                log.info("retention removed %d notifications of tenant=%s", gone,
                         tenant["tenant_id"])
            removed += gone
        return removed

    async def round(self) -> float:
        await self.run_once()
        return self.interval
