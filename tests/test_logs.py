"""--log-format json: one JSON object a line, with the text lines' fields as keys, no token."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from .clients import SECRET, WAIT, Api, SSEClient, WSClient, token

ROOT = Path(__file__).resolve().parent.parent
SERVICE = token(user="backend", role="service")
ALICE = token(user="alice")


async def start(tmp_path: Path, *args: str) -> tuple[asyncio.subprocess.Process, int, list[str]]:
    """`server.py` on a port the OS picks; returns the process, its port and its first lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "server.py"), "--port", "0", "--db", str(tmp_path / "t.db"),
        "--vapid-key", str(tmp_path / "vapid.pem"), "--jwt-secret", SECRET, *args, cwd=ROOT,
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    lines = []
    while True:
        line = (await asyncio.wait_for(proc.stderr.readline(), 15)).decode()
        assert line, "the server exited: " + "".join(lines)
        lines.append(line)
        if "listening on" in line:
            port = int(line.split("http://127.0.0.1:")[1].split(" ")[0].strip('",'))
            return proc, port, lines


@pytest.mark.gen_test(timeout=40)
async def test_json_logs_carry_the_fields_and_never_a_token(tmp_path):
    proc, port, lines = await start(tmp_path, "--log-format", "json")
    try:
        api = Api(port)
        ws = await WSClient.open(port, ALICE, tenant_id="acme")
        sse = await SSEClient.open(port, ALICE)
        sent = await api.send(SERVICE, user_id="alice", title="Hello")
        await ws.next_of("notification")
        await api.send(SERVICE, user_ids=["alice", "bob"], title="Both")
        await api.json("GET", f"/api/notifications?token={ALICE}")
        await api.json("GET", "/api/notifications", tok="not.a.token", expect=401)
        ws.close()
        sse.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        _, rest = await asyncio.wait_for(proc.communicate(), WAIT * 2)
    text = "".join(lines) + rest.decode()
    assert ALICE not in text and SERVICE not in text and ALICE.split(".")[2] not in text
    entries = [json.loads(line) for line in text.splitlines()]
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= set(entry), entry
        assert entry["time"].endswith("Z")
    opened = [e for e in entries if e.get("event") == "opened"]
    assert {e["transport"] for e in opened} == {"websocket", "sse"}
    assert all(e["tenant"] == "acme" and e["user"] == "alice" and e["connection"]
               and e["client"] == "127.0.0.1" for e in opened)
    closed = [e for e in entries if e.get("event") == "closed"]
    assert {e["connection"] for e in closed} >= {e["connection"] for e in opened}
    created = [e for e in entries if "notification_id" in e]
    assert created[0]["notification_id"] == sent["notification"]["id"]
    assert (created[0]["tenant"], created[0]["user"], created[0]["ws"]) == ("acme", "alice", 1)
    batch = [e for e in entries if "notification_id_first" in e]
    assert batch and batch[0]["notification_id_last"] == batch[0]["notification_id_first"] + 1
    access = [e for e in entries if e["logger"] == "tornado.access"]
    assert {e["status"] for e in access} >= {201, 200, 401}
    assert 101 not in {e["status"] for e in access}  # the opened line says it, and more
    assert any(e["path"].startswith("/api/notifications?token=[redacted]") for e in access)


@pytest.mark.gen_test(timeout=40)
async def test_text_logs_stay_lines_of_text(tmp_path):
    proc, _port, lines = await start(tmp_path)
    proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(proc.communicate(), WAIT * 2)
    assert " INFO    tidings: tidings listening on http://127.0.0.1:" in lines[-1]
    with pytest.raises(ValueError):
        json.loads(lines[-1])


def test_the_signed_part_of_an_unsubscribe_link_is_redacted_in_both_formats():
    import logging

    from tidings.logs import JsonFormatter, TextFormatter

    link = "https://notify.example.com/unsubscribe/WyJhIiwiYiIsImMiXQ.c2lnbmF0dXJlc2lnbmF0"
    record = logging.LogRecord("tidings", logging.INFO, __file__, 1, "sent %s", (link,), None)
    for formatter in (TextFormatter(), JsonFormatter()):
        line = formatter.format(record)
        assert "/unsubscribe/[redacted]" in line and "WyJhIiwi" not in line, line
