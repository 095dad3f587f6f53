"""A loopback Tornado server that speaks the client contract (API.md) for the browser tests.

It serves `static/`, renders the real templates with sample data, and implements just
enough of the WebSocket, SSE and REST contract to drive `static/tidings.js`: it can refuse
the WebSocket path (a proxy that blocks WebSockets), stop and start again on the same port
(a server restart), and records the resume cursors and read marks clients send.
It runs on its own event loop in a thread, so tests drive it with plain calls.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
from tornado.httpserver import HTTPServer
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler, StaticFileHandler
from tornado.websocket import WebSocketClosedError, WebSocketHandler

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token"

CLIENT_PAGE = """<!doctype html><meta charset="utf-8"><title>tidings.js test page</title>
<script src="/static/tidings.js"></script>
<script>
  const q = new URLSearchParams(location.search);
  window.log = [];       // every event, in order: {event, detail}
  window.received = [];  // notification ids as delivered to the page
  window.deleted = [];   // {id, reason} as delivered to the page
  const token = q.get("token") || "test-token";
  window.tokensAsked = 0;
  const auth = q.get("auth") === "callback" ? {getToken: async () => { tokensAsked++; return token; }} : {token};
  window.client = new Tidings(Object.assign({url: "", tenantId: "acme", transport: q.get("transport") || "auto",
                                             minDelay: 100, maxDelay: 1000}, auth));
  for (const name of ["connected", "disconnected", "reset", "notification", "updated", "deleted", "stats", "error"]) {
    client.on(name, (detail) => {
      log.push({event: name, detail});
      if (name === "notification") received.push(detail.id);
      if (name === "deleted") deleted.push(detail);
    });
  }
</script>"""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StubServer:
    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self.removals: list[dict[str, Any]] = []  # notification_deleted entries: {id, reason, event_id}
        self.cursors: list[tuple[str, str | None]] = []  # (transport, cursor) per accepted stream
        self.refused_websockets = 0
        self.read_ids: list[int] = []
        # (how: "websocket" or "rest", ids, connection_id): an ack frame or POST .../ack
        self.acks: list[tuple[str, list[int], str | None]] = []
        self.ack_times: list[float] = []  # time.monotonic() at each acknowledgement received
        self._acked = threading.Condition()  # notified at each one (recorded on the stub's thread)
        self.tickets: set[str] = set()  # made and not yet spent
        self.stream_uris: list[str] = []  # every WebSocket and SSE request's URI, as sent
        self._ticket_numbers = itertools.count(1)
        self.refuse_websocket = False
        self.ignore_cursor = False  # replay everything, as a sloppy server would: the client must dedupe
        self.websocket_close_code: int | None = None  # accept, then close with this code
        # The next stream opened says this first (after `connected`), as the server does when
        # retention outran the cursor or it does not know it; cursor_unknown replays nothing.
        self.reset_next: dict[str, Any] | None = None
        self.next_id = 1  # a "wiped" server starts again from 1
        self.inbox_requests = 0
        self.overview: dict[str, Any] = {"tenants": [], "global": {"websocket": 0, "sse": 0, "total": 0},
                                         "history": []}
        self.page_context: dict[str, dict[str, Any]] = {}  # template name -> extra context
        self.peers: set[Any] = set()
        self.admin_peers: set[WebSocketHandler] = set()
        self.port = 0
        self._server: HTTPServer | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="stub-server", daemon=True)
        self._thread.start()
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(ROOT / "templates"), autoescape=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- control from the test thread ----

    def call(self, fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(timeout=10)

    def start(self) -> None:
        """Listen (again) on the same port; the first start takes one from the OS."""

        async def listen() -> None:
            sockets = bind_sockets(self.port, "127.0.0.1")
            self.port = sockets[0].getsockname()[1]
            self._server = HTTPServer(self._app())
            self._server.add_sockets(sockets)

        self.call(listen)

    def stop(self) -> None:
        """Go down like a restarting server: stop listening and drop every connection."""

        async def down() -> None:
            assert self._server is not None
            self._server.stop()
            for peer in list(self.peers) + list(self.admin_peers):
                peer.close(1001)
            await self._server.close_all_connections()
            self._server = None

        self.call(down)

    def shutdown(self) -> None:
        if self._server is not None:
            self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def record_ack(self, transport: str, ids: list[int], connection_id: str | None) -> None:
        with self._acked:
            self.acks.append((transport, ids, connection_id))
            self.ack_times.append(time.monotonic())
            self._acked.notify_all()

    def wait_for_acks(self, count: int, timeout: float = 5) -> bool:
        """Whether `count` acknowledgements (frames or requests) arrived within `timeout`."""
        with self._acked:
            return self._acked.wait_for(lambda: len(self.acks) >= count, timeout)

    def drop_streams(self) -> None:
        """Close every live stream, as a network failure would, and stay up."""

        async def drop() -> None:
            for peer in list(self.peers):
                peer.close(1001)

        self.call(drop)

    def publish_many(self, count: int) -> list[int]:
        """`count` notifications to alice at once (one call): their ids."""

        async def add() -> list[int]:
            return [self._add(f"n{i}", "alice", {})["id"] for i in range(count)]

        result: list[int] = self.call(add)
        return result

    def publish(self, title: str, user_id: str | None = "alice", **fields: Any) -> dict[str, Any]:
        """Store a notification and push it to the live peers (if the server is up)."""

        async def add() -> dict[str, Any]:
            return self._add(title, user_id, fields)

        result: dict[str, Any] = self.call(add)
        return result

    def _add(self, title: str, user_id: str | None, fields: dict[str, Any]) -> dict[str, Any]:
        n = {"id": self.next_id, "tenant_id": "acme", "user_id": user_id,
             "type": "info", "title": title, "message": "", "data": {}, "priority": "normal",
             "created_at": now_iso(), "read_at": None, **fields}
        self.notifications.append(n)
        self.next_id += 1
        for peer in list(self.peers):
            peer.send("notification", n)
        return n

    def remove(self, notification_id: int, reason: str = "recalled") -> dict[str, Any]:
        """Recall (or expire) a notification: an entry of the stream with the next id, pushed
        to the live peers (if the server is up) and replayed after a cursor below it."""

        async def remove() -> dict[str, Any]:
            removal = {"id": notification_id, "reason": reason, "event_id": self.next_id}
            self.next_id += 1
            self.notifications = [n for n in self.notifications if n["id"] != notification_id]
            self.removals.append(removal)
            for peer in list(self.peers):
                peer.send("notification_deleted", removal)
            return removal

        result: dict[str, Any] = self.call(remove)
        return result

    def push_overview(self, overview: dict[str, Any]) -> None:
        async def push() -> None:
            self.overview = overview
            for peer in list(self.admin_peers):
                peer.write_message({"type": "overview", **overview})

        self.call(push)

    # ---- used by the handlers, on the loop thread ----

    def take_reset(self) -> dict[str, Any] | None:
        reset, self.reset_next = self.reset_next, None
        return reset

    def after(self, cursor: str | None, reset: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(kind, payload) in stream order after the cursor: notifications and removals."""
        if cursor is None or (reset is not None and reset["reason"] == "cursor_unknown"):
            return []
        floor = 0 if self.ignore_cursor else int(cursor)
        entries = [(n["id"], "notification", n) for n in self.notifications if n["id"] > floor]
        entries += [(r["event_id"], "notification_deleted", r) for r in self.removals
                    if r["event_id"] > floor and (self.ignore_cursor or r["id"] <= floor)]
        return [(kind, payload) for _, kind, payload in sorted(entries, key=lambda e: e[0])]

    def hello(self, connection_id: str, snapshot: str | None) -> dict[str, Any]:
        """The `connected` payload: counts always, the newest notifications when asked."""
        hello: dict[str, Any] = {"connection_id": connection_id, "user_id": "alice", "tenant_id": "acme",
                                 "last_id": max([n["id"] for n in self.notifications] +
                                                [r["event_id"] for r in self.removals], default=0),
                                 **self.stats()}
        if snapshot:
            hello["recent"] = self.notifications[::-1][:int(snapshot)]
        return hello

    def stats(self) -> dict[str, int]:
        unread = sum(1 for n in self.notifications if n["read_at"] is None)
        return {"total": len(self.notifications), "unread": unread}

    def mark_read(self, ids: list[int]) -> None:
        for n in self.notifications:
            if n["id"] in ids and n["read_at"] is None:
                n["read_at"] = now_iso()
        self.read_ids.extend(ids)
        for peer in list(self.peers):
            peer.send("stats_update", self.stats())

    def render(self, name: str, **context: Any) -> str:
        base = {"static_url": lambda path: f"/static/{path}", "current_user": "admin",
                "xsrf_form_html": lambda: markupsafe.Markup('<input type="hidden" name="_xsrf" value="x">')}
        return self.templates.get_template(name).render({**base, **self.page_context.get(name, {}), **context})

    def _app(self) -> Application:
        s = {"stub": self}
        return Application([
            (r"/client", PageHandler, {"stub": self, "html": CLIENT_PAGE}),
            (r"/ws/notifications", ClientSocket, s),
            (r"/api/notifications/stream", ClientStream, s),
            (r"/api/notifications", InboxHandler, s),
            (r"/api/tickets", TicketsHandler, s),
            (r"/api/notifications/ack", AckHandler, s),
            (r"/api/notifications/stats", StatsHandler, s),
            (r"/api/notifications/read-all", ReadHandler, s),
            (r"/api/notifications/(\d+)/read", ReadHandler, s),
            (r"/admin/ws", AdminSocket, s),
            (r"/(demo|admin|admin/login|admin/tenants/.+)", TemplateHandler, s),
            (r"/static/(.*)", StaticFileHandler, {"path": str(ROOT / "static")}),
        ])


class StubHandler(RequestHandler):
    def initialize(self, stub: StubServer, html: str = "") -> None:
        self.stub = stub
        self.html = html

    def authorized(self) -> bool:
        """REST takes the token in the Authorization header only, as the server does."""
        if self.request.headers.get("Authorization") == f"Bearer {TOKEN}":
            return True
        self.set_status(401)
        self.finish({"error": {"code": "invalid_token", "message": "bad token"}})
        return False

    def spend_ticket(self) -> bool:
        """Streams take a ticket only (once), so a client that puts its token in a stream URL
        is refused."""
        self.stub.stream_uris.append(self.request.uri or "")
        ticket = self.get_query_argument("ticket", None)
        if ticket in self.stub.tickets:
            self.stub.tickets.discard(ticket)
            return True
        self.set_status(401)
        self.finish({"error": {"code": "invalid_ticket", "message": "bad ticket"}})
        return False


class PageHandler(StubHandler):
    def get(self) -> None:
        self.finish(self.html)


class TemplateHandler(StubHandler):
    def get(self, path: str) -> None:
        if path == "demo":
            self.finish(self.stub.render("demo.html"))
        elif path == "admin":
            self.finish(self.stub.render("admin_overview.html", overview=self.stub.overview))
        elif path == "admin/login":
            self.finish(self.stub.render("login.html", current_user=None))
        else:
            self.finish(self.stub.render("admin_tenant.html", tenant_id=path.split("/")[-1]))


class TicketsHandler(StubHandler):
    def post(self) -> None:
        if self.authorized():
            ticket = f"ticket-{next(self.stub._ticket_numbers)}"
            self.stub.tickets.add(ticket)
            self.set_status(201)
            self.finish({"ticket": ticket, "expires_in": 30})


class AckHandler(StubHandler):
    def post(self) -> None:
        if self.authorized():
            body = json.loads(self.request.body)
            self.stub.record_ack("rest", body["ids"], body.get("connection_id"))
            self.set_status(204)
            self.finish()


class InboxHandler(StubHandler):
    def get(self) -> None:
        if self.authorized():
            self.stub.inbox_requests += 1
            self.finish({"notifications": self.stub.notifications[::-1], "next_before": None})


class StatsHandler(StubHandler):
    def get(self) -> None:
        if self.authorized():
            self.finish({**self.stub.stats(), "by_type": {}})


class ReadHandler(StubHandler):
    def post(self, notification_id: str | None = None) -> None:
        if self.authorized():
            ids = [int(notification_id)] if notification_id else [n["id"] for n in self.stub.notifications]
            self.stub.mark_read(ids)
            self.set_status(204)
            self.finish()


class ClientSocket(StubHandler, WebSocketHandler):
    async def get(self, *args: Any, **kwargs: Any) -> None:
        if self.stub.refuse_websocket:  # answered as plain HTTP, before the upgrade
            self.stub.refused_websockets += 1
            self.set_status(403)
            self.finish()
            return
        if self.spend_ticket():
            await super().get(*args, **kwargs)

    def open(self) -> None:
        if self.stub.websocket_close_code:
            self.close(self.stub.websocket_close_code, "refused")
            return
        cursor = self.get_query_argument("since", None)
        self.stub.cursors.append(("websocket", cursor))
        self.write_message({"type": "connected", **self.stub.hello("c1", self.get_query_argument("snapshot", None))})
        reset = self.stub.take_reset()
        if reset is not None:
            self.write_message({"type": "reset", **reset})
        for kind, payload in self.stub.after(cursor, reset):
            self.send(kind, payload)
        self.stub.peers.add(self)

    def send(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "notification_deleted":
            frame = {"type": kind, **payload}
        elif kind == "notification":
            frame = {"type": kind, "notification": payload}
        else:
            frame = {"type": kind, "stats": payload}
        try:
            self.write_message(frame)
        except WebSocketClosedError:  # closing; on_close drops it
            self.stub.peers.discard(self)

    def on_message(self, message: str | bytes) -> None:
        frame = json.loads(message)
        if frame["type"] == "ping":
            self.write_message({"type": "pong"})
        elif frame["type"] == "mark_read":
            self.stub.mark_read([frame["id"]])
        elif frame["type"] == "ack":
            self.stub.record_ack("websocket", frame["ids"], "c1")

    def on_close(self) -> None:
        self.stub.peers.discard(self)


class ClientStream(StubHandler):
    async def get(self) -> None:
        if not self.spend_ticket():
            return
        cursor = self.get_query_argument("last_event_id", None) or self.request.headers.get("Last-Event-ID")
        self.stub.cursors.append(("sse", cursor))
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        hello = self.stub.hello("s1", self.get_query_argument("snapshot", None))
        self.write(f"retry: 3000\nevent: connected\ndata: {json.dumps(hello)}\n\n")
        reset = self.stub.take_reset()
        if reset is not None:
            self.write(f"event: reset\ndata: {json.dumps(reset)}\n\n")
        for kind, payload in self.stub.after(cursor, reset):
            self.send(kind, payload)
        self.stub.peers.add(self)
        try:
            await self.flush()
            while (chunk := await self.queue.get()) is not None:
                self.write(chunk)
                await self.flush()
        except StreamClosedError:
            pass
        finally:
            self.stub.peers.discard(self)
        self.finish()

    def send(self, kind: str, payload: dict[str, Any]) -> None:
        event_id = {"notification": f"id: {payload.get('id')}\n",
                    "notification_deleted": f"id: {payload.get('event_id')}\n"}.get(kind, "")
        self.queue.put_nowait(f"event: {kind}\n{event_id}data: {json.dumps(payload)}\n\n")

    def close(self, code: int = 1001) -> None:
        self.queue.put_nowait(None)

    def on_connection_close(self) -> None:
        if hasattr(self, "queue"):
            self.queue.put_nowait(None)


class AdminSocket(WebSocketHandler):
    def initialize(self, stub: StubServer) -> None:
        self.stub = stub

    def open(self) -> None:
        self.stub.admin_peers.add(self)
        self.write_message({"type": "overview", **self.stub.overview})

    def on_close(self) -> None:
        self.stub.admin_peers.discard(self)
