"""Slow readers: dropped ones really lose their socket, and a big replay goes at the reader's
pace instead of overrunning the output bound."""

from __future__ import annotations

import asyncio
import json
import socket
from urllib.parse import urlencode

import pytest
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient

from .clients import WAIT, Api, SSEClient, WSClient, eventually, raw_websocket, token

SERVICE = token(user="backend", role="service")
ALICE, BOB = token(user="alice"), token(user="bob")
PAD = "x" * 30_000


async def raw_sse(port: int, tok: str, **query: object):  # type: ignore[no-untyped-def]
    """An SSE request after which the client reads only when told."""
    stream = await TCPClient().connect("127.0.0.1", port, timeout=WAIT)
    query = urlencode({"token": tok, "tenant_id": "acme", **query})
    stream.write(f"GET /api/notifications/stream?{query} HTTP/1.1\r\nHost: x\r\n"
                 f"Accept: text/event-stream\r\n\r\n".encode())
    return stream


async def closed_within(stream, seconds: float) -> None:  # type: ignore[no-untyped-def]
    """Reads (drains) until the server has closed the socket; fails after `seconds`."""
    async def until_closed() -> None:
        try:
            while True:
                await stream.read_bytes(65536, partial=True)
        except StreamClosedError:
            return
    await asyncio.wait_for(until_closed(), seconds)


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_a_never_reading_client_is_dropped_its_socket_closes_and_nobody_misses_a_thing(
        start_server, transport):
    server = await start_server(max_pending_kib=64)
    registry = server.services.registry
    api = Api(server.port)
    normal = await WSClient.open(server.port, ALICE)
    stuck = await (raw_websocket(server.port, BOB) if transport == "websocket"
                   else raw_sse(server.port, BOB))
    await eventually(lambda: registry.stats("acme")["total"] == 2)
    bob = next(iter(registry.user("acme", "bob")))
    sent = []
    while not bob.closed and len(sent) < 400:  # every create answers 201 meanwhile
        sent.append((await api.send(SERVICE, broadcast=True, title=str(len(sent)),
                                    data={"pad": PAD}))["notification"]["id"])
    assert bob.closed, "the slow client was never dropped"
    after = (await api.send(SERVICE, broadcast=True, title="after"))["notification"]["id"]
    got = [n["id"] for n in await normal.notifications(len(sent) + 1, timeout=20)]
    assert got == [*sent, after]
    await closed_within(stuck, 10)  # the server hung up, though the buffer never drained
    await eventually(lambda: registry.stats("acme")["total"] == 1)
    normal.close()
    stuck.close()


async def ws_frames(stream, count: int) -> list[dict]:  # type: ignore[no-untyped-def]
    """Reads `count` text frames from a raw WebSocket (server frames are never masked)."""
    frames = []
    while len(frames) < count:
        head = await stream.read_bytes(2)
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await stream.read_bytes(2), "big")
        elif length == 127:
            length = int.from_bytes(await stream.read_bytes(8), "big")
        payload = await stream.read_bytes(length) if length else b""
        if head[0] & 0x0F == 1:
            frames.append(json.loads(payload))
    return frames


@pytest.mark.gen_test(timeout=90)
@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_a_slow_reader_of_a_replay_far_larger_than_the_bound_gets_it_all(
        start_server, transport):
    server = await start_server(max_pending_kib=64)
    api = Api(server.port)
    ids = [(await api.send(SERVICE, user_id="alice", title=str(i), data={"pad": PAD}))
           ["notification"]["id"] for i in range(300)]  # 9 MB: more than the socket buffers
    if transport == "websocket":
        stream = await raw_websocket(server.port, ALICE, since=0)
    else:
        stream = await raw_sse(server.port, ALICE, since=0)
    registry = server.services.registry

    def backed_up() -> bool:  # the slow part: not reading until the server's buffer holds some
        conns = list(registry.user("acme", "alice"))
        if not conns:
            return False
        handler = conns[0].handler  # type: ignore[attr-defined]
        out = handler.ws_connection.stream if transport == "websocket" else \
            handler.request.connection.stream
        return bool(out.writing())
    await eventually(backed_up, timeout=20)
    if transport == "websocket":
        frames = await ws_frames(stream, 301)
        got = [f["notification"]["id"] for f in frames if f["type"] == "notification"]
    else:
        client = SSEClient(stream, 200, {})
        await stream.read_until(b"\r\n\r\n")  # the response head
        got = [n["id"] for n in await client.notifications(300, timeout=30)]
    assert got == ids
    assert server.services.registry.stats("acme", "alice")["total"] == 1  # never dropped
    stream.close()


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_a_replay_nobody_reads_is_given_up_after_two_heartbeats(start_server, transport):
    """A replay is not pinged, so without a deadline a client that asks for a backlog and
    never reads would hold its connection for good."""
    server = await start_server(max_pending_kib=64, heartbeat=0.5)
    api = Api(server.port)
    ids = [(await api.send(SERVICE, user_id="alice", title=str(i), data={"pad": PAD}))
           ["notification"]["id"] for i in range(300)]  # 9 MB: more than the socket buffers
    opened = raw_websocket(server.port, ALICE, since=0) if transport == "websocket" else \
        raw_sse(server.port, ALICE, since=0)
    stuck = await opened
    registry = server.services.registry
    await eventually(lambda: registry.stats("acme", "alice")["total"] == 1)
    alice = next(iter(registry.user("acme", "alice")))
    await eventually(lambda: alice.closed, timeout=20)
    assert alice.close_reason == "too slow"
    await eventually(lambda: registry.stats("acme")["total"] == 0)
    await closed_within(stuck, 10)
    stuck.close()
    # What the replay never got to is not recorded as pushed to it.
    found = await api.json("GET", f"/api/notifications/{ids[-1]}/receipts", tok=SERVICE)
    assert found == {"receipts": []}


@pytest.mark.gen_test(timeout=90)
@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_a_replay_read_slowly_but_steadily_is_never_given_up(start_server, transport):
    """What the client takes is seen in the kernel's send queue too: the stream alone moves
    only when a third of the kernel's buffer (megabytes here) is free again."""
    server = await start_server(max_pending_kib=64, heartbeat=0.5)
    api = Api(server.port)
    ids = [(await api.send(SERVICE, user_id="alice", title=str(i), data={"pad": PAD}))
           ["notification"]["id"] for i in range(300)]  # 9 MB: more than the socket buffers
    if transport == "websocket":
        stream = await raw_websocket(server.port, ALICE, since=0)
        await ws_frames(stream, 1)  # connected

        async def take(count: int) -> list[int]:
            return [f["notification"]["id"] for f in await ws_frames(stream, count)]
    else:
        stream = await raw_sse(server.port, ALICE, since=0)
        await stream.read_until(b"\r\n\r\n")  # the response head
        client = SSEClient(stream, 200, {})

        async def take(count: int) -> list[int]:
            return [n["id"] for n in await client.notifications(count, timeout=30)]
    got = []
    for _ in range(30):  # 4.5 s at about 200 KB/s: nine times the patience of one second
        got += await take(1)
        await asyncio.sleep(0.15)  # the reader's pace, not a wait for an event
    assert server.services.registry.stats("acme", "alice")["total"] == 1  # still there
    got += await take(len(ids) - len(got))
    assert got == ids
    stream.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_client_that_sends_but_never_reads_is_dropped_as_too_slow(start_server):
    """Its answers (error frames) fill its output bound: it is closed as too slow, with no
    error logged (conftest fails the test on one), and the process goes on."""
    server = await start_server(max_pending_kib=64)
    registry = server.services.registry
    stuck = await raw_websocket(server.port, BOB)
    stuck.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills sooner
    await eventually(lambda: registry.stats("acme")["total"] == 1)
    bob = next(iter(registry.user("acme", "bob")))
    frame = json.dumps({"type": "x" * 60_000}).encode()
    mask = b"\x01\x02\x03\x04"
    masked = bytes([0x81, 0x80 | 127]) + len(frame).to_bytes(8, "big") + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(frame))
    for _ in range(400):
        if bob.closed:
            break
        stuck.write(masked)
        await asyncio.sleep(0.02)  # the frame limit's pace (20 a second), not a wait for an event
    assert bob.close_reason == "too slow"
    await eventually(lambda: registry.stats("acme")["total"] == 0)
    metrics = (await server.services.metrics.scrape()).decode()
    assert 'tidings_connections_closed_total{reason="slow",transport="websocket"} 1.0' in metrics
    stuck.close()
