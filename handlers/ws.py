"""WebSocket transport: `/ws/notifications`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any
from urllib.parse import urlsplit

import tornado.httputil
import tornado.websocket
from tornado.iostream import StreamBufferFullError, StreamClosedError

from tidings import receipts, validation
from tidings.connections import WEBSOCKET, Connection, Message, dumps, unsent, write_now
from tidings.errors import TidingsError
from tidings.limits import Bucket
from tidings.models import Principal

from .subscribe import SubscribeMixin
from .ws_protocol import NotificationProtocol

# Close codes: 1001 going away (shutdown), 1013 try again later (too slow: resume with since).
_CLOSE_CODES = {"shutdown": 1001, "too slow": 1013}
_PONG = json.dumps({"type": "pong"})
_PING = b"\x89\x00"  # a final ping frame, empty: server frames are not masked
_NO_HEADERS = tornado.httputil.HTTPHeaders()  # what a socket's request keeps after the upgrade
FRAMES_PER_SECOND = 20  # from a client: tidings.js sends at most ten acks and a ping


class WebSocketConnection(Connection):
    __slots__ = ("handler", "protocol", "awaiting_pong")
    transport = WEBSOCKET

    def __init__(self, handler: NotificationSocket, who: Principal, max_pending: int,
                 **kwargs: Any) -> None:
        super().__init__(who.tenant_id, who.user_id, max_pending=max_pending, **kwargs)
        self.handler = handler
        # Its own reference: the handler lets go of the protocol when it says goodbye, before
        # the peer has answered (and shutdown may still have to drop the socket).
        assert isinstance(handler.ws_connection, NotificationProtocol)
        self.protocol = handler.ws_connection
        self.awaiting_pong = False  # a ping went out and its pong has not come back yet
        self.protocol.stream.max_write_buffer_size = max_pending

    def heartbeat(self) -> None:
        """The hub's heartbeat walk, once per interval: a ping, unless the last one went
        unanswered, which closes the connection as Tornado's own pinging would ("ping timed
        out", counted as a dead peer)."""
        ws = self.protocol
        if ws.is_closing() or self._held is not None:
            return  # closing; or still in open() (greeting, replay), when no frame is read
        if self.awaiting_pong:
            ws.close(None, "ping timed out")
            return
        self.awaiting_pong = True
        try:
            write_now(ws.stream, _PING)  # the same two bytes for every socket
        except StreamBufferFullError:
            self.too_slow("output buffer")
        except (StreamClosedError, tornado.websocket.WebSocketClosedError):
            pass  # on_close follows

    def encoded(self, message: Message) -> bytes:
        return message.ws

    def _write(self, message: Message) -> asyncio.Future[Any] | None:
        # The frame built once for every socket goes straight to this one: Tornado's
        # write_message would build it again and start a task per socket.
        if self.protocol.is_closing():
            raise StreamClosedError()
        return write_now(self.protocol.stream, message.ws_frame)

    def unsent(self) -> int:
        return unsent(self.protocol.stream)

    def drop(self) -> None:
        self.protocol._abort()  # the socket closes; on_close detaches it, with its reason

    def _close(self, reason: str) -> None:
        if not self.protocol.is_closing():
            # The close frame must fit even when the buffer is full; Tornado then aborts the
            # socket if the peer does not answer it within 5 s.
            self.protocol.stream.max_write_buffer_size = None
        self.handler.close(_CLOSE_CODES.get(reason, 1011), reason)


def _retrieve(written: asyncio.Future[None]) -> None:
    if not written.cancelled():
        written.exception()


class NotificationSocket(SubscribeMixin, tornado.websocket.WebSocketHandler):
    who: Principal
    since: int | None
    snapshot: int | None
    conn: WebSocketConnection | None = None
    goodbye: str | None = None  # why the server's side closed first, if it did
    frames: Bucket | None = None
    told_to_slow_down = False

    @property
    def ping_interval(self) -> float | None:
        """No ping timer per socket: the hub's heartbeat walk pings every notification socket
        (WebSocketConnection.heartbeat)."""
        return 0

    def on_pong(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.awaiting_pong = False

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        if not isinstance(protocol, tornado.websocket.WebSocketProtocol13):
            return protocol
        return NotificationProtocol(self, False, protocol.params)

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
        self._forget_request()
        async def greet(last_id: int) -> None:
            hello = await self.hello(conn, last_id, self.snapshot)
            self.write_message(dumps({"type": "connected", **hello}))

        try:
            await self.services.hub.attach(conn, self.who, self.since, greet)
        except Exception:
            self.goodbye = "failed"  # counted as the server's failure, not the client's close
            raise

    def _forget_request(self) -> None:
        """Once upgraded, a socket never reads its request again but for the method, path
        and client of a log line: the request's headers, its query (the token), the 101's
        headers and the HTTP connection objects it came through are let go, a good part of
        what an idle socket would otherwise keep (and no token stays in memory)."""
        request = self.request
        request.headers = _NO_HEADERS  # read-only, shared
        request.uri, request.query = request.path, ""
        request.arguments, request.query_arguments = {}, {}
        request.connection = None
        request.server_connection = None
        self._headers = _NO_HEADERS
        self.ui = None  # type: ignore[assignment]  # as Tornado's close does: nothing renders here

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
        acked = receipts.quick_ack_ids(raw) if isinstance(raw, str) else None
        if acked is not None:  # most frames: an ack as tidings.js writes it
            if self.conn is not None:
                self.services.receipts.acknowledged_by(self.conn, acked)
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
                self.services.receipts.acknowledged_by(self.conn, ",".join(map(str, ids)))
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
        """Tornado's, for the server's own frames (connected, pong, error), with the peer's
        doings not taken for errors: a socket already gone is left to on_close; a full output
        buffer (a client that sends but never reads) closes it as too slow; and a write that
        fails later has its exception retrieved here, so asyncio does not log it."""
        try:
            written = super().write_message(message, binary)
        except tornado.websocket.WebSocketClosedError:
            written = None
        except StreamBufferFullError:
            if self.conn is not None:
                self.conn.too_slow("output buffer")
            written = None
        if written is None:
            written = asyncio.get_running_loop().create_future()
            written.set_result(None)
        else:
            written.add_done_callback(_retrieve)
        return written

    def on_close(self) -> None:
        if self.conn is not None:
            self.conn.closed = True
            # Ours (too slow, shutdown), Tornado's (ping timed out), else the client's.
            reason = self.conn.close_reason or self.goodbye or "client went away"
            self.services.hub.detach(self.conn, reason)
