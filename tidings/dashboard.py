"""What the admin dashboard shows: per-tenant live numbers, an hour of history, and pushes to
the dashboard's sockets when something changes (coalesced to a few a second, never polled)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from .activity import Activity
from .models import iso
from .presence import Presence
from .registry import Registry
from .store import DeliveryQueue, Store

PUSH_INTERVAL = 0.25      # at most four pushes a second, however busy the server is
SAMPLE_EVERY = 10.0       # one history point every 10 s ...
HISTORY_POINTS = 360      # ... for the last hour

Subscriber = Callable[[str], None]  # gets the overview as JSON, encoded once for all


class LoginThrottle:
    """Failed dashboard logins per client address: each doubles the wait before the next
    answer (0.25 s, 0.5 s, ... up to 5 s). The table is bounded, oldest address first out."""

    FIRST_DELAY, MAX_DELAY, MAX_ADDRESSES = 0.25, 5.0, 10_000

    def __init__(self) -> None:
        self._failures: OrderedDict[str, int] = OrderedDict()

    def delay(self, address: str) -> float:
        failures = self._failures.get(address, 0)
        return min(self.FIRST_DELAY * 2 ** (failures - 1), self.MAX_DELAY) if failures else 0.0

    def failed(self, address: str) -> int:
        failures = self._failures.pop(address, 0) + 1
        self._failures[address] = failures
        if len(self._failures) > self.MAX_ADDRESSES:
            self._failures.popitem(last=False)
        return failures

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


class Dashboard:
    def __init__(self, activity: Activity, presence: Presence, registry: Registry, store: Store,
                 queue: DeliveryQueue) -> None:
        self.activity = activity
        self.presence = presence
        self.registry = registry
        self.store = store
        self.queue = queue
        self.history: deque[dict[str, int]] = deque(maxlen=HISTORY_POINTS)
        self._subscribers: set[Subscriber] = set()
        self.logins = LoginThrottle()
        self._push_scheduled = False
        self._last_sent_total = activity.created_total
        self._task: asyncio.Task[None] | None = None
        self._pushing: set[asyncio.Task[None]] = set()
        presence.listen(self._changed)
        activity.listeners.append(self._changed)

    def start(self) -> None:
        self._task = asyncio.create_task(self._sample_loop(), name="tidings-dashboard")

    async def stop(self) -> None:
        self.presence.unlisten(self._changed)
        for task in [t for t in [self._task, *self._pushing] if t is not None]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- what the pages show -----------------------------------------------------------
    def _row(self, tenant_id: str, stats: dict[str, int]) -> dict[str, Any]:
        return {"tenant_id": tenant_id, "websocket": stats["websocket"], "sse": stats["sse"],
                "users_online": stats["users_online"],
                **self.activity.last_minute(tenant_id)}

    async def tenant_row(self, tenant_id: str) -> dict[str, Any]:
        return self._row(tenant_id, await self.presence.tenant(tenant_id))

    async def overview(self) -> dict[str, Any]:
        """Tenants with a connection on some process or activity here in the last minute."""
        connected = await self.presence.tenants()
        seen = sorted({*connected, *self.activity.tenants()})
        rows = [self._row(t, connected.get(t) or {"websocket": 0, "sse": 0, "users_online": 0})
                for t in seen]
        return {"tenants": rows,
                "global": {"websocket": sum(r["websocket"] for r in rows),
                           "sse": sum(r["sse"] for r in rows),
                           "total": sum(r["websocket"] + r["sse"] for r in rows)},
                "history": list(self.history)}

    def users(self, tenant_id: str) -> list[dict[str, Any]]:
        """Users online here with their connections, for the tenant page."""
        users: dict[str, list[dict[str, Any]]] = {}
        for conn in self.registry.tenant(tenant_id):
            users.setdefault(conn.user_id, []).append({
                "transport": conn.transport, "since": iso(conn.opened_at),
                "client": conn.remote_ip, "user_agent": conn.user_agent})
        return [{"user_id": user, "connections": sorted(conns, key=lambda c: c["since"])}
                for user, conns in sorted(users.items())]

    async def recent(self, tenant_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """The tenant's latest notifications, with live delivery counts while we have them and
        the state of each email, SMS, push and webhook delivery."""
        notifications = await self.store.recent(tenant_id, limit)
        deliveries = await self.queue.for_notifications(
            [n["id"] for n in notifications], tenant_id)
        for n in notifications:
            n["delivery"] = self.activity.recent_delivery.get(n["id"])
            n["deliveries"] = deliveries[n["id"]]
        return notifications

    # --- live pushes -------------------------------------------------------------------
    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def _changed(self, _tenant_id: str = "") -> None:
        if self._subscribers and not self._push_scheduled:
            self._push_scheduled = True
            asyncio.get_running_loop().call_later(PUSH_INTERVAL, self._push)

    async def snapshot(self) -> str:
        """The `overview` message of the dashboard's socket, as JSON."""
        return json.dumps({"type": "overview", **await self.overview()}, separators=(",", ":"))

    def _push(self) -> None:
        self._push_scheduled = False
        task = asyncio.create_task(self._push_now(), name="tidings-dashboard-push")
        self._pushing.add(task)
        task.add_done_callback(self._pushing.discard)

    async def _push_now(self) -> None:
        snapshot = await self.snapshot()
        for subscriber in list(self._subscribers):
            subscriber(snapshot)

    async def _sample_loop(self) -> None:
        while True:
            sent = self.activity.created_total
            self.history.append({"t": int(time.time()), "connections":
                                 (await self.presence.overall())["total"],
                                 "sent": sent - self._last_sent_total})
            self._last_sent_total = sent
            self._changed()
            await asyncio.sleep(SAMPLE_EVERY)
