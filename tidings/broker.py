"""The fan-out seam. In-process now; a Redis broker will implement the same protocol so that
several tidings processes deliver each other's messages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from .connections import Message


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message for one user of a tenant, or (user_id None) for every user of the tenant."""

    tenant_id: str
    user_id: str | None
    message: Message


# Delivers an envelope to this process's connections; returns how many got it, per transport.
Deliver = Callable[[Envelope], dict[str, int]]


class Broker(Protocol):
    def subscribe(self, deliver: Deliver) -> None: ...
    async def publish(self, envelope: Envelope) -> dict[str, int]: ...
    async def close(self) -> None: ...


class InProcessBroker:
    """Hands every envelope straight to the local subscriber: one process, no network."""

    def __init__(self) -> None:
        self._deliver: Deliver | None = None

    def subscribe(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def publish(self, envelope: Envelope) -> dict[str, int]:
        assert self._deliver is not None, "publish before subscribe"
        return self._deliver(envelope)

    async def close(self) -> None:
        self._deliver = None
