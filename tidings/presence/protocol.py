"""The presence seam: connection counts across every process, behind the per-user connection
limit, `GET /api/notifications/connections`, the dashboard, delivery counts and "offline".

The `Registry` holds this process's connections; a presence adds the other processes' (or,
locally, none) and tells listeners when a tenant's counts changed anywhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

Stats = dict[str, int]  # websocket, sse, total, users_online
Listener = Callable[[str], None]


def empty() -> Stats:
    return {"websocket": 0, "sse": 0, "total": 0, "users_online": 0}


class Presence(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def changed(self, tenant_id: str, user_id: str) -> None:
        """This process's connections of a user changed (the registry calls it)."""
    async def user(self, tenant_id: str, user_id: str) -> Stats: ...
    async def tenant(self, tenant_id: str) -> Stats: ...
    async def overall(self) -> Stats: ...
    async def tenants(self) -> dict[str, Stats]:
        """Every tenant with a connection on some process (for the dashboard)."""
    async def targets(self, targets: list[tuple[str, str | None]]) -> list[Stats]:
        """Counts of several users (tenant, user) or tenants (tenant, None) in one look-up."""
    async def is_online(self, tenant_id: str, user_id: str) -> bool: ...
    def listen(self, listener: Listener) -> None:
        """Calls `listener(tenant_id)` when a tenant's counts change on any process."""
    def unlisten(self, listener: Listener) -> None: ...
    def healthy(self) -> bool: ...
