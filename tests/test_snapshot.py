"""The snapshot in `connected`: the user's counts always, its newest notifications with
`?snapshot=N`, both as of the connection's `last_id`, so nothing in them comes again live."""

from __future__ import annotations

import json

import pytest
from tornado.httpclient import HTTPClientError

from .clients import SSEClient, WSClient, token

SERVICE = token(user="backend", role="service")
ALICE = token(user="alice")
STREAMS = ["websocket", "sse"]


async def hello(port: int, transport: str, **query: str) -> dict:
    if transport == "websocket":
        ws = await WSClient.open(port, ALICE, **query)
        ws.close()
        return {k: v for k, v in ws.hello.items() if k != "type"}  # the same object as SSE's
    sse = await SSEClient.open(port, ALICE, **query)
    first = await sse.next_of("connected")
    sse.close()
    return first["data"]


async def refusal(port: int, transport: str, **query: str) -> tuple[int, dict]:
    if transport == "websocket":
        with pytest.raises(HTTPClientError) as refused:
            await WSClient.open(port, ALICE, **query)
        return refused.value.code, json.loads(refused.value.response.body)["error"]
    sse = await SSEClient.open(port, ALICE, **query)
    return sse.status, sse.error()["error"]


@pytest.mark.gen_test
@pytest.mark.parametrize("transport", STREAMS)
async def test_connected_carries_counts_and_with_snapshot_the_newest(server, api, transport):
    assert (await hello(server.port, transport)) | {"connection_id": None} == {
        "connection_id": None, "user_id": "alice", "tenant_id": "acme", "last_id": 0,
        "unread": 0, "total": 0}
    ids = [(await api.send(SERVICE, user_id="alice", title=f"n{i}"))["notification"]["id"]
           for i in range(4)]
    await api.send(SERVICE, user_id="bob", title="not alice's")
    await api.send(SERVICE, broadcast=True, title="everyone")
    await api.json("POST", f"/api/notifications/{ids[0]}/read", tok=ALICE)

    plain = await hello(server.port, transport)
    assert (plain["unread"], plain["total"]) == (4, 5) and "recent" not in plain
    snap = await hello(server.port, transport, snapshot="3")
    assert (snap["unread"], snap["total"]) == (4, 5)
    assert [n["title"] for n in snap["recent"]] == ["everyone", "n3", "n2"]  # newest first
    assert snap["recent"][1]["id"] == ids[3] and snap["recent"][1]["read_at"] is None
    everything = await hello(server.port, transport, snapshot="50")
    assert [n["id"] for n in everything["recent"]][-4:] == ids[::-1]
    assert everything["recent"][-1]["read_at"] is not None


@pytest.mark.gen_test
@pytest.mark.parametrize("transport", STREAMS)
async def test_a_snapshot_never_holds_what_comes_after_it_live(server, api, transport):
    for i in range(3):
        await api.send(SERVICE, user_id="alice", title=f"before {i}")
    if transport == "websocket":
        ws = await WSClient.open(server.port, ALICE, snapshot="10")
        first = ws.hello
        await api.send(SERVICE, user_id="alice", title="after")
        [live] = await ws.notifications(1)
        ws.close()
    else:
        sse = await SSEClient.open(server.port, ALICE, snapshot="10")
        first = (await sse.next_of("connected"))["data"]
        await api.send(SERVICE, user_id="alice", title="after")
        live = (await sse.next_of("notification"))["data"]
        sse.close()
    assert all(n["id"] <= first["last_id"] for n in first["recent"])
    assert live["id"] > first["last_id"] and live["title"] == "after"
    assert first["total"] == len(first["recent"]) == 3


@pytest.mark.gen_test
@pytest.mark.parametrize("transport", STREAMS)
async def test_a_bad_snapshot_is_a_400_naming_it(server, transport):
    for bad in ["0", "51", "-1", "abc", "1.5", "", "+3", " 5", "5 ", "9" * 5000]:
        status, error = await refusal(server.port, transport, snapshot=bad)
        assert (status, error["field"]) == (400, "snapshot"), bad
