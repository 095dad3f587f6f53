"""The real tidings server for the browser tests, on its own event loop in a thread.

Playwright's synchronous API blocks the test thread, so the server cannot share that
thread's loop (as tests/conftest.py's `server` fixture does); here it runs beside it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import tornado.web
from tornado.httpclient import AsyncHTTPClient
from tornado.netutil import bind_sockets

from server import Server
from tidings import validation
from tidings.config import Settings
from tidings.services import Services

from ..clients import Api


class RefuseWebSocket(tornado.web.RequestHandler):
    """Stands in for a proxy that blocks WebSockets: a plain 403 instead of the upgrade."""

    def get(self) -> None:
        self.set_status(403)
        self.finish()


class LiveServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = 0
        self.server: Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tidings", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        return asyncio.run_coroutine_threadsafe(fn(), self._loop).result(timeout=15)

    def start(self) -> None:
        """Start (again) on the same port and database; the first start takes a port from the OS."""

        async def start() -> None:
            sockets = bind_sockets(self.port, "127.0.0.1")
            self.server = await Server.start(self.settings, sockets=sockets)
            self.port = self.server.port

        self.call(start)

    def stop(self) -> None:
        async def stop() -> None:
            assert self.server is not None
            await self.server.stop()
            self.server = None

        self.call(stop)

    def shutdown(self) -> None:
        if self.server is not None:
            self.stop()

        async def close_client() -> None:
            AsyncHTTPClient().close()  # the loop's shared client, used by send()

        self.call(close_client)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def block_websockets(self) -> None:
        assert self.server is not None
        app = self.server.http.request_callback
        app = getattr(app, "app", app)  # inside the body-limit delegate
        assert isinstance(app, tornado.web.Application)
        # A host rule is tried before the default one; other paths fall through to it.
        app.add_handlers(r"127\.0\.0\.1", [(r"/ws/notifications", RefuseWebSocket)])

    def send(self, tok: str, **body: Any) -> dict[str, Any]:
        """POST /api/notifications as a service would; returns the created notification."""

        async def send() -> dict[str, Any]:
            result: dict[str, Any] = (await Api(self.port).send(tok, **body))["notification"]
            return result

        result: dict[str, Any] = self.call(send)
        return result

    def recall(self, tok: str, notification_id: int) -> None:
        """DELETE /api/notifications/{id} as a service would: gone for every recipient."""

        async def recall() -> None:
            response = await Api(self.port).call("DELETE", f"/api/notifications/{notification_id}",
                                                 tok=tok)
            assert response.code == 204, (response.code, response.body)

        self.call(recall)

    def create_offline(self, tenant_id: str, **body: Any) -> dict[str, Any]:
        """Create a notification while the server is down, straight into its database."""

        async def create() -> dict[str, Any]:
            services = await Services.open(self.settings)
            try:
                items, _ = validation.notifications(body, tenant_id)
                published = await services.publisher.create(items)
                return dict(published.notifications[0])
            finally:
                await services.close()

        assert self.server is None, "stop() first"
        result: dict[str, Any] = self.call(create)
        return result
