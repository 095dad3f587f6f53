"""Scheduled notifications across restarts and processes, with real `python server.py`
processes: an entry survives SIGTERM and SIGKILL and is sent once, by the next process; with
two processes sharing PostgreSQL and Redis, each entry is sent once, whichever sends it."""

from __future__ import annotations

import datetime
import signal
from typing import Any

import pytest

from .clients import Api, ServerProcess, WSClient, eventually, token
from .test_schedule import at

SERVICE = token(user="backend", role="service")
ALICE = token(user="alice")


async def schedule(port: int, title: str, seconds: float) -> dict[str, Any]:
    body = await Api(port).json("POST", "/api/notifications",
                                {"user_id": "alice", "title": title, "send_at": at(seconds)},
                                SERVICE, expect=202)
    return body["scheduled"]


def _seconds(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso).timestamp()


async def inbox_titles(port: int) -> list[str]:
    page = await Api(port).json("GET", "/api/notifications?limit=200", tok=ALICE)
    return sorted(n["title"] for n in page["notifications"])


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
async def test_an_entry_outlives_a_stop_and_is_sent_once_by_the_next_process(tmp_path, how):
    db = str(tmp_path / "tidings.db")
    first = await ServerProcess(db).start()
    try:
        due_while_down = await schedule(first.port, "while down", 0.5)
        due_after = await schedule(first.port, "after restart", 3.0)
        first.signal(how)
        assert await first.wait() == (0 if how == signal.SIGTERM else -9)
    finally:
        await first.kill()
    second = await ServerProcess(db).start()
    try:
        ws = await WSClient.open(second.port, ALICE, since="0")  # one may be out already
        got = [(await ws.next_of("notification", timeout=10))["notification"]
               for _ in range(2)]
        assert sorted(n["title"] for n in got) == ["after restart", "while down"]
        assert got[0]["id"] < got[1]["id"]
        # the later one goes at its time (within a second), not at a poll long after
        send_at = [n for n in got if n["title"] == "after restart"][0]
        assert send_at["created_at"] >= due_after["send_at"]
        assert _seconds(send_at["created_at"]) - _seconds(due_after["send_at"]) < 1.0
        assert await inbox_titles(second.port) == ["after restart", "while down"]
        pending = (await Api(second.port).json("GET", "/api/scheduled", tok=SERVICE))
        assert pending["scheduled"] == []
        await Api(second.port).json("DELETE", f"/api/scheduled/{due_while_down['id']}",
                                    tok=SERVICE, expect=404)
        ws.close()
    finally:
        await second.kill()


@pytest.fixture
def shared(postgres: Any, redis: Any) -> dict[str, str]:
    redis.flush()
    return {"db": postgres.fresh_database(), "redis": redis.url}


@pytest.mark.gen_test(timeout=60)
async def test_two_processes_send_each_entry_exactly_once(shared):
    servers = [await ServerProcess(shared["db"], "test-secret-that-is-long-enough-for-hs256!",
                                   "--redis-url", shared["redis"]).start() for _ in range(2)]
    try:
        clients = [await WSClient.open(s.port, ALICE) for s in servers]
        titles = [f"#{i}" for i in range(12)]
        for i, title in enumerate(titles):  # through either process, due close together
            await schedule(servers[i % 2].port, title, 1.0 + (i % 4) * 0.05)
        for ws in clients:
            got = [(await ws.next_of("notification", timeout=10))["notification"]
                   for _ in titles]
            assert sorted(n["title"] for n in got) == sorted(titles)
            assert [n["id"] for n in got] == sorted(n["id"] for n in got)
        # and no second copy comes later: a marker is the next thing each client sees
        marker = (await Api(servers[0].port).send(SERVICE, user_id="alice", title="marker"))
        for ws in clients:
            nxt = (await ws.next_of("notification"))["notification"]
            assert nxt["id"] == marker["notification"]["id"]
        assert await inbox_titles(servers[1].port) == sorted([*titles, "marker"])

        async def none_pending() -> bool:
            body = await Api(servers[1].port).json("GET", "/api/scheduled", tok=SERVICE)
            return body["scheduled"] == []
        await eventually(none_pending)
        for ws in clients:
            ws.close()
    finally:
        for server in servers:
            await server.kill()
