"""Server-Sent Events transport: `/api/notifications/stream`."""

from __future__ import annotations

import asyncio
from typing import Any

from tidings.connections import SSE, Connection, Message, dumps, unsent, write_now
from tidings.models import Principal

from .base import BaseHandler
from .subscribe import SubscribeMixin

RETRY_MS = 3000


class SSEConnection(Connection):
    __slots__ = ("handler", "ended", "stream", "chunked", "started")
    transport = SSE

    def __init__(self, handler: NotificationStream, who: Principal, max_pending: int,
                 **kwargs: Any) -> None:
        super().__init__(who.tenant_id, who.user_id, max_pending=max_pending, **kwargs)
        self.handler = handler
        self.ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.stream = handler.request.connection.stream  # type: ignore[attr-defined]
        self.stream.set_nodelay(True)  # small events must not wait for the client's delayed ACK
        self.stream.max_write_buffer_size = max_pending
        # Tornado chunks an HTTP/1.1 response that has no Content-Length (this one).
        self.chunked = handler.request.version == "HTTP/1.1"
        self.started = False  # the head and `connected` went out through the handler

    def encoded(self, message: Message) -> bytes:
        return message.sse

    def _write(self, message: Message) -> asyncio.Future[Any] | None:
        if not self.started:  # the response head is not out yet: the handler sends it first
            self.handler.write(message.sse)
            return self.handler.flush()
        # The event framed once for every stream goes straight to this one: the handler
        # would frame it again per connection.
        return write_now(self.stream, message.sse_chunk if self.chunked else message.sse)

    def unsent(self) -> int:
        return unsent(self.stream)

    def _close(self, reason: str) -> None:
        if reason == "too slow":  # its buffer may never drain: no goodbye, the socket goes
            self.handler.request.connection.stream.close()  # type: ignore[attr-defined]
        if not self.ended.done():
            self.ended.set_result(reason)


class NotificationStream(SubscribeMixin, BaseHandler):
    conn: SSEConnection | None = None

    async def get(self) -> None:
        self.check_cursors()
        since, snapshot = self.resume_cursor(), self.snapshot_size()
        who = await self.admit()
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")  # no proxy buffering (nginx)
        self.conn = conn = SSEConnection(
            self, who, max_pending=self.services.settings.max_pending_kib * 1024,
            remote_ip=self.client_ip(),
            user_agent=self.request.headers.get("User-Agent", ""))
        # Never read again: the query (the token) is let go; the redacted URI is logged.
        self.request.arguments, self.request.query_arguments = {}, {}

        async def greet(last_id: int) -> None:
            hello = await self.hello(conn, last_id, snapshot)
            self.write(f"retry: {RETRY_MS}\n\nevent: connected\n"
                       f"data: {dumps(hello)}\n\n")
            self.flush()
            conn.started = True

        try:
            await self.services.hub.attach(conn, who, since, greet)
            await conn.ended
        finally:
            self.services.hub.detach(conn, conn.ended.result() if conn.ended.done() else
                                     "failed")

    def on_connection_close(self) -> None:
        if self.conn is not None:
            self.conn.close("client went away")
