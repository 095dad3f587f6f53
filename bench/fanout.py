"""Fan-out of tenant-wide broadcasts to --clients connections of one tenant (WebSocket, SSE).

Two phases per case, against one server: (1) throughput: --broadcasts POSTs of
`{"broadcast": true}`, --posters at a time, as fast as the server answers; the number is
messages delivered per second, counted at the clients, from the first POST to the last
message. (2) latency: a steady --rate broadcasts per second for a few seconds, each carrying
its send time in `data.t`; p50/p99 publish-to-receive latency over every delivery.
All clients and the publisher run in this process on core 1 (raw asyncio clients), the
server on core 0. Floor: bare Tornado holding the same connections and writing the same JSON.
Targets: delivered/s at least 2.0 x the floor (WebSocket), 1.4 x (SSE). Case websocket-ack: the WebSocket case with
every client acknowledging each notification it gets as tidings.js does (a burst in one frame,
at most one a second; what receipts cost); the floor ignores
the acks, and the run also prints tidings' acknowledging / plain ratio (target >= 0.9). Every
tidings run reports `receipts_dropped`, the pushes and acknowledgements its log says it had no
room to record: work not done, so a figure with any is not the whole cost.
Case websocket-unicast: instead of broadcasts, --unicasts stored notifications each to one
user (user0, user1 … in turn; every client is its own user), --unicast-posters POSTs in
flight: notifications delivered per second (target 0.8 x the floor, which writes each to the
user's sockets); no latency phase.
With --node, the WebSocket cases also run against node with ws (bench/node/floor.js, the same
routes and JSON), and the table adds its figure and tidings / node; SSE has no node side.

  .venv/bin/python bench/fanout.py [--quick] [--clients 1000] [--case websocket] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from typing import Any

from common import TENANT, CpuMeter, Metric, Server, log, main, percentile, token

from clients import (
    AckingWsClient,
    HttpConn,
    SseClient,
    StreamClient,
    WsClient,
    close_clients,
    open_clients,
)

CASES = ["websocket", "websocket-ack", "websocket-unicast", "sse"]
NODE_CASES = ["websocket", "websocket-ack"]  # what the node floor (ws) serves


class Tally:
    """Counts deliveries across all clients; in the latency phase also parses `data.t`."""

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.delivered = 0
        self.target = 0
        self.reached = asyncio.Event()
        self.last = 0.0
        self.latencies: list[float] = []
        self.want_payload = False

    def expect(self, count: int) -> None:
        self.delivered = 0
        self.target = count
        self.reached.clear()

    def add(self, count: int) -> None:
        self.delivered += count
        self.last = time.perf_counter()
        if self.delivered >= self.target:
            self.reached.set()

    def payload(self, data: bytes) -> None:
        doc = json.loads(data)
        n = doc if self.transport == "sse" else doc["notification"]
        self.latencies.append((time.perf_counter() - n["data"]["t"]) * 1000)


def client_factory(transport: str, port: int, tally: Tally) -> Any:
    users = iter(range(1_000_000))
    cls = {"websocket": WsClient, "websocket-ack": AckingWsClient, "websocket-unicast": WsClient,
           "sse": SseClient}[transport]
    path = "/api/notifications/stream" if transport == "sse" else "/ws/notifications"

    def make() -> StreamClient:
        t = token(f"user{next(users)}")
        return cls(cls.request_for(port, f"{path}?token={t}&tenant_id={TENANT}"), tally)

    return make


async def publish(conns: list[HttpConn], service: str, count: int, stamp: bool,
                  deliveries: list[int], users: int = 0) -> int:
    """`count` broadcasts spread over the connections, one request at a time on each; with
    `users`, notifications to user0, user1 … in turn instead (unicast). The last one's id."""
    created: list[int] = []
    left = iter(range(count))

    async def worker(conn: HttpConn) -> None:
        for i in left:
            to: dict[str, Any] = {"user_id": f"user{i % users}"} if users else {"broadcast": True}
            doc = {**to, "title": "Deploy done", "message": "v2 is live",
                   "data": {"t": time.perf_counter() if stamp else 0.0}}
            status, body = await conn.post_json("/api/notifications", service, TENANT, doc)
            if status != 201:
                raise RuntimeError(f"POST answered {status}: {body[:300]!r}")
            answer = json.loads(body)
            deliveries.append(answer["delivery"]["websocket"] + answer["delivery"]["sse"])
            created.append(answer["notification"]["id"])

    await asyncio.gather(*(worker(c) for c in conns))
    return max(created)


async def wait_reached(tally: Tally, timeout: float, label: str) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(tally.reached.wait(), 1.0)
            return True
        except TimeoutError:
            log(f"  {label}: {tally.delivered:,}/{tally.target:,} delivered")
    return False


async def throughput(server: Server, tally: Tally, n: int, args: argparse.Namespace,
                     service: str) -> dict[str, Any]:
    broadcasts = 100 if args.quick else args.broadcasts
    conns = [HttpConn(server.port) for _ in range(args.posters)]
    deliveries: list[int] = []
    tally.expect(broadcasts * n)
    log(f"  throughput: {broadcasts} broadcasts x {n} clients, {args.posters} POSTs in flight")
    return await timed(server, tally, conns, service, broadcasts, deliveries, n)


async def unicast(server: Server, tally: Tally, n: int, args: argparse.Namespace,
                  service: str) -> dict[str, Any]:
    posts = 2000 if args.quick else args.unicasts
    conns = [HttpConn(server.port) for _ in range(args.unicast_posters)]
    deliveries: list[int] = []
    tally.expect(posts)
    log(f"  unicast: {posts} notifications to one of {n} users each, "
        f"{args.unicast_posters} POSTs in flight")
    return await timed(server, tally, conns, service, posts, deliveries, 1, users=n)


async def timed(server: Server, tally: Tally, conns: list[HttpConn], service: str, count: int,
                deliveries: list[int], n: int, users: int = 0) -> dict[str, Any]:
    """Posts `count` creates (each for `n` clients) and counts them in at the clients."""
    meter = CpuMeter(server)
    cpu_before = server.cpu_seconds()
    start = time.perf_counter()
    await publish(conns, service, count, False, deliveries, users)
    posted = time.perf_counter() - start
    complete = await wait_reached(tally, 120, "throughput")
    elapsed = tally.last - start
    cpu = meter.read()
    cpu["server_us_per_delivered"] = round(
        1e6 * (server.cpu_seconds() - cpu_before) / max(tally.delivered, 1), 2)
    for c in conns:
        c.close()
    return {
        "delivered_per_s": round(tally.delivered / elapsed, 1),
        "posts_per_s": round(count / posted, 1),
        "missing": count * n - tally.delivered,
        "min_delivery_reported": min(deliveries),
        "complete": complete,
        **cpu,
    }


async def latency(server: Server, tally: Tally, n: int, args: argparse.Namespace,
                  service: str) -> dict[str, Any]:
    seconds = 3 if args.quick else args.seconds
    count = int(args.rate * seconds)
    tally.expect(count * n)
    tally.latencies, tally.want_payload = [], True
    conn = HttpConn(server.port)
    deliveries: list[int] = []
    log(f"  latency: {count} broadcasts at {args.rate}/s")
    cpu_before = server.cpu_seconds()
    start = time.perf_counter()
    late = last = 0
    for i in range(count):
        wait = start + i / args.rate - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        else:
            late += 1
        last = await publish([conn], service, 1, True, deliveries)
    await wait_reached(tally, 30, "latency")
    # The server's CPU per delivery at a pace it keeps up with: nothing backs up, so unlike
    # the throughput phase this hardly moves with how busy the machine is. It includes the
    # acknowledgements of the last second and the receipts write after them (a fixed wait:
    # neither announces itself to the clients).
    await asyncio.sleep(1.5)
    paced_cpu = server.cpu_seconds() - cpu_before
    if tally.transport == "websocket-ack" and server.program == "tidings":
        # The acknowledgements are real: every client's is in the last broadcast's receipts.
        status, body = await conn.request("GET", f"/api/notifications/{last}/receipts",
                                          {"Authorization": f"Bearer {service}",
                                           "X-Tenant-ID": TENANT})
        acked = sum(1 for r in json.loads(body)["receipts"] if r["acknowledged_at"])
        if status != 200 or acked != n:
            raise RuntimeError(f"{acked} of {n} clients' acknowledgements recorded")
    conn.close()
    lat, tally.want_payload = tally.latencies, False
    return {"p50_ms": percentile(lat, 50), "p99_ms": percentile(lat, 99),
            "max_ms": max(lat) if lat else None, "late_sends": late,
            "latency_missing": count * n - len(lat),
            "paced_us_per_delivered": round(1e6 * paced_cpu / max(len(lat), 1), 2)}


async def measure(server: Server, case: str, args: argparse.Namespace,
                  spread: list[Server] | None = None) -> dict[str, Any]:
    """With `spread`, the clients are shared evenly by `server` and those servers (processes
    of one deployment); the broadcasts are posted to `server`."""
    n = args.clients
    tally = Tally(case)
    servers = [server, *(spread or [])]
    log(f"  opening {n} {case} clients on {len(servers)} process(es)")
    clients = []
    for i, target in enumerate(servers):
        share = n // len(servers) + (1 if i < n % len(servers) else 0)
        clients += await open_clients(client_factory(case, target.port, tally), share,
                                      target.port,
                                      progress=lambda k: k % 250 == 0 and log(f"  {k} connected"))
    service = token("bench-service", role="service")
    tally.expect(n)  # warm-up: one broadcast to everyone
    await publish([HttpConn(server.port)], service, 1, False, [])
    if not await wait_reached(tally, 30, "warm-up"):
        raise RuntimeError(f"warm-up broadcast reached {tally.delivered} of {n} clients")
    phase = unicast if case == "websocket-unicast" else throughput
    numbers = await phase(server, tally, n, args, service)
    log(f"  {server.side}/{case}: {numbers['delivered_per_s']:,.0f} delivered/s "
        f"(server cpu {numbers['server_cpu_pct']}%, client cpu {numbers['client_cpu_pct']}%)")
    if phase is throughput:
        numbers.update(await latency(server, tally, n, args, service))
        log(f"  {server.side}/{case}: p50 {numbers['p50_ms']:.1f} ms, "
            f"p99 {numbers['p99_ms']:.1f} ms")
    numbers["clients_dropped"] = sum(c.done.done() for c in clients)
    numbers["server_rss_kib"] = server.rss_kib()
    if server.program == "tidings":  # pushes or acks it had no room to record are work not done
        numbers["receipts_dropped"] = sum(map(int, _DROPPED.findall(server.log_path.read_text())))
        if numbers["receipts_dropped"]:
            log(f"  {server.side}/{case}: {numbers['receipts_dropped']:,} pushes or "
                "acknowledgements not recorded (the receipts buffer was full)")
    await close_clients(clients)
    return numbers


_DROPPED = re.compile(r"(\d+) pushes or acknowledgements were not recorded")

METRICS = [
    Metric("websocket", "delivered_per_s", "delivered", "msg/s", min_ratio=2.0),
    Metric("websocket", "p50_ms", "p50 latency", "ms"),
    Metric("websocket", "p99_ms", "p99 latency", "ms"),
    Metric("websocket-ack", "delivered_per_s", "delivered", "msg/s", min_ratio=0.7),
    Metric("websocket-ack", "p99_ms", "p99 latency", "ms"),
    Metric("websocket-unicast", "delivered_per_s", "delivered", "msg/s", min_ratio=0.8),
    Metric("sse", "delivered_per_s", "delivered", "msg/s", min_ratio=1.4),
    Metric("sse", "p50_ms", "p50 latency", "ms"),
    Metric("sse", "p99_ms", "p99 latency", "ms"),
]


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, default=1000, help="connections of the tenant (1000)")
    p.add_argument("--broadcasts", type=int, default=300, help="throughput broadcasts (300)")
    p.add_argument("--posters", type=int, default=4, help="POSTs in flight at once (4)")
    p.add_argument("--unicasts", type=int, default=10000,
                   help="websocket-unicast: notifications, each to one user (10000)")
    p.add_argument("--unicast-posters", type=int, default=32,
                   help="websocket-unicast: POSTs in flight at once (32)")
    p.add_argument("--rate", type=float, default=20, help="latency broadcasts per second (20)")
    p.add_argument("--seconds", type=float, default=10, help="latency phase seconds (10)")


def run(argv: list[str] | None = None) -> dict[str, Any]:
    result = main("fanout", __doc__, CASES, measure, METRICS,
                  ("delivered_per_s", True), options, argv, node_cases=NODE_CASES)
    tidings = {case: sides.get("tidings", {}) for case, sides in result["results"].items()}
    typical = {case: sides.get("tidings", {}) for case, sides in result["medians"].items()}
    acking, plain = (tidings.get(c, {}).get("delivered_per_s")
                     for c in ("websocket-ack", "websocket"))
    if acking and plain:  # what receipts cost: the same fan-out with every client acknowledging
        result["ack_ratio"] = acking / plain
        print(f"  acknowledging clients vs not (tidings): {acking / plain:.2f}x (target >= 0.9)")
        # Best rounds against each other, and the medians, which one lucky round moves less.
        acking, plain = (typical[c]["delivered_per_s"] for c in ("websocket-ack", "websocket"))
        result["ack_ratio_of_medians"] = acking / plain
        print(f"  the same of the medians over {result['rounds']} rounds: {acking:,.0f} / "
              f"{plain:,.0f} = {acking / plain:.2f}x")
        # The same from the server's CPU per delivered notification at the latency phase's
        # steady pace (medians), which a busy machine disturbs far less than the rate.
        plain_us, acking_us = (typical[c]["paced_us_per_delivered"]
                               for c in ("websocket", "websocket-ack"))
        result["ack_cpu_ratio"] = plain_us / acking_us
        print(f"  server CPU per delivered at the latency phase's pace, plain / "
              f"acknowledging: {plain_us:.2f} / {acking_us:.2f} us = "
              f"{plain_us / acking_us:.2f}x")
    return result


if __name__ == "__main__":
    run()
