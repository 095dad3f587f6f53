"""The Python client (clients/python, tidings_client) against the real server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web
from tidings_client import (
    AsyncTidings,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    Notification,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    Tidings,
    TidingsError,
    Unauthorized,
    Unavailable,
)
from tornado.testing import bind_unused_port

from server import Server

from .clients import WAIT, token

SERVICE = token(user="backend", role="service")
ADMIN = token(user="root", role="admin")
ALICE = token(user="alice")


def url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


async def take(stream: Any, n: int, timeout: float = WAIT) -> list[Any]:
    """The next n events of a subscription."""
    async def collect() -> list[Any]:
        return [await anext(stream) for _ in range(n)]
    return await asyncio.wait_for(collect(), timeout)


@pytest.mark.gen_test
async def test_notify_inbox_read_and_delete_round_trip(server):
    async with AsyncTidings(url(server.port), SERVICE) as backend, \
            AsyncTidings(url(server.port), ALICE, tenant="acme") as alice:
        created = await backend.notify("Build finished", user_id="alice", message="main is green",
                                       type="success", priority="high", data={"build": 7})
        n = created.notification
        assert isinstance(n, Notification)
        assert (n.user_id, n.title, n.message, n.type, n.priority, n.data, n.read_at) == (
            "alice", "Build finished", "main is green", "success", "high", {"build": 7}, None)
        assert created.delivery == {"websocket": 0, "sse": 0} and not created.replayed
        several = await backend.notify("Deploy", user_ids=["alice", "bob"])
        assert [x.user_id for x in several.notifications] == ["alice", "bob"]
        everyone = await backend.broadcast("Maintenance at noon")
        assert everyone.notification.user_id is None

        inbox = await alice.inbox()
        assert [x.id for x in inbox.notifications] == [everyone.ids[0], several.ids[0], n.id]
        page = await alice.inbox(limit=1, before=everyone.ids[0])
        assert [x.id for x in page.notifications] == [several.ids[0]]
        assert page.next_before == several.ids[0]
        assert (await alice.stats()).unread == 3
        assert (await alice.read(n.id)).unread == 2
        assert [x.id for x in (await alice.inbox(unread=True)).notifications] == [
            everyone.ids[0], several.ids[0]]
        assert (await alice.read_all()).unread == 0
        await alice.delete(n.id)
        stats = await alice.stats()
        assert (stats.total, stats.unread) == (2, 0)


@pytest.mark.gen_test
async def test_idempotency_key_replays_the_first_answer(server):
    async with AsyncTidings(url(server.port), SERVICE) as backend:
        first = await backend.notify("Invoice paid", user_id="alice", idempotency_key="inv-1")
        again = await backend.notify("Invoice paid", user_id="alice", idempotency_key="inv-1")
    assert again.replayed and not first.replayed
    assert again.ids == first.ids
    async with AsyncTidings(url(server.port), ALICE) as alice:
        assert len((await alice.inbox()).notifications) == 1


@pytest.mark.gen_test
async def test_the_blocking_client_does_the_same(server):
    def run() -> tuple[Any, Any, Any]:
        with Tidings(url(server.port), SERVICE) as backend, Tidings(url(server.port), ALICE) as me:
            created = backend.notify("Hello", user_id="alice", channels=["email"])
            inbox = me.inbox()
            return created, inbox, me.read(created.notification.id)
    created, inbox, stats = await asyncio.to_thread(run)
    assert inbox.notifications[0].id == created.notification.id
    assert stats.unread == 0


@pytest.mark.gen_test
async def test_users_preferences_webhook_templates_and_deliveries(server):
    async with AsyncTidings(url(server.port), ADMIN) as admin, \
            AsyncTidings(url(server.port), ALICE) as alice:
        assert (await admin.put_user("alice", email="alice@example.com"))["email"] == \
            "alice@example.com"
        assert (await admin.user("alice"))["email"] == "alice@example.com"
        prefs = await alice.put_preferences({"channels": {"default": {"email": False}}})
        assert prefs["channels"]["default"]["email"] is False
        assert (await alice.preferences())["channels"]["default"]["email"] is False
        made = await admin.put_webhook("https://hooks.example.com/tidings")
        assert made.secret and made.secret.startswith("whsec_")
        assert (await admin.webhook()).secret is None
        await admin.delete_webhook()
        with pytest.raises(NotFound):
            await admin.webhook()
        await admin.put_template("info", "email", subject="{{ title }}", text="{{ message }}")
        assert (await admin.template("info", "email")).subject == "{{ title }}"
        await admin.delete_template("info", "email")
        with pytest.raises(NotFound):
            await admin.template("info", "email")
        created = await admin.notify("Hi", user_id="alice")
        assert await alice.deliveries(created.notification.id) == []


@pytest.mark.gen_test
async def test_the_servers_errors_come_as_their_classes(server):
    async with AsyncTidings(url(server.port), SERVICE) as backend, \
            AsyncTidings(url(server.port), ALICE) as alice, \
            AsyncTidings(url(server.port), "not-a-token") as nobody, \
            AsyncTidings(url(server.port), SERVICE, tenant="other") as elsewhere:
        with pytest.raises(BadRequest) as bad:
            await backend.notify("", user_id="alice")
        assert (bad.value.status, bad.value.code, bad.value.field) == (400, "invalid_request",
                                                                       "title")
        with pytest.raises(Unauthorized) as unauth:
            await nobody.inbox()
        assert unauth.value.code == "invalid_token"
        with pytest.raises(Forbidden):
            await alice.notify("Not mine to send", user_id="bob")
        with pytest.raises(Forbidden) as mismatch:
            await elsewhere.inbox()
        assert mismatch.value.code == "tenant_mismatch"
        with pytest.raises(NotFound) as missing:
            await alice.deliveries(999)
        assert missing.value.status == 404 and "not found" in missing.value.message
    for error in (bad.value, unauth.value, missing.value):
        assert isinstance(error, TidingsError)


@pytest.mark.gen_test
async def test_a_refused_stream_handshake_is_rate_limited_with_retry_after(start_server):
    server = await start_server(max_connections_per_user=1)
    async with AsyncTidings(url(server.port), ALICE) as alice:
        first = alice.subscribe(transport="sse", events=True)
        assert (await take(first, 1))[0].type == "connected"
        # The SDK retries a 429 by itself; the exception it retries is the one a REST call
        # would raise: read from the server's own answer.
        async with alice._http.stream("GET", "/api/notifications/stream") as response:
            await response.aread()
            from tidings_client.errors import from_response
            error = from_response(response.status_code, response.content, response.headers)
        assert isinstance(error, RateLimited) and error.code == "too_many_connections"
        await first.aclose()


class _Refuses(tornado.web.RequestHandler):
    """Answers with an error tidings sends but that this test cannot provoke on demand."""

    def get(self, status: str) -> None:
        self.set_status(int(status))
        if status == "429":
            self.set_header("Retry-After", "7")
        self.finish(json.dumps({"error": {"code": f"code_{status}", "message": "no"}}))


@pytest.mark.gen_test
async def test_every_status_has_its_class():
    sock, port = bind_unused_port()
    http = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/(\d+)", _Refuses)],
                                                                log_function=lambda _h: None))
    http.add_sockets([sock])
    try:
        async with AsyncTidings(url(port), "t") as client:
            for status, cls in ((400, BadRequest), (401, Unauthorized), (403, Forbidden),
                                (404, NotFound), (409, Conflict), (413, PayloadTooLarge),
                                (429, RateLimited), (500, ServerError), (503, Unavailable)):
                response = await client._http.get(f"/{status}")
                from tidings_client.errors import from_response
                error = from_response(response.status_code, response.content, response.headers)
                assert type(error) is cls and error.status == status
                assert (error.code, error.message) == (f"code_{status}", "no")
                if status == 429:
                    assert error.retry_after == 7.0
    finally:
        http.stop()


# --- subscribe ------------------------------------------------------------------------

@pytest.mark.gen_test
@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_subscribe_yields_live_notifications_after_since(server, transport):
    async with AsyncTidings(url(server.port), SERVICE) as backend, \
            AsyncTidings(url(server.port), ALICE) as alice:
        before = await backend.notify("Before", user_id="alice")
        await backend.notify("Also before", user_id="alice")
        stream = alice.subscribe(since=before.notification.id, transport=transport, events=True)
        connected = (await take(stream, 1))[0]
        assert connected.type == "connected" and connected.transport == transport
        replayed = (await take(stream, 1))[0]
        assert replayed.notification.title == "Also before"
        await backend.notify("Live", user_id="alice")
        kinds = [e.type for e in await take(stream, 1)]
        assert kinds == ["notification"]
        await stream.aclose()


@pytest.mark.gen_test
async def test_subscribe_falls_back_to_sse_when_the_websocket_is_refused(server):
    # A route the WebSocket cannot upgrade on stands for a proxy that blocks it: the same
    # server serves SSE under the normal path, so "auto" must find its way there.
    from tidings_client import subscribe as sub
    async with AsyncTidings(url(server.port), SERVICE) as backend, \
            AsyncTidings(url(server.port), ALICE) as alice:
        original = sub.WS_PATH
        sub.WS_PATH = "/ws/blocked-by-a-proxy"
        try:
            stream = alice.subscribe(transport="auto", events=True)
            connected = (await take(stream, 1))[0]
        finally:
            sub.WS_PATH = original
        assert connected.type == "connected" and connected.transport == "sse"
        await backend.notify("Through SSE", user_id="alice")
        event = (await take(stream, 1))[0]
        assert event.transport == "sse" and event.notification.title == "Through SSE"
        await stream.aclose()


@pytest.mark.gen_test
async def test_subscribe_refuses_a_bad_token_at_once(server):
    async with AsyncTidings(url(server.port), "not-a-token") as nobody:
        with pytest.raises(Unauthorized):
            await take(nobody.subscribe(), 1)


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_a_server_restart_mid_stream_loses_nothing_and_repeats_nothing(settings, transport):
    sock, port = bind_unused_port()
    server = await Server.start(settings, sockets=[sock])
    try:
        async with AsyncTidings(url(port), SERVICE) as backend, \
                AsyncTidings(url(port), ALICE) as alice:
            stream = alice.subscribe(transport=transport, events=True, backoff=0.05,
                                     max_backoff=0.2)
            assert (await take(stream, 1))[0].type == "connected"
            sent = [(await backend.notify(f"before {i}", user_id="alice")).notification.id
                    for i in range(3)]
            got = [e.id for e in await take(stream, 3)]
            await server.stop()
            # While it is down nothing answers; then a new process on the same file and port.
            server = await Server.start(settings, sockets=tornado.netutil.bind_sockets(
                port, "127.0.0.1"))
            sent += [(await backend.notify(f"after {i}", user_id="alice")).notification.id
                     for i in range(3)]
            events = []
            while len(got) < len(sent):
                event = (await take(stream, 1, timeout=20))[0]
                events.append(event.type)
                if event.type == "notification":
                    got.append(event.id)
            assert got == sent, (got, sent)
            assert "connected" in events  # it did come back by itself
            await backend.notify("one more", user_id="alice")
            last = (await take(stream, 1))[0]
            while last.type != "notification":
                last = (await take(stream, 1))[0]
            assert last.id == sent[-1] + 1
            await stream.aclose()
    finally:
        await server.stop()
