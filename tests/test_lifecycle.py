"""A notification's life after it is sent, end to end over WebSocket and SSE, live and on
resume: replace by `key`, recall by an admin or service, expiry (`expires_at`, `ttl`); their
channel deliveries that had not gone out are skipped; bad input is a 400 naming the field."""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any

import pytest

from tidings import validation
from tidings.config import Secret

from .clients import Api, WSClient, eventually, inbox_ids, token
from .deliveries import SENDER, notify, profile, until
from .test_retention import ALICE, STREAMS, Stream

pytest_plugins = ["tests.peers.fixtures"]

SERVICE = token(user="backend", role="service")
ADMIN = token(user="root", role="admin")
BOB = token(user="bob")


class Entries(Stream):
    """A stream whose `notification_deleted` entries are checked like notifications: on SSE
    its `id:` is the body's `event_id`."""

    async def next(self) -> tuple[str, Any]:
        if isinstance(self.client, WSClient):
            return await super().next()
        event = await self.client.event()
        while event["event"] in ("heartbeat", "stats_update"):
            event = await self.client.event()
        if event["event"] == "notification":
            assert int(event["id"]) == event["data"]["id"]
        if event["event"] == "notification_deleted":
            assert int(event["id"]) == event["data"]["event_id"]
            assert "type" not in event["data"]
        return event["event"], event["data"]

    async def entry(self) -> tuple[str, Any]:
        """The next notification or removal, skipping stats updates."""
        kind, body = await self.next()
        while kind == "stats_update":
            kind, body = await self.next()
        return kind, body

    @classmethod
    async def resume(cls, port: int, transport: str, since: int | None) -> Entries:
        opened = await Stream.open(port, transport, since)
        return cls(opened.client, opened.connected)


async def create(api: Api, tok: str = SERVICE, **body: Any) -> dict[str, Any]:
    body.setdefault("title", "Build 7")
    if not any(k in body for k in ("user_ids", "broadcast")):
        body.setdefault("user_id", "alice")
    return dict((await api.send(tok, **body))["notification"])


async def recall(api: Api, notification_id: int, tok: str = ADMIN, expect: int = 204) -> None:
    response = await api.call("DELETE", f"/api/notifications/{notification_id}", tok=tok)
    assert response.code == expect, (response.code, response.body)


async def marker(api: Api, stream: Entries) -> None:
    """Nothing else is on its way: the next entry is a notification sent now."""
    sent = await create(api, title="marker")
    assert await stream.entry() == ("notification", sent)


# --- replace ---------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("transport", STREAMS[:2])
async def test_a_replace_is_seen_live_and_after_a_disconnect(server, api, transport):
    stream = await Entries.resume(server.port, transport, None)
    running = await create(api, key="build-7", title="Build 7 running")
    assert await stream.entry() == ("notification", running)
    passed = await create(api, key="build-7", title="Build 7 passed")
    assert passed["replaces"] == running["id"] and passed["key"] == "build-7"
    assert await stream.entry() == ("notification", passed)
    stream.close()

    # While it is away, the build is replaced again.
    deployed = await create(api, key="build-7", title="Build 7 deployed")
    other = await create(api, key="build-8", title="Build 8 running")
    resumed = await Entries.resume(server.port, transport, passed["id"])
    assert await resumed.entry() == ("notification", deployed)
    assert deployed["replaces"] == passed["id"]
    assert await resumed.entry() == ("notification", other)
    await marker(api, resumed)
    resumed.close()

    # From before all of it: none of the replaced ones comes again.
    again = await Entries.resume(server.port, transport, running["id"] - 1)
    assert await again.entry() == ("notification", deployed)
    assert (await again.entry())[1]["id"] == other["id"]
    assert (await again.entry())[1]["title"] == "marker"
    again.close()
    page = await api.json("GET", "/api/notifications", tok=ALICE)
    assert [n["id"] for n in page["notifications"]][1:] == [other["id"], deployed["id"]]
    assert page["notifications"][2]["replaces"] == passed["id"]
    stats = await api.json("GET", "/api/notifications/stats", tok=ALICE)
    assert (stats["total"], stats["unread"]) == (3, 3)


@pytest.mark.gen_test(timeout=30)
async def test_a_key_replaces_each_recipients_own_previous_one(server, api):
    bob = await WSClient.open(server.port, BOB)
    first = (await api.send(SERVICE, user_ids=["alice", "bob"], title="v1", key="k"))
    second = (await api.send(SERVICE, user_ids=["alice", "bob"], title="v2", key="k"))
    old = {n["user_id"]: n["id"] for n in first["notifications"]}
    assert [(n["user_id"], n["replaces"]) for n in second["notifications"]] == \
        [("alice", old["alice"]), ("bob", old["bob"])]
    assert [n["id"] for n in await bob.notifications(2)] == \
        [old["bob"], second["notifications"][1]["id"]]
    # A broadcast with the key is another recipient: it replaces only the tenant-wide one.
    wide = await create(api, broadcast=True, key="k")
    assert "replaces" not in wide
    assert await inbox_ids(server.port, BOB) == [second["notifications"][1]["id"], wide["id"]]
    bob.close()


# --- recall ----------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("transport", STREAMS)
async def test_a_recall_while_offline_comes_exactly_once_on_resume(server, api, transport):
    one, two = await create(api, title="one"), await create(api, title="two")
    await recall(api, one["id"])
    late = await create(api, title="created after the cursor")
    await recall(api, late["id"], tok=SERVICE)  # the client never saw it: nothing to say
    three = await create(api, title="three")

    stream = await Entries.resume(server.port, transport, two["id"])
    kind, body = await stream.entry()
    assert kind == "notification_deleted"
    assert body["id"] == one["id"] and body["reason"] == "recalled"
    assert two["id"] < body["event_id"] < late["id"]
    assert await stream.entry() == ("notification", three)
    await marker(api, stream)
    stream.close()

    # Resuming from the event id itself: it does not come again.
    again = await Entries.resume(server.port, transport, body["event_id"])
    assert await again.entry() == ("notification", three)
    assert (await again.entry())[1]["title"] == "marker"
    # Live: a recall reaches an open stream in order, with the next notification after it.
    await recall(api, three["id"])
    kind, live = await again.entry()
    assert (kind, live["id"], live["reason"]) == ("notification_deleted", three["id"],
                                                  "recalled")
    after = await create(api, title="after")
    assert await again.entry() == ("notification", after)
    again.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_recall_reaches_every_recipient_of_a_broadcast_and_leaves_their_inboxes(
        server, api):
    wide = await create(api, broadcast=True)
    alice, bob = [await WSClient.open(server.port, tok) for tok in (ALICE, BOB)]
    await recall(api, wide["id"], tok=SERVICE)
    for client in (alice, bob):
        frame = await client.next_of("notification_deleted")
        assert frame["id"] == wide["id"] and frame["reason"] == "recalled"
        assert frame["event_id"] > wide["id"]
        client.close()
    assert await inbox_ids(server.port, ALICE) == [] == await inbox_ids(server.port, BOB)
    stats = await api.json("GET", "/api/notifications/stats", tok=BOB)
    assert (stats["total"], stats["unread"], stats["by_type"]) == (0, 0, {})
    await recall(api, wide["id"], expect=404)  # once
    assert (await api.call("POST", f"/api/notifications/{wide['id']}/read", tok=ALICE)).code \
        == 404


@pytest.mark.gen_test(timeout=30)
async def test_a_users_own_delete_stays_its_own_and_a_recall_needs_the_tenant(server, api):
    wide = await create(api, broadcast=True)
    await recall(api, wide["id"], tok=BOB)  # bob's own DELETE: from bob's inbox only
    assert await inbox_ids(server.port, BOB) == []
    assert await inbox_ids(server.port, ALICE) == [wide["id"]]
    other = token(tenant="globex", user="root", role="admin")
    await recall(api, wide["id"], tok=other, expect=404)
    await recall(api, 10**9, expect=404)
    await recall(api, 2**63, expect=400)
    assert await inbox_ids(server.port, ALICE) == [wide["id"]]


# --- expire ----------------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_an_expired_one_leaves_inbox_and_counts_at_once_before_housekeeping(
        start_server):
    server = await start_server(housekeeping_interval=3600.0)
    api = Api(server.port)
    stream = await Entries.resume(server.port, "websocket", None)
    brief = await create(api, title="code 123456", ttl=1)
    kept = await create(api, title="kept", expires_at=_iso(time.time() + 3600))
    assert brief["expires_at"] < kept["expires_at"]
    assert [(await stream.entry())[1]["id"] for _ in range(2)] == [brief["id"], kept["id"]]

    await eventually(lambda: _ids(api, ALICE, [kept["id"]]), timeout=5)
    stats = await api.json("GET", "/api/notifications/stats", tok=ALICE)
    assert (stats["total"], stats["unread"]) == (1, 1)
    late = await Entries.resume(server.port, "sse-header", brief["id"] - 1)
    assert await late.entry() == ("notification", kept)  # not replayed either
    # The housekeeping run tells the connections.
    assert await server.services.expiry.run_once() == 1
    for client in (stream, late):
        kind, body = await client.entry()
        assert (kind, body["id"], body["reason"]) == ("notification_deleted", brief["id"],
                                                      "expired")
        client.close()


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("transport", STREAMS[:2])
async def test_connections_are_told_of_expiry_within_a_housekeeping_interval(
        start_server, transport):
    server = await start_server(housekeeping_interval=0.2)
    api = Api(server.port)
    stream = await Entries.resume(server.port, transport, None)
    brief = await create(api, ttl=1)
    assert await stream.entry() == ("notification", brief)
    kind, body = await stream.entry()  # about a second, without anyone asking
    assert (kind, body["id"], body["reason"]) == ("notification_deleted", brief["id"],
                                                  "expired")
    await marker(api, stream)
    stream.close()
    resumed = await Entries.resume(server.port, transport, brief["id"])
    assert await resumed.entry() == ("notification_deleted", body)  # and on resume
    resumed.close()


# --- channel deliveries ---------------------------------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_unsent_emails_of_replaced_recalled_and_expired_ones_are_skipped(
        smtp_peer, start_server):
    server = await start_server(email_url=Secret(smtp_peer.url), email_from=SENDER,
                                housekeeping_interval=0.2)
    orchestrator = server.services.orchestrator
    orchestrator.backoff_base = 60.0  # a failed first attempt waits: unsent for the test
    api = Api(server.port)
    await profile(api, email="alice@example.com")
    smtp_peer.down()
    replaced = await notify(api, title="running", key="build-7")
    recalled = await notify(api, title="sent by mistake")
    expired = await notify(api, title="code 123456", ttl=1)
    for made in (replaced, recalled, expired):
        await until(api, made, lambda ds: len(ds) == 1 and len(ds[0]["history"]) >= 1)
    smtp_peer.up()
    passed = await notify(api, title="passed", key="build-7")
    await recall(api, recalled)
    for made, why in ((replaced, "replaced"), (recalled, "recalled"), (expired, "expired")):
        [d] = await until(api, made, lambda ds: ds[0]["status"] == "skipped", timeout=10)
        assert d["last_error"] == why
    [got] = await smtp_peer.inbox.arrived(1, timeout=5)
    assert got.message["Subject"] == "passed"
    [d] = await until(api, passed, lambda ds: ds[0]["status"] == "sent")
    # One replaced in the batch that created it, before its deliveries were planned: they are
    # planned as skipped.
    publisher = server.services.publisher
    first, second = await asyncio.gather(*(publisher.create(validation.notifications(
        {"user_id": "alice", "title": title, "key": "fast"}, "acme")[0])
        for title in ("v1", "v2")))
    v1, v2 = first.notifications[0]["id"], second.notifications[0]
    assert v2["replaces"] == v1
    [d] = await until(api, v1, lambda ds: len(ds) == 1 and ds[0]["status"] == "skipped")
    assert d["last_error"] == "replaced"
    [d] = await until(api, v2["id"], lambda ds: len(ds) == 1 and ds[0]["status"] == "sent")
    assert [m.message["Subject"] for m in await smtp_peer.inbox.arrived(2)] == ["passed", "v2"]
    assert len(smtp_peer.inbox) == 2


# --- bad input -------------------------------------------------------------------------------

BAD = [
    ({"key": ""}, "key"), ({"key": "k" * 201}, "key"), ({"key": 7}, "key"),
    ({"key": "a\nb"}, "key"), ({"ttl": 0}, "ttl"), ({"ttl": -5}, "ttl"), ({"ttl": "60"}, "ttl"),
    ({"ttl": True}, "ttl"), ({"ttl": 1.5}, "ttl"), ({"ttl": 10**12}, "ttl"),
    ({"ttl": 60, "expires_at": "2100-01-01T00:00:00Z"}, "ttl"),
    ({"expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),
    ({"expires_at": "tomorrow"}, "expires_at"), ({"expires_at": "2030-01-01T00:00:00"},
                                                 "expires_at"),
    ({"expires_at": 1893456000}, "expires_at"), ({"expires_at": "9999-12-31T23:59:59Z"},
                                                 "expires_at"),
]


@pytest.mark.gen_test(timeout=30)
async def test_each_new_fields_bad_input_is_a_400_naming_it(server, api):
    for extra, field in BAD:
        body = {"user_id": "alice", "title": "x", **extra}
        answer = await api.json("POST", "/api/notifications", body, SERVICE, expect=400)
        assert answer["error"]["field"] == field, (extra, answer)
    assert await inbox_ids(server.port, ALICE) == []


async def _ids(api: Api, tok: str, expected: list[int]) -> bool:
    page = await api.json("GET", "/api/notifications", tok=tok)
    return [n["id"] for n in page["notifications"]] == expected


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).isoformat()
