"""Receipts: which connection was pushed a notification and which acknowledged it.

Recording must not slow the fan-out, so a push is remembered in memory as one entry per
notification (its connections), a WebSocket acknowledgement as one entry per frame (its ids),
and everything remembered is written every `FLUSH_INTERVAL`, in transactions of WRITE_CHUNK
records so that creates never wait long behind them.
Receipts are a record, not the notification: when the store is away or the buffer is full,
the oldest wait and the newest are dropped (counted in `dropped`, logged), and a notification
is never held up for them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from . import errors
from .connections import Connection
from .models import Principal
from .store import ReceiptBook, StoreUnavailable
from .store.protocol import Ack, FrameAcks, Push, pack_connections

log = logging.getLogger("tidings.receipts")

FLUSH_INTERVAL = 1.0     # seconds between writes
MAX_BUFFERED = 1_000_000  # pushed connections and acknowledged ids waiting to be written, at
                          # most (8 to 40 bytes each; an acknowledgement over REST about 100)
MAX_TENANT_SHARE = MAX_BUFFERED // 2  # one tenant's records per write: its flood is its own
MAX_ACK_IDS = 500        # ids in one acknowledgement
WRITE_CHUNK = 500        # records per transaction: a create waits behind one chunk, not a second's


# An ack frame as tidings.js writes it (JSON.stringify of {type, ids}) with ids of up to 18
# digits (so all below 2**63): its ids are taken without the general JSON walk. Anything else
# (another key order, spaces, a longer or a bad id) goes the general way, with the same answers.
_ACK_HEAD = '{"type":"ack","ids":['
_ACK_FRAME_MAX = len(_ACK_HEAD) + MAX_ACK_IDS * 19 + 1  # 18 digits and a comma each, "]}"
_ACK_IDS = re.compile(r"[1-9][0-9]{0,17}(?:,[1-9][0-9]{0,17})*")


def quick_ack_ids(frame: str) -> str | None:
    """The ids of an ack frame in its common shape, valid, as the frame wrote them ("42,43");
    None when the frame is not in that shape (then `ack_ids` of the parsed frame decides)."""
    if len(frame) > _ACK_FRAME_MAX or not frame.startswith(_ACK_HEAD) \
            or not frame.endswith("]}"):
        return None
    ids = frame[len(_ACK_HEAD):-2]
    if _ACK_IDS.fullmatch(ids) is None or ids.count(",") >= MAX_ACK_IDS:
        return None
    return ids


def ack_ids(value: Any) -> list[int]:
    """The `ids` of an acknowledgement: 1 to MAX_ACK_IDS notification ids."""
    if not isinstance(value, list) or not 0 < len(value) <= MAX_ACK_IDS or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 < i < 2**63 for i in value):
        raise errors.invalid("ids", f"must be a list of 1 to {MAX_ACK_IDS} notification ids")
    return list(dict.fromkeys(value))


def _size(record: Push | Ack | FrameAcks) -> int:
    """The pushed connections or acknowledged ids a record holds: what MAX_BUFFERED counts."""
    if isinstance(record, Push):
        return record.connections.count("\n") + 1
    if isinstance(record, FrameAcks):
        return record.ids.count(",") + 1
    return 1


class Receipts:
    def __init__(self, book: ReceiptBook, clock: Callable[[], float] = time.time) -> None:
        self.book = book
        self.clock = clock
        self.dropped = 0
        self._pushed: list[tuple[int, str, list[Connection], float]] = []
        # Per notification, its acknowledgements over REST: (tenant, user, connection) -> when,
        # the first. One key per request, shared by its ids, and no object per id.
        self._acks: dict[int, dict[tuple[str, str, str], float]] = {}
        self._frames: list[FrameAcks] = []  # WebSocket acknowledgements, one per frame
        self._unwritten: list[Push] = []  # records a failed write left, written first next time
        self._unwritten_acks: list[Ack] = []
        self._unwritten_frames: list[FrameAcks] = []
        self._buffered = 0
        self._tenant_records: collections.Counter[str] = collections.Counter()
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # --- recorded on the hot path: an append, nothing more -----------------------------
    def pushed(self, notification_id: int, tenant_id: str,
               connections: list[Connection]) -> None:
        if not connections or not self._room(tenant_id, len(connections)):
            return
        self._pushed.append((notification_id, tenant_id, connections, self.clock()))

    def acknowledged(self, who: Principal, ids: list[int], connection_id: str = "") -> None:
        """Over REST: `connection_id` names an SSE connection ('': every SSE connection of
        the user that was pushed them)."""
        if not self._room(who.tenant_id, len(ids)):
            return
        key, now, acks = (who.tenant_id, who.user_id, connection_id), self.clock(), self._acks
        for i in ids:
            entries = acks.get(i)
            if entries is None:
                acks[i] = {key: now}
            elif key not in entries:  # the first is kept, as the store keeps it
                entries[key] = now

    def acknowledged_by(self, connection: Connection, ids: str) -> None:
        """A WebSocket frame's acknowledgement ("42,43", as `quick_ack_ids` gives them): one
        entry, whatever its ids. A connection acknowledges at most as many ids as it was sent
        messages that carry one, so a client that repeats its acknowledgements cannot grow
        what is stored."""
        allowed, count = connection.ack_allowance, ids.count(",") + 1
        if count > allowed:
            ids, count = ",".join(ids.split(",")[:allowed]), allowed
        if not count or not self._room(connection.tenant_id, count):
            return
        connection.ack_allowance = allowed - count
        self._frames.append(FrameAcks(connection.tenant_id, connection.user_id, connection.id,
                                      self.clock(), ids))

    def _room(self, tenant_id: str, count: int) -> bool:
        """Whether `count` records (pushed connections, acknowledged ids) of the tenant fit;
        counted as taken if so."""
        if self._buffered + count > MAX_BUFFERED or \
                self._tenant_records[tenant_id] + count > MAX_TENANT_SHARE:
            self.dropped += count
            return False
        self._buffered += count
        self._tenant_records[tenant_id] += count
        return True

    # --- written off it ----------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_loop(), name="tidings-receipts")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(StoreUnavailable):
            await self.flush()

    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def flush(self) -> None:
        """Writes what is buffered; while the store is away it stays buffered (any other
        failure is a bug, and that batch is dropped rather than retried forever)."""
        async with self._lock:
            pushed, acked = self._pushed, self._acks
            rows, acks, frames = self._unwritten, self._unwritten_acks, self._unwritten_frames
            if not (pushed or acked or rows or acks or frames or self._frames):
                return
            frames += self._frames
            self._pushed, self._acks, self._frames, self._buffered = [], {}, [], 0
            self._unwritten, self._unwritten_acks, self._unwritten_frames = [], [], []
            self._tenant_records.clear()
            acks += [Ack(n, tenant, user, connection, at) for n, entries in acked.items()
                     for (tenant, user, connection), at in entries.items()]
            rows += [Push(n, tenant, at, pack_connections((c.id, c.user_id, c.transport)
                                                          for c in conns))
                     for n, tenant, conns, at in pushed]
            try:
                while rows or acks or frames:
                    await self.book.record(rows[:WRITE_CHUNK], acks[:WRITE_CHUNK],
                                           frames[:WRITE_CHUNK])
                    rows, acks = rows[WRITE_CHUNK:], acks[WRITE_CHUNK:]
                    frames = frames[WRITE_CHUNK:]
            except (StoreUnavailable, asyncio.CancelledError):  # kept for the next try
                self._unwritten, self._unwritten_acks, self._unwritten_frames = rows, acks, frames
                kept: list[Push | Ack | FrameAcks] = [*rows, *acks, *frames]
                for record in kept:  # still held: still counted
                    size = _size(record)
                    self._buffered += size
                    self._tenant_records[record.tenant_id] += size
                raise

    async def _flush_loop(self) -> None:
        reported = 0
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            if self.dropped > reported:
                log.warning("%d pushes or acknowledgements were not recorded (the buffer was "
                            "full)", self.dropped - reported)
                reported = self.dropped
            try:
                await self.flush()
            except StoreUnavailable as e:
                log.warning("receipts could not be written (%s); trying again", e)
            except Exception:
                log.exception("writing receipts failed")

    # --- read -------------------------------------------------------------------------
    async def of(self, tenant_id: str, notification_ids: list[int],
                 user_id: str | None = None) -> dict[int, list[dict[str, Any]]]:
        """Receipts as the API shows them, with this process's latest pushes included."""
        await self.flush()
        return await self.book.receipts(tenant_id, notification_ids, user_id)

    async def is_acknowledged(self, notification_id: int, user_id: str) -> bool:
        await self.flush()
        return await self.book.acknowledged(notification_id, user_id)

    async def summary(self, tenant_id: str, notification_ids: list[int],
                      ) -> dict[int, dict[str, int]]:
        """Per notification, how many recipients were pushed it, acknowledged it, read it."""
        found = await self.book.receipts(tenant_id, notification_ids)
        return {n: {"pushed": sum(1 for e in entries if e["connections"] and any(
                        c["pushed_at"] for c in e["connections"])),
                    "acknowledged": sum(1 for e in entries if e["acknowledged_at"]),
                    "read": sum(1 for e in entries if e["read_at"])}
                for n, entries in found.items()}
