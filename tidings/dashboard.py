"""What the admin dashboard shows: per-tenant live numbers, an hour of history, and pushes to
the dashboard's sockets when something changes (coalesced to a few a second, never polled).

A socket gets the whole `overview` when it opens, then only `changes`: the rows of tenants
whose numbers changed since the last push, the tenants gone, the totals and new history
points. So a push about one busy tenant stays small however many tenants there are.

A tenant's page also gets `receipts`: how many recipients of each recent notification were
pushed it, acknowledged it and read it, sent when they change. Those are read from the store
once a second per tenant watched, so acknowledgements made on any process show."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from .activity import Activity
from .limits import LoginGuard
from .models import iso
from .presence import Presence
from .receipts import Receipts
from .registry import Registry
from .store import DeliveryQueue, Store
from .store.protocol import REPLACED

log = logging.getLogger("tidings.dashboard")

PUSH_INTERVAL = 0.25      # at most four pushes a second, however busy the server is
SAMPLE_EVERY = 10.0       # one history point every 10 s ...
HISTORY_POINTS = 360      # ... for the last hour
RECEIPTS_EVERY = 1.0      # seconds between looks at the receipts of the tenants watched
RECENT = 20               # notifications a tenant's page lists

Subscriber = Callable[[str], None]  # gets the overview as JSON, encoded once for all


class LoginLinks:
    """One-time dashboard login links (what `--dev` prints): random, kept in memory for
    `TTL` seconds, each good for one login."""

    TTL = 3600.0

    def __init__(self) -> None:
        self._links: dict[str, float] = {}

    def issue(self) -> str:
        now = time.monotonic()
        self._links = {k: t for k, t in self._links.items() if t > now}  # a handful at most
        link = secrets.token_urlsafe(24)
        self._links[link] = now + self.TTL
        return link

    def redeem(self, link: str) -> bool:
        expires = self._links.pop(link, 0.0)
        return expires > time.monotonic()


class Dashboard:
    def __init__(self, activity: Activity, presence: Presence, registry: Registry, store: Store,
                 queue: DeliveryQueue, receipts: Receipts) -> None:
        self.activity = activity
        self.receipts = receipts
        self._watchers: dict[Subscriber, str] = {}         # a tenant page's socket -> tenant
        self._receipts_sent: dict[str, dict[int, dict[str, int]]] = {}
        self.presence = presence
        self.registry = registry
        self.store = store
        self.queue = queue
        self.history: deque[dict[str, int]] = deque(maxlen=HISTORY_POINTS)
        self._subscribers: set[Subscriber] = set()
        self.logins = LoginGuard()
        self.login_links = LoginLinks()
        self._push_scheduled = False
        self._dirty: set[str] = set()      # tenants changed since the last push
        self._all_dirty = True             # look at every tenant at the next push
        self._pushed: dict[str, dict[str, Any]] = {}  # the rows the sockets have
        self._history_pushed = 0          # samples the sockets have
        self._samples = 0                 # samples taken
        self._last_sent_total = activity.created_total
        self._tasks: list[asyncio.Task[None]] = []
        self._pushing: set[asyncio.Task[None]] = set()
        presence.listen(self._changed)
        activity.listeners.append(self._changed)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._sample_loop(), name="tidings-dashboard"),
                       asyncio.create_task(self._receipts_loop(), name="tidings-receipts-view")]

    async def stop(self) -> None:
        self.presence.unlisten(self._changed)
        for task in [*self._tasks, *self._pushing]:
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
        return {"tenants": rows, "global": _totals(rows), "history": list(self.history)}

    def users(self, tenant_id: str) -> list[dict[str, Any]]:
        """Users online here with their connections, for the tenant page."""
        users: dict[str, list[dict[str, Any]]] = {}
        for conn in self.registry.tenant(tenant_id):
            users.setdefault(conn.user_id, []).append({
                "transport": conn.transport, "since": iso(conn.opened_at),
                "client": conn.remote_ip, "user_agent": conn.user_agent})
        return [{"user_id": user, "connections": sorted(conns, key=lambda c: c["since"])}
                for user, conns in sorted(users.items())]

    async def recent(self, tenant_id: str, limit: int = RECENT) -> list[dict[str, Any]]:
        """The tenant's latest notifications, with live delivery counts while we have them,
        the state of each email, SMS, push and webhook delivery, and the receipts. Those that
        left every inbox stay in the list, marked: `ended` says why (replaced, recalled,
        expired), and `replaced_by` names the notification that replaced one, when it is in
        the list too."""
        notifications = await self.store.recent(tenant_id, limit)
        ids = [n["id"] for n in notifications]
        deliveries = await self.queue.for_notifications(ids, tenant_id)
        receipts = await self.receipts.summary(tenant_id, ids)
        replaced_by = {n["replaces"]: n["id"] for n in notifications if n.get("replaces")}
        for n in notifications:
            if n.get("ended") == REPLACED and n["id"] in replaced_by:
                n["replaced_by"] = replaced_by[n["id"]]
            n["delivery"] = self.activity.recent_delivery.get(n["id"])
            n["deliveries"] = deliveries[n["id"]]
            n["receipts"] = receipts[n["id"]]
        return notifications

    # --- live pushes -------------------------------------------------------------------
    async def join(self, subscriber: Subscriber) -> str:
        """Adds a socket; returns the `overview` it starts from: what every socket has, so
        that the next `changes` apply to it as to them."""
        if not self._subscribers:  # nobody kept the picture up to date: make it afresh
            self._all_dirty = True
            await self.changes()
        self._subscribers.add(subscriber)
        rows = sorted(self._pushed.values(), key=lambda r: str(r["tenant_id"]))
        seen = min(self._samples, len(self.history))
        return json.dumps({"type": "overview", "tenants": rows, "global": _totals(rows),
                           "history": list(self.history)[len(self.history) - seen:]},
                          separators=(",", ":"))

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)
        self._watchers.pop(subscriber, None)

    def watch(self, subscriber: Subscriber, tenant_id: str) -> None:
        """A tenant page's socket: it also gets that tenant's `receipts`, the first within
        RECEIPTS_EVERY."""
        self._watchers[subscriber] = tenant_id
        self._receipts_sent.pop(tenant_id, None)

    def _changed(self, tenant_id: str = "") -> None:
        """A tenant's numbers changed ("": maybe every tenant's, as time passes)."""
        if tenant_id:
            self._dirty.add(tenant_id)
        else:
            self._all_dirty = True
        if self._subscribers and not self._push_scheduled:
            self._push_scheduled = True
            asyncio.get_running_loop().call_later(PUSH_INTERVAL, self._push)

    def _push(self) -> None:
        self._push_scheduled = False
        task = asyncio.create_task(self._push_now(), name="tidings-dashboard-push")
        self._pushing.add(task)
        task.add_done_callback(self._pushing.discard)

    async def _push_now(self) -> None:
        changes = await self.changes()
        if changes is None:
            return
        encoded = json.dumps(changes, separators=(",", ":"))  # once for every socket
        for subscriber in list(self._subscribers):
            subscriber(encoded)

    async def changes(self) -> dict[str, Any] | None:
        """What changed since the last push, as a `changes` message; None when nothing did."""
        dirty, self._dirty = self._dirty, set()
        if self._all_dirty:
            self._all_dirty = False
            found = await self.presence.tenants()
            names = {*found, *self.activity.tenants(), *self._pushed}
        else:
            names = dirty
            found = dict(zip(names, await self.presence.targets([(t, None) for t in names]),
                             strict=True))
        active = set(self.activity.tenants())
        changed, removed = [], []
        for tenant_id in sorted(names):
            stats = found.get(tenant_id) or {"websocket": 0, "sse": 0, "users_online": 0}
            row = self._row(tenant_id, stats)
            if stats["websocket"] + stats["sse"] == 0 and tenant_id not in active:
                if self._pushed.pop(tenant_id, None) is not None:
                    removed.append(tenant_id)
            elif self._pushed.get(tenant_id) != row:
                self._pushed[tenant_id] = row
                changed.append(row)
        new = min(self._samples - self._history_pushed, len(self.history))
        history = list(self.history)[-new:] if new > 0 else []
        self._history_pushed = self._samples
        if not changed and not removed and not history:
            return None
        return {"type": "changes", "tenants": changed, "removed": removed,
                "tenant_count": len(self._pushed), "global": _totals(self._pushed.values()),
                "history": history}

    async def _receipts_loop(self) -> None:
        while True:
            await asyncio.sleep(RECEIPTS_EVERY)
            for tenant_id in set(self._watchers.values()):
                try:
                    await self._push_receipts(tenant_id)
                except Exception as e:  # the store away: the next look tries again
                    log.warning("receipts of tenant=%s could not be read: %s", tenant_id, e)
            for gone in set(self._receipts_sent) - set(self._watchers.values()):
                del self._receipts_sent[gone]

    async def _push_receipts(self, tenant_id: str) -> None:
        ids = [n["id"] for n in await self.store.recent(tenant_id, RECENT)]
        summary = await self.receipts.summary(tenant_id, ids)
        if self._receipts_sent.get(tenant_id) == summary:
            return
        self._receipts_sent[tenant_id] = summary
        encoded = json.dumps({"type": "receipts", "tenant_id": tenant_id,
                              "notifications": {str(n): r for n, r in summary.items()}},
                             separators=(",", ":"))
        for subscriber, watched in list(self._watchers.items()):
            if watched == tenant_id:
                subscriber(encoded)

    async def _sample_loop(self) -> None:
        while True:
            sent = self.activity.created_total
            self.history.append({"t": int(time.time()), "connections":
                                 (await self.presence.overall())["total"],
                                 "sent": sent - self._last_sent_total})
            self._samples += 1
            self._last_sent_total = sent
            self._changed()
            await asyncio.sleep(SAMPLE_EVERY)


def _totals(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    rows = list(rows)
    ws, sse = sum(r["websocket"] for r in rows), sum(r["sse"] for r in rows)
    return {"websocket": ws, "sse": sse, "total": ws + sse}
