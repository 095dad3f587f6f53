"""Resume while notifications keep arriving: no gap, no duplicate, in order."""

import asyncio
import random

import pytest

from .clients import SSEClient, WSClient, token

ALICE = token(user="alice")
SERVICE = token(user="backend", role="service")
TOTAL = 200


async def _post_in_a_loop(api, created, done, lanes=4):
    """Alice's notifications, direct and tenant-wide, mixed with others she must not get, from
    a few concurrent senders so that creates keep landing while a replay is read."""
    async def lane(seed):
        rng = random.Random(seed)
        for i in range(TOTAL // lanes):
            kind = rng.random()
            body = ({"user_id": "alice"} if kind < 0.5 else {"broadcast": True} if kind < 0.7
                    else {"user_ids": ["bob", "alice"]} if kind < 0.85 else {"user_id": "bob"})
            answer = await api.send(SERVICE, title=f"#{seed}.{i}", **body)
            for n in answer.get("notifications") or [answer["notification"]]:
                if n["user_id"] in ("alice", None):
                    created.append(n["id"])
    await asyncio.gather(*(lane(seed) for seed in range(lanes)))
    created.sort()
    done.set()


async def _open(transport, port, last):
    if transport == "websocket":
        return await WSClient.open(port, ALICE, since=last)
    if transport == "sse-header":
        client = await SSEClient.open(port, ALICE, headers={"Last-Event-ID": str(last)})
    else:
        client = await SSEClient.open(port, ALICE, last_event_id=last)
    assert client.status == 200
    return client


@pytest.mark.parametrize("transport", ["websocket", "sse-header", "sse-query"])
@pytest.mark.gen_test(timeout=30)
async def test_reconnecting_with_the_last_id_loses_and_repeats_nothing(server, api, transport):
    rng = random.Random(transport)
    created, done = [], asyncio.Event()
    received = []
    poster = asyncio.ensure_future(_post_in_a_loop(api, created, done))
    reconnects = 0
    while not (done.is_set() and received and received[-1] == created[-1]):
        # From the start (0) the first time: the poster may have created some before the
        # first connection is up, and a client with no cursor would not be sent those.
        client = await _open(transport, server.port, received[-1] if received else 0)
        reconnects += 1
        # Read a few, then drop the connection mid-stream, as a flaky network would.
        for _ in range(rng.randint(1, 6)):
            try:
                n = (await client.notifications(1, timeout=0.5))[0]
            except TimeoutError:
                break  # nothing more yet
            received.append(n["id"])
        client.close()
    await poster
    assert reconnects > 5
    assert received == sorted(set(received)), "out of order or repeated"
    assert received == created, f"missing {sorted(set(created) - set(received))}"


@pytest.mark.parametrize("transport", ["websocket", "sse"])
@pytest.mark.gen_test
async def test_a_first_connection_gets_a_cursor_that_loses_nothing(server, api, transport):
    """`connected` carries `last_id`: resuming from it after a drop gives exactly what came
    after the connection, although the client never saw a notification."""
    sender, alice = token(role="service", user="svc"), token(user="alice")
    before = await api.send(sender, user_id="alice", title="before")
    if transport == "websocket":
        client = await WSClient.open(server.port, alice)
        cursor = client.hello["last_id"]
    else:
        client = await SSEClient.open(server.port, alice)
        cursor = (await client.next_of("connected"))["data"]["last_id"]
    assert cursor == before["notification"]["id"]
    client.close()
    missed = await api.send(sender, user_id="alice", title="while away")

    again = await WSClient.open(server.port, alice, since=cursor)
    assert [n["id"] for n in await again.notifications(1)] == [missed["notification"]["id"]]
    again.close()
