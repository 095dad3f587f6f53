"""The shortest path through the contract: send, receive over both transports, replay."""

import pytest

from .clients import SSEClient, WSClient, token


@pytest.mark.gen_test
async def test_unicast_reaches_websocket_and_sse(server, api):
    alice = token(user="alice")
    ws = await WSClient.open(server.port, alice, tenant_id="acme")
    sse = await SSEClient.open(server.port, alice)
    assert sse.status == 200 and sse.headers["content-type"].startswith("text/event-stream")
    assert (await sse.event())["event"] == "connected" and sse.retry == 3000

    body = await api.send(token(role="service", user="backend"), user_id="alice", title="hi")

    assert body["delivery"] == {"websocket": 1, "sse": 1}
    assert (await ws.notifications(1))[0]["id"] == body["notification"]["id"]
    event = await sse.next_of("notification")
    assert event["id"] == str(body["notification"]["id"]) and event["data"]["title"] == "hi"
    ws.close()
    sse.close()
