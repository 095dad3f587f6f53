"""The Prometheus series of one server: a registry of its own (tests run several servers in
one process, so nothing goes to prometheus_client's global default), the instruments the
domain records into, and the text a scrape reads.

Cost: the hub observes once per notification it pushes, never per connection; the publisher
once per batch it commits. Cardinality: labels are transports, close reasons, channels and
delivery statuses, all bounded; only the `tidings_connections` gauge has a tenant label, one
series per tenant with a connection open.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Metric,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.gc_collector import GCCollector

from .activity import Activity
from .connections import SSE, WEBSOCKET
from .presence import Presence, Stats

# The text exposition format generate_latest writes (not CONTENT_TYPE_LATEST, which newer
# prometheus_client versions point at another format).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Why a connection ended, as the connections and transports say it, and the `reason` label
# it is counted under. Anything else is "other", so the label stays bounded.
CLOSE_REASONS = {
    "client went away": "client",       # a close frame, or the socket ended from its side
    "too slow": "slow",                 # its output bound overflowed
    "ping timed out": "dead_peer",      # Tornado: a WebSocket ping went unanswered
    "write failed": "write_failed",     # the socket was already gone when written to
    "shutdown": "shutdown",
    "message too big": "too_big",       # Tornado: a frame over the size limit (1009)
    "message too big after decompression": "too_big",
    "failed": "error",                  # the stream could not start (the store did not answer)
}
CLOSE_LABELS = sorted({*CLOSE_REASONS.values(), "other"})
TRANSPORTS = (WEBSOCKET, SSE)
# A delivery row's outcome as the orchestrator records it; "retry" is a temporary failure
# queued again.
DELIVERY_STATUSES = ("sent", "failed", "skipped", "retry")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
FANOUT_BUCKETS = (0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class Metrics:
    def __init__(self, activity: Activity, presence: Presence,
                 channels: Iterable[str] = ()) -> None:
        self.started_at = time.time()
        self.registry = CollectorRegistry()
        r = self.registry
        self.commit_to_push = Histogram(
            "tidings_commit_to_push_seconds", "From a notification's commit in the store to "
            "its push to this process's connections.", buckets=LATENCY_BUCKETS, registry=r)
        self.commit_duration = Histogram(
            "tidings_commit_duration_seconds", "One group commit: a batch of creates stored "
            "in one transaction.", buckets=LATENCY_BUCKETS, registry=r)
        self.fanout = Histogram(
            "tidings_fanout_connections", "Connections of this process a notification was "
            "pushed to.", buckets=FANOUT_BUCKETS, registry=r)
        self.deliveries = Counter(
            "tidings_channel_deliveries", "Channel delivery outcomes (email, sms, push, "
            "webhook) as the worker records them.", ("channel", "status"), registry=r)
        self.opened = Counter("tidings_connections_opened", "Client connections opened.",
                              ("transport",), registry=r)
        self.closed = Counter("tidings_connections_closed", "Client connections closed, by "
                              "why.", ("transport", "reason"), registry=r)
        # Every known label set from zero, so rates and dashboards see the series at once;
        # the children are kept, as a labels() lookup costs more than the increment.
        self._opened = {t: self.opened.labels(t) for t in TRANSPORTS}
        self._closed = {(t, reason): self.closed.labels(t, reason)
                        for t in TRANSPORTS for reason in CLOSE_LABELS}
        for channel in channels:
            for status in DELIVERY_STATUSES:
                self.deliveries.labels(channel, status)
        self._live = _LiveCounts(activity, self.started_at)
        r.register(self._live)
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self._presence = presence

    # --- recorded by the domain --------------------------------------------------------
    def pushed(self, connections: int, committed_at: float | None) -> None:
        """One notification handed to this process's connections (once, not per connection)."""
        self.fanout.observe(connections)
        if committed_at is not None:  # across processes: wall clocks, so never below zero
            self.commit_to_push.observe(max(0.0, time.time() - committed_at))

    def committed(self, seconds: float) -> None:
        self.commit_duration.observe(seconds)

    def delivered(self, channel: str, status: str, count: int = 1) -> None:
        self.deliveries.labels(channel, "retry" if status == "queued" else status).inc(count)

    def connection_opened(self, transport: str) -> None:
        self._opened[transport].inc()

    def connection_closed(self, transport: str, reason: str) -> None:
        self._closed[transport, CLOSE_REASONS.get(reason, "other")].inc()

    # --- read by a scrape --------------------------------------------------------------
    async def scrape(self) -> bytes:
        """The text format. Connections per tenant are read first: presence may ask Redis,
        and a collector cannot await."""
        self._live.tenants = await self._presence.tenants()
        return generate_latest(self.registry)


class _LiveCounts:
    """The series read from the state at scrape time: connections per tenant (on every
    process), notifications created and handed to connections, uptime."""

    def __init__(self, activity: Activity, started_at: float) -> None:
        self.activity = activity
        self.started_at = started_at
        self.tenants: dict[str, Stats] = {}

    def collect(self) -> Iterable[Metric]:
        connections = GaugeMetricFamily("tidings_connections", "Open client connections, on "
                                        "every process.", labels=("tenant", "transport"))
        for tenant, stats in sorted(self.tenants.items()):
            for transport in TRANSPORTS:
                connections.add_metric((tenant, transport), stats[transport])
        yield connections
        yield CounterMetricFamily("tidings_notifications_created", "Notifications stored and "
                                  "pushed.", value=self.activity.created_total)
        yield CounterMetricFamily("tidings_deliveries", "Notifications handed to a live "
                                  "connection.", value=self.activity.delivered_total)
        yield GaugeMetricFamily("tidings_uptime_seconds", "Seconds since the process started.",
                                value=round(time.time() - self.started_at))
