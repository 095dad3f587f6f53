"""One broker contract, run against the in-process broker and the Redis one.

Two brokers stand for two processes: on one `LocalBus`, or on the same real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tidings.connections import Message
from tidings.fanout import Broker, BrokerUnavailable, Envelope
from tidings.fanout.local import LocalBroker, LocalBus
from tidings.fanout.redis import RedisBroker

from ..clients import eventually
from ..services import RedisServer


class Inbox:
    """What one broker received, with a way to await the n-th envelope."""

    def __init__(self) -> None:
        self.got: list[Envelope] = []
        self.reconnects = 0
        self._changed = asyncio.Event()

    def receive(self, envelope: Envelope) -> None:
        self.got.append(envelope)
        self._changed.set()

    def reconnected(self) -> None:
        self.reconnects += 1
        self._changed.set()

    async def wait(self, done: Callable[[], bool], timeout: float = 5.0) -> None:
        async def until() -> None:
            while not done():
                self._changed.clear()
                await self._changed.wait()
        await asyncio.wait_for(until(), timeout)


Pair = tuple[Broker, Inbox, Broker, Inbox]


@pytest.fixture(params=["local", "redis"])
def make_pair(request: pytest.FixtureRequest) -> Callable[[], Any]:
    async def make() -> Pair:
        if request.param == "local":
            bus = LocalBus()
            a, b = LocalBroker(bus), LocalBroker(bus)
        else:
            server: RedisServer = request.getfixturevalue("redis")
            a, b = RedisBroker(server.url), RedisBroker(server.url)
        inbox_a, inbox_b = Inbox(), Inbox()
        await a.start(inbox_a.receive, inbox_a.reconnected)
        await b.start(inbox_b.receive, inbox_b.reconnected)
        return a, inbox_a, b, inbox_b
    return make


def note(tenant: str, user: str | None, id_: int, prev: int) -> Envelope:
    return Envelope(tenant, user, Message.notification({"id": id_, "title": f"n{id_}",
                                                        "data": {"k": [1, "é"]}}), prev)


async def closing(*brokers: Broker) -> None:
    for broker in brokers:
        await broker.close()


@pytest.mark.gen_test(timeout=20)
async def test_a_publish_reaches_the_other_subscriber_whole_and_not_the_publisher(make_pair):
    a, inbox_a, b, inbox_b = await make_pair()
    try:
        await b.subscribe("acme")
        a.publish(note("acme", "alice", 7, 3))
        a.publish(Envelope("acme", "alice", Message.stats({"total": 2, "unread": 1})))
        await inbox_b.wait(lambda: len(inbox_b.got) == 2)
        first, second = inbox_b.got
        assert (first.tenant_id, first.user_id, first.prev_id) == ("acme", "alice", 3)
        assert first.message.kind == "notification" and first.message.event_id == 7
        assert first.message.payload == {"id": 7, "title": "n7", "data": {"k": [1, "é"]}}
        assert first.message.ws == note("acme", "alice", 7, 3).message.ws  # same frame
        assert second.prev_id is None and second.message.payload == {"total": 2, "unread": 1}
        assert inbox_a.got == []
    finally:
        await closing(a, b)


@pytest.mark.gen_test(timeout=20)
async def test_only_subscribed_tenants_arrive_and_unsubscribe_stops_them(make_pair):
    a, _, b, inbox_b = await make_pair()
    try:
        await b.subscribe("acme")
        a.publish(note("globex", None, 1, 0))  # nobody subscribed to globex
        a.publish(note("acme", None, 2, 0))
        await inbox_b.wait(lambda: len(inbox_b.got) == 1)
        await b.unsubscribe("acme")
        await b.subscribe("initech")
        a.publish(note("acme", None, 3, 2))
        a.publish(note("initech", None, 4, 0))  # a marker: everything before it has passed
        await inbox_b.wait(lambda: len(inbox_b.got) == 2)
        assert [(e.tenant_id, e.message.event_id) for e in inbox_b.got] == [
            ("acme", 2), ("initech", 4)]
    finally:
        await closing(a, b)


@pytest.mark.gen_test(timeout=20)
async def test_one_publisher_s_envelopes_arrive_in_order(make_pair):
    a, _, b, inbox_b = await make_pair()
    try:
        await b.subscribe("acme")
        for i in range(1, 301):
            a.publish(note("acme", f"u{i % 7}", i, i - 1))
        await inbox_b.wait(lambda: len(inbox_b.got) == 300)
        assert [e.message.event_id for e in inbox_b.got] == list(range(1, 301))
    finally:
        await closing(a, b)


@pytest.mark.gen_test(timeout=40)
async def test_redis_outage_refuses_publishes_then_reconnects_and_resubscribes(redis):
    a, b = RedisBroker(redis.url), RedisBroker(redis.url)
    inbox_a, inbox_b = Inbox(), Inbox()
    await a.start(inbox_a.receive, inbox_a.reconnected)
    await b.start(inbox_b.receive, inbox_b.reconnected)
    try:
        await b.subscribe("acme")
        redis.stop()
        try:
            await eventually(lambda: not a.healthy() and not b.healthy(), timeout=10)
            with pytest.raises(BrokerUnavailable):
                a.publish(note("acme", None, 1, 0))
        finally:
            redis.start()
        await inbox_b.wait(lambda: inbox_b.reconnects >= 1, timeout=15)
        await eventually(lambda: a.healthy() and b.healthy(), timeout=15)
        a.publish(note("acme", None, 2, 1))
        await inbox_b.wait(lambda: any(e.message.event_id == 2 for e in inbox_b.got))
    finally:
        await closing(a, b)

