"""WebSocket transport: `/ws/notifications`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlsplit

import tornado.websocket
from tornado.iostream import StreamClosedError
from tornado.util import _websocket_mask

from tidings import receipts, validation
from tidings.connections import WEBSOCKET, Connection, Message, dumps, write_now
from tidings.errors import TidingsError
from tidings.limits import Bucket
from tidings.models import Principal

from .subscribe import SubscribeMixin

# Close codes: 1001 going away (shutdown), 1013 try again later (too slow: resume with since).
_CLOSE_CODES = {"shutdown": 1001, "too slow": 1013}
_PONG = json.dumps({"type": "pong"})
FRAMES_PER_SECOND = 20  # from a client: tidings.js sends at most ten acks and a ping
READ_CHUNK = 64 * 1024  # bytes taken from a socket's stream at most per read


class WebSocketConnection(Connection):
    transport = WEBSOCKET

    def __init__(self, handler: NotificationSocket, who: Principal, max_pending: int,
                 **kwargs: Any) -> None:
        super().__init__(who.tenant_id, who.user_id, max_pending=max_pending, **kwargs)
        self.handler = handler
        assert handler.ws_connection is not None
        handler.ws_connection.stream.max_write_buffer_size = max_pending

    def encoded(self, message: Message) -> bytes:
        return message.ws

    def _write(self, message: Message) -> asyncio.Future[Any] | None:
        # The frame built once for every socket goes straight to this one: Tornado's
        # write_message would build it again and start a task per socket.
        ws = self.handler.ws_connection
        if ws is None or ws.is_closing():
            raise StreamClosedError()
        return write_now(ws.stream, message.ws_frame)

    def _close(self, reason: str) -> None:
        ws = self.handler.ws_connection
        if ws is not None and not ws.is_closing():
            # The close frame must fit even when the buffer is full; Tornado then aborts the
            # socket if the peer does not answer it within 5 s.
            ws.stream.max_write_buffer_size = None
        self.handler.close(_CLOSE_CODES.get(reason, 1011), reason)


class _Protocol(tornado.websocket.WebSocketProtocol13):
    """Tornado's protocol, telling the handler why Tornado itself said goodbye (a ping gone
    unanswered, a frame too big): on_close cannot tell that from a client's close; and
    reading what the socket has in one go.

    Tornado reads a frame in three or four `read_bytes` calls (header, length, mask,
    payload), each a future and a visit to the stream's buffer; and as the header leaves the
    rest of the frame in that buffer, the stream stops listening to the socket and starts
    again for the next frame, two epoll_ctl calls per frame. Here every read takes all the
    stream holds (up to READ_CHUNK) into the protocol's own bytes, and the pieces of a frame
    come from there without a future; a small whole frame is taken in one go. Tornado's
    frame parsing (its size limit, checked before a payload is read, control frames,
    fragments, close) decides every other frame."""

    handler: NotificationSocket
    _unread = b""  # bytes read from the stream that no frame has used yet

    async def _receive_frame(self) -> None:
        """The usual client frame (an ack, a ping: final, masked, text, under 126 bytes, no
        message in fragments under way) is taken whole here once it has been read; any other
        goes to Tornado's reader, which takes its pieces through `_read_bytes`."""
        unread = self._unread
        if not unread:
            unread = self._unread = await self.stream.read_bytes(READ_CHUNK, partial=True)
        if len(unread) < 6 or unread[0] != 0x81 or unread[1] < 0x80 or unread[1] >= 0x80 | 126 \
                or len(unread) < (end := 6 + (unread[1] & 0x7F)) \
                or self._fragmented_message_buffer is not None or self._decompressor is not None:
            return await super()._receive_frame()
        self._unread = unread[end:]
        self._wire_bytes_in += end
        handled = self._handle_message(0x1, _websocket_mask(unread[2:6], unread[6:end]))
        if handled is not None:
            await handled

    async def _read_bytes(self, n: int) -> bytes:
        unread = self._unread
        while len(unread) < n:
            unread += await self.stream.read_bytes(max(n - len(unread), READ_CHUNK),
                                                   partial=True)
        self._unread = unread[n:]
        self._wire_bytes_in += n
        return unread[:n] if len(unread) > n else unread

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if not self.server_terminated and not self.client_terminated:
            self.handler.goodbye = reason or f"code {code}"
        super().close(code, reason)


class NotificationSocket(SubscribeMixin, tornado.websocket.WebSocketHandler):
    who: Principal
    since: int | None
    snapshot: int | None
    conn: WebSocketConnection | None = None
    goodbye: str | None = None  # why the server's side closed first, if it did
    frames: Bucket | None = None
    told_to_slow_down = False

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        if not isinstance(protocol, tornado.websocket.WebSocketProtocol13):
            return protocol
        return _Protocol(self, False, protocol.params)

    async def get(self, *args: Any, **kwargs: Any) -> None:
        # Refusals are plain HTTP with a JSON body, before the upgrade.
        try:
            self.check_input()
            self.check_cursors()
            self.since = self.resume_cursor()
            self.snapshot = self.snapshot_size()
            self.who = await self.admit()
        except TidingsError as e:
            self.set_status(e.status)
            for name, value in e.headers.items():
                self.set_header(name, value)
            self.set_header("Content-Type", "application/json; charset=utf-8")
            self.finish(dumps(e.to_dict()))
            return
        await super().get(*args, **kwargs)

    def check_origin(self, origin: str) -> bool:
        """Same host, or an allowed origin: refuses cross-site WebSocket hijacking."""
        allowed = self.services.settings.allowed_origins
        if "*" in allowed or origin.rstrip("/") in allowed:
            return True
        return urlsplit(origin).netloc.lower() == self.request.host.lower()

    async def open(self, *args: Any, **kwargs: Any) -> None:
        self.set_nodelay(True)
        self.conn = WebSocketConnection(
            self, self.who, max_pending=self.services.settings.max_pending_kib * 1024,
            remote_ip=self.client_ip(),
            user_agent=self.request.headers.get("User-Agent", ""))
        conn = self.conn
        async def greet(last_id: int) -> None:
            hello = await self.hello(conn, last_id, self.snapshot)
            self.write_message(dumps({"type": "connected", **hello}))

        try:
            await self.services.hub.attach(conn, self.who, self.since, greet)
        except Exception:
            self.goodbye = "failed"  # counted as the server's failure, not the client's close
            raise

    def on_message(self, raw: str | bytes) -> Awaitable[None] | None:
        """Handled at once, with no task per frame (acks come one a tenth of a second from
        every client); only a mark_read returns a coroutine, which Tornado awaits before it
        reads the next frame."""
        if self.frames is None:  # made at the first frame: idle connections carry none
            self.frames = Bucket(FRAMES_PER_SECOND)
        if not self.frames.take():  # one connection's flood is not parsed, nor answered twice
            if not self.told_to_slow_down:
                self.told_to_slow_down = True
                self._error("too_many_requests", f"at most {FRAMES_PER_SECOND} frames a "
                                                 "second; frames past that are ignored")
            return None
        self.told_to_slow_down = False
        ids = receipts.quick_ack_ids(raw) if isinstance(raw, str) else None
        if ids is not None:  # most frames: an ack as tidings.js writes it
            if self.conn is not None:
                self.services.receipts.acknowledged(self.who, ids, self.conn.id)
            return None
        try:
            frame = validation.loads(raw, "frame")
        except TidingsError as e:
            code = "invalid_json" if e.message.endswith("not valid JSON") else e.code
            return self._error(code, e.message)
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "ack":  # no answer: acknowledging is fire and forget
            try:
                ids = receipts.ack_ids(frame.get("ids"))
            except TidingsError as e:
                return self._error(e.code, e.message)
            if self.conn is not None:
                self.services.receipts.acknowledged(self.who, ids, self.conn.id)
        elif kind == "ping":
            self.write_message(_PONG)
        elif kind == "mark_read":
            notification_id = frame.get("id")
            if not isinstance(notification_id, int) or isinstance(notification_id, bool) \
                    or not 0 <= notification_id <= validation.MAX_ID:
                return self._error("invalid_request", "id: must be a notification id")
            return self._mark_read(notification_id)
        else:
            self._error("unknown_type", f"unknown frame type {kind!r}; expected ping, "
                                        "mark_read or ack")
        return None

    async def _mark_read(self, notification_id: int) -> None:
        try:
            await self.services.publisher.mark_read(self.who, notification_id)
        except TidingsError as e:
            self._error(e.code, e.message)

    def _error(self, code: str, message: str) -> None:
        self.write_message(dumps({"type": "error", "error": {"code": code, "message": message}}))

    def write_message(self, message: str | bytes | dict[str, Any],  # type: ignore[override]
                      binary: bool = False) -> asyncio.Future[None]:
        try:
            return super().write_message(message, binary)
        except tornado.websocket.WebSocketClosedError:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future

    def on_close(self) -> None:
        if self.conn is not None:
            self.conn.closed = True
            # Ours (too slow, shutdown), Tornado's (ping timed out), else the client's.
            reason = self.conn.close_reason or self.goodbye or "client went away"
            self.services.hub.detach(self.conn, reason)
