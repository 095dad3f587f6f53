"""Escalation by acknowledgement: an email for `"unacknowledged"` waits `escalate_after` while
the user is live, then goes only if no connection acknowledged it; with no live connection it
goes at once. The wait is a stored row, so it holds across a restart. The tests move the
worker's clock past the deadline instead of waiting for it."""

from __future__ import annotations

import json
import time

import pytest

from tidings.config import Secret

from .clients import Api, SSEClient, WSClient, token
from .deliveries import ALICE, SENDER, deliveries, notify, profile, settled, until

pytest_plugins = ["tests.peers.fixtures"]

ESCALATE = {"channels": {"default": {"email": "unacknowledged"}}, "escalate_after": 30}


async def escalating(api: Api) -> None:
    await profile(api, email="alice@example.com")
    await api.json("PUT", "/api/preferences", ESCALATE, ALICE)


def past_the_deadline(server) -> None:  # type: ignore[no-untyped-def]
    orchestrator = server.services.orchestrator
    orchestrator.clock = lambda: time.time() + 31
    orchestrator.wake()


def held(ds: list[dict]) -> bool:
    return len(ds) == 1 and ds[0]["status"] == "held"


@pytest.mark.gen_test(timeout=15)
@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_acknowledged_in_time_no_email(smtp_peer, start_server, transport):
    server = await start_server(email_url=Secret(smtp_peer.url), email_from=SENDER)
    api = Api(server.port)
    await escalating(api)
    if transport == "websocket":
        client = await WSClient.open(server.port, ALICE)
        nid = await notify(api, title="Seen")
        await client.notifications(1)
        client.send({"type": "ack", "ids": [nid]})
    else:
        client = await SSEClient.open(server.port, ALICE)
        await client.next_of("connected")
        nid = await notify(api, title="Seen")
        await client.next_of("notification")
        await api.json("POST", "/api/notifications/ack", {"ids": [nid]}, tok=ALICE, expect=204)
    [waiting] = await until(api, nid, held)
    assert waiting["next_attempt_at"] is not None
    past_the_deadline(server)
    [d] = await settled(api, nid)
    assert (d["status"], d["last_error"]) == ("skipped", "acknowledged")
    assert len(smtp_peer.inbox) == 0
    client.close()


@pytest.mark.gen_test(timeout=15)
async def test_not_acknowledged_the_email_goes_after_the_wait(smtp_peer, start_server):
    server = await start_server(email_url=Secret(smtp_peer.url), email_from=SENDER)
    api = Api(server.port)
    await escalating(api)
    ws = await WSClient.open(server.port, ALICE)
    nid = await notify(api, title="Missed")
    await ws.notifications(1)  # shown, never acknowledged (a forgotten tab)
    await until(api, nid, held)
    assert len(smtp_peer.inbox) == 0  # not before its time
    past_the_deadline(server)
    [got] = await smtp_peer.inbox.arrived(1, timeout=5)
    assert got.message["Subject"] == "Missed"
    [d] = await settled(api, nid)
    assert d["status"] == "sent"
    ws.close()


@pytest.mark.gen_test(timeout=15)
async def test_offline_the_email_goes_at_once(smtp_peer, start_server):
    server = await start_server(email_url=Secret(smtp_peer.url), email_from=SENDER)
    api = Api(server.port)
    await escalating(api)
    nid = await notify(api, title="Nobody home")
    [got] = await smtp_peer.inbox.arrived(1, timeout=5)  # with the clock untouched
    assert got.message["Subject"] == "Nobody home"
    [d] = await settled(api, nid)
    assert d["status"] == "sent"


@pytest.mark.gen_test(timeout=20)
@pytest.mark.parametrize("acknowledge", [True, False])
async def test_the_wait_survives_a_restart(smtp_peer, start_server, acknowledge):
    email = {"email_url": Secret(smtp_peer.url), "email_from": SENDER}
    first = await start_server(**email)
    api = Api(first.port)
    await escalating(api)
    ws = await WSClient.open(first.port, ALICE)
    nid = await notify(api, title="Across a restart")
    await ws.notifications(1)
    if acknowledge:
        ws.send({"type": "ack", "ids": [nid]})
        ws.send({"type": "ping"})
        await ws.next_of("pong")
    await until(api, nid, held)
    ws.close()
    await first.stop()  # receipts buffered are written at the stop

    second = await start_server(**email)  # the same database
    api = Api(second.port)
    [still] = await deliveries(api, nid)
    assert still["status"] == "held"
    past_the_deadline(second)
    [d] = await settled(api, nid)
    if acknowledge:
        assert (d["status"], d["last_error"]) == ("skipped", "acknowledged")
        assert len(smtp_peer.inbox) == 0
    else:
        assert d["status"] == "sent" and len(smtp_peer.inbox) == 1


@pytest.mark.gen_test
async def test_escalation_settings_are_checked(server, api):
    bad = [({"channels": {"alert": {"in_app": "unacknowledged"}}}, "channels.alert.in_app"),
           ({"channels": {"alert": {"email": "later"}}}, "channels.alert.email"),
           ({"escalate_after": 0}, "escalate_after"), ({"escalate_after": "60"}, "escalate_after"),
           ({"escalate_after": 10**9}, "escalate_after"), ({"escalate_after": True},
                                                           "escalate_after")]
    for body, field in bad:
        response = await api.call("PUT", "/api/preferences", body, tok=ALICE)
        assert response.code == 400, body
        assert json.loads(response.body)["error"]["field"] == field, body
    got = await api.json("PUT", "/api/preferences", {"escalate_after": 120}, ALICE)
    assert got["escalate_after"] == 120
    admin = token(user="root", role="admin")
    await api.json("PUT", "/api/preferences?tenant_default=true", {"escalate_after": 300}, admin)
    assert (await api.json("GET", "/api/preferences", tok=token(user="carol")))[
        "escalate_after"] == 300
    assert (await api.json("GET", "/api/preferences", tok=ALICE))["escalate_after"] == 120
