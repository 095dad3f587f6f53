"""An asyncio loop in a daemon thread, for peers that must not share the test's loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import tornado.httpserver
import tornado.netutil
import tornado.web

T = TypeVar("T")

log = logging.getLogger("tests.peers")


def _log_request(handler: tornado.web.RequestHandler) -> None:
    log.debug("%d %s %s", handler.get_status(), handler.request.method, handler.request.uri)


class LoopThread:
    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()
        self._http_servers: list[tornado.httpserver.HTTPServer] = []

    def serve(self, app: tornado.web.Application) -> int:
        """Serves ``app`` on 127.0.0.1 at a port from the OS; returns the port."""
        # A peer told to answer 5xx is doing its job: keep that out of the ERROR log.
        app.settings["log_function"] = _log_request

        async def start() -> tuple[tornado.httpserver.HTTPServer, int]:
            sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
            server = tornado.httpserver.HTTPServer(app)
            server.add_sockets(sockets)
            return server, sockets[0].getsockname()[1]

        server, port = self.run(start())
        self._http_servers.append(server)
        return port

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
        """Runs ``coro`` on the thread's loop and returns its result here."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        if self.loop.is_closed():
            return

        async def stop() -> None:
            for server in self._http_servers:
                server.stop()
                await server.close_all_connections()
            # Sessions a client left open (an SMTP QUIT cut short by a stopping server) end
            # here, not as "Task was destroyed but it is pending" when the loop closes.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class Inbox:
    """What a peer received, safe across threads; a test can wait for the n-th item."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = threading.Condition()

    def add(self, item: Any) -> None:
        with self._changed:
            self.items.append(item)
            self._changed.notify_all()

    def wait(self, count: int = 1, timeout: float = 10) -> list[Any]:
        """Blocks until ``count`` items are in; for a test's loop use :meth:`arrived`."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.items) >= count, timeout):
                raise TimeoutError(f"{len(self.items)} of {count} arrived in {timeout} s")
            return list(self.items)

    async def arrived(self, count: int = 1, timeout: float = 10) -> list[Any]:
        return await asyncio.get_running_loop().run_in_executor(None, self.wait, count, timeout)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]

    def clear(self) -> None:
        with self._changed:
            self.items.clear()


def run(coro: Coroutine[Any, Any, T], timeout: float = 10) -> T:
    """Runs a test's coroutine on a fresh loop, failing it after ``timeout`` seconds."""
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())
