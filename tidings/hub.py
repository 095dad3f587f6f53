"""The hub: attaches connections, delivers to them in order, replays what they missed, and
sends heartbeats (SSE events, WebSocket pings). One path for both transports, and for local
and remote creates.

Order and completeness. Ids are given in commit order (the store serialises creates), and
every notification travels with its tenant's previous id (`prev_id`). For each tenant with a
connection here, a `TenantStream` remembers the newest id delivered. A notification whose
`prev_id` is that id is delivered at once; one at or below it is a duplicate and dropped; one
further ahead means some were lost on the way (pub/sub is at most once), so the stream reads
the missing ones from the store, delivers them in order, then goes on. With a remote broker,
the streams are also compared with the store every `SYNC_EVERY` seconds and after a broker
outage, so a lost last message is found too. Each connection drops any id at or below the
last one it was sent, which makes a replay and live pushes meet exactly once.

A recall or an expiry (`notification_deleted`) is an entry of the same stream: its event id is
taken from the notification id sequence, so it is ordered, gap-filled and replayed like a
notification.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .connections import PREFERENCES_CHANGED, Connection, Message
from .fanout import Broker, BrokerUnavailable, Envelope
from .inapp import InAppChoices
from .metrics import Metrics
from .models import Principal
from .presence import Presence
from .receipts import Receipts
from .registry import Registry
from .retention import CURSOR_UNKNOWN, resume_reset
from .store import Entry, Notification, Removal, Store, StoreUnavailable
from .store import position as stream_position
from .store.protocol import merge

log = logging.getLogger("tidings.hub")

REPLAY_PAGE = 500
FILL_PAGE = 500
SYNC_EVERY = 2.0        # seconds between checks of every stream against the store
PENDING_LIMIT = 10_000  # envelopes held per tenant while a gap is filled; past it, refilled
HEARTBEAT_SLICE = 1000  # connections a heartbeat walk visits before it lets other work run


class TenantStream:
    """Where this process is in one tenant's notifications."""

    __slots__ = ("tenant_id", "last", "ready", "pending", "filling", "initial")

    def __init__(self, tenant_id: str) -> None:
        self.tenant_id = tenant_id
        self.last = 0                    # newest id delivered here
        self.initial = 0                 # the position it started from
        self.ready = asyncio.Event()     # set once subscribed and positioned
        self.pending: list[Envelope] = []
        self.filling = False


class Hub:
    def __init__(self, store: Store, registry: Registry, broker: Broker, presence: Presence,
                 metrics: Metrics, receipts: Receipts, heartbeat: float = 30.0,
                 in_app: InAppChoices | None = None) -> None:
        self.store = store
        self.in_app = in_app  # who turned off the live push of which types
        self.metrics = metrics
        self.receipts = receipts
        self.registry = registry
        self.broker = broker
        self.presence = presence
        self.heartbeat = heartbeat
        # A replay nobody reads is given up as a peer that answers no ping is: two heartbeats.
        self.replay_patience = 2 * heartbeat if heartbeat > 0 else None
        self.streams: dict[str, TenantStream] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._fills: set[asyncio.Future[Any]] = set()

    async def start(self) -> None:
        await self.broker.start(self.receive, self.catch_up)
        self._tasks = [asyncio.create_task(self._heartbeat_loop(), name="tidings-heartbeat")]
        if self.broker.remote:
            self._tasks.append(asyncio.create_task(self._sync_loop(), name="tidings-sync"))

    async def stop(self) -> None:
        for task in [*self._tasks, *self._fills]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._fills, return_exceptions=True)
        self._tasks = []

    # --- subscribe: one path for both transports ---------------------------------------
    async def attach(self, conn: Connection, who: Principal, since: int | None,
                     greet: Callable[[int], Awaitable[None]]) -> None:
        """Registers a connection, greets it with the position it starts from (`last_id`:
        everything of its user after that id will reach it) and, with `since`, first sends
        what it missed, oldest first; a cursor that retention outran, or that is past the
        newest id there is, first gets a `reset` (after the greeting, before the replay).

        Live messages are held from registration until the replay is sent, then released;
        the connection drops any id it has already sent, so a notification committed during
        the replay comes exactly once, whichever way it arrives."""
        conn.hold()
        if since is not None:  # the client has it: from a replay or another process, not again
            conn.last_id = max(conn.last_id, since)
        stream = self.streams.get(conn.tenant_id)
        start = stream.last if stream is not None and stream.ready.is_set() else None
        self.registry.add(conn)
        self.metrics.connection_opened(conn.transport)
        log.info("%s connection %s opened tenant=%s user=%s client=%s%s", conn.transport,
                 conn.id, conn.tenant_id, conn.user_id, conn.remote_ip or "-",
                 "" if since is None else f" since={since}")
        try:
            if stream is None:
                stream = self.streams[conn.tenant_id] = TenantStream(conn.tenant_id)
                await self._open_stream(stream)
            await stream.ready.wait()
            if self.streams.get(conn.tenant_id) is not stream:
                raise StoreUnavailable("the tenant's stream could not be opened")
            position = stream.initial if start is None else start
            await greet(position)
            if since is None:
                return
            page, more = await self._replay_page(who, since, since)
            if since:  # since=0 never gets a reset
                # Read after the first page: retention raises the watermark in the transaction
                # that removes, so a removal this page missed is seen here.
                reset = await resume_reset(self.store, who, since)
                if reset is not None:
                    await conn.replay(Message.reset(reset), self.replay_patience)
                    if reset["reason"] == CURSOR_UNKNOWN:  # nothing to replay; live from here
                        conn.last_id, page, more = position, [], False
            while not conn.closed:
                for entry in page:
                    if not isinstance(entry, Removal) and \
                            self._muted(conn.tenant_id, conn.user_id, entry):
                        continue  # not pushed live, so not replayed either: the inbox has it
                    sent = await conn.replay(_message(entry), self.replay_patience)  # its pace
                    if conn.closed:
                        break
                    if sent and not isinstance(entry, Removal):
                        self.receipts.pushed(entry["id"], conn.tenant_id, [conn])
                if not more or not page:
                    break
                page, more = await self._replay_page(who, since, stream_position(page[-1]))
        finally:
            conn.release()

    async def _replay_page(self, who: Principal, since: int, after: int,
                           ) -> tuple[list[Entry], bool]:
        """What a client resuming from `since` missed after `after`, in stream order: the
        user's live notifications and the removals of those it could have seen. Whether more
        may follow."""
        notifications = await self.store.after(who, after, REPLAY_PAGE)
        removals = await self.store.removals_after(who, since, after, REPLAY_PAGE) \
            if since else []
        more = len(notifications) == REPLAY_PAGE or len(removals) == REPLAY_PAGE
        return merge(notifications, removals, REPLAY_PAGE), more

    def detach(self, conn: Connection, reason: str) -> None:
        """Unregisters a connection that has ended; `reason` is why (see metrics.CLOSE_REASONS)."""
        self.registry.remove(conn)
        self.metrics.connection_closed(conn.transport, reason)
        log.info("%s connection %s closed tenant=%s user=%s%s", conn.transport, conn.id,
                 conn.tenant_id, conn.user_id, f" ({reason})" if reason else "")
        tenant_id = conn.tenant_id
        stream = self.streams.get(tenant_id)
        if stream is not None and stream.ready.is_set() and not self.registry.has_tenant(
                tenant_id):
            del self.streams[tenant_id]
            self._forget(tenant_id)
            self._spawn(self.broker.unsubscribe(tenant_id))

    async def _open_stream(self, stream: TenantStream) -> None:
        """Subscribes first, then reads the position: whatever commits after the read is
        received; what was received before it is dropped as already covered."""
        try:
            await self.broker.subscribe(stream.tenant_id)
            if self.in_app is not None:  # after subscribing: a change from now on is heard
                await self.in_app.load(stream.tenant_id)
            position = (await self.store.positions([stream.tenant_id]))[stream.tenant_id]
        except BaseException:
            if self.streams.get(stream.tenant_id) is stream:
                del self.streams[stream.tenant_id]
            stream.ready.set()
            raise
        stream.last = stream.initial = position
        stream.ready.set()
        if not self.registry.has_tenant(stream.tenant_id):  # all left while it opened
            del self.streams[stream.tenant_id]
            self._forget(stream.tenant_id)
            self._spawn(self.broker.unsubscribe(stream.tenant_id))
            return
        pending, stream.pending = stream.pending, []
        for envelope in pending:
            self._ordered(stream, envelope)

    # --- preferences ---------------------------------------------------------------------
    async def preferences_changed(self, tenant_id: str) -> None:
        """A tenant's preferences changed: read its in_app choices again here, at once, and
        tell the other processes that have connections of it."""
        if self.in_app is not None and tenant_id in self.streams:
            await self.in_app.load(tenant_id)
        try:
            self.broker.publish(Envelope(tenant_id, None, Message(PREFERENCES_CHANGED, None,
                                                                  None)))
        except BrokerUnavailable:
            pass  # when it is back, every process reads them again (catch_up)

    def _reload_in_app(self, tenant_ids: list[str]) -> None:
        if self.in_app is not None:
            for tenant_id in tenant_ids:
                self._spawn(self.in_app.load(tenant_id))

    def _forget(self, tenant_id: str) -> None:
        if self.in_app is not None:
            self.in_app.forget(tenant_id)

    def _muted(self, tenant_id: str, user_id: str, notification: dict[str, Any]) -> bool:
        return self.in_app is not None and self.in_app.muted(tenant_id, user_id,
                                                             notification["type"])

    # --- deliver -----------------------------------------------------------------------
    def receive(self, envelope: Envelope) -> None:
        """An envelope from this process or another: delivered in its tenant's order."""
        stream = self.streams.get(envelope.tenant_id)
        if stream is None:
            return  # no connection of that tenant here
        if envelope.message.kind == PREFERENCES_CHANGED:
            self._reload_in_app([envelope.tenant_id])
        elif envelope.prev_id is None:
            self._deliver(envelope)  # not part of the ordered stream (stats updates)
        elif not stream.ready.is_set() or stream.filling:
            self._hold(stream, envelope)
        else:
            self._ordered(stream, envelope)

    def _ordered(self, stream: TenantStream, envelope: Envelope) -> None:
        event_id = envelope.message.event_id or 0
        if event_id <= stream.last:
            return
        if envelope.prev_id is not None and envelope.prev_id > stream.last:
            self._hold(stream, envelope)
            self._fill(stream, envelope.prev_id)
            return
        stream.last = event_id
        self._deliver(envelope)

    def _hold(self, stream: TenantStream, envelope: Envelope) -> None:
        if len(stream.pending) < PENDING_LIMIT:
            stream.pending.append(envelope)
        # else: dropped; the sync finds it in the store

    def _deliver(self, envelope: Envelope) -> None:
        if envelope.user_id is None:
            targets = list(self.registry.tenant(envelope.tenant_id))
        else:
            targets = list(self.registry.user(envelope.tenant_id, envelope.user_id))
        message = envelope.message
        is_notification = message.kind == "notification"  # not a deletion, nor stats
        if is_notification and self.in_app is not None and self.in_app.any(envelope.tenant_id):
            type_ = message.payload["type"]
            targets = [c for c in targets
                       if not self.in_app.muted(envelope.tenant_id, c.user_id, type_)]
        for conn in targets:
            conn.send(message)
        if is_notification and message.event_id is not None:
            # observed and recorded once, not per send
            self.metrics.pushed(len(targets), envelope.committed_at)
            self.receipts.pushed(message.event_id, envelope.tenant_id, targets)

    def _fill(self, stream: TenantStream, through: int) -> None:
        if not stream.filling:
            stream.filling = True
            self._spawn(self._fill_gap(stream, through))

    async def _fill_gap(self, stream: TenantStream, through: int) -> None:
        """Reads what this stream missed up to `through` from the store, delivers it, then
        what was held meanwhile, in order."""
        try:
            while stream.last < through:
                rows = await self.store.tenant_range(stream.tenant_id, stream.last, through,
                                                     FILL_PAGE)
                if not rows:
                    break
                for entry, prev_id in rows:
                    if stream_position(entry) > stream.last:
                        stream.last = stream_position(entry)
                        user_id = entry.user_id if isinstance(entry, Removal) else \
                            entry["user_id"]
                        self._deliver(Envelope(stream.tenant_id, user_id, _message(entry),
                                               prev_id))
        except (StoreUnavailable, OSError) as e:
            log.warning("filling a gap of tenant=%s failed (%s); trying again shortly",
                        stream.tenant_id, e)
            stream.filling = False
            return
        finally:
            if self.streams.get(stream.tenant_id) is not stream:
                stream.pending = []
        stream.filling = False
        pending, stream.pending = sorted(stream.pending, key=_event_id), []
        for envelope in pending:
            if stream.filling:
                self._hold(stream, envelope)
            else:
                self._ordered(stream, envelope)

    def catch_up(self) -> None:
        """After a broker outage: compare every stream with the store now, and read the
        in_app choices again (word of a change may have been lost)."""
        self._spawn(self._sync())
        self._reload_in_app(list(self.streams))

    async def _sync(self) -> None:
        ready = [s for s in self.streams.values() if s.ready.is_set() and not s.filling]
        if not ready:
            return
        try:
            positions = await self.store.positions([s.tenant_id for s in ready])
        except (StoreUnavailable, OSError):
            return
        for stream in ready:
            head = positions.get(stream.tenant_id, 0)
            if head > stream.last and self.streams.get(stream.tenant_id) is stream:
                self._fill(stream, head)

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(SYNC_EVERY)
            try:
                await self._sync()
            except Exception:
                log.exception("comparing streams with the store failed")

    # --- heartbeats --------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        """One timer for every connection of the process, instead of one each: every
        `heartbeat` seconds a walk gives each SSE stream a `heartbeat` event and each
        WebSocket a ping (closing one whose previous ping went unanswered: a dead peer). The
        walk lets other work run every HEARTBEAT_SLICE connections."""
        if self.heartbeat <= 0:
            return
        while True:
            await asyncio.sleep(self.heartbeat)
            for i, conn in enumerate(list(self.registry.all()), 1):
                if not conn.closed:
                    try:
                        conn.heartbeat()
                    except Exception:
                        log.exception("a heartbeat to %s connection %s failed", conn.transport,
                                      conn.id)
                if i % HEARTBEAT_SLICE == 0:
                    await asyncio.sleep(0)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._fills.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._fills.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a hub task failed", exc_info=task.exception())


def _event_id(envelope: Envelope) -> int:
    return envelope.message.event_id or 0


def _message(entry: Notification | Removal) -> Message:
    if isinstance(entry, Removal):
        return Message.deleted(entry.payload())
    return Message.notification(entry)

