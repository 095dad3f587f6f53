"""Resident memory per idle connection (WebSocket, SSE) at --clients connections, and one
process holding --mixed-clients idle connections (WebSocket and SSE, half each) with its
heartbeats running.

`websocket`, `sse`: the server's VmRSS (from /proc/PID/status) is read after a warm-up (a few
connections opened and closed), then with --clients idle connections open (each has had its
`connected`), and (RSS after - RSS before) / clients is the cost of one connection. Then all
close and the same number opens again: RSS growing past the first peak would point to a leak.
Targets: at most 12 KiB per WebSocket, 25 KiB per SSE stream.

`mixed`: --mixed-clients connections (default 50,000), alternately WebSocket and SSE, opened
from several loopback source addresses (127.0.0.2, 127.0.0.3, ...: each has its own ephemeral
port range), then --idle seconds (65) of nothing but heartbeats (the server's default interval,
30 s: a ping to every WebSocket, whose pong must come back within one interval, and a
`heartbeat` event to every SSE stream). Reported: RSS, the server's CPU seconds over the idle
window (and as a share of one core), the heartbeats the clients saw, the CPU per heartbeat and
so the steady share of a core the heartbeats take (per heartbeat x connections / interval:
how many rounds fall in the window depends on its phase against the timer), the connections
that ended meanwhile. Targets: RSS under 1 GiB, heartbeats under 5 % of a core.

The clients are raw asyncio sockets in this process on core 1, the server on core 0; both
have their open-file limit raised for the run (this process and its children only). Floor:
bare Tornado holding the same connections (without heartbeats).

--tracemalloc runs each server under `tracemem.py` and lists what the open connections hold,
by line of source, per connection (RSS is inflated by tracemalloc itself in that mode).

  .venv/bin/python bench/memory.py [--quick] [--clients 10000] [--mixed-clients 50000]
                                   [--idle 65] [--tracemalloc] [--case websocket] [--json out]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    TENANT,
    Metric,
    Server,
    log,
    main,
    raise_nofile,
    run_delay,
    token,
)

from clients import SseClient, StreamClient, WsClient, close_clients, open_clients

CASES = ["websocket", "sse", "mixed"]
HEARTBEAT = 30.0  # seconds: tidings' default --heartbeat, which common.Server passes


def factory(case: str, port: int) -> Any:
    """Clients of one transport, or (`mixed`) of both in turn; each its own user."""
    users = iter(range(10_000_000))
    kinds = [(WsClient, "/ws/notifications"), (SseClient, "/api/notifications/stream")]
    if case == "websocket":
        kinds = kinds[:1]
    elif case == "sse":
        kinds = kinds[1:]

    def make() -> StreamClient:
        n = next(users)
        cls, path = kinds[n % len(kinds)]
        return cls(cls.request_for(port, f"{path}?token={token(f'user{n}')}"
                                         f"&tenant_id={TENANT}"))

    return make


async def settled_rss(server: Server) -> int:
    """RSS once the server has finished the work the last connections caused."""
    await asyncio.sleep(1.0)
    return server.rss_kib()


class Snapshots:
    """tracemalloc snapshots of a server started through tracemem.py (SIGUSR1 takes one)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.taken = 0

    async def take(self) -> tracemalloc.Snapshot:
        self.taken += 1
        path = Path(f"{self.server.workdir}/tracemalloc-{self.server.port}.{self.taken}")
        os.kill(self.server.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 300
        while not path.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("no tracemalloc snapshot from the server")
            await asyncio.sleep(0.2)
        snapshot = tracemalloc.Snapshot.load(str(path))
        path.unlink()
        return snapshot.filter_traces([
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
        ])


def holders(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int,
            top: int) -> list[str]:
    """What grew between the snapshots, per connection: by line, then by file."""
    lines = []
    grew = [d for d in after.compare_to(before, "lineno") if d.size_diff > 0]
    total = sum(d.size_diff for d in grew)
    lines.append(f"{total / n:8.0f} B/conn traced in all "
                 f"({sum(d.count_diff for d in grew) / n:.1f} blocks)")
    for d in grew[:top]:
        frame = d.traceback[0]
        where = frame.filename.replace(str(ROOT) + "/", "")
        where = where.split("site-packages/")[-1].split("/lib/python3")[-1]
        lines.append(f"{d.size_diff / n:8.0f} B/conn {d.count_diff / n:5.1f} blocks  "
                     f"{where}:{frame.lineno}")
    return lines


async def measure(server: Server, case: str, args: argparse.Namespace) -> dict[str, Any]:
    if case == "mixed":
        return await measure_mixed(server, args)
    n = 2000 if args.quick else args.clients
    make = factory(case, server.port)
    snapshots = Snapshots(server) if args.tracemalloc else None

    def progress(k: int) -> None:
        if k % 2000 == 0:
            log(f"  {k} connected")

    await close_clients(await open_clients(make, 100, server.port))
    before = await settled_rss(server)
    first = await snapshots.take() if snapshots else None
    log(f"  RSS before: {before:,} KiB; opening {n} {case} connections")
    clients = await open_clients(make, n, server.port, progress=progress)
    peak = await settled_rss(server)
    dropped = sum(c.done.done() for c in clients)
    log(f"  RSS with {n}: {peak:,} KiB = {(peak - before) / n:.1f} KiB each")
    numbers: dict[str, Any] = {}
    if snapshots and first:
        top = holders(first, await snapshots.take(), n, args.top)
        log(f"  tracemalloc, {server.side} {case}, what {n} connections hold:")
        for line in top:
            log(f"    {line}")
        numbers["tracemalloc"] = top
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
        **numbers,
    }


def sources(n: int, per_source: int) -> list[str]:
    """Loopback addresses enough for n connections at `per_source` each."""
    count = max(1, -(-n // per_source))
    return [f"127.0.0.{2 + i}" for i in range(count)]


async def measure_mixed(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    wanted = 10_000 if args.quick else args.mixed_clients
    idle = 15.0 if args.quick else args.idle
    limit = raise_nofile()  # the server had the same done by its preexec_fn
    n = min(wanted, limit - 500)
    if n < wanted:
        log(f"  the open-file limit stays at {limit} (raising a hard limit takes "
            f"CAP_SYS_RESOURCE): {n} connections instead of {wanted}; the figures for "
            f"{wanted} are extrapolated from them")
    addresses = sources(n, args.per_source)
    make = factory("mixed", server.port)

    def progress(k: int) -> None:
        if k % 5000 == 0:
            log(f"  {k} connected")

    await close_clients(await open_clients(make, 100, server.port))
    before = await settled_rss(server)
    log(f"  RSS before: {before:,} KiB; opening {n} connections (WebSocket and SSE) from "
        f"{', '.join(addresses)}")
    started = time.monotonic()
    clients = await open_clients(make, n, server.port, progress=progress, sources=addresses)
    opened_in = time.monotonic() - started
    peak = await settled_rss(server)
    log(f"  RSS with {n}: {peak:,} KiB ({peak / 1024:,.0f} MiB; "
        f"{(peak - before) / n:.1f} KiB each); {n / opened_in:,.0f} opened/s")
    log(f"  idle for {idle:.0f} s (heartbeat every {HEARTBEAT:.0f} s on the tidings side)")
    beats = sum(c.heartbeats for c in clients)
    cpu, wait, wall = server.cpu_seconds(), run_delay(server.pid), time.monotonic()
    await asyncio.sleep(idle)
    wall = time.monotonic() - wall
    cpu_s = server.cpu_seconds() - cpu
    wait_s = run_delay(server.pid) - wait
    beats = sum(c.heartbeats for c in clients) - beats
    ended = sum(c.done.done() for c in clients)
    rss_end = server.rss_kib()
    log(f"  server CPU over {wall:.0f} s idle: {cpu_s:.2f} s ({100 * cpu_s / wall:.1f} % of a "
        f"core); {beats:,} heartbeats seen by the clients; {ended} connections ended; "
        f"RSS {rss_end:,} KiB")
    await close_clients(clients, timeout=30)
    scale = wanted / n
    # Per heartbeat and so per interval, whatever the phase of the window against the timer
    # (the idle loops' own CPU counted in): the steady share of a core the heartbeats take.
    per_beat = cpu_s / beats if beats else None
    steady = None if per_beat is None else 100 * per_beat * n / HEARTBEAT
    return {
        "connections": n,
        "connections_wanted": wanted,
        "open_file_limit": limit,
        "rss_mib_at_wanted": round((before + (peak - before) * scale) / 1024, 1),
        "idle_cpu_pct_at_wanted": round(100 * cpu_s * scale / wall, 2),
        "cpu_us_per_heartbeat": None if per_beat is None else round(1e6 * per_beat, 1),
        "heartbeat_cpu_pct": None if steady is None else round(steady, 2),
        "heartbeat_cpu_pct_at_wanted": None if steady is None else round(steady * scale, 2),
        "sources": len(addresses),
        "opened_per_s": round(n / opened_in),
        "rss_before_kib": before,
        "rss_kib": peak,
        "rss_mib": round(peak / 1024, 1),
        "rss_after_idle_kib": rss_end,
        "kib_per_conn": round((peak - before) / n, 2),
        "idle_s": round(wall, 1),
        "heartbeat_s": HEARTBEAT,
        "idle_cpu_s": round(cpu_s, 2),
        "idle_cpu_pct": round(100 * cpu_s / wall, 2),
        "server_wait_pct": round(100 * wait_s / wall, 1),
        "heartbeats_seen": beats,
        "ended_while_idle": ended,
    }


METRICS = [
    Metric("websocket", "kib_per_conn", "RSS per idle connection", "KiB", max_value=12),
    Metric("websocket", "second_cycle_growth_kib", "growth on a 2nd cycle", "KiB"),
    Metric("sse", "kib_per_conn", "RSS per idle connection", "KiB", max_value=25),
    Metric("sse", "second_cycle_growth_kib", "growth on a 2nd cycle", "KiB"),
    Metric("mixed", "connections", "connections open", "count"),
    Metric("mixed", "rss_mib", "RSS with all connections open", "MiB"),
    Metric("mixed", "idle_cpu_pct", "CPU while idle (heartbeats)", "% of a core"),
    Metric("mixed", "rss_mib_at_wanted", "RSS at --mixed-clients (extrapolated if fewer)",
           "MiB", max_value=1024),
    Metric("mixed", "cpu_us_per_heartbeat", "server CPU per heartbeat seen", "us"),
    Metric("mixed", "heartbeat_cpu_pct_at_wanted", "heartbeats at --mixed-clients, steady "
           "(per heartbeat x connections / interval)", "% of a core", max_value=5),
    Metric("mixed", "heartbeats_seen", "heartbeats seen while idle", "count"),
    Metric("mixed", "ended_while_idle", "connections ended while idle", "count"),
]


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, default=10_000,
                   help="idle connections of the websocket and sse cases (10000)")
    p.add_argument("--mixed-clients", type=int, default=50_000,
                   help="connections of the mixed case, WebSocket and SSE in turn (50000)")
    p.add_argument("--idle", type=float, default=65.0,
                   help="seconds the mixed case stays idle while the server's CPU is "
                        "measured (65: two or three heartbeats)")
    p.add_argument("--per-source", type=int, default=20_000,
                   help="mixed: connections per loopback source address (20000)")
    p.add_argument("--tracemalloc", action="store_true",
                   help="run the servers under tracemalloc and list what the connections "
                        "hold, per connection (websocket and sse cases)")
    p.add_argument("--top", type=int, default=25, help="lines of --tracemalloc output (25)")


class TracedServer(Server):
    """The same server, started through tracemem.py, snapshots written into its workdir."""

    @property
    def command(self) -> list[str]:
        command = super().command
        return [command[0], str(ROOT / "bench/tracemem.py"), *command[1:]]

    def start(self, timeout: float = 120.0) -> None:
        os.environ["TIDINGS_TRACEMALLOC_OUT"] = str(self.workdir / f"tracemalloc-{self.port}")
        super().start(timeout)


def run(argv: list[str] | None = None) -> dict[str, Any]:
    traced = "--tracemalloc" in (sys.argv[1:] if argv is None else argv)

    def make_server(side: str, case: str, workdir: Path) -> Server:
        return TracedServer(side, workdir) if traced else Server(side, workdir)

    return main("memory", __doc__, CASES, measure, METRICS, ("kib_per_conn", False), options,
                argv, make_server)


if __name__ == "__main__":
    run()
