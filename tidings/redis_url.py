"""What tidings derives from `--redis-url`: the client, and the prefix of every key and channel
(pub/sub ignores database numbers, so deployments sharing a Redis are kept apart by it)."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis.asyncio as aioredis

CONNECT_TIMEOUT = 1.0   # a Redis that is away must not hold up a create or a handshake
READ_TIMEOUT = 2.0


def prefix(url: str) -> str:
    """tidings:N: for database N, however the URL names it (redis://h/N or ?db=N), as
    redis-py reads it."""
    return f"tidings:{client(url).connection_pool.connection_kwargs.get('db', 0)}:"


def client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT,
                                   socket_timeout=READ_TIMEOUT, retry_on_timeout=False)


def redacted(url: str) -> str:
    """The URL without its password, for log lines."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
