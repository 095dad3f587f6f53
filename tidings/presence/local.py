"""Presence of one process: the registry's own counters."""

from __future__ import annotations

from ..registry import Registry
from .protocol import Listener, Stats


class LocalPresence:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def changed(self, tenant_id: str, user_id: str) -> None:
        pass  # the registry tells its own listeners

    async def user(self, tenant_id: str, user_id: str) -> Stats:
        return self.registry.stats(tenant_id, user_id)

    async def tenant(self, tenant_id: str) -> Stats:
        return self.registry.stats(tenant_id)

    async def overall(self) -> Stats:
        return self.registry.stats()

    async def tenants(self) -> dict[str, Stats]:
        return {t: self.registry.stats(t) for t in self.registry.tenants()}

    async def targets(self, targets: list[tuple[str, str | None]]) -> list[Stats]:
        return [self.registry.stats(t, u) for t, u in targets]

    async def is_online(self, tenant_id: str, user_id: str) -> bool:
        return self.registry.is_online(tenant_id, user_id)

    def listen(self, listener: Listener) -> None:
        self.registry.listen(listener)

    def unlisten(self, listener: Listener) -> None:
        self.registry.unlisten(listener)

    def healthy(self) -> bool:
        return True
