"""Helpers for the end-to-end delivery tests: tokens, and reading a notification's
deliveries through `GET /api/notifications/{id}/deliveries` until they settle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .clients import WAIT, Api, token

SERVICE = token(user="backend", role="service")
ADMIN = token(user="root", role="admin")
ALICE = token(user="alice")
BOB = token(user="bob")
SENDER = "Tidings <noreply@example.com>"
FINAL = ("sent", "failed", "skipped")

Deliveries = list[dict[str, Any]]


async def deliveries(api: Api, notification_id: int, tok: str = ADMIN) -> Deliveries:
    body = await api.json("GET", f"/api/notifications/{notification_id}/deliveries", tok=tok)
    return list(body["deliveries"])


async def until(api: Api, notification_id: int, check: Callable[[Deliveries], bool],
                timeout: float = WAIT, tok: str = ADMIN) -> Deliveries:
    """Polls the deliveries of a notification until `check` holds: the worker has no event
    a client could await, so this is a bounded loop of short waits."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await deliveries(api, notification_id, tok)
        if check(found):
            return found
        assert loop.time() < deadline, f"deliveries did not get there in {timeout}s: {found}"
        await asyncio.sleep(0.02)


async def settled(api: Api, notification_id: int, count: int = 1,
                  timeout: float = WAIT, tok: str = ADMIN) -> Deliveries:
    """The deliveries once `count` of them exist and every one is sent, failed or skipped."""
    return await until(api, notification_id,
                       lambda ds: len(ds) >= count and all(d["status"] in FINAL for d in ds),
                       timeout, tok)


def by_channel(found: Deliveries) -> dict[str, dict[str, Any]]:
    return {d["channel"]: d for d in found}


async def notify(api: Api, tok: str = SERVICE, **body: Any) -> int:
    """Creates one notification (for alice unless said otherwise); returns its id."""
    body.setdefault("user_id", "alice")
    body.setdefault("title", "Build finished")
    return int((await api.send(tok, **body))["notification"]["id"])


async def profile(api: Api, user: str = "alice", **fields: Any) -> None:
    await api.json("PUT", f"/api/users/{user}", fields, SERVICE)
