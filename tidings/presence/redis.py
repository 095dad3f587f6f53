"""Presence across processes in Redis. Each process writes its own counts, with a time to live
that its heartbeat renews; readers add up the live processes' counts.

Keys (under the deployment's prefix):
- `procs`: sorted set, process id -> time of its last heartbeat;
- `u:{process}:{tenant}`: hash, user -> "websocket sse" connection counts;
- `pt:{process}`: hash, tenant -> "websocket sse users" counts;
- channel `presence`: a JSON list of tenants whose counts just changed on some process.

A process that stops deletes its keys at once; one that dies stops renewing them, so they
expire and it drops out within `TTL` seconds. Writes are coalesced (at most one round trip per
`FLUSH_DELAY`) and never hold up a connection; while Redis is away, reads fall back to this
process's own counts and everything is written again once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from typing import Any

from redis.exceptions import RedisError

from .. import redis_url
from ..registry import Registry
from .protocol import Listener, Stats, empty

log = logging.getLogger("tidings.presence")

TTL = 20            # seconds a process's counts outlive its last heartbeat
HEARTBEAT = 5.0     # seconds between heartbeats
FLUSH_DELAY = 0.05  # open/close bursts within this are written in one round trip
ALIVE_CACHE = 1.0   # seconds the list of live processes is reused


def _counts(value: bytes | str | None) -> list[int]:
    if value is None:
        return []
    return [int(x) for x in (value.decode() if isinstance(value, bytes) else value).split()]


class RedisPresence:
    def __init__(self, url: str, registry: Registry, ttl: float = TTL,
                 heartbeat: float = HEARTBEAT) -> None:
        self.url = url
        self.ttl = ttl
        self.heartbeat = heartbeat
        self.registry = registry
        self.prefix = redis_url.prefix(url)
        self.proc = uuid.uuid4().hex[:12]
        self._redis = redis_url.client(url)
        self._dirty: set[tuple[str, str]] = set()
        self._flush_scheduled = False
        self._resync = True        # write everything at the next chance
        self._healthy = False
        self._alive: tuple[float, list[str]] = (0.0, [])
        self._listeners: list[Listener] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._flushes: set[asyncio.Task[None]] = set()
        self._closed = False
        self._feed: Any = None  # the subscription to other processes' changes

    @property
    def _ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    def _k(self, name: str) -> str:
        return self.prefix + name

    def _user_key(self, proc: str, tenant_id: str) -> str:
        return self._k(f"u:{proc}:{tenant_id}")

    async def start(self) -> None:
        await self._heartbeat()
        self._tasks = [asyncio.create_task(self._heartbeat_loop(), name="tidings-presence"),
                       asyncio.create_task(self._listen_loop(), name="tidings-presence-feed")]

    async def close(self) -> None:
        self._closed = True
        for task in [*self._tasks, *self._flushes]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._flushes, return_exceptions=True)
        if self._feed is not None:
            await _closed(self._feed)
        tenants = list(self.registry.tenants())
        with contextlib.suppress(RedisError, OSError, TimeoutError):  # say goodbye, briefly
            async with asyncio.timeout(2.0), self._redis.pipeline(transaction=False) as pipe:
                pipe.zrem(self._k("procs"), self.proc)
                pipe.delete(self._k(f"pt:{self.proc}"),
                            *[self._user_key(self.proc, t) for t in tenants])
                if tenants:
                    pipe.publish(self._k("presence"), json.dumps(tenants))
                await pipe.execute()
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(2.0):
                await self._redis.aclose()

    # --- writes: this process's counts -------------------------------------------------
    def changed(self, tenant_id: str, user_id: str) -> None:
        self._dirty.add((tenant_id, user_id))
        if not self._flush_scheduled and not self._closed:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(FLUSH_DELAY, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        if self._closed:
            return
        task = asyncio.create_task(self._flush(), name="tidings-presence-flush")
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        if self._resync:
            dirty |= {(c.tenant_id, c.user_id) for c in self.registry.all()}
        try:
            await self._write(dirty, full=self._resync)
            self._resync = False
            self._set_healthy(True)
        except (RedisError, OSError):
            self._set_healthy(False)
            self._resync = True

    async def _write(self, dirty: set[tuple[str, str]], full: bool) -> None:
        tenants = {t for t, _ in dirty}
        proc_tenants = self._k(f"pt:{self.proc}")
        async with self._redis.pipeline(transaction=False) as pipe:
            if full:
                pipe.delete(proc_tenants)
            for tenant_id, user_id in dirty:
                key = self._user_key(self.proc, tenant_id)
                stats = self.registry.stats(tenant_id, user_id)
                if stats["total"]:
                    pipe.hset(key, user_id, f"{stats['websocket']} {stats['sse']}")
                    pipe.pexpire(key, self._ttl_ms)
                else:
                    pipe.hdel(key, user_id)
            for tenant_id in tenants:
                stats = self.registry.stats(tenant_id)
                if stats["total"]:
                    pipe.hset(proc_tenants, tenant_id,
                              f"{stats['websocket']} {stats['sse']} {stats['users_online']}")
                else:
                    pipe.hdel(proc_tenants, tenant_id)
            pipe.pexpire(proc_tenants, self._ttl_ms)
            pipe.zadd(self._k("procs"), {self.proc: time.time()})
            if tenants or full:  # full: this process (re)appears, so others look again
                pipe.publish(self._k("presence"), json.dumps(sorted(tenants)))
            await pipe.execute()

    async def _heartbeat(self) -> None:
        try:
            if self._resync:
                await self._flush()
                return
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zadd(self._k("procs"), {self.proc: time.time()})
                pipe.pexpire(self._k(f"pt:{self.proc}"), self._ttl_ms)
                for tenant_id in self.registry.tenants():
                    pipe.pexpire(self._user_key(self.proc, tenant_id), self._ttl_ms)
                pipe.zremrangebyscore(self._k("procs"), 0, time.time() - 3600)
                await pipe.execute()
            self._set_healthy(True)
        except (RedisError, OSError):
            self._set_healthy(False)
            self._resync = True

    async def _heartbeat_loop(self) -> None:
        while True:
            # While Redis is away, look for it every second rather than every heartbeat.
            await asyncio.sleep(self.heartbeat if self._healthy else min(self.heartbeat, 1.0))
            await self._heartbeat()

    def _set_healthy(self, healthy: bool) -> None:
        if healthy != self._healthy:
            if healthy:
                log.info("presence in Redis at %s is up", redis_url.redacted(self.url))
            else:
                log.warning("presence in Redis at %s is away: counting this process's "
                            "connections only", redis_url.redacted(self.url))
        self._healthy = healthy

    def healthy(self) -> bool:
        return self._healthy

    # --- reads: every live process -----------------------------------------------------
    async def _others(self) -> list[str]:
        at, procs = self._alive
        now = time.monotonic()
        if now - at > ALIVE_CACHE:
            found = await self._redis.zrangebyscore(self._k("procs"), time.time() - self.ttl,
                                                    "+inf")
            names = [p.decode() if isinstance(p, bytes) else str(p) for p in found]
            procs = [p for p in names if p != self.proc]
            self._alive = (now, procs)
        return procs

    async def _remote(self, build: Any) -> list[Any] | None:
        """Runs a read on every other live process; None while Redis is away."""
        if not self._healthy:
            return None
        try:
            others = await self._others()
            if not others:
                return []
            async with self._redis.pipeline(transaction=False) as pipe:
                for proc in others:
                    build(pipe, proc)
                return list(await pipe.execute())
        except (RedisError, OSError):
            self._set_healthy(False)
            self._resync = True
            return None

    async def user(self, tenant_id: str, user_id: str) -> Stats:
        return (await self.targets([(tenant_id, user_id)]))[0]

    async def tenant(self, tenant_id: str) -> Stats:
        return (await self.targets([(tenant_id, None)]))[0]

    async def targets(self, targets: list[tuple[str, str | None]]) -> list[Stats]:
        def build(pipe: Any, proc: str) -> None:
            for tenant_id, user_id in targets:
                key = self._user_key(proc, tenant_id)
                pipe.hget(key, user_id) if user_id is not None else pipe.hgetall(key)

        remote = await self._remote(build) or []
        results = []
        for i, (tenant_id, user_id) in enumerate(targets):
            local = self.registry.stats(tenant_id, user_id)
            ws, sse = local["websocket"], local["sse"]
            if user_id is not None:
                for j in range(i, len(remote), len(targets)):
                    counts = _counts(remote[j])
                    if counts:
                        ws, sse = ws + counts[0], sse + counts[1]
                results.append({"websocket": ws, "sse": sse, "total": ws + sse,
                                "users_online": 1 if ws + sse else 0})
                continue
            users = {c.user_id for c in self.registry.tenant(tenant_id)}
            for j in range(i, len(remote), len(targets)):
                for user, value in remote[j].items():
                    counts = _counts(value)
                    ws, sse = ws + counts[0], sse + counts[1]
                    users.add(user.decode())
            results.append({"websocket": ws, "sse": sse, "total": ws + sse,
                            "users_online": len(users)})
        return results

    async def tenants(self) -> dict[str, Stats]:
        found = {t: self.registry.stats(t) for t in self.registry.tenants()}
        remote = await self._remote(lambda pipe, proc: pipe.hgetall(self._k(f"pt:{proc}")))
        for per_tenant in remote or []:
            for raw_tenant, value in per_tenant.items():
                tenant_id = raw_tenant.decode()
                ws, sse, users = (_counts(value) + [0, 0, 0])[:3]
                stats = found.setdefault(tenant_id, empty())
                stats["websocket"] += ws
                stats["sse"] += sse
                stats["total"] += ws + sse
                stats["users_online"] += users  # a user on two processes counts twice here
        return found

    async def overall(self) -> Stats:
        total = empty()
        for stats in (await self.tenants()).values():
            for key in total:
                total[key] += stats[key]
        return total

    async def is_online(self, tenant_id: str, user_id: str) -> bool:
        return (await self.user(tenant_id, user_id))["total"] > 0

    # --- changes on any process ---------------------------------------------------------
    def listen(self, listener: Listener) -> None:
        self.registry.listen(listener)
        self._listeners.append(listener)

    def unlisten(self, listener: Listener) -> None:
        self.registry.unlisten(listener)
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def _listen_loop(self) -> None:
        # Checks `_closed` as well as being cancelled: redis-py's get_message(timeout=) uses
        # wait_for, which on Python 3.11 can swallow a cancel that lands as it times out.
        while not self._closed:
            self._feed = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await self._feed.subscribe(self._k("presence"))
                while not self._closed:
                    message = await self._feed.get_message(timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    self._alive = (0.0, [])  # a process may have just come or gone
                    for tenant_id in json.loads(message["data"]):
                        for listener in list(self._listeners):
                            listener(tenant_id)
            except (RedisError, OSError, ValueError):
                await _closed(self._feed)
                await asyncio.sleep(1.0)


async def _closed(pubsub: Any) -> None:
    """Closes a subscription; a Redis that does not answer gets two seconds, not forever."""
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        async with asyncio.timeout(2.0):
            await pubsub.aclose()
