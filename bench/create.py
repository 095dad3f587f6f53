"""Notifications created per second through `POST /api/notifications`.

Cases: `single` (one `user_id` per POST) and `batch` (`user_ids` with --batch ids per POST).
The load generator is wrk (Debian package `wrk`) with a Lua script, on core 1, with
--connections keep-alive connections; the server is on core 0. Floor: bare Tornado answering
the same POSTs (parse JSON, check the Bearer JWT with PyJWT, answer 201 with JSON).
Target: tidings creates at least 0.5 x the floor's rate.

  .venv/bin/python bench/create.py [--quick] [--connections 32] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import shutil
from typing import Any

from common import CLIENT_CORE, TENANT, CpuMeter, Metric, Server, log, main, pinned, token

from clients import HttpConn

CASES = ["single", "batch"]
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def body(case: str, batch: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"title": "Build finished", "message": "main is green",
                           "type": "success", "data": {"build": 7}}
    if case == "single":
        doc["user_id"] = "alice"
    else:
        doc["user_ids"] = [f"user{i}" for i in range(batch)]
    return doc


def lua_script(doc: dict[str, Any], service_token: str) -> str:
    return "\n".join([
        'wrk.method = "POST"',
        f"wrk.body = [==[{json.dumps(doc)}]==]",
        'wrk.headers["Content-Type"] = "application/json"',
        f'wrk.headers["Authorization"] = "Bearer {service_token}"',
        f'wrk.headers["X-Tenant-ID"] = "{TENANT}"',
        "",
    ])


def parse_wrk(out: str) -> dict[str, Any]:
    def num(pattern: str, default: float = 0.0) -> float:
        m = re.search(pattern, out)
        return float(m.group(1)) if m else default

    numbers: dict[str, Any] = {
        "requests": int(num(r"(\d+) requests in")),
        "requests_per_s": num(r"Requests/sec:\s+([\d.]+)"),
        "non_2xx": int(num(r"Non-2xx or 3xx responses: (\d+)")),
    }
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    numbers["socket_errors"] = sum(int(g) for g in m.groups()) if m else 0
    for p in ("50", "99"):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", out)
        numbers[f"p{p}_ms"] = round(float(m.group(1)) * _UNITS[m.group(2)], 3) if m else None
    return numbers


async def wrk(server: Server, script: str, connections: int, seconds: float) -> tuple[str, float]:
    """Run wrk on core 1; return its output and the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = await asyncio.create_subprocess_exec(
        "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", script,
        f"http://127.0.0.1:{server.port}/api/notifications",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        preexec_fn=pinned(CLIENT_CORE))
    out, _ = await proc.communicate()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return out.decode(), used


async def measure(server: Server, case: str, args: argparse.Namespace) -> dict[str, Any]:
    seconds = 3 if args.quick else args.seconds
    doc = body(case, args.batch)
    service = token("bench-service", role="service")
    status, answer = await HttpConn(server.port).post_json("/api/notifications", service,
                                                           TENANT, doc)
    if status != 201:
        raise RuntimeError(f"probe POST answered {status}: {answer[:300]!r}")
    script = server.workdir / f"create-{case}.lua"
    script.write_text(lua_script(doc, service))
    log(f"  warm-up 1s, then {seconds}s with {args.connections} connections")
    await wrk(server, str(script), args.connections, 1)
    meter = CpuMeter(server)
    cpu_before = server.cpu_seconds()
    task = asyncio.create_task(wrk(server, str(script), args.connections, seconds))
    while not task.done():
        await asyncio.wait([task], timeout=2)
        if not task.done():
            log(f"  {server.side}/{case}: server cpu {meter.read()['server_cpu_pct']}%")
    out, wrk_cpu = task.result()
    cpu = meter.read()
    server_cpu = server.cpu_seconds() - cpu_before
    numbers = parse_wrk(out)
    per_request = 1 if case == "single" else args.batch
    if numbers["requests"] == 0:
        raise RuntimeError(f"wrk made no requests:\n{out}")
    numbers["notifications_per_s"] = round(numbers["requests_per_s"] * per_request, 1)
    numbers["server_cpu_pct"] = cpu["server_cpu_pct"]
    numbers["server_wait_pct"] = cpu["server_wait_pct"]
    # The server's CPU time per request (and per notification created): what a change costs or
    # saves, nearly unmoved by other load that only slows the run down.
    numbers["cpu_us_per_request"] = round(1e6 * server_cpu / numbers["requests"], 1)
    numbers["cpu_us_per_notification"] = round(numbers["cpu_us_per_request"] / per_request, 1)
    numbers["wrk_cpu_pct"] = round(100 * wrk_cpu / seconds, 1)
    log(f"  {server.side}/{case}: {numbers['notifications_per_s']:.0f} notifications/s, "
        f"p99 {numbers['p99_ms']} ms, non-2xx {numbers['non_2xx']}")
    return numbers


METRICS = [
    Metric("single", "notifications_per_s", "created", "notif/s", min_ratio=0.5),
    Metric("single", "p99_ms", "p99 latency", "ms"),
    Metric("single", "cpu_us_per_request", "server CPU per request", "us"),
    Metric("batch", "notifications_per_s", "created in batches", "notif/s", min_ratio=0.5),
    Metric("batch", "p99_ms", "p99 latency", "ms"),
    Metric("batch", "cpu_us_per_request", "server CPU per request", "us"),
]


def options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--connections", type=int, default=32, help="keep-alive connections (32)")
    p.add_argument("--seconds", type=float, default=10, help="measured seconds per run (10)")
    p.add_argument("--batch", type=int, default=10, help="user_ids per POST in `batch` (10)")


def run(argv: list[str] | None = None) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    return main("create", __doc__, CASES, measure, METRICS,
                ("notifications_per_s", True), options, argv)


if __name__ == "__main__":
    run()
