"""What both transports share: a message encoded once, and a connection that only frames it.

A `Connection` holds the replay gate (live messages wait while a replay is sent), drops
duplicates by notification id, and bounds its pending output: a client that cannot keep up
is disconnected and comes back with its resume cursor, instead of growing memory or making
others wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import secrets
import sys
import termios
import time
from typing import Any

import orjson
from tornado.iostream import IOStream, StreamBufferFullError, StreamClosedError

log = logging.getLogger("tidings.connections")

WEBSOCKET, SSE = "websocket", "sse"


def dumps(value: Any) -> str:
    return encode(value).decode()


def encode(value: Any) -> bytes:
    """Compact UTF-8 JSON, as json.dumps(separators=(",", ":"), ensure_ascii=False) writes it
    (integer keys become strings there too), several times faster."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


class Message:
    """One event for clients, encoded lazily and at most once per transport, however many
    connections it goes to."""

    __slots__ = ("kind", "key", "payload", "event_id", "_ws", "_ws_frame", "_sse", "_sse_chunk")

    def __init__(self, kind: str, key: str | None, payload: Any,
                 event_id: int | None = None) -> None:
        self.kind = kind              # the WebSocket `type` and the SSE `event`
        self.key = key                # the WebSocket field that carries the payload
        self.payload = payload
        self.event_id = event_id      # notification or event id: SSE `id:`, resume cursor
        self._ws: bytes | None = None
        self._ws_frame: bytes | None = None
        self._sse: bytes | None = None
        self._sse_chunk: bytes | None = None

    @classmethod
    def notification(cls, notification: dict[str, Any]) -> Message:
        return cls("notification", "notification", notification, notification["id"])

    @classmethod
    def deleted(cls, body: dict[str, Any]) -> Message:
        """`notification_deleted` ({id, reason, event_id}): an entry of the ordered stream,
        with its own place in it (`event_id`), framed as `reset` is."""
        return cls("notification_deleted", None, body, body["event_id"])

    @classmethod
    def stats(cls, counts: dict[str, int]) -> Message:
        return cls("stats_update", "stats", counts)

    @classmethod
    def reset(cls, body: dict[str, Any]) -> Message:
        """`reset`: the WebSocket frame carries the body's fields beside `type`; the SSE
        event's data is the body."""
        return cls("reset", None, body)

    @property
    def ws(self) -> bytes:
        """The WebSocket text frame's payload, UTF-8 encoded once for every connection."""
        if self._ws is None:
            frame = {"type": self.kind}
            if self.key is not None:
                frame[self.key] = self.payload
            elif isinstance(self.payload, dict):
                frame.update(self.payload)
            self._ws = encode(frame)
        return self._ws

    @property
    def ws_frame(self) -> bytes:
        """The whole WebSocket frame (a final text frame: server frames are unmasked, and no
        compression is negotiated), built once and written as it is to every socket."""
        if self._ws_frame is None:
            payload = self.ws
            n = len(payload)
            if n < 126:
                head = bytes((0x81, n))
            elif n < 1 << 16:
                head = bytes((0x81, 126)) + n.to_bytes(2, "big")
            else:
                head = bytes((0x81, 127)) + n.to_bytes(8, "big")
            self._ws_frame = head + payload
        return self._ws_frame

    @property
    def sse(self) -> bytes:
        if self._sse is None:
            head = f"id: {self.event_id}\n" if self.event_id is not None else ""
            data = dumps(self.payload if self.payload is not None else {})
            self._sse = f"{head}event: {self.kind}\ndata: {data}\n\n".encode()
        return self._sse

    @property
    def sse_chunk(self) -> bytes:
        """The SSE event as one HTTP/1.1 chunk, built once and written as it is to every
        chunked stream."""
        if self._sse_chunk is None:
            event = self.sse
            self._sse_chunk = b"%x\r\n%b\r\n" % (len(event), event)
        return self._sse_chunk


def write_now(stream: IOStream, data: bytes) -> asyncio.Future[None] | None:
    """Writes `data` to the stream's socket at once when nothing is queued before it (nearly
    always: one send, no copy into Tornado's buffer, no future; None then). The rest, or all
    of it behind queued bytes, goes through the stream, which keeps the order, bounds what is
    queued (StreamBufferFullError) and handles a failing socket."""
    if not stream.writing() and not stream.closed():
        try:
            sent = stream.socket.send(data)
        except OSError:  # full (BlockingIOError) or failing: the stream's own write decides
            sent = 0
        if sent == len(data):
            return None
        data = data[sent:]
    return stream.write(data)


def unsent(stream: IOStream) -> int:
    """Bytes queued in the stream and in its socket's send queue (that part on Linux alone:
    elsewhere the stream's), which only falls as the client reads."""
    queued: int = stream._total_write_index - stream._total_write_done_index
    if stream.socket is not None:
        with contextlib.suppress(OSError):
            kernel = fcntl.ioctl(stream.socket.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
            queued += int.from_bytes(kernel, sys.byteorder)
    return queued


HEARTBEAT = Message("heartbeat", None, None)
# Between processes only, never to a client: a tenant's preferences changed.
PREFERENCES_CHANGED = "preferences_changed"

_ids = itertools.count(1)
_PROCESS = secrets.token_hex(4)  # this process's part of every connection id


class Connection:
    """A client connection; a transport subclass implements `_write` and `_close`, and bounds
    its socket's output buffer (Tornado's `max_write_buffer_size`) to `max_pending` bytes.

    Slotted, as are its transports': an idle connection is mostly this object, and a process
    holds tens of thousands of them."""

    __slots__ = ("id", "tenant_id", "user_id", "remote_ip", "user_agent", "opened_at",
                 "last_id", "ack_allowance", "closed", "close_reason", "max_pending", "_held",
                 "_held_bytes", "_unflushed", "_last_write")

    transport = ""

    def __init__(self, tenant_id: str, user_id: str, *, max_pending: int = 1 << 20,
                 remote_ip: str = "", user_agent: str = "") -> None:
        # Unique across processes: the transport, this process, a counter. Made once: every
        # push and acknowledgement record names it.
        self.id = f"{self.transport[:2]}-{_PROCESS}-{next(_ids)}"
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.remote_ip = remote_ip
        self.user_agent = user_agent
        self.opened_at = time.time()
        self.last_id = 0              # largest notification or event id sent: none at or below again
        self.ack_allowance = 0        # ids it may still acknowledge: one per message sent with one
        self.closed = False
        self.close_reason: str | None = None  # why the server ended it, when it did
        self.max_pending = max_pending
        self._held: list[Message] | None = None
        self._held_bytes = 0
        self._unflushed = 0           # bytes a replay queued since it last waited
        self._last_write: asyncio.Future[Any] | None = None  # None: nothing left queued

    # --- for transports ----------------------------------------------------------------
    def encoded(self, message: Message) -> bytes:
        """The message as this transport sends it (encoded once per message)."""
        raise NotImplementedError

    def _write(self, message: Message) -> asyncio.Future[Any] | None:
        """Writes or queues the message on the socket (a future when queued); raises
        StreamBufferFullError past the bound."""
        raise NotImplementedError

    def _close(self, reason: str) -> None:
        """Ends the connection; for "too slow" without waiting for the full buffer to drain."""
        raise NotImplementedError

    # --- for the hub -------------------------------------------------------------------
    def hold(self) -> None:
        """Queue live messages until `release()`: a replay is about to be sent."""
        self._held, self._held_bytes = [], 0

    def release(self) -> None:
        held, self._held = self._held or [], None
        for message in held:
            self.send(message)

    def drop(self) -> None:
        """Ends the socket at once, with no goodbye awaited: at shutdown, past the grace,
        for a client that did not answer `close`. An SSE stream's HTTP connection is closed
        with the server's, so only the WebSocket transport does anything here."""

    def heartbeat(self) -> None:
        """Called by the hub's heartbeat walk, once per interval: an SSE `heartbeat` event
        (the WebSocket transport pings instead)."""
        self.send(HEARTBEAT)

    def send(self, message: Message) -> bool:
        """Queues a message; False when it was not sent (closed, duplicate, held, too slow)."""
        if self._held is not None and not self.closed:
            self._held.append(message)
            self._held_bytes += len(self.encoded(message))
            if self._held_bytes > self.max_pending:  # live traffic outruns a slow replay
                self.too_slow("held live messages")
            return False
        return self.send_replay(message)

    async def replay(self, message: Message, patience: float | None) -> bool:
        """Sends one message of a replay at the client's pace: past half the output bound,
        it waits for the socket to take what was queued, so a slow reader of a big backlog
        is never dropped for reading slowly. One that takes nothing for `patience` seconds
        is dropped as too slow (a replay is not pinged, and it holds a connection). Whether
        the message was sent."""
        if not self.send_replay(message):
            return False
        self._unflushed += len(self.encoded(message))
        if self._unflushed > self.max_pending // 2:
            if not await self.drain(patience):
                self.too_slow("output buffer")
            self._unflushed = 0
        return True

    def send_replay(self, message: Message) -> bool:
        """Like `send`, but past the replay gate."""
        if self.closed:
            return False
        if message.event_id is not None:
            if message.event_id <= self.last_id:
                return False
            self.last_id = message.event_id
            self.ack_allowance += 1
        try:
            self._last_write = self._write(message)
        except StreamBufferFullError:
            self.too_slow("output buffer")
            return False
        except StreamClosedError:
            self.close("write failed")
            return False
        return True

    def too_slow(self, what: str) -> None:
        log.warning("dropping slow %s connection %s of tenant=%s user=%s: its %s is full",
                    self.transport, self.id, self.tenant_id, self.user_id, what)
        self.close("too slow")

    async def drain(self, patience: float | None) -> bool:
        """Waits until what was queued so far has left for the socket; False when the client
        took nothing of it for `patience` seconds. Taking is seen in what is left to send,
        the kernel's part included: the stream itself only moves when a third of the
        kernel's buffer is free, which a slow but steady reader may take minutes to free."""
        while self._last_write is not None and not self._last_write.done():
            left = self.unsent()
            done, _ = await asyncio.wait([self._last_write], timeout=patience)
            if not done and self.unsent() >= left:
                return False
        return True

    def unsent(self) -> int:
        """Bytes written to this connection that its client has not taken yet."""
        raise NotImplementedError

    def close(self, reason: str) -> None:
        """Ends the connection. Never raises: a failing close must not reach a fan-out that
        is delivering to other connections."""
        if not self.closed:
            self.closed = True
            self.close_reason = reason
            self._held = None
            try:
                self._close(reason)
            except Exception:
                log.exception("closing %s connection %s failed", self.transport, self.id)
