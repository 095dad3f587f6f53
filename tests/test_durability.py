"""Every notification answered 201 survives the process being killed with SIGKILL."""

import asyncio
import json

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.simple_httpclient import HTTPStreamClosedError

from .clients import Api, ServerProcess, inbox_ids, token

SERVICE = token(user="backend", role="service")
BOB = token(user="bob")
REQUESTS = 500
KILL_AFTER = 150


@pytest.mark.gen_test(timeout=60)
async def test_every_answered_create_survives_sigkill(tmp_path):
    db = str(tmp_path / "tidings.db")
    server = await ServerProcess(db).start()
    http = AsyncHTTPClient(force_instance=True, max_clients=128)
    answered: list[int] = []
    url = f"http://127.0.0.1:{server.port}/api/notifications"
    headers = {"Authorization": f"Bearer {SERVICE}", "Content-Type": "application/json"}

    async def create(i: int) -> None:
        body = {"broadcast": True, "title": f"#{i}"} if i % 5 == 0 else \
            {"user_id": "bob", "title": f"#{i}"}
        try:
            response = await http.fetch(url, method="POST", headers=headers,
                                        body=json.dumps(body), request_timeout=15)
        except (HTTPStreamClosedError, OSError):
            assert server.proc.returncode is not None or len(answered) >= KILL_AFTER
            return  # the connection died with the process: no answer, no promise
        assert response.code == 201
        answered.append(json.loads(response.body)["notification"]["id"])
        if len(answered) == KILL_AFTER:
            server.proc.kill()  # SIGKILL: no shutdown code runs

    try:
        await asyncio.gather(*(create(i) for i in range(REQUESTS)))
        assert await server.wait() == -9
        assert KILL_AFTER <= len(answered) < REQUESTS, "the kill did not land mid-way"
        restarted = await ServerProcess(db).start()
        try:
            stored = await inbox_ids(restarted.port, BOB)
            assert len(stored) == len(set(stored))
            assert not set(answered) - set(stored), "answered 201 but lost"
            # The restarted server goes on with larger ids.
            after = await Api(restarted.port).send(SERVICE, user_id="bob", title="after")
            assert after["notification"]["id"] > max(stored)
        finally:
            await restarted.kill()
    finally:
        http.close()
        await server.kill()
