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
