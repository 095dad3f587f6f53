"""Create-and-publish: group commit, idempotency, then the push, then the answer.

One writer task takes every create queued meanwhile, commits them in one transaction, hands
them to this process's hub and to the broker in id order, and only then answers each caller.
So nothing is pushed or answered 201 before it is committed. If a batch fails for a reason
other than the store being away, each of its requests is tried alone, so that one request's
bad input fails only that request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from . import errors
from .activity import Activity
from .connections import SSE, WEBSOCKET, Message
from .fanout import Broker, BrokerUnavailable, Envelope
from .hub import Hub
from .metrics import Metrics
from .models import NewNotification, Principal
from .presence import Presence
from .store import Created, CreateRequest, Removal, Store, StoreUnavailable

log = logging.getLogger("tidings.publisher")

MAX_BATCH = 256
LOGGED_USERS = 10  # names in a log line of a batch create
IDEMPOTENCY_TTL = 24 * 3600  # a retry after a day is a new request
HOUSEKEEPING_EVERY = 3600
BROKER_WARN_EVERY = 30.0  # seconds between warnings that the broker is away
STORE_FAILING_FOR = 10.0  # seconds /healthz reports a failed create

Waiting = tuple[CreateRequest, "asyncio.Future[Published]"]


@dataclass
class Published:
    """The answer to one create: the notifications, and how many connections of their
    recipients there were on every process."""

    notifications: list[dict[str, Any]]
    delivery: dict[str, int]
    replayed: bool = False


class Publisher:
    def __init__(self, store: Store, hub: Hub, broker: Broker, presence: Presence,
                 activity: Activity, metrics: Metrics) -> None:
        self.store = store
        self.hub = hub
        self.broker = broker
        self.presence = presence
        self.activity = activity
        self.metrics = metrics
        self._queue: asyncio.Queue[Waiting] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._warned_at = 0.0
        self._store_failed_at: float | None = None  # the last batch could not be stored

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._write_loop(), name="tidings-writer"),
                       asyncio.create_task(self._housekeeping_loop(), name="tidings-housekeeping")]

    async def stop(self) -> None:
        """Finishes every create already queued (committed and answered), then stops."""
        self._stopping = True
        await self._queue.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def running(self) -> bool:
        return all(not t.done() for t in self._tasks)

    def store_failing(self) -> bool:
        """Did creates fail for want of the store lately (and none succeed since)? A store
        that reads can still refuse writes: locked elsewhere, or its disk full. After
        `STORE_FAILING_FOR` seconds without another try, /healthz lets traffic back to see."""
        failed = self._store_failed_at
        return failed is not None and time.monotonic() - failed < STORE_FAILING_FOR

    # --- create ------------------------------------------------------------------------
    async def create(self, items: list[NewNotification], idempotency_key: str | None = None,
                     schedule_id: str | None = None) -> Published:
        """Creates, commits, pushes, then answers. With `schedule_id` (the scheduler sending
        an entry) nothing is created unless the entry is still pending: `notifications` is
        then empty."""
        if self._stopping:
            raise errors.unavailable("tidings is shutting down; try again shortly")
        future: asyncio.Future[Published] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((CreateRequest(items, idempotency_key, schedule_id), future))
        return await future

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit_each(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit_each(self, batch: list[Waiting]) -> None:
        started = time.monotonic()
        try:
            results = await self.store.create_batch([request for request, _ in batch])
        except StoreUnavailable as e:
            log.warning("storing %d notification request(s) failed: %s", len(batch), e)
            self._store_failed_at = time.monotonic()
            return _fail(batch, errors.store_unavailable())
        except Exception as e:
            if len(batch) > 1:  # find the request at fault: the others still succeed
                for waiting in batch:
                    await self._commit_each([waiting])
                return
            log.exception("storing a notification request failed")
            return _fail(batch, e)
        self._store_failed_at = None
        self.metrics.committed(time.monotonic() - started)
        try:
            await self._push_and_answer(batch, results, time.time())
        except Exception as e:  # committed: answer what is known, never store it twice
            log.exception("answering %d committed notification request(s) failed", len(batch))
            _fail(batch, e)

    async def _push_and_answer(self, batch: list[Waiting], results: list[Created],
                               committed_at: float) -> None:
        fresh = [c for c in results if not c.replayed]
        # The push, in id order and with no await in between, so no push overtakes another.
        for created in fresh:
            for notification, prev_id in zip(created.notifications, created.prev_ids,
                                             strict=True):
                self._publish(Envelope(notification["tenant_id"], notification["user_id"],
                                       Message.notification(notification), prev_id,
                                       committed_at))
        counts = await self._count(fresh)
        answers: list[tuple[str, str, dict[str, Any]]] = []
        first: dict[tuple[str, str], Published] = {}  # a key's first answer in this batch
        for (request, future), created in zip(batch, results, strict=True):
            key = (request.items[0].tenant_id, request.idempotency_key or "")
            if created.replayed:
                published = replace(first[key], replayed=True) if key in first else Published(
                    created.notifications, dict(created.replayed_response or
                                                {WEBSOCKET: 0, SSE: 0}), replayed=True)
            else:
                published = self._answer(created, counts)
            if request.idempotency_key and not created.replayed:
                first[key] = published
                answers.append((*key, published.delivery))
            if not future.done():
                future.set_result(published)
        if answers:
            await self.store.save_responses(answers)

    async def _count(self, fresh: list[Created]) -> dict[int, dict[str, int]]:
        """Each new notification's recipients' connections on every process: one look-up."""
        notifications = [n for c in fresh for n in c.notifications]
        if not notifications:
            return {}
        targets = [(n["tenant_id"], n["user_id"]) for n in notifications]
        found = await self.presence.targets(targets)
        return {n["id"]: {WEBSOCKET: s[WEBSOCKET], SSE: s[SSE]}
                for n, s in zip(notifications, found, strict=True)}

    def _answer(self, created: Created, counts: dict[int, dict[str, int]]) -> Published:
        per_id = {n["id"]: counts[n["id"]] for n in created.notifications}
        total = {WEBSOCKET: sum(c[WEBSOCKET] for c in per_id.values()),
                 SSE: sum(c[SSE] for c in per_id.values())}
        if created.notifications:
            _log_created(created.notifications, total)
            self.activity.created(created.notifications[0]["tenant_id"], per_id)
        return Published(created.notifications, total)

    # --- other messages ----------------------------------------------------------------
    def _publish(self, envelope: Envelope) -> None:
        """To this process's connections at once, and to the other processes'."""
        self.hub.receive(envelope)
        try:
            self.broker.publish(envelope)
        except BrokerUnavailable as e:
            now = time.monotonic()
            if now - self._warned_at > BROKER_WARN_EVERY:
                self._warned_at = now
                log.warning("the broker is away (%s): other processes' clients catch up "
                            "from the store when it is back", e)

    def publish_removals(self, removals: list[tuple[Removal, int]]) -> None:
        """`notification_deleted` for each committed removal (with its tenant's previous
        position), in id order: entries of the ordered stream, like notifications."""
        for removal, prev_id in removals:
            self._publish(Envelope(removal.tenant_id, removal.user_id,
                                   Message.deleted(removal.payload()), prev_id))

    async def recall(self, who: Principal, notification_id: int) -> None:
        """Removes a notification of the caller's tenant for every recipient; their
        connections on every process are told at once, and on resume."""
        found = await self.store.recall(who.tenant_id, notification_id)
        if found is None:
            raise errors.not_found(f"notification {notification_id}")
        self.publish_removals([found])  # no await since the commit: in commit order
        log.info("notification %d recalled tenant=%s by=%s", notification_id, who.tenant_id,
                 who.user_id)

    def to_user(self, tenant_id: str, user_id: str, message: Message) -> None:
        self._publish(Envelope(tenant_id, user_id, message))

    async def send_stats(self, who: Principal) -> dict[str, int]:
        """Tells every connection of a user, on every process, its total and unread counts."""
        counts = await self.store.counts(who)
        self.to_user(who.tenant_id, who.user_id, Message.stats(counts))
        return counts

    async def mark_read(self, who: Principal, notification_id: int) -> dict[str, int]:
        """Marks one notification read; the user's every connection is told the new counts."""
        await self.store.mark_read(who, notification_id)
        return await self.send_stats(who)

    async def _housekeeping_loop(self) -> None:
        while True:
            try:
                pruned = await self.store.prune_idempotency_keys(time.time() - IDEMPOTENCY_TTL)
                if pruned:
                    log.info("forgot %d idempotency keys older than a day", pruned)
            except StoreUnavailable as e:
                log.warning("housekeeping could not reach the store: %s", e)
            except Exception:  # never dies of an error: next time may go better
                log.exception("housekeeping failed")
            await asyncio.sleep(HOUSEKEEPING_EVERY)


def _fail(batch: list[Waiting], e: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(e)


def _log_created(notifications: list[dict[str, Any]], delivery: dict[str, int]) -> None:
    """One line per create request: a `user_ids` batch of a thousand is one line, not 1,000."""
    first = notifications[0]
    if len(notifications) == 1:
        what = f"notification {first['id']}"
        users = first["user_id"] or "* (tenant-wide)"
    else:
        what = f"notifications {first['id']}-{notifications[-1]['id']}"
        names = [n["user_id"] for n in notifications[:LOGGED_USERS]]
        more = len(notifications) - len(names)
        users = ",".join(names) + (f" +{more} more" if more else "")
    log.info("%s created tenant=%s user=%s type=%s delivered ws=%d sse=%d", what,
             first["tenant_id"], users, first["type"], delivery[WEBSOCKET], delivery[SSE])
