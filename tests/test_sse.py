"""The SSE transport: headers, the first events, ids, heartbeats, replay and slow clients."""

import asyncio

import pytest

from .clients import Api, SSEClient, WSClient, eventually, token

ALICE = token(user="alice")
SERVICE = token(user="backend", role="service")


@pytest.mark.gen_test
async def test_headers_retry_and_connected_first(server):
    sse = await SSEClient.open(server.port, ALICE, tenant_id="acme")
    assert sse.status == 200
    assert sse.headers["content-type"].split(";")[0] == "text/event-stream"
    assert sse.headers["cache-control"] == "no-cache"
    first = await sse.event()
    assert sse.retry == 3000
    assert first["event"] == "connected" and first["id"] is None
    assert first["data"]["user_id"] == "alice" and first["data"]["tenant_id"] == "acme"
    assert first["data"]["connection_id"]
    sse.close()


@pytest.mark.gen_test
async def test_notification_event_id_is_the_notification_id(server, api):
    sse = await SSEClient.open(server.port, ALICE)
    await sse.event()
    sent = [(await api.send(SERVICE, user_id="alice", title=str(i)))["notification"]
            for i in range(3)]
    for n in sent:
        event = await sse.next_of("notification")
        assert event["id"] == str(n["id"]) and event["data"] == n
    sse.close()


@pytest.mark.gen_test
async def test_stats_update_event(server, api):
    n = (await api.send(SERVICE, user_id="alice", title="x"))["notification"]
    sse = await SSEClient.open(server.port, ALICE)
    await api.json("POST", f"/api/notifications/{n['id']}/read", tok=ALICE)
    event = await sse.next_of("stats_update")
    assert event["data"] == {"total": 1, "unread": 0} and event["id"] is None
    sse.close()


@pytest.mark.gen_test
async def test_heartbeat_events_at_the_interval(start_server):
    server = await start_server(heartbeat=0.2)
    sse = await SSEClient.open(server.port, ALICE)
    assert (await sse.event())["event"] == "connected"
    loop_time = asyncio.get_running_loop().time
    start = loop_time()
    for _ in range(3):
        event = await sse.event(timeout=2)
        assert event["event"] == "heartbeat" and event["id"] is None
    assert loop_time() - start < 2
    sse.close()


@pytest.mark.gen_test
async def test_no_heartbeat_with_the_default_interval(server):
    sse = await SSEClient.open(server.port, ALICE)
    await sse.event()
    with pytest.raises(TimeoutError):
        await sse.event(timeout=0.5)
    sse.close()


async def _ids(api, n, **target):
    return [(await api.send(SERVICE, title=str(i), **target))["notification"]["id"]
            for i in range(n)]


@pytest.mark.parametrize("how", ["header", "query", "since"])
@pytest.mark.gen_test
async def test_last_event_id_replays_what_came_after(server, api, how):
    ids = await _ids(api, 3, user_id="alice")
    ids += await _ids(api, 1, broadcast=True)
    await _ids(api, 2, user_id="bob")
    if how == "header":
        sse = await SSEClient.open(server.port, ALICE, headers={"Last-Event-ID": str(ids[0])})
    elif how == "query":
        sse = await SSEClient.open(server.port, ALICE, last_event_id=ids[0])
    else:
        sse = await SSEClient.open(server.port, ALICE, since=ids[0])
    replay = [await sse.next_of("notification") for _ in range(3)]
    assert [int(e["id"]) for e in replay] == ids[1:]
    live = await _ids(api, 1, user_id="alice")
    assert [int((await sse.next_of("notification"))["id"])] == live
    sse.close()


@pytest.mark.gen_test
async def test_a_bad_last_event_id_is_400_before_the_stream(server):
    sse = await SSEClient.open(server.port, ALICE, headers={"Last-Event-ID": "abc"})
    assert sse.status == 400 and sse.error()["error"]["code"] == "invalid_request"


@pytest.mark.gen_test
async def test_client_going_away_leaves_the_counters(server, api):
    registry = server.services.registry
    sse = await SSEClient.open(server.port, ALICE)
    await sse.event()
    assert registry.stats("acme", "alice")["sse"] == 1
    sse.close()
    await eventually(lambda: registry.stats("acme", "alice")["sse"] == 0)


@pytest.mark.gen_test(timeout=30)
async def test_a_stream_that_is_not_read_is_ended_others_keep_receiving(start_server):
    server = await start_server(max_pending_kib=64)
    registry = server.services.registry
    api = Api(server.port)
    normal = await SSEClient.open(server.port, ALICE)
    normal_ws = await WSClient.open(server.port, ALICE)
    slow = await SSEClient.open(server.port, token(user="bob"))  # never read after the head
    bob_conn = next(iter(registry.user("acme", "bob")))
    pad = "x" * 30_000
    sent = []
    while not bob_conn.closed and len(sent) < 400:
        body = await api.send(SERVICE, broadcast=True, title=str(len(sent)), data={"pad": pad})
        sent.append(body["notification"]["id"])
        assert [e["id"] for e in await normal.notifications(1)] == sent[-1:]
        assert [n["id"] for n in await normal_ws.notifications(1)] == sent[-1:]
    assert bob_conn.closed, "the slow stream was never dropped"
    assert registry.stats("acme", "bob")["sse"] == 0  # an SSE stream leaves at once
    for c in (normal, normal_ws, slow):
        c.close()


@pytest.mark.gen_test
async def test_an_http_1_0_client_gets_events_unchunked(server, api):
    """Events go straight to the socket framed once per message: chunked for HTTP/1.1 (the
    other tests), as they are for HTTP/1.0, which has no chunks."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(f"GET /api/notifications/stream HTTP/1.0\r\nAuthorization: Bearer {ALICE}"
                 "\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b" 200 " in head.split(b"\r\n")[0] and b"chunked" not in head.lower()
    body = await asyncio.wait_for(reader.readuntil(b"event: connected\n"), 5)
    assert body.startswith(b"retry: 3000")
    await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)
    n = (await api.send(SERVICE, user_id="alice", title="plain"))["notification"]
    event = await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)
    assert event.startswith(f"id: {n['id']}\nevent: notification\ndata: {{".encode())
    writer.close()
    await writer.wait_closed()
