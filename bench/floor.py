"""The floor: a bare Tornado server doing the same per-request work as tidings, without a store.

Each benchmark runs it next to tidings in the same run, so that the ratio tidings/floor says
what tidings' own layers cost on this machine. It answers the same routes:

- `POST /api/notifications`: parse the JSON, check the Bearer JWT with PyJWT, answer 201 with
  the notification(s) as JSON; a `broadcast` writes the same encoded JSON to every WebSocket
  and SSE connection first, a `user_id` one to that user's WebSockets, and reports the counts
  like tidings.
- `GET /ws/notifications?token=…`: the token checked before the upgrade, `connected` first.
- `GET /api/notifications/stream?token=…`: the same over SSE.
- `GET /healthz`.

Run: `python bench/floor.py --port 8899 --jwt-secret s3cret`
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import signal
from typing import Any

import jwt
import tornado.web
import tornado.websocket
from tornado.iostream import StreamClosedError


class Hub:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.ids = itertools.count(1)
        self.ws: set[WsHandler] = set()
        self.sse: set[SseHandler] = set()
        self.ws_of: dict[str, set[WsHandler]] = {}  # by user: where a `user_id` create goes

    def claims(self, token: str, tenant: str | None) -> dict[str, Any] | None:
        try:
            claims = jwt.decode(
                token, self.secret, algorithms=["HS256"],
                options={"require": ["exp", "sub", "tenant_id"]},
            )
        except jwt.InvalidTokenError:
            return None
        if tenant is not None and tenant != claims["tenant_id"]:
            return None
        return claims

    def notification(self, tenant: str, user_id: str | None,
                     body: dict[str, Any]) -> dict[str, Any]:
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        return {
            "id": next(self.ids), "tenant_id": tenant, "user_id": user_id,
            "type": body.get("type", "info"), "title": body["title"],
            "message": body.get("message", ""), "data": body.get("data", {}),
            "priority": body.get("priority", "normal"),
            "created_at": now.replace("+00:00", "Z"), "read_at": None,
        }

    def unicast(self, n: dict[str, Any]) -> dict[str, int]:
        frame = '{"type": "notification", "notification": ' + json.dumps(n) + "}"
        ws = 0
        for h in list(self.ws_of.get(n["user_id"], ())):
            try:
                h.write_message(frame)
                ws += 1
            except tornado.websocket.WebSocketClosedError:
                pass
        return {"websocket": ws, "sse": 0}

    def broadcast(self, n: dict[str, Any]) -> dict[str, int]:
        encoded = json.dumps(n)
        frame = '{"type": "notification", "notification": ' + encoded + "}"
        event = f"event: notification\nid: {n['id']}\ndata: {encoded}\n\n".encode()
        ws = sse = 0
        for h in list(self.ws):
            try:
                h.write_message(frame)
                ws += 1
            except tornado.websocket.WebSocketClosedError:
                self.ws.discard(h)
        for s in list(self.sse):
            s.write(event)
            s.flush()
            sse += 1
        return {"websocket": ws, "sse": sse}


class Base(tornado.web.RequestHandler):
    def initialize(self, hub: Hub) -> None:
        self.hub = hub

    def deny(self) -> None:
        self.set_status(401)
        self.finish({"error": {"code": "invalid_token", "message": "invalid token"}})

    def query_claims(self) -> dict[str, Any] | None:
        return self.hub.claims(self.get_query_argument("token", ""),
                               self.get_query_argument("tenant_id", None))


class Health(Base):
    def get(self) -> None:
        self.finish({"status": "ok"})


class Create(Base):
    def post(self) -> None:
        auth = self.request.headers.get("Authorization", "")
        claims = self.hub.claims(auth[7:], self.request.headers.get("X-Tenant-ID"))
        if claims is None or not auth.startswith("Bearer "):
            return self.deny()
        body = json.loads(self.request.body)
        tenant = claims["tenant_id"]
        self.set_status(201)
        if "user_ids" in body:
            ns = [self.hub.notification(tenant, u, body) for u in body["user_ids"]]
            self.finish({"notifications": ns, "delivery": {"websocket": 0, "sse": 0}})
            return
        n = self.hub.notification(tenant, body.get("user_id"), body)
        delivery = self.hub.broadcast(n) if body.get("broadcast") else self.hub.unicast(n)
        self.finish({"notification": n, "delivery": delivery})


class WsHandler(tornado.websocket.WebSocketHandler):
    def initialize(self, hub: Hub) -> None:
        self.hub = hub

    async def get(self, *args: Any, **kwargs: Any) -> None:
        self.claims = self.hub.claims(self.get_query_argument("token", ""),
                                      self.get_query_argument("tenant_id", None))
        if self.claims is None:
            self.set_status(401)
            self.finish({"error": {"code": "invalid_token", "message": "invalid token"}})
            return
        await super().get(*args, **kwargs)

    def open(self, *args: str, **kwargs: str) -> None:
        self.set_nodelay(True)  # small frames go out at once, not after a delayed ACK
        self.hub.ws.add(self)
        self.hub.ws_of.setdefault(self.claims["sub"], set()).add(self)
        self.write_message({"type": "connected", "connection_id": str(id(self)),
                            "user_id": self.claims["sub"], "tenant_id": self.claims["tenant_id"]})

    def on_message(self, message: str | bytes) -> None:
        pass

    def on_close(self) -> None:
        self.hub.ws.discard(self)
        mine = self.hub.ws_of.get(self.claims["sub"], set())
        mine.discard(self)
        if not mine:
            self.hub.ws_of.pop(self.claims["sub"], None)


class SseHandler(Base):
    async def get(self) -> None:
        claims = self.query_claims()
        if claims is None:
            return self.deny()
        self.closed = asyncio.get_running_loop().create_future()
        self.request.connection.stream.set_nodelay(True)  # as for the WebSocket
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        hello = json.dumps({"connection_id": str(id(self)), "user_id": claims["sub"],
                            "tenant_id": claims["tenant_id"]})
        self.write(f"retry: 3000\nevent: connected\ndata: {hello}\n\n")
        self.hub.sse.add(self)
        try:
            await self.flush()
            await self.closed
        except StreamClosedError:
            pass
        finally:
            self.hub.sse.discard(self)

    def on_connection_close(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def make_app(secret: str) -> tornado.web.Application:
    hub = Hub(secret)
    args = {"hub": hub}
    return tornado.web.Application([
        (r"/healthz", Health, args),
        (r"/api/notifications", Create, args),
        (r"/api/notifications/stream", SseHandler, args),
        (r"/ws/notifications", WsHandler, args),
    ])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jwt-secret", required=True)
    args = parser.parse_args()
    server = make_app(args.jwt_secret).listen(args.port, args.host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()


if __name__ == "__main__":
    asyncio.run(main())
