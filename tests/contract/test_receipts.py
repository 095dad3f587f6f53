"""The receipt book's contract on SQLite and PostgreSQL: pushes and acknowledgements (REST rows
and packed WebSocket frames) read back per recipient and connection; acknowledgements of what
is not the user's are dropped, and a user cannot grow a notification's REST acknowledgements
without bound (a WebSocket connection's are bounded by what it was sent, in `Receipts`)."""

from __future__ import annotations

import time

import pytest

from tidings.store import Backend
from tidings.store.protocol import ACKS_PER_RECIPIENT, Ack, FrameAcks, Push, pack_connections, ts

from .test_store import create, new


async def acks_stored(backend: Backend, kind: str, notification_id: int) -> int:
    db = backend.receipts.db  # type: ignore[attr-defined]
    if kind == "sqlite":
        row = await db.fetchone("SELECT count(*) AS n FROM acks WHERE notification_id = ?",
                                (notification_id,))
    else:
        row = await db.fetchrow("SELECT count(*) AS n FROM acks WHERE notification_id = $1",
                                notification_id)
    return int(row["n"])


async def frame_lines_stored(backend: Backend, kind: str, notification_id: int) -> int:
    db = backend.receipts.db  # type: ignore[attr-defined]
    query = "SELECT acks FROM frame_acks WHERE notification_id = " + str(int(notification_id))
    rows = await (db.fetchall(query) if kind == "sqlite" else db.fetch(query))
    return sum(len(row["acks"].split("\n")) for row in rows)


@pytest.mark.gen_test
async def test_pushes_and_acks_read_back_per_recipient_and_connection(backend):
    [nid] = await create(backend, new(user=None))  # a broadcast
    now = time.time()
    await backend.receipts.record(
        [Push(nid, "t1", now, pack_connections([("we-1", "alice", "websocket"),
                                                 ("ss-2", "alice", "sse")])),
         Push(nid, "t1", now + 0.5, pack_connections([("ss-3", "bob", "sse"),
                                                       ("we-1", "alice", "websocket")]))],
        [Ack(nid, "t1", "alice", "we-1", now + 1), Ack(nid, "t1", "bob", "", now + 2),
         Ack(nid, "t2", "carol", "", now)], [])  # another tenant's user: dropped
    found = (await backend.receipts.receipts("t1", [nid]))[nid]
    assert [e["user_id"] for e in found] == ["alice", "bob"]
    alice = {c["connection_id"]: c for c in found[0]["connections"]}
    assert alice["we-1"]["acknowledged_at"] and alice["ss-2"]["acknowledged_at"] is None
    assert len(found[0]["connections"]) == 2  # we-1 twice (a replay, say): its first push
    assert alice["we-1"]["pushed_at"] == alice["ss-2"]["pushed_at"]  # not the later one
    assert found[1]["connections"][0]["acknowledged_at"]  # '' acknowledges its SSE ones
    assert [e["user_id"] for e in (await backend.receipts.receipts("t1", [nid], "bob"))[nid]] \
        == ["bob"]
    assert await backend.receipts.acknowledged(nid, "alice")
    assert not await backend.receipts.acknowledged(nid, "carol")


@pytest.mark.gen_test
async def test_acknowledgements_of_one_recipient_are_bounded(backend, kind):
    [nid] = await create(backend, new())
    now = time.time()
    for i in range(3):  # in several flushes, as a flood would come
        await backend.receipts.record(
            [], [Ack(nid, "t1", "alice", f"ss-0123abcd-{i}{j}", now) for j in range(10)], [])
    await backend.receipts.record([], [Ack(nid, "t1", "bob", "", now)], [])  # not bob's: dropped
    assert await acks_stored(backend, kind, nid) == ACKS_PER_RECIPIENT
    assert not await backend.receipts.acknowledged(nid, "bob")


@pytest.mark.gen_test
async def test_one_batch_keeps_the_first_of_each_and_the_bound(backend, kind):
    [direct] = await create(backend, new())  # alice's
    [wide] = await create(backend, new(user=None))
    now = time.time()
    await backend.receipts.record([], [Ack(wide, "t1", "alice", "we-1", now + 5)], [])
    await backend.receipts.record([], [
        Ack(wide, "t1", "alice", "we-1", now + 9),  # stored already: the first stays
        *[Ack(direct, "t1", "alice", f"ss-0123abcd-{i}", now + i) for i in range(15)],
        Ack(direct, "t1", "alice", "ss-0123abcd-0", now + 20),  # a repeat in the batch
        Ack(direct, "t2", "alice", "", now), Ack(wide, "t2", "bob", "", now),  # not t2's
        Ack(wide, "t1", "bob", "", now + 1)], [])
    assert await acks_stored(backend, kind, direct) == ACKS_PER_RECIPIENT
    assert await acks_stored(backend, kind, wide) == 2
    found = {e["user_id"]: e for e in (await backend.receipts.receipts("t1", [wide]))[wide]}
    assert set(found) == {"alice", "bob"}
    assert found["alice"]["acknowledged_at"] == (await backend.receipts.receipts(
        "t1", [wide], "alice"))[wide][0]["acknowledged_at"]
    [entry] = (await backend.receipts.receipts("t1", [direct]))[direct]
    assert entry["acknowledged_at"] == ts(now)
    [first] = (await backend.receipts.receipts("t1", [wide], "alice"))[wide]
    assert first["acknowledged_at"] == ts(now + 5)


@pytest.mark.gen_test
async def test_frame_acknowledgements_read_back_as_rows_do(backend):
    """Packed WebSocket acknowledgements: the user's own (or its tenant's broadcast) only, the
    earliest of a connection's kept, in receipts as in `acknowledged`."""
    [direct] = await create(backend, new())  # alice's
    [wide] = await create(backend, new(user=None))
    now = time.time()
    await backend.receipts.record(
        [Push(wide, "t1", now, pack_connections([("we-1", "alice", "websocket"),
                                                  ("we-2", "bob", "websocket")]))], [],
        [FrameAcks("t1", "alice", "we-1", now + 2, f"{direct},{wide}"),
         FrameAcks("t1", "bob", "we-2", now + 3, f"{direct},{wide}"),  # not bob's: `direct`
         FrameAcks("t2", "carol", "we-3", now, f"{direct},{wide}")])  # another tenant's user
    await backend.receipts.record(
        [], [], [FrameAcks("t1", "alice", "we-1", now + 1, str(wide)),  # earlier, written later
                 FrameAcks("t1", "alice", "we-1", now + 9, str(wide))])
    found = {e["user_id"]: e for e in (await backend.receipts.receipts("t1", [wide]))[wide]}
    assert set(found) == {"alice", "bob"}
    assert found["alice"]["acknowledged_at"] == ts(now + 1)
    assert found["alice"]["connections"] == [{
        "connection_id": "we-1", "transport": "websocket", "pushed_at": ts(now),
        "acknowledged_at": ts(now + 1)}]
    assert found["bob"]["connections"][0]["acknowledged_at"] == ts(now + 3)
    [entry] = (await backend.receipts.receipts("t1", [direct]))[direct]
    assert entry["user_id"] == "alice" and entry["acknowledged_at"] == ts(now + 2)
    [bob] = (await backend.receipts.receipts("t1", [wide], "bob"))[wide]
    assert bob["user_id"] == "bob"
    assert await backend.receipts.acknowledged(wide, "bob")
    assert await backend.receipts.acknowledged(direct, "alice")
    assert not await backend.receipts.acknowledged(direct, "bob")
    assert not await backend.receipts.acknowledged(wide, "carol")
    assert not await backend.receipts.acknowledged(wide, "bo")  # a whole user field only
    assert (await backend.receipts.receipts("t2", [wide]))[wide] == []


@pytest.mark.gen_test
async def test_a_write_keeps_one_frame_line_per_connection_and_notification(backend, kind):
    [nid] = await create(backend, new())
    now = time.time()
    await backend.receipts.record([], [], [
        FrameAcks("t1", "alice", "we-1", now, f"{nid},{nid},{nid}"),
        FrameAcks("t1", "alice", "we-1", now + 1, str(nid)),
        FrameAcks("t1", "alice", "we-2", now + 2, str(nid))])
    assert await frame_lines_stored(backend, kind, nid) == 2
    [entry] = (await backend.receipts.receipts("t1", [nid]))[nid]
    assert entry["acknowledged_at"] == ts(now)
