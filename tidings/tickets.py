"""Connection tickets: a short-lived, single-use stand-in for a token in a WebSocket or
EventSource URL, where a long-lived token would end up in browser history and proxy logs.

A ticket is made over REST (the token in a header) and spent by the first connection that
shows it, on any process: in this process's memory with one process, in Redis with several.
It remembers the principal that made it, and its deadline is checked against `clock` here
(Redis's own expiry only cleans up), so one rule holds for both kinds.
"""

from __future__ import annotations

import collections
import json
import re
import secrets
import time
from collections.abc import Callable
from typing import Protocol

from redis.exceptions import RedisError

from . import errors, redis_url
from .models import Principal

TTL = 30               # seconds a ticket can be spent
MAX_PER_TENANT = 10_000  # tickets a tenant may make per TTL window: no tenant fills memory
MAX_PER_USER = 100       # ... and one user of it: no user locks the others out
SHAPE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what issue() makes, with room; nothing else is looked up


def _invalid() -> errors.TidingsError:
    return errors.TidingsError("invalid_ticket", 401,
                               "the ticket is unknown, already used or expired")


def _encode(who: Principal, expires_at: float) -> str:
    return json.dumps([who.tenant_id, who.user_id, who.role, expires_at])


def _decode(raw: str | bytes) -> tuple[Principal, float]:
    tenant_id, user_id, role, expires_at = json.loads(raw)
    return Principal(tenant_id, user_id, role), float(expires_at)


class Tickets(Protocol):
    clock: Callable[[], float]

    async def issue(self, who: Principal) -> str:
        """A new ticket for `who`, good for one connection within TTL seconds."""
        ...

    async def redeem(self, ticket: str, tenant_ids: list[str]) -> Principal:
        """The ticket's principal, spending it. Every tenant named by the request must be the
        ticket's (403 tenant_mismatch, and the ticket is not spent); an unknown, used or
        expired ticket is 401 invalid_ticket."""
        ...

    async def close(self) -> None: ...


def _check(found: tuple[Principal, float] | None, tenant_ids: list[str], now: float) -> Principal:
    if found is None or found[1] <= now:
        raise _invalid()
    who = found[0]
    if any(named != who.tenant_id for named in tenant_ids):
        raise errors.tenant_mismatch()
    return who


class LocalTickets:
    """One process's tickets, in a dict ordered by deadline (they all live TTL seconds)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._tickets: dict[str, tuple[Principal, float]] = {}
        self._per_tenant: collections.Counter[str] = collections.Counter()
        self._per_user: collections.Counter[tuple[str, str]] = collections.Counter()

    async def issue(self, who: Principal) -> str:
        now = self.clock()
        self._drop_expired(now)
        if self._per_tenant[who.tenant_id] >= MAX_PER_TENANT or \
                self._per_user[who.tenant_id, who.user_id] >= MAX_PER_USER:
            raise errors.rate_limited(TTL)
        ticket = secrets.token_urlsafe(24)
        self._tickets[ticket] = (who, now + TTL)
        self._per_tenant[who.tenant_id] += 1
        self._per_user[who.tenant_id, who.user_id] += 1
        return ticket

    async def redeem(self, ticket: str, tenant_ids: list[str]) -> Principal:
        if not SHAPE.fullmatch(ticket):
            raise _invalid()
        who = _check(self._tickets.get(ticket), tenant_ids, self.clock())
        self._forget(ticket)
        return who

    def _drop_expired(self, now: float) -> None:
        for ticket, (_, expires_at) in list(self._tickets.items()):
            if expires_at > now:
                break
            self._forget(ticket)

    def _forget(self, ticket: str) -> None:
        who, _ = self._tickets.pop(ticket)
        user = who.tenant_id, who.user_id
        self._per_tenant[who.tenant_id] -= 1
        self._per_user[user] -= 1
        if not self._per_tenant[who.tenant_id]:
            del self._per_tenant[who.tenant_id]
        if not self._per_user[user]:
            del self._per_user[user]

    async def close(self) -> None:
        self._tickets.clear()
        self._per_tenant.clear()
        self._per_user.clear()


class RedisTickets:
    """Tickets every process can spend: a key per ticket, read, checked, then taken with
    GETDEL so that two processes shown the same ticket cannot both spend it."""

    def __init__(self, url: str, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._redis = redis_url.client(url)
        self._prefix = redis_url.prefix(url) + "ticket:"

    async def issue(self, who: Principal) -> str:
        ticket, now = secrets.token_urlsafe(24), self.clock()
        window = f"{self._prefix}made:{int(now // TTL)}:{who.tenant_id}"
        mine = f"{window}:{who.user_id}"
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key in (window, mine):
                pipe.incr(key)
                pipe.expire(key, 2 * TTL)
            made, _, made_by_user, _ = await pipe.execute()
            if made > MAX_PER_TENANT or made_by_user > MAX_PER_USER:
                raise errors.rate_limited(TTL)
            await self._redis.set(self._prefix + ticket, _encode(who, now + TTL), ex=TTL + 5)
        except RedisError:
            raise errors.unavailable("tickets cannot be made now (Redis does not answer); "
                                     "try again shortly") from None
        return ticket

    async def redeem(self, ticket: str, tenant_ids: list[str]) -> Principal:
        if not SHAPE.fullmatch(ticket):
            raise _invalid()
        key = self._prefix + ticket
        try:
            raw = await self._redis.get(key)
            _check(None if raw is None else _decode(raw), tenant_ids, self.clock())
            raw = await self._redis.getdel(key)
        except RedisError:
            raise errors.unavailable("tickets cannot be checked now (Redis does not answer); "
                                     "try again shortly") from None
        return _check(None if raw is None else _decode(raw), tenant_ids, self.clock())

    async def close(self) -> None:
        await self._redis.aclose()
