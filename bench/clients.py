"""Light raw-asyncio clients for the benchmarks: WebSocket, SSE and a keep-alive HTTP client.

They parse only what a benchmark needs, so that one process on one core can hold thousands of
connections and still read faster than a Tornado server can write.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import struct
from collections.abc import Callable, Iterable
from typing import Protocol, cast


class Sink(Protocol):
    """Where clients report notifications: counts in bulk, payloads only when wanted."""

    want_payload: bool

    def add(self, count: int) -> None: ...

    def payload(self, data: bytes) -> None: ...

_WS_KEY = base64.b64encode(os.urandom(16)).decode()


class StreamClient(asyncio.Protocol):
    """Common part of a streaming client: the HTTP response head, counters and futures.

    `ready` resolves on the server's first `connected` message; `done` when the connection ends.
    `notifications` counts notification messages; `sink` hears of them too.
    """

    def __init__(self, request: bytes, sink: Sink | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.request = request
        self.sink = sink
        self.ready: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.head_seen = False
        self.notifications = 0
        self.heartbeats = 0  # WebSocket pings, SSE heartbeat events
        self.close_code: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready: {exc}"))
        if not self.done.done():
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.head_seen:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end])
            del self.buf[: end + 4]
            self.head_seen = True
            if not self.accept_head(head):
                return
        self.parse()

    def accept_head(self, head: bytes) -> bool:
        status = head.split(b" ", 2)[1]
        if status != self.expected_status:
            self.fail(f"HTTP {status.decode()} {bytes(self.buf[:200])!r}")
            return False
        return True

    def fail(self, message: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(message))
        self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _connected(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    expected_status = b"200"

    def parse(self) -> None:
        raise NotImplementedError


class WsClient(StreamClient):
    """A WebSocket client: unmasked server frames in, a zero mask on the few frames it sends."""

    expected_status = b"101"

    @staticmethod
    def request_for(port: int, path: str) -> bytes:
        return (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {_WS_KEY}\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:{port}\r\n\r\n"
        ).encode()

    def parse(self) -> None:
        buf = self.buf
        n = len(buf)
        pos = 0
        self.batch = 0
        while n - pos >= 2:
            b0 = buf[pos]
            length = buf[pos + 1] & 0x7F
            hdr = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                hdr = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hdr = 10
            if n - pos < hdr + length:
                break
            payload = bytes(buf[pos + hdr : pos + hdr + length])
            pos += hdr + length
            self.frame(b0 & 0x0F, payload)
        del buf[:pos]
        if self.batch:
            self.notifications += self.batch
            if self.sink is not None:
                self.sink.add(self.batch)

    def frame(self, opcode: int, payload: bytes) -> None:
        if opcode == 1:
            if not self.ready.done():
                self._connected()
            elif b'"notification"' in payload:
                self.batch += 1
                if self.sink is not None and self.sink.want_payload:
                    self.sink.payload(payload)
        elif opcode == 9:
            self.heartbeats += 1
            self.send(10, payload)
        elif opcode == 8:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            self.send(8, payload[:2])
            if self.transport is not None:
                self.transport.close()

    def send(self, opcode: int, payload: bytes) -> None:
        # A zero masking key is valid and leaves the payload as it is.
        if self.transport is not None and not self.transport.is_closing():
            n = len(payload)
            head = bytes((0x80 | opcode, 0x80 | n)) if n < 126 else \
                bytes((0x80 | opcode, 0x80 | 126)) + struct.pack("!H", n)
            self.transport.write(head + b"\0\0\0\0" + payload)

    def close(self) -> None:
        """Start the closing handshake (1000); `done` resolves when the server ends the TCP."""
        self.send(8, struct.pack("!H", 1000))


class AckingWsClient(WsClient):
    """A WebSocket client that acknowledges the notifications it gets as tidings.js does: the
    ids of a burst in one `ack` frame ACK_DELAY after its first, at most one batch each
    ACK_INTERVAL (up to 500 ids a frame, which fits 16-bit lengths). Taking the id costs the
    load generator as little as it can (a slice at a known place): what is measured is the
    server's cost of acknowledgements, and this core is near its limit already."""

    def frame(self, opcode: int, payload: bytes) -> None:
        super().frame(opcode, payload)
        if opcode == 1 and payload.startswith(_NOTIFICATION_HEAD) and self.ready.done():
            if not self.unacked:
                loop = asyncio.get_running_loop()
                wait = max(ACK_DELAY, self.acked_at + ACK_INTERVAL - loop.time())
                loop.call_later(wait, self.acknowledge)
            self.unacked.append(payload[_ID_AT:payload.index(b",", _ID_AT)])

    def acknowledge(self) -> None:
        ids, self.unacked = self.unacked, []
        self.acked_at = asyncio.get_running_loop().time()
        for i in range(0, len(ids), ACK_MAX_IDS):
            self.send(1, b'{"type":"ack","ids":[' + b",".join(ids[i:i + ACK_MAX_IDS]) + b"]}")

    unacked: list[bytes]
    acked_at: float

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.unacked, self.acked_at = [], float("-inf")
        super().connection_made(transport)


ACK_DELAY, ACK_INTERVAL, ACK_MAX_IDS = 0.1, 1.0, 500  # seconds, seconds, ids: as static/tidings.js
# A notification frame as tidings writes it: the notification's id is its first field.
_NOTIFICATION_HEAD = b'{"type":"notification","notification":{"id":'
_ID_AT = len(_NOTIFICATION_HEAD)


class SseClient(StreamClient):
    """An SSE client over HTTP/1.1 (chunked or not): counts `event: notification` blocks."""

    @staticmethod
    def request_for(port: int, path: str) -> bytes:
        return (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()

    def __init__(self, request: bytes, sink: Sink | None = None) -> None:
        super().__init__(request, sink)
        self.chunked = False
        self.chunk_left = -1  # -1: a chunk-size line comes next
        self.body = bytearray()

    def accept_head(self, head: bytes) -> bool:
        self.chunked = b"transfer-encoding: chunked" in head.lower()
        return super().accept_head(head)

    def parse(self) -> None:
        if self.chunked:
            self.dechunk()
        else:
            self.body += self.buf
            self.buf.clear()
        body = self.body
        last = body.rfind(b"\n\n")
        if last < 0:
            return
        if self.ready.done() and not (self.sink is not None and self.sink.want_payload):
            # Counting only: no need to split the events.
            count = body.count(b"event: notification\n", 0, last)
            self.heartbeats += body.count(b"event: heartbeat\n", 0, last)
            del body[: last + 2]
            self.notifications += count
            if self.sink is not None and count:
                self.sink.add(count)
            return
        start = 0
        while start <= last:
            end = body.find(b"\n\n", start)
            self.event(bytes(body[start:end]))
            start = end + 2
        del body[:start]

    def dechunk(self) -> None:
        raw = self.buf
        pos = 0
        while True:
            if self.chunk_left < 0:
                end = raw.find(b"\r\n", pos)
                if end < 0:
                    break
                line = raw[pos:end]
                pos = end + 2
                if not line:  # the CRLF that ends a chunk's data
                    continue
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    break
                self.chunk_left = size
            take = min(len(raw) - pos, self.chunk_left)
            if take == 0:
                break
            self.body += raw[pos : pos + take]
            pos += take
            self.chunk_left -= take
            if self.chunk_left == 0:
                self.chunk_left = -1
        del raw[:pos]

    def event(self, block: bytes) -> None:
        kind = b"message"
        data: list[bytes] = []
        for line in block.split(b"\n"):
            line = line.rstrip(b"\r")
            if line.startswith(b"event:"):
                kind = line[6:].strip()
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
        if kind == b"connected":
            self._connected()
        elif kind == b"heartbeat":
            self.heartbeats += 1
        elif kind == b"notification":
            self.notifications += 1
            if self.sink is not None:
                self.sink.add(1)
                if self.sink.want_payload:
                    self.sink.payload(b"\n".join(data))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_clients(
    factory: Callable[[], StreamClient],
    count: int,
    port: int,
    parallel: int = 64,
    progress: Callable[[int], None] | None = None,
    sources: list[str] | None = None,
) -> list[StreamClient]:
    """Open `count` clients, at most `parallel` handshakes at once; each waits for `connected`.

    `sources`: loopback addresses to connect from in turn (127.0.0.2, ...); each has its own
    ephemeral port range, so more connections than one range holds can be open at once."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(parallel)
    clients: list[StreamClient] = []
    turn = itertools.count()

    async def one() -> None:
        async with gate:
            local = (sources[next(turn) % len(sources)], 0) if sources else None
            _, proto = await loop.create_connection(factory, "127.0.0.1", port,
                                                    local_addr=local)
            await asyncio.wait_for(proto.ready, 30)
            clients.append(proto)
            if progress is not None:
                progress(len(clients))

    await asyncio.gather(*(one() for _ in range(count)))
    return clients


async def close_clients(clients: Iterable[StreamClient], timeout: float = 10.0) -> None:
    clients = list(clients)
    for c in clients:
        c.close()
    pending = [c.done for c in clients if not c.done.done()]
    if pending:
        _, still = await asyncio.wait(pending, timeout=timeout)
        for c in clients:
            if not c.done.done():
                c.abort()


class HttpConn:
    """One keep-alive HTTP/1.1 connection for requests with Content-Length answers."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length = 0
        close = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        data = await self.reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, data

    async def post_json(self, path: str, token: str, tenant: str, doc: object) -> tuple[int, bytes]:
        headers = {
            "Authorization": f"Bearer {token}",
            "X-Tenant-ID": tenant,
            "Content-Type": "application/json",
        }
        return await self.request("POST", path, headers, json.dumps(doc).encode())

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
