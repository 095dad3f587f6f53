"""Create-and-broadcast, replay and statistics: one interface over WebSocket and SSE.

Creates are group-committed: one writer task takes every create queued meanwhile, commits
them in one transaction, then fans them out in id order and only then answers each caller.
So nothing is pushed or answered 201 before it is committed, and live pushes never overtake
each other (a client's resume cursor is always safe).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from . import errors
from .broker import Broker, Envelope
from .connections import HEARTBEAT, SSE, WEBSOCKET, Connection, Message
from .models import NewNotification, Principal
from .registry import Registry
from .store import Created, CreateRequest, Store

log = logging.getLogger("tidings.broadcaster")

MAX_BATCH = 256
RECENT_DELIVERIES = 2000  # live delivery counts kept for the dashboard's recent notifications
LOGGED_USERS = 10  # names in a log line of a batch create
REPLAY_PAGE = 500
IDEMPOTENCY_TTL = 24 * 3600  # a retry after a day is a new request
HOUSEKEEPING_EVERY = 3600


@dataclass
class Published:
    """The answer to one create: the notifications and how many connections got them."""

    notifications: list[dict[str, Any]]
    delivery: dict[str, int]
    replayed: bool = False


class Activity:
    """Notifications sent and deliveries made per tenant over the last minute (1 s buckets)."""

    def __init__(self, window: int = 60) -> None:
        self.window = window
        self._buckets: dict[str, deque[list[int]]] = {}

    def add(self, tenant_id: str, sent: int, delivered: int) -> None:
        now = int(time.monotonic())
        buckets = self._buckets.setdefault(tenant_id, deque())
        if buckets and buckets[-1][0] == now:
            buckets[-1][1] += sent
            buckets[-1][2] += delivered
        else:
            buckets.append([now, sent, delivered])
        self._trim(buckets, now)

    def last_minute(self, tenant_id: str) -> dict[str, int]:
        buckets = self._buckets.get(tenant_id)
        if not buckets:
            return {"sent_last_minute": 0, "delivered_last_minute": 0}
        self._trim(buckets, int(time.monotonic()))
        return {"sent_last_minute": sum(b[1] for b in buckets),
                "delivered_last_minute": sum(b[2] for b in buckets)}

    def tenants(self) -> list[str]:
        return list(self._buckets)

    def _trim(self, buckets: deque[list[int]], now: int) -> None:
        while buckets and buckets[0][0] <= now - self.window:
            buckets.popleft()


class Broadcaster:
    def __init__(self, store: Store, registry: Registry, broker: Broker,
                 heartbeat: float = 30.0) -> None:
        self.store = store
        self.registry = registry
        self.broker = broker
        self.heartbeat = heartbeat
        self.activity = Activity()
        self.created_total = 0
        self.delivered_total = 0
        self.on_activity: list[Callable[[str], None]] = []  # told the tenant of each create
        self.recent_delivery: OrderedDict[int, dict[str, int]] = OrderedDict()
        self.last_pushed_id = 0  # every id up to here has been fanned out
        self._queue: asyncio.Queue[tuple[CreateRequest, asyncio.Future[Published]]] = \
            asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        broker.subscribe(self.deliver)

    async def start(self) -> None:
        self.last_pushed_id = await self.store.last_id()
        self._tasks = [asyncio.create_task(self._write_loop(), name="tidings-writer"),
                       asyncio.create_task(self._heartbeat_loop(), name="tidings-heartbeat"),
                       asyncio.create_task(self._housekeeping_loop(), name="tidings-housekeeping")]

    async def stop(self) -> None:
        """Finishes every create already queued (committed and answered), then stops."""
        self._stopping = True
        await self._queue.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # --- create-and-broadcast ----------------------------------------------------------
    async def create(self, items: list[NewNotification],
                     idempotency_key: str | None = None) -> Published:
        if self._stopping:
            raise errors.unavailable("tidings is shutting down; try again shortly")
        future: asyncio.Future[Published] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((CreateRequest(items, idempotency_key), future))
        return await future

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._commit_and_push(batch)
            except Exception as e:
                log.exception("storing %d notification request(s) failed", len(batch))
                for _, future in batch:
                    if not future.done():
                        future.set_exception(e)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit_and_push(self, batch: list[tuple[CreateRequest, asyncio.Future[Published]]],
                               ) -> None:
        results = await self.store.create_batch([request for request, _ in batch])
        answers: list[tuple[str, str, dict[str, Any]]] = []
        first: dict[tuple[str, str], Published] = {}  # a key's first answer in this batch
        for (request, future), created in zip(batch, results, strict=True):
            key = (request.items[0].tenant_id, request.idempotency_key or "")
            if created.replayed and key in first:
                published = replace(first[key], replayed=True)
            else:
                published = await self._push(created)
            if request.idempotency_key and not created.replayed:
                first[key] = published
                answers.append((*key, published.delivery))
            if not future.done():
                future.set_result(published)
        if answers:
            await self.store.save_responses(answers)

    async def _push(self, created: Created) -> Published:
        if created.replayed:
            delivery = created.replayed_response or {WEBSOCKET: 0, SSE: 0}
            return Published(created.notifications, dict(delivery), replayed=True)
        total = {WEBSOCKET: 0, SSE: 0}
        for notification in created.notifications:
            counts = await self.broker.publish(Envelope(
                notification["tenant_id"], notification["user_id"],
                Message.notification(notification)))
            self.last_pushed_id = notification["id"]
            self.recent_delivery[notification["id"]] = counts
            if len(self.recent_delivery) > RECENT_DELIVERIES:
                self.recent_delivery.popitem(last=False)
            total[WEBSOCKET] += counts[WEBSOCKET]
            total[SSE] += counts[SSE]
        self.created_total += len(created.notifications)
        self.delivered_total += total[WEBSOCKET] + total[SSE]
        if created.notifications:
            _log_created(created.notifications, total)
            tenant_id = created.notifications[0]["tenant_id"]
            self.activity.add(tenant_id, len(created.notifications),
                              total[WEBSOCKET] + total[SSE])
            for listener in self.on_activity:
                listener(tenant_id)
        return Published(created.notifications, total)

    # --- fan-out -----------------------------------------------------------------------
    def deliver(self, envelope: Envelope) -> dict[str, int]:
        """Sends to this process's connections of a user, or of a whole tenant."""
        counts = {WEBSOCKET: 0, SSE: 0}
        if envelope.user_id is None:
            targets = list(self.registry.tenant(envelope.tenant_id))
        else:
            targets = list(self.registry.user(envelope.tenant_id, envelope.user_id))
        for conn in targets:
            if conn.send(envelope.message):
                counts[conn.transport] += 1
        return counts

    async def to_user(self, tenant_id: str, user_id: str, message: Message) -> dict[str, int]:
        return await self.broker.publish(Envelope(tenant_id, user_id, message))

    async def to_tenant(self, tenant_id: str, message: Message) -> dict[str, int]:
        return await self.broker.publish(Envelope(tenant_id, None, message))

    async def send_stats(self, who: Principal) -> dict[str, int]:
        """Tells every connection of a user its new total and unread counts."""
        counts = await self.store.counts(who)
        await self.to_user(who.tenant_id, who.user_id, Message.stats(counts))
        return counts

    async def mark_read(self, who: Principal, notification_id: int) -> dict[str, int]:
        """Marks one notification read; the user's every connection is told the new counts."""
        await self.store.mark_read(who, notification_id)
        return await self.send_stats(who)

    def connection_stats(self, tenant_id: str | None = None,
                         user_id: str | None = None) -> dict[str, int]:
        return self.registry.stats(tenant_id, user_id)

    # --- subscribe: one path for both transports ---------------------------------------
    async def attach(self, conn: Connection, who: Principal, since: int | None) -> None:
        """Registers a connection and, with `since`, first sends what it missed, oldest first.

        Live messages are held from before the replay query until the replay is sent, then
        released; the connection drops any id it has already sent. So a notification committed
        during the replay comes exactly once, whichever way it arrives.
        """
        if since is not None:
            conn.hold()
        self.registry.add(conn)
        log.info("%s connection %s opened tenant=%s user=%s%s", conn.transport, conn.id,
                 conn.tenant_id, conn.user_id, "" if since is None else f" since={since}")
        if since is None:
            return
        try:
            cursor = since
            while not conn.closed:
                page = await self.store.after(who, cursor, REPLAY_PAGE)
                for notification in page:
                    conn.send_replay(Message.notification(notification))
                await conn.drain()
                if len(page) < REPLAY_PAGE:
                    break
                cursor = page[-1]["id"]
        finally:
            conn.release()

    def detach(self, conn: Connection, reason: str = "") -> None:
        self.registry.remove(conn)
        log.info("%s connection %s closed tenant=%s user=%s%s", conn.transport, conn.id,
                 conn.tenant_id, conn.user_id, f" ({reason})" if reason else "")

    # --- heartbeats --------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        """SSE heartbeats; WebSocket pings are Tornado's (websocket_ping_interval)."""
        while True:
            await asyncio.sleep(self.heartbeat)
            for conn in [c for c in self.registry.all() if c.transport == SSE]:
                conn.send(HEARTBEAT)

    async def _housekeeping_loop(self) -> None:
        while True:
            pruned = await self.store.prune_idempotency_keys(time.time() - IDEMPOTENCY_TTL)
            if pruned:
                log.info("forgot %d idempotency keys older than a day", pruned)
            await asyncio.sleep(HOUSEKEEPING_EVERY)


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
