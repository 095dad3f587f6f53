"""SIGTERM and SIGINT: clients are told (WebSocket 1001, SSE stream ended), pending creates are
committed, and the process exits 0 within a few seconds."""

import asyncio
import json
import signal

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from .clients import Api, ServerProcess, SSEClient, WSClient, eventually, raw_websocket, token

SERVICE = token(user="backend", role="service")
ALICE = token(user="alice")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.gen_test(timeout=30)
async def test_a_signal_closes_clients_and_exits_0(tmp_path, signum):
    db = str(tmp_path / "tidings.db")
    server = await ServerProcess(db).start()
    try:
        ws = await WSClient.open(server.port, ALICE)
        sse = await SSEClient.open(server.port, ALICE)
        assert (await sse.event())["event"] == "connected"
        http = AsyncHTTPClient(force_instance=True)
        answered = []

        async def create(i):
            try:
                response = await http.fetch(
                    f"http://127.0.0.1:{server.port}/api/notifications", method="POST",
                    headers={"Authorization": f"Bearer {SERVICE}"},
                    body=json.dumps({"user_id": "bob", "title": f"#{i}"}))
            except (HTTPClientError, OSError):
                return  # refused once the server stopped accepting
            answered.append(json.loads(response.body)["notification"]["id"])
        creating = [asyncio.ensure_future(create(i)) for i in range(30)]
        await asyncio.sleep(0)  # let the creates go out before the signal
        loop = asyncio.get_running_loop()
        started = loop.time()
        server.signal(signum)

        assert await ws.closed() == 1001
        assert await sse.ended()
        assert await server.wait(timeout=5) == 0
        assert loop.time() - started < 5
        await asyncio.gather(*creating)
        http.close()

        restarted = await ServerProcess(db).start()
        try:
            inbox = await Api(restarted.port).json("GET", "/api/notifications?limit=200",
                                                   tok=token(user="bob"))
            assert set(answered) <= {n["id"] for n in inbox["notifications"]}
        finally:
            await restarted.kill()
    finally:
        await server.kill()


@pytest.fixture
def deployment() -> str:
    return "local"  # one process's own sockets; the store and broker play no part


@pytest.mark.gen_test(timeout=30)
async def test_a_websocket_that_never_answers_the_close_is_dropped_past_the_grace(
        start_server):
    """Its close is counted and logged as the shutdown's, as every other socket's: it does not
    just vanish with the process."""
    server = await start_server()
    registry = server.services.registry
    mute = await raw_websocket(server.port, ALICE)  # reads nothing, answers nothing
    await eventually(lambda: registry.stats()["total"] == 1)
    await server.stop()
    assert registry.stats()["total"] == 0
    metrics = (await server.services.metrics.scrape()).decode()
    assert 'tidings_connections_closed_total{reason="shutdown",transport="websocket"} 1.0' \
        in metrics
    mute.close()
