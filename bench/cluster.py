"""What several processes cost: the Redis hop, two processes against one, PostgreSQL creates.

Every case compares two tidings setups in the same run; the "floor" column is the setup the
other is measured against (not bare Tornado here):

- `redis_hop`: broadcast fan-out to --clients WebSocket clients of one process; floor: the
  in-process broker, tidings: the Redis broker (the publisher delivers to its own clients
  directly, so the hop costs the publish and the subscription). Target: delivered/s at least
  0.8 x, and p50/p99 publish-to-receive no more than 5 ms above the floor's.
- `two_processes`: the same fan-out; floor: one process (Redis broker) with all --clients,
  tidings: two processes sharing Redis with half the clients each, both pinned to the server
  core. Target: at least 0.9 x the total throughput. Redis carries one message per publish,
  delivered once per subscribed process: counted by a pattern subscriber (`redis_messages`).
- `creates_single`, `creates_batch`: notifications created per second (wrk, as create.py);
  floor: SQLite, tidings: PostgreSQL.

Redis and PostgreSQL are started here from Debian's binaries (as the tests do), on loopback,
in a temporary folder, and stopped at the end.

  .venv/bin/python bench/cluster.py [--quick] [--case redis_hop] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from pathlib import Path
from typing import Any

import create
import fanout
from common import ROOT, Metric, Server, main

sys.path.insert(0, str(ROOT))
from tests.services import PostgresServer, RedisServer  # noqa: E402  (real servers, as in tests)

CASES = ["redis_hop", "two_processes", "creates_single", "creates_batch"]


class Backends:
    """One Redis and one PostgreSQL for the whole run, started on first use."""

    def __init__(self) -> None:
        self._redis: RedisServer | None = None
        self._postgres: PostgresServer | None = None

    @property
    def redis(self) -> RedisServer:
        if self._redis is None:
            self._redis = RedisServer.launch()
        return self._redis

    @property
    def postgres(self) -> PostgresServer:
        if self._postgres is None:
            self._postgres = PostgresServer.launch()
        return self._postgres

    def close(self) -> None:
        for server in (self._redis, self._postgres):
            if server is not None:
                server.close()


BACKENDS = Backends()


def make_server(side: str, case: str, workdir: Path) -> Server:
    """Both sides run tidings; the case decides what differs."""
    if case == "redis_hop":
        extra = ["--redis-url", BACKENDS.redis.url] if side == "tidings" else []
        return Server("tidings", workdir, extra=extra, label=side)
    if case == "two_processes":
        BACKENDS.redis.flush()
        return Server("tidings", workdir, extra=["--redis-url", BACKENDS.redis.url], label=side)
    db = BACKENDS.postgres.fresh_database() if side == "tidings" else None
    return Server("tidings", workdir, db=db, label=side)


class RedisCounter:
    """Counts the messages Redis carries for tidings (a pattern subscription sees each
    publish once, whoever else is subscribed)."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis
        self.client = aioredis.Redis.from_url(url)
        self.count = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        pubsub = self.client.pubsub()
        await pubsub.psubscribe("tidings:*:t:*")

        async def read() -> None:
            async for message in pubsub.listen():
                if message["type"] == "pmessage":
                    self.count += 1
        self._task = asyncio.create_task(read())

    async def stop(self) -> int:
        if self._task is not None:
            self._task.cancel()
        await self.client.aclose()
        return self.count


async def measure(server: Server, case: str, args: argparse.Namespace) -> dict[str, Any]:
    if case.startswith("creates_"):
        return await create.measure(server, case.removeprefix("creates_"), args)
    if case == "redis_hop":
        return await fanout.measure(server, "websocket", args)
    counter = RedisCounter(BACKENDS.redis.url)
    await counter.start()
    if server.side == "floor":
        numbers = await fanout.measure(server, "websocket", args)
    else:
        second = Server("tidings", server.workdir, db=server.database,
                        extra=["--redis-url", BACKENDS.redis.url], label="second")
        second.start()
        try:
            numbers = await fanout.measure(server, "websocket", args, spread=[second])
        finally:
            second.stop()
    numbers["redis_messages"] = await counter.stop()
    numbers["broadcasts"] = (100 if args.quick else args.broadcasts) + 2 + int(
        args.rate * (3 if args.quick else args.seconds))
    return numbers


METRICS = [
    Metric("redis_hop", "delivered_per_s", "delivered, Redis vs in-process", "msg/s",
           min_ratio=0.8),
    Metric("redis_hop", "p50_ms", "p50 latency", "ms"),
    Metric("redis_hop", "p99_ms", "p99 latency", "ms"),
    Metric("two_processes", "delivered_per_s", "delivered, 2 processes vs 1", "msg/s",
           min_ratio=0.9),
    Metric("two_processes", "redis_messages", "messages through Redis", "msgs"),
    Metric("creates_single", "notifications_per_s", "created, PostgreSQL vs SQLite", "notif/s"),
    Metric("creates_batch", "notifications_per_s", "created in batches, PG vs SQLite",
           "notif/s"),
]


def options(p: argparse.ArgumentParser) -> None:
    fanout.options(p)
    p.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    p.add_argument("--batch", type=int, default=10, help="user_ids per POST (10)")


def run(argv: list[str] | None = None) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    try:
        return main("cluster", __doc__, CASES, measure, METRICS, ("delivered_per_s", True),
                    options, argv, make_server)
    finally:
        BACKENDS.close()


if __name__ == "__main__":
    run()
