"""The WebSocket transport: frames, errors, limits, origin, heartbeats and slow clients."""

import asyncio
import json

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from .clients import Api, SSEClient, WSClient, eventually, raw_websocket, token

ALICE = token(user="alice")
SERVICE = token(user="backend", role="service")


def ws_url(port, tok=ALICE, **query):
    params = "&".join(f"{k}={v}" for k, v in {"token": tok, **query}.items())
    return f"ws://127.0.0.1:{port}/ws/notifications?{params}"


@pytest.mark.gen_test
async def test_connected_frame_first(server):
    ws = await WSClient.open(server.port, ALICE, tenant_id="acme")
    assert ws.hello["user_id"] == "alice" and ws.hello["tenant_id"] == "acme"
    assert isinstance(ws.hello["connection_id"], str) and ws.hello["connection_id"]
    other = await WSClient.open(server.port, ALICE)
    assert other.hello["connection_id"] != ws.hello["connection_id"]
    ws.close()
    other.close()


@pytest.mark.gen_test
async def test_ping_gets_pong(server):
    ws = await WSClient.open(server.port, ALICE)
    ws.send({"type": "ping"})
    assert await ws.next() == {"type": "pong"}
    ws.close()


@pytest.mark.parametrize("frame,code", [("{not json", "invalid_json"),
                                        ('{"type": "dance"}', "unknown_type"),
                                        ("[1, 2]", "unknown_type"),
                                        ('"ping"', "unknown_type"),
                                        ('{"no": "type"}', "unknown_type"),
                                        ('{"type": "mark_read", "id": "7"}', "invalid_request"),
                                        ('{"type": "mark_read", "id": true}', "invalid_request"),
                                        ('{"type": "mark_read", "id": 424242}', "not_found")])
@pytest.mark.gen_test
async def test_a_bad_frame_gets_an_error_frame_and_the_socket_stays_open(server, frame, code):
    ws = await WSClient.open(server.port, ALICE)
    ws.send(frame)
    reply = await ws.next()
    assert reply["type"] == "error" and reply["error"]["code"] == code, reply
    assert reply["error"]["message"]
    ws.send({"type": "ping"})
    assert await ws.next() == {"type": "pong"}
    ws.close()


@pytest.mark.gen_test
async def test_mark_read_frame_sends_stats_to_every_connection(server, api):
    ids = [(await api.send(SERVICE, user_id="alice", title=t))["notification"]["id"]
           for t in "ab"]
    ws = await WSClient.open(server.port, ALICE)
    sse = await SSEClient.open(server.port, ALICE)
    ws.send({"type": "mark_read", "id": ids[1]})
    assert (await ws.next_of("stats_update"))["stats"] == {"total": 2, "unread": 1}
    assert (await sse.next_of("stats_update"))["data"] == {"total": 2, "unread": 1}
    inbox = await api.json("GET", "/api/notifications", tok=ALICE)
    assert [n["read_at"] is not None for n in inbox["notifications"]] == [True, False]
    ws.close()
    sse.close()


@pytest.mark.gen_test
async def test_a_frame_over_64_kib_closes_with_1009(server):
    ws = await WSClient.open(server.port, ALICE)
    ws.send(json.dumps({"type": "ping", "pad": "x" * (64 * 1024)}))
    assert await ws.closed() == 1009


@pytest.mark.gen_test
async def test_a_frame_just_under_64_kib_is_fine(server):
    ws = await WSClient.open(server.port, ALICE)
    frame = json.dumps({"type": "ping", "pad": ""})
    ws.send(json.dumps({"type": "ping", "pad": "x" * (64 * 1024 - len(frame))}))
    assert await ws.next() == {"type": "pong"}
    ws.close()


def masked(opcode: int, payload: bytes, fin: bool = True, mask: bytes = b"\x01\x02\x03\x04",
           length: int | None = None) -> bytes:
    """A client frame as the wire carries it (a 16-bit length from 126 bytes on)."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | opcode])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def server_frame(stream) -> tuple[int, bytes]:
    """The next frame the server sends (unmasked): its opcode and payload."""
    b0, b1 = await asyncio.wait_for(stream.read_bytes(2), 5)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await stream.read_bytes(2), "big")
    elif n == 127:
        n = int.from_bytes(await stream.read_bytes(8), "big")
    return b0 & 0x0F, await asyncio.wait_for(stream.read_bytes(n), 5) if n else b""


async def next_text(stream) -> dict:
    while True:
        opcode, payload = await server_frame(stream)
        if opcode == 1:
            return json.loads(payload)


@pytest.mark.gen_test
async def test_frames_however_the_socket_cuts_them(server):
    """Several frames in one write, one frame over many writes, a fragmented message with a
    control frame between its fragments: each is read as it was sent."""
    stream = await raw_websocket(server.port, ALICE)
    assert (await next_text(stream))["type"] == "connected"
    ping = json.dumps({"type": "ping"}).encode()
    stream.write(masked(1, ping) * 3)
    for _ in range(3):
        assert await next_text(stream) == {"type": "pong"}
    protocol = next(iter(server.services.registry.user("acme", "alice"))).protocol
    read_before = protocol._wire_bytes_in
    cut = masked(1, json.dumps({"type": "ping", "pad": "y" * 300}).encode())
    for i in range(0, len(cut), 3):  # header, length, mask and payload arrive piece by piece
        stream.write(cut[i:i + 3])
        end = read_before + min(i + 3, len(cut))  # each piece read on its own before the next
        await eventually(lambda end=end: protocol._wire_bytes_in >= end, step=0.001)
    assert await next_text(stream) == {"type": "pong"}
    stream.write(masked(1, ping[:5], fin=False) + masked(9, b"hi") + masked(0, ping[5:]))
    assert await server_frame(stream) == (10, b"hi")  # the protocol ping's pong
    assert await next_text(stream) == {"type": "pong"}
    stream.write(masked(1, b'{"type": "dance"}') + masked(1, ping))
    assert (await next_text(stream))["error"]["code"] == "unknown_type"
    assert await next_text(stream) == {"type": "pong"}
    stream.write(masked(8, (1000).to_bytes(2, "big")))
    assert await server_frame(stream) == (8, (1000).to_bytes(2, "big"))
    stream.close()


@pytest.mark.gen_test
async def test_a_close_whose_reason_is_not_utf8_ends_the_socket_without_an_error(server):
    """The client's fault: the socket ends, and no ERROR is logged (conftest fails on one)."""
    stream = await raw_websocket(server.port, ALICE)
    assert (await next_text(stream))["type"] == "connected"
    stream.write(masked(8, (1000).to_bytes(2, "big") + b"\xff"))
    await eventually(lambda: server.services.registry.stats()["total"] == 0)
    stream.close()


@pytest.mark.gen_test
async def test_a_frame_announcing_more_than_64_kib_closes_before_its_payload(server):
    stream = await raw_websocket(server.port, ALICE)
    assert (await next_text(stream))["type"] == "connected"
    head = bytes([0x81, 0x80 | 127]) + (64 * 1024 + 1).to_bytes(8, "big") + b"\0\0\0\0"
    stream.write(head)  # and not a byte of the payload
    opcode, payload = await server_frame(stream)
    assert opcode == 8 and int.from_bytes(payload[:2], "big") == 1009
    stream.close()


@pytest.mark.gen_test
async def test_since_replays_oldest_first_then_live(server, api):
    ids = [(await api.send(SERVICE, user_id="alice", title=str(i)))["notification"]["id"]
           for i in range(4)]
    wide = (await api.send(SERVICE, broadcast=True, title="w"))["notification"]["id"]
    await api.send(SERVICE, user_id="bob", title="not alice's")
    ws = await WSClient.open(server.port, ALICE, since=ids[1])
    assert [n["id"] for n in await ws.notifications(3)] == [ids[2], ids[3], wide]
    live = (await api.send(SERVICE, user_id="alice", title="live"))["notification"]["id"]
    assert [n["id"] for n in await ws.notifications(1)] == [live]
    ws.close()


@pytest.mark.parametrize("query", ["since=abc", "since=-3"])
@pytest.mark.gen_test
async def test_a_bad_since_is_400_before_the_upgrade(server, query):
    with pytest.raises(HTTPClientError) as e:
        await websocket_connect(ws_url(server.port) + "&" + query)
    assert e.value.code == 400


# --- connection limit and origin ------------------------------------------------------------

@pytest.mark.gen_test
async def test_connection_limit_is_429_before_the_upgrade_on_both_transports(start_server):
    server = await start_server(max_connections_per_user=2)
    ws = await WSClient.open(server.port, ALICE)
    sse = await SSEClient.open(server.port, ALICE)
    with pytest.raises(HTTPClientError) as e:
        await websocket_connect(ws_url(server.port))
    assert e.value.code == 429
    assert json.loads(e.value.response.body)["error"]["code"] == "too_many_connections"
    refused = await SSEClient.open(server.port, ALICE)
    assert refused.status == 429 and refused.error()["error"]["code"] == "too_many_connections"
    # Another user is not limited by Alice's connections; a freed slot can be used again.
    bob = await WSClient.open(server.port, token(user="bob"))
    ws.close()
    await eventually(lambda: server.services.registry.stats("acme", "alice")["total"] == 1)
    again = await WSClient.open(server.port, ALICE)
    for c in (again, sse, bob):
        c.close()


@pytest.mark.gen_test
async def test_tenant_connection_limit_is_429_with_retry_after_and_spares_other_tenants(
        start_server):
    server = await start_server(max_connections_per_tenant=2)
    alice = await WSClient.open(server.port, ALICE)
    bob = await SSEClient.open(server.port, token(user="bob"))
    with pytest.raises(HTTPClientError) as e:
        await websocket_connect(ws_url(server.port, token(user="carol")))
    assert e.value.code == 429 and e.value.response.headers["Retry-After"].isdigit()
    refused = await SSEClient.open(server.port, token(user="dave"))
    assert refused.status == 429 and refused.headers["retry-after"].isdigit()
    assert "tenant" in refused.error()["error"]["message"]
    other = await WSClient.open(server.port, token(tenant="globex", user="gina"),
                                tenant_id="globex")  # another tenant is not limited by acme
    for c in (alice, bob, other):
        c.close()


async def _connect_with_origin(port, origin, host=None):
    headers = {"Origin": origin}
    if host:
        headers["Host"] = host
    return await websocket_connect(HTTPRequest(ws_url(port), headers=headers))


@pytest.mark.gen_test
async def test_origin_same_host_ok_foreign_refused(server):
    same = await _connect_with_origin(server.port, f"http://127.0.0.1:{server.port}")
    assert json.loads(await same.read_message())["type"] == "connected"
    same.close()
    for origin in ("https://evil.example", f"http://127.0.0.1:{server.port}.evil.example",
                   "null"):
        with pytest.raises(HTTPClientError) as e:
            await _connect_with_origin(server.port, origin)
        assert e.value.code == 403, origin


@pytest.mark.gen_test
async def test_origin_allow_list(start_server):
    server = await start_server(allowed_origins=("https://app.example.com",))
    ok = await _connect_with_origin(server.port, "https://app.example.com")
    assert json.loads(await ok.read_message())["type"] == "connected"
    ok.close()
    with pytest.raises(HTTPClientError) as e:
        await _connect_with_origin(server.port, "https://other.example.com")
    assert e.value.code == 403
    anyone = await start_server(allowed_origins=("*",))
    ok = await _connect_with_origin(anyone.port, "https://other.example.com")
    assert json.loads(await ok.read_message())["type"] == "connected"
    ok.close()


# --- dead and slow peers --------------------------------------------------------------------

@pytest.mark.gen_test(timeout=20)
async def test_a_peer_that_stops_answering_pings_is_dropped(start_server, api):
    server = await start_server(heartbeat=0.3)
    registry = server.services.registry
    live = await WSClient.open(server.port, ALICE)  # answers pings: Tornado's client does
    dead = await raw_websocket(server.port, token(user="bob"))
    await eventually(lambda: registry.stats("acme")["websocket"] == 2)
    await eventually(lambda: registry.stats("acme")["websocket"] == 1, timeout=12)
    assert registry.stats("acme", "bob")["total"] == 0
    assert registry.stats("acme", "alice")["total"] == 1
    live.send({"type": "ping"})
    assert await live.next() == {"type": "pong"}
    live.close()
    dead.close()


@pytest.mark.gen_test
async def test_an_open_socket_keeps_neither_its_token_nor_its_request(server):
    ws = await WSClient.open(server.port, ALICE, tenant_id="acme")
    conn = next(iter(server.services.registry.user("acme", "alice")))
    request = conn.handler.request
    assert request.uri == "/ws/notifications" and not request.query
    assert not request.arguments and not request.query_arguments
    assert not request.headers and request.connection is None
    ws.send({"type": "ping"})  # and it goes on reading frames
    assert await ws.next() == {"type": "pong"}
    ws.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_client_that_stops_reading_is_dropped_others_keep_receiving(start_server):
    server = await start_server(max_pending_kib=64)
    registry = server.services.registry
    api = Api(server.port)
    normal = await WSClient.open(server.port, ALICE)
    slow = await raw_websocket(server.port, token(user="bob"))
    await eventually(lambda: registry.stats("acme")["websocket"] == 2)
    bob_conn = next(iter(registry.user("acme", "bob")))
    pad = "x" * 30_000
    sent, got = [], []

    async def reader():  # the normal client keeps reading all along
        while True:
            got.append((await normal.next_of("notification"))["notification"]["id"])
    reading = asyncio.ensure_future(reader())
    while not bob_conn.closed and len(sent) < 400:
        body = await api.send(SERVICE, broadcast=True, title=str(len(sent)), data={"pad": pad})
        sent.append(body["notification"]["id"])
    assert bob_conn.closed, "the slow client was never dropped"
    for _ in range(20):  # and it goes on receiving after Bob was dropped
        sent.append((await api.send(SERVICE, broadcast=True, title="after",
                                    data={"pad": pad}))["notification"]["id"])
    await eventually(lambda: len(got) >= len(sent) or reading.done())
    reading.cancel()
    assert got == sent
    # (Bob leaves the counters once his socket closes: after Tornado's 5 s close handshake
    # wait; the dead-peer test above checks that the counters fall.)
    normal.close()
    slow.close()
