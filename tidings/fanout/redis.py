"""The Redis broker: one pub/sub channel per tenant; a process subscribes to the tenants it has
connections of, so Redis carries one message per publish per subscribed process, never one
per connection.

Publishing never holds up a create: envelopes go to an outbox that one task sends in order,
pipelined. While Redis is away the outbox is dropped (the store has everything) and the
reader reconnects with backoff; once back, `reconnected` tells the hub to catch up from the
store. A process skips its own messages by the origin prefix, before decoding them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .. import redis_url
from .protocol import BrokerUnavailable, Envelope, Receive

log = logging.getLogger("tidings.fanout")

OUTBOX_LIMIT = 10_000    # envelopes waiting for Redis; past it they are dropped (and refilled)
RECONNECT_MAX = 5.0      # seconds between reconnection attempts, at most


class RedisBroker:
    remote = True

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = redis_url.prefix(url)
        self.origin = uuid.uuid4().hex[:12].encode()
        self._redis = redis_url.client(url)
        self._pubsub: aioredis.client.PubSub | None = None
        self._tenants: set[str] = set()
        self._receive: Receive | None = None
        self._reconnected: Callable[[], None] = lambda: None
        self._outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._healthy = False
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    def _channel(self, tenant_id: str) -> str:
        return f"{self.prefix}t:{tenant_id}"

    async def start(self, receive: Receive, reconnected: Callable[[], None]) -> None:
        self._receive = receive
        self._reconnected = reconnected
        try:
            await self._connect()
        except (RedisError, OSError) as e:
            log.warning("Redis at %s does not answer (%s); creates go on, and clients catch "
                        "up when it is back", redis_url.redacted(self.url), type(e).__name__)
        self._tasks = [asyncio.create_task(self._read_loop(), name="tidings-redis-reader"),
                       asyncio.create_task(self._send_loop(), name="tidings-redis-sender")]

    async def _connect(self) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        # A subscription to nothing still needs a channel for get_message to listen on.
        await pubsub.subscribe(f"{self.prefix}hello",
                               *[self._channel(t) for t in self._tenants])
        self._pubsub = pubsub
        self._healthy = True

    async def subscribe(self, tenant_id: str) -> None:
        self._tenants.add(tenant_id)
        if self._healthy and self._pubsub is not None:
            try:
                await self._pubsub.subscribe(self._channel(tenant_id))
            except (RedisError, OSError):
                self._lost()

    async def unsubscribe(self, tenant_id: str) -> None:
        self._tenants.discard(tenant_id)
        if self._healthy and self._pubsub is not None:
            try:
                await self._pubsub.unsubscribe(self._channel(tenant_id))
            except (RedisError, OSError):
                self._lost()

    def publish(self, envelope: Envelope) -> None:
        if not self._healthy:
            raise BrokerUnavailable("Redis is away")
        if self._outbox.qsize() >= OUTBOX_LIMIT:
            raise BrokerUnavailable("Redis is too slow: the outbox is full")
        self._outbox.put_nowait((self._channel(envelope.tenant_id),
                                 self.origin + b"|" + envelope.encode()))

    def healthy(self) -> bool:
        return self._healthy

    def _lost(self) -> None:
        if self._healthy:
            log.warning("lost Redis at %s; reconnecting", redis_url.redacted(self.url))
        self._healthy = False

    async def _send_loop(self) -> None:
        while True:
            batch = [await self._outbox.get()]
            while not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            if not self._healthy:
                continue  # dropped: receivers find the gap and read it from the store
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for channel, data in batch:
                        pipe.publish(channel, data)
                    await pipe.execute()
            except (RedisError, OSError):
                self._lost()

    async def _read_loop(self) -> None:
        # Checks `_closing` as well as being cancelled: redis-py's get_message(timeout=) uses
        # wait_for, which on Python 3.11 can swallow a cancel that lands as it times out.
        delay = 0.1
        while not self._closing:
            if not self._healthy or self._pubsub is None:
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, RECONNECT_MAX)
                with contextlib.suppress(RedisError, OSError):
                    await self._reset()
                    await self._connect()
                    delay = 0.1
                    log.info("Redis at %s is back; catching up from the store",
                             redis_url.redacted(self.url))
                    self._reconnected()
                continue
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except (RedisError, OSError):
                self._lost()
                continue
            if message is None or message.get("type") != "message":
                continue
            data: bytes = message["data"]
            origin, _, body = data.partition(b"|")
            if origin == self.origin or self._receive is None:
                continue
            try:
                envelope = Envelope.decode(body)
            except (ValueError, KeyError, TypeError):
                log.warning("ignored a malformed message on %s", message.get("channel"))
                continue
            self._receive(envelope)

    async def _reset(self) -> None:
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(2.0):  # a Redis that does not answer: not forever
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        await self._reset()
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(2.0):
                await self._redis.aclose()
        self._healthy = False
