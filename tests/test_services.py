"""The test servers themselves: PostgreSQL and Redis really start, stop, start again and serve."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import redis.asyncio as aioredis

from .services import PostgresServer, RedisServer, postgres, redis  # noqa: F401


async def _fetch_one(url: str, query: str) -> object:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


def test_fresh_database_is_empty_and_accepts_a_table(postgres: PostgresServer) -> None:
    first = postgres.fresh_database()
    second = postgres.fresh_database()
    assert first != second

    async def scenario() -> None:
        conn = await asyncpg.connect(first, timeout=5)
        try:
            assert await conn.fetchval("SELECT current_database()") == first.rsplit("/", 1)[1]
            await conn.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)")
            await conn.execute("INSERT INTO notes (body) VALUES ('hello')")
            assert await conn.fetchval("SELECT body FROM notes") == "hello"
        finally:
            await conn.close()
        tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        assert await _fetch_one(second, tables) == 0

    asyncio.run(scenario())


def test_postgres_stop_refuses_connections_and_start_serves_the_same_data(postgres: PostgresServer) -> None:
    if not postgres.owned:  # skip before a connection is open, not halfway
        postgres.stop()
    url = postgres.fresh_database()

    async def before() -> asyncpg.Connection:
        conn = await asyncpg.connect(url, timeout=5)
        await conn.execute("CREATE TABLE kept (value int); INSERT INTO kept VALUES (42)")
        return conn

    async def during(conn: asyncpg.Connection) -> None:
        try:
            with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
                await conn.fetchval("SELECT 1")  # the open connection was cut
        finally:
            conn.terminate()
        with pytest.raises(OSError):  # and a new one is refused
            refused = await asyncpg.connect(url, timeout=5)
            await refused.close()

    async def scenario() -> None:
        conn = await before()
        await asyncio.to_thread(postgres.stop)
        await during(conn)
        await asyncio.to_thread(postgres.start)
        assert await _fetch_one(url, "SELECT value FROM kept") == 42

    asyncio.run(scenario())


def test_redis_set_get_and_flush(redis: RedisServer) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis.url)
        try:
            await client.set("greeting", "hello")
            assert await client.get("greeting") == b"hello"
            await asyncio.to_thread(redis.flush)
            assert await client.get("greeting") is None
            assert await client.dbsize() == 0
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_redis_pubsub_round_trip(redis: RedisServer) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis.url)
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe("tidings:test")
            confirmation = await pubsub.get_message(timeout=5)
            assert confirmation is not None and confirmation["type"] == "subscribe"
            assert await client.publish("tidings:test", "ping") == 1
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
            assert message is not None and message["data"] == b"ping"
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await client.aclose()

    asyncio.run(scenario())


def test_redis_stop_refuses_connections_and_start_serves_again(redis: RedisServer) -> None:
    if not redis.owned:
        redis.stop()  # skips
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis.url, socket_connect_timeout=5)
        try:
            assert await client.ping()
            await asyncio.to_thread(redis.stop)
            with pytest.raises(aioredis.ConnectionError):
                await client.ping()
            await asyncio.to_thread(redis.start)
            assert await client.ping()  # the client reconnects to the same port
        finally:
            await client.aclose()

    asyncio.run(scenario())
