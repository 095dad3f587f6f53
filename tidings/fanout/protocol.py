"""The fan-out seam: a broker carries envelopes to the other processes that have connections
of the envelope's tenant. The process that publishes delivers to its own connections itself.

Pub/sub may lose a message (a broker outage, a dropped subscription); the hub finds the gap by
each notification's `prev_id` (its tenant's previous id) and fills it from the store. So a
broker needs no history of its own, and an empty Redis after a restart loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..connections import Message


class BrokerUnavailable(Exception):
    """The broker cannot be reached; the store still has everything."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message for one user of a tenant, or (user_id None) for every user of the tenant.

    A notification carries `prev_id`, the id of its tenant's previous notification: a
    receiver that has delivered up to a smaller id knows it missed some; and `committed_at`,
    the wall-clock time of its commit, for the commit-to-push latency on every process."""

    tenant_id: str
    user_id: str | None
    message: Message
    prev_id: int | None = None
    committed_at: float | None = None

    def encode(self) -> bytes:
        """The wire form: one JSON object, encoded once per publish."""
        m = self.message
        return json.dumps({"t": self.tenant_id, "u": self.user_id, "k": m.kind, "f": m.key,
                           "p": m.payload, "e": m.event_id, "v": self.prev_id,
                           "c": self.committed_at},
                          separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def decode(cls, raw: bytes | str) -> Envelope:
        w: dict[str, Any] = json.loads(raw)
        return cls(w["t"], w["u"], Message(w["k"], w["f"], w["p"], w["e"]), w["v"],
                   w.get("c"))  # absent from a process of an older version


# Called with each envelope another process published for a subscribed tenant.
Receive = Callable[[Envelope], None]


class Broker(Protocol):
    remote: bool  # True when other processes may publish: the hub then checks for gaps

    async def start(self, receive: Receive, reconnected: Callable[[], None]) -> None:
        """Begins receiving; `reconnected` is called after an outage, when messages may have
        been lost."""
    async def subscribe(self, tenant_id: str) -> None:
        """Receive this tenant's envelopes (this process has a connection of it)."""
    async def unsubscribe(self, tenant_id: str) -> None: ...
    def publish(self, envelope: Envelope) -> None:
        """Hands the envelope to the other subscribed processes; raises BrokerUnavailable."""
    def healthy(self) -> bool: ...
    async def close(self) -> None: ...
