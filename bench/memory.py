"""Resident memory per idle connection (WebSocket, SSE) at --clients connections.

The server's VmRSS (from /proc/PID/status) is read after a warm-up (a few connections opened
and closed), then with --clients idle connections open (each has had its `connected`), and
(RSS after - RSS before) / clients is the cost of one connection. Then all close and the same
number opens again: RSS growing past the first peak would point to a leak. The clients are
raw asyncio sockets in this process on core 1, the server on core 0. Floor: bare Tornado
holding the same connections. Target: at most 25 KiB per connection.

  .venv/bin/python bench/memory.py [--quick] [--clients 5000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from common import TENANT, Metric, Server, log, main, token

from clients import SseClient, WsClient, close_clients, open_clients

CASES = ["websocket", "sse"]


def factory(case: str, port: int) -> Any:
    users = iter(range(10_000_000))
    cls = WsClient if case == "websocket" else SseClient
    path = "/ws/notifications" if case == "websocket" else "/api/notifications/stream"

    def make() -> WsClient | SseClient:
        return cls(cls.request_for(port, f"{path}?token={token(f'user{next(users)}')}"
                                         f"&tenant_id={TENANT}"))

    return make


async def settled_rss(server: Server) -> int:
    """RSS once the server has finished the work the last connections caused."""
    await asyncio.sleep(1.0)
    return server.rss_kib()


async def measure(server: Server, case: str, args: argparse.Namespace) -> dict[str, Any]:
    n = 2000 if args.quick else args.clients
    make = factory(case, server.port)

    def progress(k: int) -> None:
        if k % 1000 == 0:
            log(f"  {k} connected")

    await close_clients(await open_clients(make, 100, server.port))
    before = await settled_rss(server)
    log(f"  RSS before: {before:,} KiB; opening {n} {case} connections")
    clients = await open_clients(make, n, server.port, progress=progress)
    peak = await settled_rss(server)
    dropped = sum(c.done.done() for c in clients)
    log(f"  RSS with {n}: {peak:,} KiB = {(peak - before) / n:.1f} KiB each")
    await close_clients(clients)
    after_close = await settled_rss(server)
    clients = await open_clients(make, n, server.port, progress=progress)
    second = await settled_rss(server)
    log(f"  second cycle: {second:,} KiB ({second - peak:+,} KiB against the first)")
    await close_clients(clients)
    return {
        "connections": n,
        "kib_per_conn": round((peak - before) / n, 2),
        "rss_before_kib": before,
        "rss_peak_kib": peak,
        "rss_after_close_kib": after_close,
        "second_cycle_growth_kib": second - peak,
        "dropped_while_idle": dropped,
    }


METRICS = [
    Metric("websocket", "kib_per_conn", "RSS per idle connection", "KiB", max_value=25),
    Metric("websocket", "second_cycle_growth_kib", "growth on a 2nd cycle", "KiB"),
    Metric("sse", "kib_per_conn", "RSS per idle connection", "KiB", max_value=25),
    Metric("sse", "second_cycle_growth_kib", "growth on a 2nd cycle", "KiB"),
]


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, default=5000, help="idle connections (5000)")


def run(argv: list[str] | None = None) -> dict[str, Any]:
    return main("memory", __doc__, CASES, measure, METRICS, ("kib_per_conn", False), options,
                argv)


if __name__ == "__main__":
    run()
