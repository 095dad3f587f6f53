"""Every row of the contract's REST table, with its error cases."""

import json

import pytest

from .clients import SSEClient, WSClient, token

SERVICE = token(user="backend", role="service")
ADMIN = token(user="root", role="admin")
ALICE = token(user="alice")
BOB = token(user="bob")


# --- POST /api/notifications -----------------------------------------------------------

@pytest.mark.gen_test
async def test_create_unicast_has_the_contract_shape_and_counts_deliveries(server, api):
    ws = await WSClient.open(server.port, ALICE, tenant_id="acme")
    sse = await SSEClient.open(server.port, ALICE)
    body = await api.send(SERVICE, user_id="alice", title="Build finished", message="main is green",
                          type="success", priority="high", data={"build": 7})
    n = body["notification"]
    assert body["delivery"] == {"websocket": 1, "sse": 1}
    assert set(n) == {"id", "tenant_id", "user_id", "type", "title", "message", "data",
                      "priority", "created_at", "read_at"}
    assert (n["tenant_id"], n["user_id"], n["type"], n["title"], n["message"], n["data"],
            n["priority"], n["read_at"]) == ("acme", "alice", "success", "Build finished",
                                             "main is green", {"build": 7}, "high", None)
    assert isinstance(n["id"], int) and n["created_at"].endswith("Z")
    assert (await ws.notifications(1))[0] == n
    assert (await sse.notifications(1))[0] == n
    ws.close()
    sse.close()


@pytest.mark.gen_test
async def test_create_defaults_and_growing_ids(server, api):
    first = (await api.send(ADMIN, user_id="alice", title="a"))["notification"]
    second = (await api.send(ADMIN, user_id="alice", title="b"))["notification"]
    assert (first["type"], first["priority"], first["message"], first["data"]) == \
        ("info", "normal", "", {})
    assert second["id"] > first["id"]
    assert (await api.send(ADMIN, user_id="nobody-online", title="c"))["delivery"] == \
        {"websocket": 0, "sse": 0}


@pytest.mark.gen_test
async def test_create_for_user_ids_answers_a_list_and_reaches_each(server, api):
    alice = await WSClient.open(server.port, ALICE)
    bob = await WSClient.open(server.port, BOB)
    body = await api.send(SERVICE, user_ids=["alice", "bob", "carol"], title="deploy")
    assert "notification" not in body
    assert [n["user_id"] for n in body["notifications"]] == ["alice", "bob", "carol"]
    assert body["delivery"] == {"websocket": 2, "sse": 0}
    assert (await alice.notifications(1))[0]["id"] == body["notifications"][0]["id"]
    assert (await bob.notifications(1))[0]["id"] == body["notifications"][1]["id"]
    alice.close()
    bob.close()


@pytest.mark.gen_test
async def test_broadcast_reaches_every_user_of_the_tenant_only(server, api):
    alice = await WSClient.open(server.port, ALICE)
    bob = await SSEClient.open(server.port, BOB)
    other = await WSClient.open(server.port, token(tenant="globex", user="alice"))
    body = await api.send(SERVICE, broadcast=True, title="maintenance")
    n = body["notification"]
    assert n["user_id"] is None and body["delivery"] == {"websocket": 1, "sse": 1}
    assert (await alice.notifications(1))[0]["id"] == n["id"]
    assert (await bob.notifications(1))[0]["id"] == n["id"]
    # The other tenant's client gets its own tenant's broadcast next, not ours.
    mine = await api.send(token(tenant="globex", user="svc", role="service"), broadcast=True,
                          title="theirs")
    assert (await other.notifications(1))[0]["id"] == mine["notification"]["id"]
    for c in (alice, bob, other):
        c.close()


@pytest.mark.gen_test
async def test_a_user_may_not_send(server, api):
    body = await api.json("POST", "/api/notifications", {"user_id": "bob", "title": "x"}, ALICE,
                          expect=403)
    assert body["error"]["code"] == "forbidden"
    inbox = await api.json("GET", "/api/notifications", tok=BOB)
    assert inbox["notifications"] == []


BAD_BODIES = [
    ({"user_id": "bob"}, "title"),
    ({"user_id": "bob", "title": ""}, "title"),
    ({"user_id": "bob", "title": "   "}, "title"),
    ({"user_id": "bob", "title": 5}, "title"),
    ({"user_id": "bob", "title": "x" * 501}, "title"),
    ({"user_id": "bob", "title": "t", "message": ["no"]}, "message"),
    ({"user_id": "bob", "title": "t", "message": "m" * 10_001}, "message"),
    ({"user_id": "bob", "title": "t", "type": "gossip"}, "type"),
    ({"user_id": "bob", "title": "t", "priority": "whenever"}, "priority"),
    ({"user_id": "bob", "title": "t", "data": [1, 2]}, "data"),
    ({"user_id": "bob", "title": "t", "data": "text"}, "data"),
    ({"user_id": "bob", "title": "t", "data": {"big": "x" * 70_000}}, "data"),
    ({"user_id": "bob", "title": "t", "channels": ["pigeon"]}, "channels"),
    ({"user_id": "", "title": "t"}, "user_id"),
    ({"user_id": 7, "title": "t"}, "user_id"),
    ({"title": "t"}, "user_id"),
    ({"user_id": "bob", "broadcast": True, "title": "t"}, "user_id"),
    ({"user_id": "bob", "user_ids": ["a"], "title": "t"}, "user_id"),
    ({"user_ids": [], "title": "t"}, "user_ids"),
    ({"user_ids": "bob", "title": "t"}, "user_ids"),
    ({"user_ids": ["ok", 3], "title": "t"}, "user_ids"),
    ({"user_ids": [f"u{i}" for i in range(1001)], "title": "t"}, "user_ids"),
    ({"broadcast": "yes", "title": "t"}, "broadcast"),
]


@pytest.mark.parametrize("body,field", BAD_BODIES)
@pytest.mark.gen_test
async def test_bad_input_is_400_naming_the_field(server, api, body, field):
    error = (await api.json("POST", "/api/notifications", body, SERVICE, expect=400))["error"]
    assert error["code"] == "invalid_request"
    assert error["field"] == field and field in error["message"]


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b"\xff\xfe"])
@pytest.mark.gen_test
async def test_a_body_that_is_not_a_json_object_is_400(server, api, raw):
    response = await api.call("POST", "/api/notifications", tok=SERVICE, raw=raw)
    assert response.code == 400
    assert json.loads(response.body)["error"]["field"] == "body"


@pytest.mark.gen_test
async def test_an_overlong_idempotency_key_is_400(server, api):
    body = await api.json("POST", "/api/notifications", {"user_id": "bob", "title": "t"},
                          SERVICE, expect=400, headers={"Idempotency-Key": "k" * 256})
    assert body["error"]["field"] == "Idempotency-Key"


# --- GET /api/notifications --------------------------------------------------------------

async def _fill(api, n, **target):
    return [(await api.send(SERVICE, title=f"n{i}", **target))["notification"]["id"]
            for i in range(n)]


@pytest.mark.gen_test
async def test_inbox_is_newest_first_with_direct_and_tenant_wide_only(server, api):
    mine = await _fill(api, 3, user_id="alice")
    wide = await _fill(api, 2, broadcast=True)
    await _fill(api, 2, user_id="bob")
    await api.send(token(tenant="globex", user="s", role="service"), user_id="alice", title="x")
    await api.send(token(tenant="globex", user="s", role="service"), broadcast=True, title="y")
    inbox = await api.json("GET", "/api/notifications", tok=ALICE)
    assert [n["id"] for n in inbox["notifications"]] == sorted(mine + wide, reverse=True)
    assert inbox["next_before"] is None
    assert {n["tenant_id"] for n in inbox["notifications"]} == {"acme"}


@pytest.mark.gen_test
async def test_inbox_pages_with_limit_and_before(server, api):
    ids = await _fill(api, 5, user_id="alice")
    ids[1:1] = await _fill(api, 2, broadcast=True)
    expected = sorted(ids, reverse=True)
    seen, before = [], None
    while True:
        query = "?limit=3" + (f"&before={before}" if before else "")
        page = await api.json("GET", "/api/notifications" + query, tok=ALICE)
        assert len(page["notifications"]) <= 3
        seen += [n["id"] for n in page["notifications"]]
        before = page["next_before"]
        if before is None:
            break
        assert before == page["notifications"][-1]["id"]
    assert seen == expected


@pytest.mark.gen_test
async def test_inbox_unread_filter(server, api):
    ids = await _fill(api, 3, user_id="alice")
    wide = (await api.send(SERVICE, broadcast=True, title="w"))["notification"]["id"]
    await api.json("POST", f"/api/notifications/{ids[1]}/read", tok=ALICE)
    await api.json("POST", f"/api/notifications/{wide}/read", tok=ALICE)
    unread = await api.json("GET", "/api/notifications?unread=true", tok=ALICE)
    assert [n["id"] for n in unread["notifications"]] == [ids[2], ids[0]]
    everything = await api.json("GET", "/api/notifications", tok=ALICE)
    read = {n["id"]: n["read_at"] for n in everything["notifications"]}
    assert read[ids[1]] and read[wide] and read[ids[0]] is None
    # Read state of a broadcast is per user.
    bob = await api.json("GET", "/api/notifications?unread=true", tok=BOB)
    assert [n["id"] for n in bob["notifications"]] == [wide]


@pytest.mark.parametrize("query,field", [("limit=0", "limit"), ("limit=201", "limit"),
                                         ("limit=many", "limit"), ("before=x", "before"),
                                         ("before=-1", "before")])
@pytest.mark.gen_test
async def test_inbox_bad_paging_is_400(server, api, query, field):
    body = await api.json("GET", "/api/notifications?" + query, tok=ALICE, expect=400)
    assert body["error"]["field"] == field


@pytest.mark.gen_test
async def test_inbox_limit_200_is_allowed(server, api):
    assert (await api.json("GET", "/api/notifications?limit=200", tok=ALICE))["notifications"] \
        == []


# --- read, read-all, delete and their stats_update ---------------------------------------

async def _open_all(port, tok):
    ws1 = await WSClient.open(port, tok)
    ws2 = await WSClient.open(port, tok)
    sse = await SSEClient.open(port, tok)
    assert (await sse.event())["event"] == "connected"
    return ws1, ws2, sse


async def _stats_everywhere(clients):
    ws1, ws2, sse = clients
    got = [(await ws1.next_of("stats_update"))["stats"],
           (await ws2.next_of("stats_update"))["stats"],
           (await sse.next_of("stats_update"))["data"]]
    assert got[0] == got[1] == got[2], got
    return got[0]


@pytest.mark.gen_test
async def test_read_marks_one_and_updates_every_connection_of_the_user(server, api):
    ids = await _fill(api, 2, user_id="alice")
    clients = await _open_all(server.port, ALICE)
    bob = await WSClient.open(server.port, BOB)
    body = await api.json("POST", f"/api/notifications/{ids[0]}/read", tok=ALICE)
    assert body == {"id": ids[0], "stats": {"total": 2, "unread": 1}}
    assert await _stats_everywhere(clients) == {"total": 2, "unread": 1}
    # Reading it again changes nothing and is not an error.
    await api.json("POST", f"/api/notifications/{ids[0]}/read", tok=ALICE)
    # Bob got no stats_update of Alice's: his next frame is his own pong.
    bob.send({"type": "ping"})
    assert (await bob.next())["type"] == "pong"
    for c in (*clients, bob):
        c.close()


@pytest.mark.gen_test
async def test_read_of_what_is_not_in_the_inbox_is_404(server, api):
    bobs = (await api.send(SERVICE, user_id="bob", title="b"))["notification"]["id"]
    theirs = (await api.send(token(tenant="globex", user="s", role="service"), broadcast=True,
                             title="g"))["notification"]["id"]
    for target in (bobs, theirs, 999_999):
        for method, path in (("POST", f"/api/notifications/{target}/read"),
                             ("DELETE", f"/api/notifications/{target}")):
            body = await api.json(method, path, tok=ALICE, expect=404)
            assert body["error"]["code"] == "not_found"


@pytest.mark.gen_test
async def test_read_all_marks_everything_and_updates_every_connection(server, api):
    await _fill(api, 3, user_id="alice")
    await _fill(api, 1, broadcast=True)
    clients = await _open_all(server.port, ALICE)
    body = await api.json("POST", "/api/notifications/read-all", tok=ALICE)
    assert body["stats"] == {"total": 4, "unread": 0}
    assert await _stats_everywhere(clients) == {"total": 4, "unread": 0}
    inbox = await api.json("GET", "/api/notifications?unread=true", tok=ALICE)
    assert inbox["notifications"] == []
    # What arrives after read-all is unread; bob's broadcast stays unread for him.
    await _fill(api, 1, user_id="alice")
    assert (await api.json("GET", "/api/notifications/stats", tok=ALICE))["unread"] == 1
    assert (await api.json("GET", "/api/notifications/stats", tok=BOB))["unread"] == 1
    for c in clients:
        c.close()


@pytest.mark.gen_test
async def test_delete_removes_from_own_inbox_only(server, api):
    mine = await _fill(api, 2, user_id="alice")
    wide = (await api.send(SERVICE, broadcast=True, title="w"))["notification"]["id"]
    clients = await _open_all(server.port, ALICE)
    response = await api.call("DELETE", f"/api/notifications/{mine[0]}", tok=ALICE)
    assert response.code == 204
    assert await _stats_everywhere(clients) == {"total": 2, "unread": 2}
    assert (await api.call("DELETE", f"/api/notifications/{wide}", tok=ALICE)).code == 204
    assert await _stats_everywhere(clients) == {"total": 1, "unread": 1}
    inbox = await api.json("GET", "/api/notifications", tok=ALICE)
    assert [n["id"] for n in inbox["notifications"]] == [mine[1]]
    assert (await api.call("DELETE", f"/api/notifications/{mine[0]}", tok=ALICE)).code == 404
    bob = await api.json("GET", "/api/notifications", tok=BOB)
    assert [n["id"] for n in bob["notifications"]] == [wide]
    for c in clients:
        c.close()


# --- stats and connections ----------------------------------------------------------------

@pytest.mark.gen_test
async def test_stats_counts_total_unread_and_by_type(server, api):
    ids = [(await api.send(SERVICE, user_id="alice", title="t", type=t))["notification"]["id"]
           for t in ("info", "info", "error", "warning")]
    await api.send(SERVICE, broadcast=True, title="b", type="success")
    await api.send(SERVICE, user_id="bob", title="not mine", type="error")
    await api.json("POST", f"/api/notifications/{ids[0]}/read", tok=ALICE)
    await api.call("DELETE", f"/api/notifications/{ids[2]}", tok=ALICE)
    stats = await api.json("GET", "/api/notifications/stats", tok=ALICE)
    assert stats == {"total": 4, "unread": 3,
                     "by_type": {"info": 2, "warning": 1, "success": 1}}


@pytest.mark.gen_test
async def test_connections_a_user_sees_its_own_an_admin_the_tenant(server, api):
    a1 = await WSClient.open(server.port, ALICE)
    a2 = await SSEClient.open(server.port, ALICE)
    b1 = await WSClient.open(server.port, BOB)
    g1 = await WSClient.open(server.port, token(tenant="globex", user="alice"))
    path = "/api/notifications/connections"
    assert await api.json("GET", path, tok=ALICE) == \
        {"tenant_id": "acme", "websocket": 1, "sse": 1, "total": 2, "users_online": 1}
    assert await api.json("GET", path, tok=token(user="carol")) == \
        {"tenant_id": "acme", "websocket": 0, "sse": 0, "total": 0, "users_online": 0}
    assert await api.json("GET", path, tok=ADMIN) == \
        {"tenant_id": "acme", "websocket": 2, "sse": 1, "total": 3, "users_online": 2}
    b1.close()
    assert await b1.closed() is not None or True
    for c in (a1, a2, g1):
        c.close()


# --- health, metrics, unknown routes -------------------------------------------------------

@pytest.mark.gen_test
async def test_healthz(server, api):
    assert await api.json("GET", "/healthz") == {"status": "ok"}


@pytest.mark.gen_test
async def test_metrics_on_loopback_in_prometheus_text(server, api):
    ws = await WSClient.open(server.port, ALICE)
    await api.send(SERVICE, user_id="alice", title="m")
    response = await api.call("GET", "/metrics")
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.body.decode()
    assert "# TYPE tidings_connections gauge" in text
    assert 'tidings_connections{tenant="acme",transport="websocket"} 1' in text
    assert "tidings_notifications_created_total 1" in text
    assert "tidings_deliveries_total 1" in text
    ws.close()


@pytest.mark.gen_test
async def test_unknown_route_and_method_are_json_errors(server, api):
    response = await api.call("GET", "/api/nothing-here", tok=ALICE)
    assert response.code == 404 and json.loads(response.body)["error"]["code"] == "not_found"
    response = await api.call("PUT", "/api/notifications/stats", tok=ALICE, body={})
    assert response.code == 405
    assert json.loads(response.body)["error"]["code"] == "method_not_allowed"


@pytest.mark.gen_test
async def test_a_flag_that_is_neither_true_nor_false_is_named(server, api):
    body = await api.json("GET", "/api/notifications?unread=maybe", tok=token(), expect=400)
    assert body["error"]["field"] == "unread"
    admin = token(role="admin", user="root")
    body = await api.json("GET", "/api/preferences?tenant_default=perhaps", tok=admin,
                          expect=400)
    assert body["error"]["field"] == "tenant_default"
