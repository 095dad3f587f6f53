"""Scheduled notifications: `send_at` on a create stores an entry; at its time a sender loop
creates the notification through the publisher, like any create (group commit, push,
channel planning), so it gets its id only then and cursors stay in order.

Once, whichever process sends it. Every process runs the loop; a process claims due entries
with a short lease (so that the others do not all try at once), and the create marks the
entry sent in the transaction that stores the notification, only if it is still pending.
So a process that dies after claiming leaves the entry to be claimed again when its lease
runs out, one that dies after committing has marked it sent, and a cancel that comes first
wins: no crash, restart or race creates it twice or loses it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from . import errors
from .background import Background
from .models import NewNotification, iso
from .publisher import Publisher
from .store import ScheduleBook, Scheduled

log = logging.getLogger("tidings.scheduler")

LEASE = 10.0         # seconds a claimed entry is its claimant's; a create takes milliseconds
POLL = 1.0           # seconds between looks at the store: entries other processes added
CLAIM = 50           # entries claimed at once
KEEP_DONE = 86400.0  # sent and cancelled entries are kept a day (for Idempotency-Key)
PRUNE_EVERY = 3600.0
_TARGETS = ("user_id", "user_ids", "broadcast")
_FIELDS = tuple(f.name for f in dataclasses.fields(NewNotification)
                if f.name not in ("tenant_id", "user_id"))


def request_of(items: list[NewNotification], as_list: bool) -> dict[str, Any]:
    """What an entry keeps: the recipients as the request named them, and the fields that
    every notification of the request shares."""
    first = items[0]
    target: dict[str, Any]
    if as_list:
        target = {"user_ids": [i.user_id for i in items]}
    elif first.user_id is None:
        target = {"broadcast": True}
    else:
        target = {"user_id": first.user_id}
    fields = {name: getattr(first, name) for name in _FIELDS}
    fields["channels"] = list(first.channels) if first.channels is not None else None
    fields["actions"] = list(first.actions)
    return {**target, **fields}


def items_of(entry: Scheduled) -> list[NewNotification]:
    request = entry.request
    recipients: list[str | None] = (request["user_ids"] if "user_ids" in request else
                                    [request.get("user_id")])
    fields = {k: v for k, v in request.items() if k in _FIELDS}
    if fields.get("channels") is not None:
        fields["channels"] = tuple(fields["channels"])
    fields["actions"] = tuple(fields.get("actions") or ())
    return [NewNotification(tenant_id=entry.tenant_id, user_id=r, **fields) for r in recipients]


def shown(entry: Scheduled) -> dict[str, Any]:
    """An entry in the API's shape: the request as given, with its id and times. Optional
    fields that were not given are left out."""
    request = {k: v for k, v in entry.request.items()
               if k in _TARGETS or not (v is None or (k == "actions" and not v))}
    if "expires_at" in request:
        request["expires_at"] = iso(request["expires_at"])
    return {"id": entry.id, "send_at": iso(entry.send_at),
            "created_at": iso(entry.created_at), **request}


class Scheduler(Background):
    """Stores scheduled notifications and sends each when its time comes."""

    what = "scheduler"

    def __init__(self, book: ScheduleBook, publisher: Publisher,
                 clock: Callable[[], float] = time.time) -> None:
        self.book = book
        self.publisher = publisher
        self.clock = clock  # wall-clock seconds; the tests move it instead of waiting
        super().__init__()
        self._pruned_at = 0.0

    # --- the API's calls -----------------------------------------------------------------
    async def schedule(self, items: list[NewNotification], as_list: bool, send_at: float,
                       idempotency_key: str | None = None) -> tuple[dict[str, Any], bool]:
        """Stores an entry; returns it in the API's shape, and whether the idempotency key
        had been used (then the first entry is returned and nothing is stored)."""
        entry = Scheduled(f"sch_{secrets.token_hex(12)}", items[0].tenant_id, send_at,
                          time.time(), request_of(items, as_list))
        stored, replayed = await self.book.add(entry, idempotency_key)
        if not replayed:
            log.info("scheduled %s tenant=%s for %s", entry.id, entry.tenant_id, iso(send_at))
            self.wake()
        return shown(stored), replayed

    async def pending(self, tenant_id: str) -> list[dict[str, Any]]:
        return [shown(e) for e in await self.book.pending(tenant_id)]

    async def cancel(self, tenant_id: str, schedule_id: str) -> None:
        if not await self.book.cancel(tenant_id, schedule_id, time.time()):
            raise errors.not_found(f"scheduled notification {schedule_id}")
        log.info("cancelled %s tenant=%s", schedule_id, tenant_id)

    # --- the sender ----------------------------------------------------------------------
    async def run_once(self) -> int:
        """Sends every entry that is due; returns how many this process created."""
        sent = 0
        while True:
            due = await self.book.claim(self.clock(), CLAIM, LEASE)
            # Together, so that they share the publisher's group commit.
            results = await asyncio.gather(*(self._send(e) for e in due))
            sent += sum(results)
            if len(due) < CLAIM:
                return sent

    async def _send(self, entry: Scheduled) -> bool:
        published = await self.publisher.create(items_of(entry), schedule_id=entry.id)
        if not published.notifications:  # cancelled, or another process sent it first
            return False
        first = published.notifications[0]["id"]
        log.info("sent %s tenant=%s as notification %d", entry.id, entry.tenant_id, first)
        return True

    async def _prune(self) -> None:
        now = self.clock()
        if now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at = now
            await self.book.prune(now - KEEP_DONE)

    async def _next_wait(self) -> float:
        due = await self.book.next_due()
        if due is None:
            return POLL
        return min(POLL, max(due - self.clock(), 0.01))

    async def round(self) -> float:
        await self.run_once()
        await self._prune()
        return await self._next_wait()
