"""Connection tickets end to end: made over REST, spent by a WebSocket or an SSE stream, once,
within 30 s, for the tenant that made them; never in a log line; not taken by REST."""

from __future__ import annotations

import json
import logging
import time

import pytest
from tornado.httpclient import HTTPClientError
from tornado.websocket import websocket_connect

from tidings.tickets import TTL

from .clients import Api, SSEClient, WSClient, token

SERVICE = token(user="backend", role="service")
ALICE = token(user="alice")
STREAMS = ["websocket", "sse"]


async def ticket_for(api: Api, tok: str = ALICE) -> str:
    made = await api.json("POST", "/api/tickets", tok=tok, expect=201)
    assert made["expires_in"] == TTL == 30
    return str(made["ticket"])


async def connect(port: int, transport: str, **query: str) -> tuple[int, dict]:
    """(status, hello or error body) of a stream opened without a token."""
    if transport == "websocket":
        try:
            ws = await WSClient.open(port, None, **query)
        except HTTPClientError as e:
            return e.code, json.loads(e.response.body)["error"]
        ws.close()
        return 200, ws.hello
    sse = await SSEClient.open(port, **query)
    if sse.status != 200:
        return sse.status, sse.error()["error"]
    hello = await sse.next_of("connected")
    sse.close()
    return 200, hello["data"]


@pytest.mark.gen_test
@pytest.mark.parametrize("transport", STREAMS)
async def test_a_ticket_opens_one_stream_as_its_maker_then_is_spent(server, api, transport):
    ticket = await ticket_for(api)
    status, hello = await connect(server.port, transport, ticket=ticket, tenant_id="acme")
    assert status == 200 and (hello["user_id"], hello["tenant_id"]) == ("alice", "acme")
    for again in STREAMS:
        status, body = await connect(server.port, again, ticket=ticket)
        assert (status, body["code"]) == (401, "invalid_ticket")


@pytest.mark.gen_test
@pytest.mark.parametrize("transport", STREAMS)
async def test_a_stream_opened_with_a_ticket_gets_notifications(server, api, transport):
    if transport == "websocket":
        ws = await WSClient.open(server.port, None, ticket=await ticket_for(api))
        await api.send(SERVICE, user_id="alice", title="by ticket")
        [got] = await ws.notifications(1)
        ws.close()
    else:
        sse = await SSEClient.open(server.port, ticket=await ticket_for(api))
        await sse.next_of("connected")
        await api.send(SERVICE, user_id="alice", title="by ticket")
        got = (await sse.next_of("notification"))["data"]
        sse.close()
    assert got["title"] == "by ticket" and got["user_id"] == "alice"


@pytest.mark.gen_test
@pytest.mark.parametrize("transport", STREAMS)
async def test_an_expired_ticket_is_refused(server, api, transport):
    ticket = await ticket_for(api)
    server.services.tickets.clock = lambda: time.time() + TTL + 1
    status, body = await connect(server.port, transport, ticket=ticket)
    assert (status, body["code"]) == (401, "invalid_ticket")


@pytest.mark.gen_test
@pytest.mark.parametrize("transport", STREAMS)
async def test_another_tenant_named_is_403_and_leaves_the_ticket_unspent(server, api, transport):
    ticket = await ticket_for(api)
    status, body = await connect(server.port, transport, ticket=ticket, tenant_id="globex")
    assert (status, body["code"]) == (403, "tenant_mismatch")
    status, hello = await connect(server.port, transport, ticket=ticket, tenant_id="acme")
    assert status == 200 and hello["user_id"] == "alice"


@pytest.mark.gen_test
async def test_a_header_naming_another_tenant_is_403_too(server, api):
    ticket = await ticket_for(api)
    sse = await SSEClient.open(server.port, headers={"X-Tenant-ID": "globex"}, ticket=ticket)
    assert (sse.status, sse.error()["error"]["code"]) == (403, "tenant_mismatch")


@pytest.mark.gen_test
@pytest.mark.parametrize("transport", STREAMS)
async def test_unknown_tickets_are_refused(server, transport):
    for shown in ("nope", "x" * 500, "%00"):
        status, body = await connect(server.port, transport, ticket=shown)
        assert (status, body["code"]) == (401, "invalid_ticket")


@pytest.mark.gen_test
async def test_rest_does_not_take_a_ticket(server, api):
    ticket = await ticket_for(api)
    response = await api.call("GET", f"/api/notifications?ticket={ticket}")
    assert (response.code, json.loads(response.body)["error"]["code"]) == (401, "invalid_token")
    response = await api.call("POST", f"/api/tickets?ticket={ticket}")
    assert response.code == 401
    status, _ = await connect(server.port, "sse", ticket=ticket)
    assert status == 200  # still unspent: REST never looked at it


@pytest.mark.gen_test
async def test_every_role_may_make_one_and_none_without_a_token(server, api):
    for role in ("user", "admin", "service"):
        await ticket_for(api, token(user="u1", role=role))
    response = await api.call("POST", "/api/tickets")
    assert (response.code, json.loads(response.body)["error"]["code"]) == (401, "invalid_token")


@pytest.mark.gen_test
async def test_a_ticket_never_reaches_a_log_line(server, api):
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    capture, access = Capture(logging.DEBUG), logging.getLogger("tornado.access")
    level = access.level
    access.setLevel(logging.DEBUG)
    access.addHandler(capture)
    try:
        tickets = [await ticket_for(api) for _ in range(3)]
        await connect(server.port, "websocket", ticket=tickets[0])
        await connect(server.port, "sse", ticket=tickets[1])
        await connect(server.port, "sse", **{"%74icket": tickets[2]})
        await connect(server.port, "websocket", ticket=tickets[0])  # refused, logged at WARNING
    finally:
        access.removeHandler(capture)
        access.setLevel(level)
    text = "\n".join(lines)
    assert text.count("[redacted]") >= 3  # both streams and the refusal (a 101 is not logged)
    assert not any(t in text for t in tickets)


@pytest.mark.gen_test
async def test_a_raw_websocket_with_a_spent_ticket_is_refused_before_the_upgrade(server, api):
    ticket = await ticket_for(api)
    await connect(server.port, "websocket", ticket=ticket)
    with pytest.raises(HTTPClientError) as refused:
        await websocket_connect(f"ws://127.0.0.1:{server.port}/ws/notifications?ticket={ticket}")
    assert refused.value.code == 401
