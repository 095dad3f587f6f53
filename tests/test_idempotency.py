"""The same Idempotency-Key again returns the first result and creates nothing."""

import asyncio
import json

import pytest

from .clients import WSClient, token

SERVICE = token(user="backend", role="service")
ALICE = token(user="alice")


async def post(api, body, key, tok=SERVICE):
    response = await api.call("POST", "/api/notifications", body, tok,
                              headers={"Idempotency-Key": key})
    assert response.code == 201, response.body
    return json.loads(response.body), response.headers.get("Idempotent-Replayed")


async def inbox_ids(api, tok=ALICE):
    return [n["id"] for n in (await api.json("GET", "/api/notifications", tok=tok))[
        "notifications"]]


@pytest.mark.gen_test
async def test_the_same_key_twice_creates_one_and_returns_the_first_answer(server, api):
    ws = await WSClient.open(server.port, ALICE)
    first, replayed = await post(api, {"user_id": "alice", "title": "once"}, "k-1")
    assert replayed is None and first["delivery"] == {"websocket": 1, "sse": 0}
    assert (await ws.notifications(1))[0]["id"] == first["notification"]["id"]
    # Even with a different body, the key answers with the first result.
    again, replayed = await post(api, {"user_id": "alice", "title": "twice?"}, "k-1")
    assert replayed == "true"
    assert again == first
    assert await inbox_ids(api) == [first["notification"]["id"]]
    # Nothing was pushed the second time: the next frame is the pong.
    ws.send({"type": "ping"})
    assert await ws.next() == {"type": "pong"}
    ws.close()


@pytest.mark.gen_test
async def test_a_key_for_user_ids_returns_the_whole_list(server, api):
    first, _ = await post(api, {"user_ids": ["alice", "bob"], "title": "x"}, "batch")
    again, replayed = await post(api, {"user_ids": ["alice", "bob"], "title": "x"}, "batch")
    assert replayed == "true" and again == first and len(first["notifications"]) == 2


@pytest.mark.gen_test
async def test_the_same_key_concurrently_creates_one(server, api):
    ws = await WSClient.open(server.port, ALICE)
    answers = await asyncio.gather(*(post(api, {"user_id": "alice", "title": "race"}, "k-race")
                                     for _ in range(10)))
    bodies = [body for body, _ in answers]
    assert sum(1 for _, replayed in answers if replayed is None) == 1
    assert all(body == bodies[0] for body in bodies), bodies
    assert len(await inbox_ids(api)) == 1
    assert (await ws.notifications(1))[0]["id"] == bodies[0]["notification"]["id"]
    ws.close()


@pytest.mark.gen_test
async def test_keys_are_per_tenant(server, api):
    acme, _ = await post(api, {"user_id": "alice", "title": "a"}, "shared-key")
    globex, replayed = await post(api, {"user_id": "alice", "title": "g"}, "shared-key",
                                  tok=token(tenant="globex", user="svc", role="service"))
    assert replayed is None
    assert globex["notification"]["id"] != acme["notification"]["id"]
    assert globex["notification"]["tenant_id"] == "globex"
    assert await inbox_ids(api, token(tenant="globex", user="alice")) == \
        [globex["notification"]["id"]]


@pytest.mark.gen_test
async def test_different_keys_create_different_notifications(server, api):
    a, _ = await post(api, {"user_id": "alice", "title": "a"}, "key-a")
    b, _ = await post(api, {"user_id": "alice", "title": "a"}, "key-b")
    assert a["notification"]["id"] != b["notification"]["id"]
    assert len(await inbox_ids(api)) == 2
