"""What this process has sent: totals, the last minute per tenant, and the live delivery counts
of recent notifications, for the dashboard and /metrics."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable

RECENT_DELIVERIES = 2000  # live delivery counts kept for the dashboard's recent notifications


class Activity:
    """Notifications sent and deliveries made per tenant over the last minute (1 s buckets)."""

    def __init__(self, window: int = 60) -> None:
        self.window = window
        self.created_total = 0
        self.delivered_total = 0
        self.recent_delivery: OrderedDict[int, dict[str, int]] = OrderedDict()
        self.listeners: list[Callable[[str], None]] = []  # told the tenant of each create
        self._buckets: dict[str, deque[list[int]]] = {}

    def created(self, tenant_id: str, delivery: dict[int, dict[str, int]]) -> None:
        """Records one create request: each notification id with its delivery counts."""
        sent = len(delivery)
        delivered = sum(c["websocket"] + c["sse"] for c in delivery.values())
        self.created_total += sent
        self.delivered_total += delivered
        for notification_id, counts in delivery.items():
            self.recent_delivery[notification_id] = counts
        while len(self.recent_delivery) > RECENT_DELIVERIES:
            self.recent_delivery.popitem(last=False)
        self.add(tenant_id, sent, delivered)
        for listener in self.listeners:
            listener(tenant_id)

    def add(self, tenant_id: str, sent: int, delivered: int) -> None:
        now = int(time.monotonic())
        buckets = self._buckets.setdefault(tenant_id, deque())
        if buckets and buckets[-1][0] == now:
            buckets[-1][1] += sent
            buckets[-1][2] += delivered
        else:
            buckets.append([now, sent, delivered])
        self._trim(buckets, now)

    def last_minute(self, tenant_id: str) -> dict[str, int]:
        buckets = self._buckets.get(tenant_id)
        if not buckets:
            return {"sent_last_minute": 0, "delivered_last_minute": 0}
        self._trim(buckets, int(time.monotonic()))
        return {"sent_last_minute": sum(b[1] for b in buckets),
                "delivered_last_minute": sum(b[2] for b in buckets)}

    def tenants(self) -> list[str]:
        now = int(time.monotonic())
        for tenant_id in list(self._buckets):
            self._trim(self._buckets[tenant_id], now)
            if not self._buckets[tenant_id]:
                del self._buckets[tenant_id]  # bounded by the tenants active in a minute
        return list(self._buckets)

    def _trim(self, buckets: deque[list[int]], now: int) -> None:
        while buckets and buckets[0][0] <= now - self.window:
            buckets.popleft()
