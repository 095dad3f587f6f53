"""The command line (`tidings notify`, `tidings tail`, `tidings-client`) as a subprocess
against the real server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from .clients import WAIT, token

ROOT = Path(__file__).resolve().parent.parent
SERVICE = token(user="backend", role="service")
ALICE = token(user="alice")
TIDINGS = [sys.executable, str(ROOT / "server.py")]  # the server's own `tidings` command
TIDINGS_CLIENT = [str(Path(sys.executable).parent / "tidings-client")]


def env(port: int, tok: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    return {**clean, "TIDINGS_URL": f"http://127.0.0.1:{port}", "TIDINGS_TOKEN": tok}


async def run(command: list[str], *args: str, environ: dict[str, str] | None = None,
              ) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *command, *args, env=environ or env(1, ""), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.gen_test(timeout=30)
async def test_notify_sends_what_the_flags_say(server, api):
    code, out, err = await run(TIDINGS, "notify", "--user", "alice", "Build finished", "-m",
                               "main is green", "--data", "build=7", "--data", "branch=main",
                               "--type", "success", "--priority", "high",
                               environ=env(server.port, SERVICE))
    assert code == 0, err
    assert out.startswith("notification ") and out.strip().endswith("to alice")
    inbox = await api.json("GET", "/api/notifications", tok=ALICE)
    n = inbox["notifications"][0]
    assert (n["title"], n["message"], n["data"], n["type"], n["priority"]) == (
        "Build finished", "main is green", {"build": 7, "branch": "main"}, "success", "high")

    code, out, err = await run(TIDINGS_CLIENT, "notify", "--user", "alice", "--user", "bob",
                               "Deploy", "--json", environ=env(server.port, SERVICE))
    assert code == 0, err
    assert [n["user_id"] for n in json.loads(out)["notifications"]] == ["alice", "bob"]
    code, out, err = await run(TIDINGS_CLIENT, "notify", "--broadcast", "Maintenance",
                               environ=env(server.port, SERVICE))
    assert code == 0 and out.strip().endswith(" to everyone"), err


@pytest.mark.gen_test(timeout=30)
async def test_notify_says_the_servers_error_and_fails(server):
    code, out, err = await run(TIDINGS, "notify", "--user", "bob", "Hi",
                               environ=env(server.port, ALICE))
    assert code == 1 and out == ""
    assert "only admin and service tokens may send notifications (forbidden)" in err
    code, _out, err = await run(TIDINGS_CLIENT, "notify", "--user", "bob", "Hi",
                                environ=env(server.port, "garbage"))
    assert code == 1 and "invalid_token" in err
    code, _out, err = await run(TIDINGS_CLIENT, "notify", "--user", "bob", "Hi")
    assert code == 2 and "TIDINGS_TOKEN" in err


@pytest.mark.gen_test(timeout=30)
async def test_each_command_has_help():
    for command in (TIDINGS, TIDINGS_CLIENT):
        for sub in ("notify", "tail"):
            code, out, _err = await run(command, sub, "--help")
            assert code == 0 and "usage:" in out and "--json" in out
    code, out, _err = await run(TIDINGS, "--help")
    assert code == 0 and "tidings tail" in out


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("command", ["tidings", "tidings-client"])
async def test_tail_prints_notifications_as_they_arrive(server, api, command):
    first = await api.send(SERVICE, user_id="alice", title="Earlier")
    before = first["notification"]["id"]
    await api.send(SERVICE, user_id="alice", title="Missed")
    proc = await asyncio.create_subprocess_exec(
        *(TIDINGS if command == "tidings" else TIDINGS_CLIENT), "tail", "--json", "--since",
        str(before), env=env(server.port, ALICE), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        hello = await asyncio.wait_for(proc.stderr.readline(), WAIT * 2)
        assert b"connected over websocket as alice" in hello
        missed = json.loads(await asyncio.wait_for(proc.stdout.readline(), WAIT))
        assert missed["title"] == "Missed"
        await api.send(SERVICE, user_id="alice", title="Live", data={"k": 1})
        live = json.loads(await asyncio.wait_for(proc.stdout.readline(), WAIT))
        assert (live["title"], live["data"], live["user_id"]) == ("Live", {"k": 1}, "alice")
    finally:
        proc.terminate()
        await proc.wait()


@pytest.mark.gen_test(timeout=60)
async def test_tail_resumes_after_the_server_comes_back(settings):
    import tornado.netutil
    from tornado.testing import bind_unused_port

    from server import Server

    from .clients import Api

    sock, port = bind_unused_port()
    server = await Server.start(settings, sockets=[sock])
    proc = await asyncio.create_subprocess_exec(
        *TIDINGS_CLIENT, "tail", env=env(port, ALICE), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert b"connected over" in await asyncio.wait_for(proc.stderr.readline(), WAIT * 2)
        await Api(port).send(SERVICE, user_id="alice", title="Before")
        assert b"Before" in await asyncio.wait_for(proc.stdout.readline(), WAIT)
        await server.stop()
        server = await Server.start(settings, sockets=tornado.netutil.bind_sockets(
            port, "127.0.0.1"))
        await Api(port).send(SERVICE, user_id="alice", title="While it was away")
        line = await asyncio.wait_for(proc.stdout.readline(), 40)
        assert b"While it was away" in line
    finally:
        proc.terminate()
        await proc.wait()
        await server.stop()
