"""Real clients for the tests: HTTP (Tornado's AsyncHTTPClient), WebSocket (Tornado's
websocket_connect) and SSE (a raw HTTP/1.1 stream parsed line by line, as a browser does)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import ssl
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient
from tornado.websocket import WebSocketClientConnection, websocket_connect

SECRET = "test-secret-that-is-long-enough-for-hs256!"
WAIT = 5.0  # the longest any test waits for an event that should come


def token(tenant: str = "acme", user: str = "alice", role: str = "user",
          secret: str = SECRET, **claims: Any) -> str:
    payload = {"sub": user, "tenant_id": tenant, "role": role, "exp": int(time.time()) + 600,
               **claims}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, secret,
                      algorithm="HS256")


class Api:
    """HTTP calls against one server, as JSON."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.http = AsyncHTTPClient()

    async def call(self, method: str, path: str, body: Any = None, tok: str | None = None,
                   headers: dict[str, str] | None = None, raw: bytes | None = None,
                   ) -> HTTPResponse:
        h = dict(headers or {})
        if tok:
            h["Authorization"] = f"Bearer {tok}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else (b"" if method in ("POST", "PUT") else None))
        return await self.http.fetch(self.base + path, method=method, headers=h, body=data,
                                     raise_error=False, request_timeout=WAIT,
                                     allow_nonstandard_methods=True)

    async def json(self, method: str, path: str, body: Any = None, tok: str | None = None,
                   expect: int = 200, **kw: Any) -> Any:
        response = await self.call(method, path, body, tok, **kw)
        assert response.code == expect, (response.code, response.body)
        return json.loads(response.body) if response.body else None

    async def send(self, tok: str, expect: int = 201, **body: Any) -> Any:
        return await self.json("POST", "/api/notifications", body, tok, expect=expect)


class WSClient:
    def __init__(self, conn: WebSocketClientConnection) -> None:
        self.conn = conn
        self.hello: dict[str, Any] = {}

    @classmethod
    async def open(cls, port: int, tok: str | None, tls: ssl.SSLContext | None = None,
                   **query: Any) -> WSClient:
        """`tls`: wss:// with that context (through the nginx of tests/test_proxy.py)."""
        params = {"token": tok, **query} if tok else dict(query)
        url = f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/ws/notifications?" + urlencode(
            {k: v for k, v in params.items() if v is not None})
        request = HTTPRequest(url, connect_timeout=WAIT, ssl_options=tls)
        client = cls(await websocket_connect(request))
        client.hello = await client.next()
        assert client.hello["type"] == "connected", client.hello
        return client

    async def next(self, timeout: float = WAIT) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.conn.read_message(), timeout)
        assert raw is not None, f"closed: {self.conn.close_code} {self.conn.close_reason}"
        return json.loads(raw)

    async def next_of(self, kind: str, timeout: float = WAIT) -> dict[str, Any]:
        """The next frame of a type, skipping others (stats updates, pongs)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            frame = await self.next(deadline - asyncio.get_running_loop().time())
            if frame["type"] == kind:
                return frame

    async def notifications(self, n: int, timeout: float = WAIT) -> list[dict[str, Any]]:
        return [(await self.next_of("notification", timeout))["notification"]
                for _ in range(n)]

    def send(self, frame: Any) -> None:
        self.conn.write_message(frame if isinstance(frame, str) else json.dumps(frame))

    async def closed(self, timeout: float = WAIT) -> int | None:
        """Reads until the server closes; returns the close code."""
        while await asyncio.wait_for(self.conn.read_message(), timeout) is not None:
            pass
        self.conn.close()  # releases the client side too (no ResourceWarning)
        return self.conn.close_code

    def close(self) -> None:
        self.conn.close()


class SSEClient:
    """A raw SSE client: one HTTP/1.1 GET, then events parsed as the EventSource spec says."""

    def __init__(self, stream: IOStream, status: int, headers: dict[str, str]) -> None:
        self.stream = stream
        self.status = status
        self.headers = headers
        self.retry: int | None = None
        self.body = b""

    @classmethod
    async def open(cls, port: int, tok: str | None = None, headers: dict[str, str] | None = None,
                   tls: ssl.SSLContext | None = None, **query: Any) -> SSEClient:
        params = {"token": tok, **query} if tok else dict(query)
        path = "/api/notifications/stream"
        clean = {k: v for k, v in params.items() if v is not None}
        if clean:
            path += "?" + urlencode(clean)
        stream = await TCPClient().connect("127.0.0.1", port, timeout=WAIT, ssl_options=tls)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        stream.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                     f"Accept: text/event-stream\r\n{extra}\r\n".encode())
        head = await asyncio.wait_for(stream.read_until(b"\r\n\r\n"), WAIT)
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        client = cls(stream, status, hdrs)
        if status != 200:
            length = int(hdrs.get("content-length", "0"))
            client.body = await stream.read_bytes(length) if length else b""
            stream.close()
        return client

    async def _line(self) -> str:
        # The body is chunked; a chunk holds whole events, so read chunk by chunk.
        while b"\n" not in self.body:
            size_line = await self.stream.read_until(b"\r\n")
            size = int(size_line.strip(), 16)
            if size == 0:
                raise StreamClosedError()
            self.body += (await self.stream.read_bytes(size + 2))[:-2]
        line, _, self.body = self.body.partition(b"\n")
        return line.decode()

    async def event(self, timeout: float = WAIT) -> dict[str, Any]:
        """The next event: {"event", "id", "data"} with data parsed as JSON."""
        async def read() -> dict[str, Any]:
            event: dict[str, Any] = {"event": "message", "id": None, "data": ""}
            seen = False
            while True:
                line = await self._line()
                if line == "":
                    if seen:
                        event["data"] = json.loads(event["data"]) if event["data"] else None
                        return event
                    continue
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "retry":
                    self.retry = int(value)
                    continue
                seen = True
                if field == "data":
                    event["data"] += value
                elif field in ("event", "id"):
                    event[field] = value
        return await asyncio.wait_for(read(), timeout)

    async def next_of(self, kind: str, timeout: float = WAIT) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            event = await self.event(deadline - asyncio.get_running_loop().time())
            if event["event"] == kind:
                return event

    async def notifications(self, n: int, timeout: float = WAIT) -> list[dict[str, Any]]:
        return [(await self.next_of("notification", timeout))["data"] for _ in range(n)]

    async def ended(self, timeout: float = WAIT) -> bool:
        """True when the server ends the stream."""
        try:
            while True:
                await self.event(timeout)
        except StreamClosedError:
            return True

    def error(self) -> dict[str, Any]:
        return json.loads(self.body)

    def close(self) -> None:
        self.stream.close()


# --- helpers for the transport, shutdown and durability tests ---------------------------

async def inbox_ids(port: int, tok: str) -> list[int]:
    """Every id in a user's inbox, page by page, in ascending order."""
    api, ids, before = Api(port), [], None
    while True:
        page = await api.json("GET", "/api/notifications?limit=200" +
                              (f"&before={before}" if before else ""), tok=tok)
        ids += [n["id"] for n in page["notifications"]]
        before = page["next_before"]
        if before is None:
            return sorted(ids)


async def eventually(check: Any, timeout: float = WAIT, step: float = 0.02) -> None:
    """Polls `check()` (sync or async) until true: for state with no event to await, such as
    a counter that falls once the server notices a dead peer."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert asyncio.get_running_loop().time() < deadline, f"not true within {timeout}s"
        await asyncio.sleep(step)


async def raw_websocket(port: int, tok: str, tenant: str = "acme", **extra: Any) -> IOStream:
    """A WebSocket upgrade done by hand, after which the peer never reads nor answers pings:
    the dead or slow client that a real library would not let us imitate."""
    stream = await TCPClient().connect("127.0.0.1", port, timeout=WAIT)
    key = base64.b64encode(os.urandom(16)).decode()
    query = urlencode({"token": tok, "tenant_id": tenant, **extra})
    stream.write(f"GET /ws/notifications?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                 f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
    head = await asyncio.wait_for(stream.read_until(b"\r\n\r\n"), WAIT)
    assert head.startswith(b"HTTP/1.1 101"), head
    return stream


class ServerProcess:
    """`python server.py` as a real subprocess on a free loopback port."""

    def __init__(self, db: str, secret: str = SECRET, *args: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.argv = ["--port", str(self.port), "--db", db, "--jwt-secret", secret, *args]
        self.env: dict[str, str] = {}  # TIDINGS_* settings for this process only
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> ServerProcess:
        root = Path(__file__).resolve().parent.parent
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
        env.update(self.env)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(root / "server.py"), *self.argv, cwd=root, env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        http = AsyncHTTPClient()

        async def ready() -> bool:
            assert self.proc is not None and self.proc.returncode is None, "server exited"
            try:
                r = await http.fetch(f"http://127.0.0.1:{self.port}/healthz",
                                     raise_error=False, request_timeout=1)
            except OSError:
                return False  # not listening yet
            return r.code == 200
        await eventually(ready, timeout=15, step=0.05)
        return self

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = WAIT) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
