"""WebSocket handshakes per second, the token check included.

--concurrency clients each loop: connect to `/ws/notifications?token=…`, wait for the first
frame (`connected`), close (1000) and wait for the server to end the TCP connection, until
--handshakes are done. Raw asyncio clients in this process on core 1, the server on core 0.
Floor: bare Tornado doing the same PyJWT check before the upgrade and sending `connected`.
Target: at least 0.95 x the floor.

  .venv/bin/python bench/handshake.py [--quick] [--concurrency 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from typing import Any

from common import TENANT, CpuMeter, Metric, Server, log, main, percentile, token

from clients import WsClient


async def handshakes(port: int, total: int, concurrency: int,
                     times: list[float] | None = None) -> int:
    """Do `total` connect/connected/close cycles; return how many failed."""
    loop = asyncio.get_running_loop()
    requests = [WsClient.request_for(port, f"/ws/notifications?token={token(f'user{i}')}"
                                           f"&tenant_id={TENANT}") for i in range(100)]
    pick = itertools.cycle(requests)
    left = iter(range(total))
    failed = 0

    async def worker() -> None:
        nonlocal failed
        for _ in left:
            start = time.perf_counter()
            try:
                request = next(pick)
                _, client = await loop.create_connection(lambda r=request: WsClient(r),
                                                         "127.0.0.1", port)
                await asyncio.wait_for(client.ready, 10)
                client.close()
                await asyncio.wait_for(asyncio.shield(client.done), 10)
            except (OSError, TimeoutError) as exc:
                failed += 1
                if failed <= 3:
                    log(f"  handshake failed: {exc!r}")
                continue
            if times is not None:
                times.append((time.perf_counter() - start) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failed


async def measure(server: Server, case: str, args: argparse.Namespace) -> dict[str, Any]:
    total = 1500 if args.quick else args.handshakes
    await handshakes(server.port, 100, args.concurrency)  # warm-up
    log(f"  {total} handshakes, {args.concurrency} at a time")
    times: list[float] = []
    meter = CpuMeter(server)
    start = time.perf_counter()
    task = asyncio.ensure_future(handshakes(server.port, total, args.concurrency, times))
    while not task.done():
        await asyncio.wait([task], timeout=2)
        log(f"  {len(times):,}/{total:,} done")
    failed = task.result()
    elapsed = time.perf_counter() - start
    numbers = {
        "handshakes_per_s": round(len(times) / elapsed, 1),
        "failed": failed,
        "p50_ms": percentile(times, 50),
        "p99_ms": percentile(times, 99),
        **meter.read(),
    }
    log(f"  {server.side}: {numbers['handshakes_per_s']:,.0f} handshakes/s "
        f"(server cpu {numbers['server_cpu_pct']}%, client cpu {numbers['client_cpu_pct']}%)")
    return numbers


CASES = ["websocket"]
METRICS = [
    Metric("websocket", "handshakes_per_s", "handshakes", "1/s", min_ratio=0.95),
    Metric("websocket", "p99_ms", "p99 connect-to-closed", "ms"),
]


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--handshakes", type=int, default=5000, help="measured handshakes (5000)")
    p.add_argument("--concurrency", type=int, default=16, help="clients at once (16)")


def run(argv: list[str] | None = None) -> dict[str, Any]:
    return main("handshake", __doc__, CASES, measure, METRICS, ("handshakes_per_s", True),
                options, argv)


if __name__ == "__main__":
    run()
