"""Retention and honest replay, end to end: PUT/GET /api/tenant, housekeeping that removes what
a tenant no longer keeps, and the `reset` a stream sends first when a resume cursor points
before what is kept (cursor_expired) or after the newest id there is (cursor_unknown)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tidings.config import Secret

from .clients import Api, SSEClient, WSClient, eventually, inbox_ids, token
from .deliveries import SENDER, notify, profile, settled, until

pytest_plugins = ["tests.peers.fixtures"]

ADMIN = token(user="root", role="admin")
SERVICE = token(user="backend", role="service")
ALICE = token(user="alice")
STREAMS = ["websocket", "sse-header", "sse-query", "sse-since"]


class Stream:
    """A WebSocket or SSE stream of alice's, read as (kind, body) pairs: a notification's
    body is the notification; any other's is the frame without `type` (SSE: the data)."""

    def __init__(self, client: WSClient | SSEClient, connected: dict[str, Any]) -> None:
        self.client = client
        self.connected = connected

    @classmethod
    async def open(cls, port: int, transport: str, since: int | None) -> Stream:
        cursor = None if since is None else str(since)
        if transport == "websocket":
            ws = await WSClient.open(port, ALICE, since=cursor)
            return cls(ws, ws.hello)
        if transport == "sse-header":
            sse = await SSEClient.open(port, ALICE, headers={"Last-Event-ID": cursor}
                                       if cursor is not None else None)
        else:
            name = "last_event_id" if transport == "sse-query" else "since"
            sse = await SSEClient.open(port, ALICE, **{name: cursor})
        assert sse.status == 200, sse.body
        first = await sse.event()
        assert first["event"] == "connected", first
        return cls(sse, first["data"])

    async def next(self) -> tuple[str, Any]:
        if isinstance(self.client, WSClient):
            frame = await self.client.next()
            kind = frame.pop("type")
            return kind, frame["notification"] if kind == "notification" else frame
        event = await self.client.event()
        while event["event"] == "heartbeat":
            event = await self.client.event()
        if event["event"] == "notification":
            assert int(event["id"]) == event["data"]["id"]
        return event["event"], event["data"]

    def close(self) -> None:
        self.client.close()


async def send(api: Api, n: int, tenant: str = "acme", **target: Any) -> list[int]:
    tok = SERVICE if tenant == "acme" else token(tenant=tenant, user="backend", role="service")
    target = target or {"user_id": "alice"}
    return [(await api.send(tok, title=f"#{i}", **target))["notification"]["id"]
            for i in range(n)]


async def keep_newest(server: Any, api: Api, count: int) -> None:
    await api.json("PUT", "/api/tenant", {"retention_count": count}, ADMIN)
    await server.services.retention.run_once()


# --- PUT / GET /api/tenant ---------------------------------------------------------------

@pytest.mark.gen_test
async def test_an_admin_sets_and_reads_the_tenants_retention(server, api):
    forever = {"tenant_id": "acme", "retention_days": None, "retention_count": None,
               "pruned_through": 0}
    assert await api.json("GET", "/api/tenant", tok=ADMIN) == forever
    assert await api.json("PUT", "/api/tenant", {"retention_days": 30}, ADMIN) == {
        **forever, "retention_days": 30}
    # Each field is optional: what is not named stays; null is forever.
    assert await api.json("PUT", "/api/tenant", {"retention_count": 1000}, ADMIN) == {
        **forever, "retention_days": 30, "retention_count": 1000}
    assert await api.json("PUT", "/api/tenant", {"retention_days": None}, ADMIN) == {
        **forever, "retention_count": 1000}
    assert await api.json("GET", "/api/tenant", tok=ADMIN) == {**forever,
                                                                "retention_count": 1000}
    other = token(tenant="globex", user="root", role="admin")
    assert (await api.json("GET", "/api/tenant", tok=other))["retention_count"] is None


@pytest.mark.gen_test
async def test_only_an_admin_may_and_bad_input_is_a_400_naming_the_field(server, api):
    for who in (ALICE, SERVICE):
        for method, body in (("GET", None), ("PUT", {"retention_days": 1})):
            r = await api.call(method, "/api/tenant", body, who)
            assert r.code == 403, (method, r.body)
    assert (await api.call("GET", "/api/tenant")).code == 401
    bad = [0, -1, 1.5, "7", True, [], {}, 10**20]
    for field, too_many in (("retention_days", 3651), ("retention_count", 10_000_001)):
        for value in [*bad, too_many]:
            error = await api.json("PUT", "/api/tenant", {field: value}, ADMIN, expect=400)
            assert error["error"]["field"] == field, (field, value)
    error = await api.json("PUT", "/api/tenant", {"retention": 3}, ADMIN, expect=400)
    assert error["error"]["field"] == "retention"
    for raw in (b"[]", b"nope", b""):
        error = await api.json("PUT", "/api/tenant", tok=ADMIN, raw=raw, expect=400)
        assert error["error"]["field"] == "body"
    assert (await api.json("GET", "/api/tenant", tok=ADMIN))["retention_days"] is None


# --- housekeeping ------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_housekeeping_keeps_the_newest_n_of_the_tenant_and_no_other(start_server):
    server = await start_server(housekeeping_interval=0.05)
    api = Api(server.port)
    direct = await send(api, 4)
    broadcasts = await send(api, 3, broadcast=True)
    others = await send(api, 6, tenant="globex")
    await api.json("PUT", "/api/tenant", {"retention_count": 5}, ADMIN)
    # No wake from the PUT needed: the loop runs every 0.05 s; poll for its work.
    newest = sorted(direct + broadcasts)[-5:]
    await eventually(lambda: _ids_are(server.port, ALICE, newest))
    await api.send(SERVICE, user_id="bob", title="bob's counts too")
    await eventually(lambda: _ids_are(server.port, ALICE, newest[1:]))
    globex = token(tenant="globex", user="alice")
    assert await inbox_ids(server.port, globex) == others
    settings = await api.json("GET", "/api/tenant", tok=ADMIN)
    assert settings["pruned_through"] == newest[0]


async def _ids_are(port: int, tok: str, expected: list[int]) -> bool:
    return await inbox_ids(port, tok) == expected


@pytest.mark.gen_test(timeout=30)
async def test_housekeeping_removes_what_is_older_than_retention_days(server, api):
    made = await send(api, 3)
    retention = server.services.retention
    await api.json("PUT", "/api/tenant", {"retention_days": 2}, ADMIN)
    await retention.run_once()
    assert await inbox_ids(server.port, ALICE) == made  # all younger than two days
    retention.clock = lambda: time.time() + 2 * 86400 + 60  # two days and a minute later
    await send(api, 1, tenant="globex")
    await retention.run_once()
    assert await inbox_ids(server.port, ALICE) == []
    assert (await api.json("GET", "/api/tenant", tok=ADMIN))["pruned_through"] == made[-1]
    assert len(await inbox_ids(server.port, token(tenant="globex", user="alice"))) == 1
    # Stats and a snapshot see only what is kept.
    assert (await api.json("GET", "/api/notifications/stats", tok=ALICE))["total"] == 0


@pytest.mark.gen_test(timeout=20)
async def test_a_pending_email_of_a_removed_notification_is_dropped_quietly(smtp_peer,
                                                                            start_server):
    server = await start_server(email_url=Secret(smtp_peer.url), email_from=SENDER)
    orchestrator = server.services.orchestrator
    orchestrator.backoff_base, orchestrator.max_attempts = 0.02, 50  # retries in ms, not s
    api = Api(server.port)
    await profile(api, email="alice@example.com")
    smtp_peer.down()
    old = await notify(api, title="removed before it could be sent")
    await until(api, old, lambda ds: len(ds) == 1 and len(ds[0]["history"]) >= 1)
    kept = await notify(api, title="kept")
    await keep_newest(server, api, 1)
    gone = await api.call("GET", f"/api/notifications/{old}/deliveries", tok=ADMIN)
    assert gone.code == 404
    smtp_peer.up()
    [got] = await smtp_peer.inbox.arrived(1, timeout=5)
    assert got.message["Subject"] == "kept"
    [d] = await settled(api, kept)
    assert d["status"] == "sent"
    assert orchestrator.running() and len(smtp_peer.inbox) == 1
    assert (await api.call("GET", "/healthz")).code == 200


# --- honest replay -----------------------------------------------------------------------

@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("transport", STREAMS)
async def test_a_cursor_before_what_is_kept_gets_cursor_expired_then_the_kept_ones(
        server, api, transport):
    made = await send(api, 6)
    await keep_newest(server, api, 3)
    stream = await Stream.open(server.port, transport, made[0])
    assert stream.connected["last_id"] == made[-1]
    assert await stream.next() == ("reset", {"reason": "cursor_expired",
                                             "oldest_id": made[3]})
    assert [await stream.next() for _ in range(3)] == [
        ("notification", n) for n in await _notifications(api, made[3:])]
    live = await send(api, 1)
    kind, body = await stream.next()
    assert (kind, body["id"]) == ("notification", live[0])  # nothing else came in between
    stream.close()


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("transport", STREAMS)
async def test_a_cursor_inside_what_is_kept_replays_without_a_reset(server, api, transport):
    made = await send(api, 6)
    await keep_newest(server, api, 3)
    for since in (made[2], made[4]):  # the last removed id is a cursor that missed nothing
        stream = await Stream.open(server.port, transport, since)
        got = [await stream.next() for _ in range(len([m for m in made if m > since]))]
        assert [(kind, body["id"]) for kind, body in got] == [
            ("notification", m) for m in made if m > since]
        stream.close()


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("transport", STREAMS)
async def test_a_cursor_after_the_newest_id_gets_cursor_unknown_and_then_live(
        server, api, transport):
    made = await send(api, 4)
    await send(api, 2, tenant="globex")  # the id sequence is global: its ids are not unknown
    await keep_newest(server, api, 2)
    last = made[-1] + 2
    stream = await Stream.open(server.port, transport, last)  # known: no reset, no replay
    live = await send(api, 1)
    kind, body = await stream.next()
    assert (kind, body["id"]) == ("notification", live[0])
    stream.close()
    stream = await Stream.open(server.port, transport, live[0] + 1000)
    assert await stream.next() == ("reset", {"reason": "cursor_unknown", "oldest_id": made[2]})
    live = await send(api, 1)
    kind, body = await stream.next()
    assert (kind, body["id"]) == ("notification", live[0])
    stream.close()
    # Resuming from the connection's last_id after that is honest again.
    again = await Stream.open(server.port, transport, stream.connected["last_id"])
    kind, body = await again.next()
    assert (kind, body["id"]) == ("notification", live[0])
    again.close()


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("transport", STREAMS)
async def test_since_zero_never_gets_a_reset(server, api, transport):
    made = await send(api, 4)
    await keep_newest(server, api, 2)
    stream = await Stream.open(server.port, transport, 0)
    assert [(k, b["id"]) for k, b in [await stream.next(), await stream.next()]] == [
        ("notification", made[2]), ("notification", made[3])]
    stream.close()


@pytest.mark.gen_test(timeout=30)
async def test_with_nothing_left_oldest_id_is_zero(server, api):
    made = await send(api, 3)
    await keep_newest(server, api, 1)
    await api.json("DELETE", f"/api/notifications/{made[2]}", tok=ALICE, expect=204)
    stream = await Stream.open(server.port, "websocket", made[0])
    assert await stream.next() == ("reset", {"reason": "cursor_expired", "oldest_id": 0})
    stream.close()
    stream = await Stream.open(server.port, "sse-header", 10**12)
    assert await stream.next() == ("reset", {"reason": "cursor_unknown", "oldest_id": 0})
    stream.close()


async def _notifications(api: Api, wanted: list[int]) -> list[dict[str, Any]]:
    page = await api.json("GET", "/api/notifications?limit=200", tok=ALICE)
    by_id = {n["id"]: n for n in page["notifications"]}
    return [by_id[i] for i in wanted]
