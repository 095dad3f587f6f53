"""The in-process broker: brokers that share one `LocalBus` hand each other envelopes.

A tidings process has one, alone on its bus, so publishing costs a dictionary look-up; the
contract tests put several on one bus to stand for several processes."""

from __future__ import annotations

from collections.abc import Callable

from .protocol import Envelope, Receive


class LocalBus:
    def __init__(self) -> None:
        self.subscribers: dict[str, set[LocalBroker]] = {}


class LocalBroker:
    remote = False

    def __init__(self, bus: LocalBus | None = None) -> None:
        self.bus = bus or LocalBus()
        self._receive: Receive | None = None

    async def start(self, receive: Receive, reconnected: Callable[[], None]) -> None:
        self._receive = receive

    async def subscribe(self, tenant_id: str) -> None:
        self.bus.subscribers.setdefault(tenant_id, set()).add(self)

    async def unsubscribe(self, tenant_id: str) -> None:
        brokers = self.bus.subscribers.get(tenant_id)
        if brokers is not None:
            brokers.discard(self)
            if not brokers:
                del self.bus.subscribers[tenant_id]

    def publish(self, envelope: Envelope) -> None:
        for broker in list(self.bus.subscribers.get(envelope.tenant_id, ())):
            if broker is not self and broker._receive is not None:
                broker._receive(envelope)

    def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        for tenant_id in [t for t, b in self.bus.subscribers.items() if self in b]:
            await self.unsubscribe(tenant_id)
        self._receive = None
