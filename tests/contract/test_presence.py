"""One presence contract, run against the local presence and the Redis one; then what only
several processes can show, on a real Redis: counts add up across processes, a process that
stops drops out at once, and one that dies drops out when its time to live runs out."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tidings.connections import SSE, WEBSOCKET, Connection, Message
from tidings.presence import Presence
from tidings.presence.local import LocalPresence
from tidings.presence.redis import RedisPresence
from tidings.registry import Registry

from ..clients import eventually


class Conn(Connection):
    """A connection with no socket: presence only counts them."""

    def __init__(self, tenant: str, user: str, transport: str) -> None:
        self.transport = transport
        super().__init__(tenant, user)

    def _write(self, message: Message) -> asyncio.Future[Any]:
        raise AssertionError("presence never writes")

    def _close(self, reason: str) -> None:
        pass


async def open_presence(kind: str, redis_url: str | None, **options: Any,
                        ) -> tuple[Registry, Presence]:
    registry = Registry()
    presence: Presence = LocalPresence(registry) if kind == "local" else RedisPresence(
        redis_url or "", registry, **options)
    registry.on_user_change = presence.changed
    await presence.start()
    return registry, presence


@pytest.fixture(params=["local", "redis"])
def make(request: pytest.FixtureRequest) -> Callable[..., Any]:
    url = request.getfixturevalue("redis").url if request.param == "redis" else None
    if url:
        request.getfixturevalue("redis").flush()
    return lambda **options: open_presence(request.param, url, **options)


@pytest.mark.gen_test(timeout=20)
async def test_counts_follow_opens_and_closes(make):
    registry, presence = await make()
    try:
        a1, a2 = Conn("acme", "alice", WEBSOCKET), Conn("acme", "alice", SSE)
        b1 = Conn("acme", "bob", WEBSOCKET)
        g1 = Conn("globex", "gina", SSE)
        for conn in (a1, a2, b1, g1):
            registry.add(conn)
        assert await presence.user("acme", "alice") == {
            "websocket": 1, "sse": 1, "total": 2, "users_online": 1}
        assert await presence.tenant("acme") == {
            "websocket": 2, "sse": 1, "total": 3, "users_online": 2}
        assert (await presence.overall())["total"] == 4
        assert set(await presence.tenants()) == {"acme", "globex"}
        assert [s["total"] for s in await presence.targets(
            [("acme", "alice"), ("acme", None), ("globex", "nobody")])] == [2, 3, 0]
        assert await presence.is_online("acme", "bob")
        registry.remove(b1)
        assert not await presence.is_online("acme", "bob")
        assert (await presence.tenant("acme"))["users_online"] == 1
        assert presence.healthy()
    finally:
        await presence.close()


@pytest.mark.gen_test(timeout=20)
async def test_listeners_hear_of_changes(make):
    registry, presence = await make()
    heard: list[str] = []
    marker: list[str] = []  # stays listening: once it has heard a change, so would `heard`
    presence.listen(heard.append)
    presence.listen(marker.append)
    ways = 2 if isinstance(presence, RedisPresence) else 1  # here, and back through Redis
    try:
        registry.add(Conn("acme", "alice", WEBSOCKET))
        await eventually(lambda: heard.count("acme") >= ways)
        presence.unlisten(heard.append)
        heard.clear()
        marker.clear()
        registry.add(Conn("acme", "bob", WEBSOCKET))
        await eventually(lambda: marker.count("acme") >= ways)
        assert heard == []
    finally:
        await presence.close()


@pytest.mark.gen_test(timeout=30)
async def test_counts_add_up_across_processes_and_a_stop_drops_out_at_once(redis):
    redis.flush()
    one, p1 = await open_presence("redis", redis.url)
    two, p2 = await open_presence("redis", redis.url)
    heard: list[str] = []
    p1.listen(heard.append)
    try:
        one.add(Conn("acme", "alice", WEBSOCKET))
        two.add(Conn("acme", "alice", SSE))
        two.add(Conn("acme", "bob", SSE))
        expected = {"websocket": 1, "sse": 2, "total": 3, "users_online": 2}
        await eventually(_equals(p1.tenant, "acme", expected))
        await eventually(_equals(p2.tenant, "acme", expected))
        assert (await p1.user("acme", "alice"))["total"] == 2
        assert [s["total"] for s in await p2.targets([("acme", "alice"), ("acme", "bob")])] \
            == [2, 1]
        assert (await p1.tenants())["acme"]["total"] == 3
        await eventually(lambda: heard.count("acme") >= 3)  # its own two, and the other's
        await p2.close()
        await eventually(_equals(p1.user, ("acme", "bob"), {
            "websocket": 0, "sse": 0, "total": 0, "users_online": 0}), timeout=2)
    finally:
        await p1.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_process_that_dies_drops_out_when_its_time_to_live_runs_out(redis):
    redis.flush()
    one, p1 = await open_presence("redis", redis.url, ttl=1.5, heartbeat=0.3)
    two, p2 = await open_presence("redis", redis.url, ttl=1.5, heartbeat=0.3)
    try:
        two.add(Conn("acme", "bob", WEBSOCKET))
        await eventually(lambda: p1.is_online("acme", "bob"))
        for task in p2._tasks:  # dies: no heartbeat, no goodbye
            task.cancel()
        started = asyncio.get_running_loop().time()
        assert await p1.is_online("acme", "bob")  # its counts outlive it, for their ttl
        await eventually(lambda: _not(p1.is_online("acme", "bob")), timeout=5)
        assert asyncio.get_running_loop().time() - started < 1.5 + 1.0 + 1.0
    finally:
        await p1.close()
        await p2.close()


def _equals(read: Callable[..., Any], args: Any, expected: dict[str, int]) -> Callable[[], Any]:
    args = args if isinstance(args, tuple) else (args,)

    async def check() -> bool:
        return await read(*args) == expected
    return check


async def _not(value: Any) -> bool:
    return not await value
