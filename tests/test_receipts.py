"""Acknowledgements and receipts end to end: an `ack` frame or POST /api/notifications/ack,
read back per notification, recipient and connection from GET .../receipts."""

from __future__ import annotations

import json

import pytest

from tidings import receipts as receipts_module

from .clients import Api, SSEClient, WSClient, eventually, token

SERVICE = token(user="backend", role="service")
ADMIN = token(user="root", role="admin")
ALICE, BOB = token(user="alice"), token(user="bob")
OTHER_TENANT = token(tenant="globex", user="alice", role="admin")


async def receipts(api: Api, nid: int, tok: str = ADMIN) -> list[dict]:
    return list((await api.json("GET", f"/api/notifications/{nid}/receipts", tok=tok))["receipts"])


def by_connection(entry: dict) -> dict[str, dict]:
    return {c["connection_id"]: c for c in entry["connections"]}


async def acknowledged(api: Api, nid: int, connection_id: str, tok: str = ADMIN) -> bool:
    [entry] = await receipts(api, nid, tok)
    found = by_connection(entry).get(connection_id)
    return found is not None and found["acknowledged_at"] is not None


@pytest.mark.gen_test
async def test_two_websockets_one_acknowledges(server, api):
    first, second = await WSClient.open(server.port, ALICE), await WSClient.open(server.port, ALICE)
    nid = (await api.send(SERVICE, user_id="alice", title="two tabs"))["notification"]["id"]
    for ws in (first, second):
        await ws.notifications(1)
    first.send({"type": "ack", "ids": [nid]})
    await eventually(lambda: acknowledged(api, nid, first.hello["connection_id"]))

    [entry] = await receipts(api, nid)
    assert entry["user_id"] == "alice" and entry["read_at"] is None
    assert entry["acknowledged_at"] is not None
    conns = by_connection(entry)
    assert set(conns) == {first.hello["connection_id"], second.hello["connection_id"]}
    assert all(c["transport"] == "websocket" and c["pushed_at"] for c in conns.values())
    assert conns[second.hello["connection_id"]]["acknowledged_at"] is None

    await api.json("POST", f"/api/notifications/{nid}/read", tok=ALICE)
    [entry] = await receipts(api, nid)
    assert entry["read_at"] is not None
    first.close()
    second.close()


@pytest.mark.gen_test
async def test_sse_acknowledges_over_rest_one_connection_or_all(server, api):
    streams = [await SSEClient.open(server.port, ALICE) for _ in range(2)]
    ids = [(await s.next_of("connected"))["data"]["connection_id"] for s in streams]
    named = (await api.send(SERVICE, user_id="alice", title="named"))["notification"]["id"]
    unnamed = (await api.send(SERVICE, user_id="alice", title="unnamed"))["notification"]["id"]
    for s in streams:
        await s.next_of("notification")
        await s.next_of("notification")

    await api.json("POST", "/api/notifications/ack", {"ids": [named], "connection_id": ids[0]},
                   tok=ALICE, expect=204)
    await api.json("POST", "/api/notifications/ack", {"ids": [unnamed]}, tok=ALICE, expect=204)
    [entry] = await receipts(api, named)
    conns = by_connection(entry)
    assert conns[ids[0]]["acknowledged_at"] and conns[ids[1]]["acknowledged_at"] is None
    [entry] = await receipts(api, unnamed)
    assert all(c["acknowledged_at"] and c["transport"] == "sse" for c in entry["connections"])
    assert len(entry["connections"]) == 2
    for s in streams:
        s.close()


@pytest.mark.gen_test
async def test_a_user_sees_only_its_own_entry_even_of_a_broadcast(server, api):
    alice, bob = await WSClient.open(server.port, ALICE), await WSClient.open(server.port, BOB)
    nid = (await api.send(SERVICE, broadcast=True, title="all"))["notification"]["id"]
    await alice.notifications(1)
    await bob.notifications(1)
    assert {e["user_id"] for e in await receipts(api, nid)} == {"alice", "bob"}
    assert [e["user_id"] for e in await receipts(api, nid, ALICE)] == ["alice"]
    assert [e["user_id"] for e in await receipts(api, nid, BOB)] == ["bob"]
    alice.close()
    bob.close()


@pytest.mark.gen_test
async def test_another_users_or_tenants_notification_is_404(server, api):
    nid = (await api.send(SERVICE, user_id="alice", title="alice's"))["notification"]["id"]
    for tok in (BOB, OTHER_TENANT):
        response = await api.call("GET", f"/api/notifications/{nid}/receipts", tok=tok)
        assert response.code == 404
    response = await api.call("GET", "/api/notifications/999999/receipts", tok=ADMIN)
    assert response.code == 404


@pytest.mark.gen_test
async def test_acknowledging_what_is_not_yours_records_nothing(server, api):
    nid = (await api.send(SERVICE, user_id="alice", title="alice's"))["notification"]["id"]
    other = await api.send(OTHER_TENANT, user_id="bob", title="globex's")
    bob = await WSClient.open(server.port, BOB)
    bob.send({"type": "ack", "ids": [nid, other["notification"]["id"]]})
    await api.json("POST", "/api/notifications/ack", {"ids": [nid]}, tok=BOB, expect=204)
    bob.send({"type": "ping"})
    await bob.next_of("pong")  # the frame before it was handled
    await server.services.receipts.flush()
    assert await receipts(api, nid) == []
    assert await receipts(api, other["notification"]["id"], OTHER_TENANT) == []
    bob.close()


@pytest.mark.gen_test
async def test_a_websocket_acknowledges_at_most_what_it_was_sent(server, api):
    """One id per message sent to it: a client that repeats its acknowledgements, or
    acknowledges what it never got, cannot grow what is stored."""
    unsent = [(await api.send(SERVICE, user_id="alice", title=t))["notification"]["id"]
              for t in "ab"]
    ws = await WSClient.open(server.port, ALICE)
    live = (await api.send(SERVICE, user_id="alice", title="live"))["notification"]["id"]
    await ws.notifications(1)
    ws.send({"type": "ack", "ids": [*unsent, live]})  # one sent, so the first id only
    for _ in range(5):
        ws.send({"type": "ack", "ids": [live]})
    ws.send({"type": "ping"})
    await ws.next_of("pong")  # the frames before it were handled
    await server.services.receipts.flush()
    [entry] = await receipts(api, unsent[0])  # the user's mark: it was not pushed there
    assert entry["acknowledged_at"] is not None and entry["connections"] == []
    assert await receipts(api, unsent[1]) == []
    assert not await acknowledged(api, live, ws.hello["connection_id"])  # nothing left for it
    ws.close()


@pytest.mark.gen_test
async def test_bad_acknowledgements_are_400_naming_the_field(server, api):
    bad = [({}, "ids"), ({"ids": []}, "ids"), ({"ids": "1"}, "ids"), ({"ids": [True]}, "ids"),
           ({"ids": [0]}, "ids"), ({"ids": [1.5]}, "ids"), ({"ids": list(range(1, 502))}, "ids"),
           ({"ids": [2**63]}, "ids[0]"), ({"ids": [1], "connection_id": 5}, "connection_id"),
           ({"ids": [1], "connection_id": "a b"}, "connection_id"),
           ({"ids": [1], "connection_id": "we-0123abcd-1"}, "connection_id"),  # not an SSE id
           ({"ids": [1], "extra": 1}, "extra")]
    for body, field in bad:
        response = await api.call("POST", "/api/notifications/ack", body, tok=ALICE)
        assert response.code == 400, body
        assert json.loads(response.body)["error"]["field"] == field, body
    ws = await WSClient.open(server.port, ALICE)
    ws.send({"type": "ack", "ids": "nope"})
    error = await ws.next_of("error")
    assert error["error"]["code"] == "invalid_request" and "ids" in error["error"]["message"]
    ws.close()


@pytest.mark.gen_test
async def test_made_up_connections_are_not_shown_and_acks_are_bounded(server, api):
    sse = await SSEClient.open(server.port, ALICE)
    real = (await sse.next_of("connected"))["data"]["connection_id"]
    nid = (await api.send(SERVICE, user_id="alice", title="one"))["notification"]["id"]
    await sse.next_of("notification")
    for i in range(30):  # connection ids of the right shape that were never pushed it
        await api.json("POST", "/api/notifications/ack",
                       {"ids": [nid], "connection_id": f"ss-0123abcd-{900 + i}"},
                       tok=ALICE, expect=204)
    await server.services.receipts.flush()
    [entry] = await receipts(api, nid)
    assert [c["connection_id"] for c in entry["connections"]] == [real]
    assert entry["connections"][0]["acknowledged_at"] is None  # only made-up ones acked
    assert entry["acknowledged_at"] is not None
    stored = await server.services.receipts.book.receipts("acme", [nid])
    assert stored == {nid: [entry]}
    sse.close()


@pytest.mark.gen_test
async def test_a_flood_of_frames_is_told_to_slow_down_and_the_socket_stays(server, api):
    ws = await WSClient.open(server.port, ALICE)
    for _ in range(200):
        ws.send({"type": "ping"})
    kinds: list[str] = []
    while "error" not in kinds:  # the burst (40) is answered, then the client is told
        kinds.append((await ws.next())["type"])
    assert kinds.count("pong") >= 40
    nid = (await api.send(SERVICE, user_id="alice", title="still here"))["notification"]["id"]
    while kinds[-1] != "notification":
        kinds.append((await ws.next())["type"])
    assert kinds.count("pong") < 100  # most of the flood was ignored
    assert (await api.json("GET", "/api/notifications", tok=ALICE))["notifications"][0]["id"] \
        == nid
    ws.close()


@pytest.mark.gen_test
async def test_acks_as_tidings_js_writes_them_and_their_bad_cousins(server, api):
    """The compact frame (JSON.stringify's) is read the quick way; the same frame with a bad id
    gets the error the general way gives."""
    ws = await WSClient.open(server.port, ALICE)
    ids = [(await api.send(SERVICE, user_id="alice", title=t))["notification"]["id"]
           for t in "ab"]
    await ws.notifications(2)
    ws.send(json.dumps({"type": "ack", "ids": [ids[0], ids[1], ids[0]]}, separators=(",", ":")))
    for bad in ('{"type":"ack","ids":[0]}', '{"type":"ack","ids":[9223372036854775808]}',
                '{"type":"ack","ids":[' + ",".join(["7"] * 501) + "]}",
                '{"type":"ack","ids":[07]}'):
        ws.send(bad)
        error = (await ws.next_of("error"))["error"]
        assert error["code"] in ("invalid_request", "invalid_json"), (bad, error)
    for nid in ids:
        await eventually(lambda nid=nid: acknowledged(api, nid, ws.hello["connection_id"]))
    ws.close()


def test_quick_ack_ids_agree_with_the_general_way():
    from tidings import errors, receipts, validation

    frames = ['{"type":"ack","ids":[1,2,2,3]}', '{"type":"ack","ids":[9223372036854775807]}',
              '{"type":"ack","ids":[9223372036854775808]}', '{"type":"ack","ids":[0]}',
              '{"type":"ack","ids":[]}', '{"type":"ack","ids":[1.0]}', '{"type":"ack","ids":[-1]}',
              '{"type":"ack","ids":[' + ",".join(map(str, range(1, 501))) + "]}",
              '{"type":"ack","ids":[' + ",".join(map(str, range(1, 502))) + "]}",
              '{"type":"ack","ids":[1]} ', '{"type": "ack", "ids": [1]}',
              '{"ids":[1],"type":"ack"}', '{"type":"ack","ids":[1],"x":1}']
    for frame in frames:
        quick = receipts.quick_ack_ids(frame)
        try:
            value = validation.loads(frame, "frame")
            general = receipts.ack_ids(value.get("ids")) if set(value) == {"type", "ids"} \
                else None
        except errors.TidingsError:
            general = None
        if quick is not None:
            assert list(dict.fromkeys(map(int, quick.split(",")))) == general, frame
    assert receipts.quick_ack_ids('{"type":"ack","ids":[3,1,3]}') == "3,1,3"
    assert receipts.quick_ack_ids('{"type":"ack","ids":[1,9223372036854775808]}') is None


def test_a_bucket_spends_as_the_rate_limiter_does():
    from tidings.limits import Bucket, RateLimiter

    now = [0.0]
    bucket, limiter = Bucket(20, clock=lambda: now[0]), RateLimiter(20, clock=lambda: now[0])
    for step in [0.0] * 45 + [0.01] * 30 + [0.2] * 5 + [0.0] * 10:
        now[0] += step
        assert bucket.take() == (limiter.take("") == 0.0)


@pytest.mark.gen_test(timeout=60)
async def test_one_tenants_replays_do_not_crowd_out_anothers_receipts(start_server, monkeypatch):
    """Receipts are a record with a bounded buffer; a tenant gets half of it, so one tenant's
    flood (here replays: a push recorded per notification replayed) cannot drop another's."""
    monkeypatch.setattr(receipts_module, "FLUSH_INTERVAL", 3600)  # written when read: no race
    monkeypatch.setattr(receipts_module, "MAX_BUFFERED", 100)
    monkeypatch.setattr(receipts_module, "MAX_TENANT_SHARE", 50)
    server = await start_server()
    api = Api(server.port)
    for i in range(120):
        await api.send(SERVICE, user_id="alice", title=str(i))
    replaying = await WSClient.open(server.port, ALICE, since=0)
    await replaying.notifications(120)
    listener = await WSClient.open(server.port, token(tenant="globex", user="bob"),
                                   tenant_id="globex")
    nid = (await api.send(OTHER_TENANT, user_id="bob", title="globex's"))["notification"]["id"]
    await listener.notifications(1)
    [entry] = await receipts(api, nid, OTHER_TENANT)
    assert by_connection(entry)[listener.hello["connection_id"]]["pushed_at"] is not None
    replaying.conn.close()
    listener.conn.close()
