"""The SQLite file failing under a running server: locked by another process, or its disk
full. Creates answer 503 within 10 s and store nothing, /healthz says so, and once the store
is back, creates and channel deliveries go on: no background loop died of it."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from tidings import receipts as receipts_module
from tidings.config import Secret
from tidings.connections import Connection
from tidings.receipts import Receipts
from tidings.store import StoreUnavailable, open_backend
from tidings.store import sqlite as sqlite_module

from .clients import Api, eventually
from .deliveries import ALICE, SENDER, SERVICE, profile

pytest_plugins = ["tests.peers.fixtures"]


class Locker:
    """Another process's connection holding the database's write lock until released."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.held = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        conn.execute("BEGIN EXCLUSIVE")
        self.held.set()
        self.release.wait(60)
        conn.execute("ROLLBACK")
        conn.close()

    async def __aenter__(self) -> Locker:
        # Waited for off the event loop: a server in this process may be in the middle of a
        # write, which must finish before the lock can be had.
        self.thread.start()
        assert await asyncio.get_running_loop().run_in_executor(None, self.held.wait, 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.release.set()
        await asyncio.get_running_loop().run_in_executor(None, self.thread.join, 10)


async def create_status(api: Api, title: str, message: str = "") -> int:
    """The status of one create; the client waits longer than the 10 s the server may take."""
    response = await api.http.fetch(
        api.base + "/api/notifications", method="POST", raise_error=False,
        request_timeout=15, body=json.dumps({"user_id": "alice", "title": title, "message": message}),
        headers={"Authorization": f"Bearer {SERVICE}"})
    return response.code


async def titles(api: Api) -> list[str]:
    page = await api.json("GET", "/api/notifications?limit=200", tok=ALICE)
    return [n["title"] for n in page["notifications"]]


async def mailed_after_recovery(api: Api, smtp_peer) -> None:  # type: ignore[no-untyped-def]
    """Creates go through again, and their emails go out: the channel loops survived."""
    async def created() -> bool:
        return await create_status(api, "after") == 201
    await eventually(created, timeout=30, step=0.5)
    await eventually(lambda: _healthy(api), timeout=10)
    got = await smtp_peer.inbox.arrived(1, timeout=30)
    assert any(m.message["Subject"] == "after" for m in got)


async def _healthy(api: Api) -> bool:
    return (await api.call("GET", "/healthz")).code == 200


@pytest.mark.gen_test(timeout=90)
@pytest.mark.allow_error_logs
async def test_a_database_locked_by_another_process_answers_503_then_recovers(
        start_server, settings, deployment, smtp_peer):
    if deployment != "local":
        pytest.skip("a SQLite file's lock; PostgreSQL's outage is in test_processes")
    server = await start_server(email_url=Secret(smtp_peer.url), email_from=SENDER)
    api = Api(server.port)
    await profile(api, email="alice@example.com")
    async with Locker(str(settings.db)):
        orchestrator = server.services.orchestrator
        orchestrator.notification_created()  # both channel loops run into the lock now
        orchestrator.wake()
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await create_status(api, "locked out") == 503
        assert loop.time() - started < 10
        health = await api.http.fetch(api.base + "/healthz", raise_error=False,
                                      request_timeout=15)
        assert health.code == 503 and b"store" in health.body
    await mailed_after_recovery(api, smtp_peer)
    assert "locked out" not in await titles(api)


@pytest.fixture
def small_disk(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 4 MiB tmpfs mounted for this test (root only), unmounted after."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.gen_test(timeout=90)
@pytest.mark.allow_error_logs
async def test_a_full_disk_answers_503_then_recovers(start_server, deployment, small_disk,
                                                     smtp_peer):
    if deployment != "local":
        pytest.skip("a SQLite file's disk")
    server = await start_server(db=Secret(str(small_disk / "tidings.db")),
                                email_url=Secret(smtp_peer.url), email_from=SENDER)
    api = Api(server.port)
    await profile(api, email="alice@example.com")
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # fill the disk to the last byte
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    statuses = [await create_status(api, f"big {i}", "x" * 3000) for i in range(20)]
    assert 503 in statuses and 500 not in statuses, statuses
    health = await api.http.fetch(api.base + "/healthz", raise_error=False, request_timeout=15)
    assert health.code == 503
    filler.unlink()
    await mailed_after_recovery(api, smtp_peer)


class _Pushed(Connection):
    transport = "websocket"


@pytest.mark.gen_test(timeout=30)
async def test_receipts_a_failed_write_kept_still_count_against_the_bound(tmp_path, monkeypatch):
    """What a failed write keeps stays counted, by connection and by tenant: a store outage
    cannot grow the buffer past its bound, nor a tenant's backlog take another's room."""
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_MS", 100)
    monkeypatch.setattr(receipts_module, "MAX_BUFFERED", 100)
    monkeypatch.setattr(receipts_module, "MAX_TENANT_SHARE", 50)
    path = str(tmp_path / "receipts.db")
    backend = await open_backend(path)
    receipts = Receipts(backend.receipts)
    receipts.pushed(1, "a", [_Pushed("a", f"u{i}") for i in range(40)])
    async with Locker(path):
        with pytest.raises(StoreUnavailable):
            await receipts.flush()
    receipts.pushed(2, "a", [_Pushed("a", f"u{i}") for i in range(40)])
    assert receipts.dropped == 40  # a's 40 kept and 40 more are past its 50
    receipts.pushed(3, "b", [_Pushed("b", f"v{i}") for i in range(10)])
    assert receipts.dropped == 40  # b's room is whole
    await receipts.flush()  # the store is back: all that was kept is written
    found = await backend.receipts.receipts("a", [1, 2])
    assert (len(found[1]), found[2]) == (40, [])
    assert len((await backend.receipts.receipts("b", [3]))[3]) == 10
    await backend.store.close()
