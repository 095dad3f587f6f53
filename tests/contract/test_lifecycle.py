"""The storage contract of a notification's life after it is sent: replace by key, recall and
expiry, on SQLite and PostgreSQL alike. Removals are entries of the tenant's ordered stream,
with ids from the notification sequence."""

from __future__ import annotations

import asyncio
import time

import pytest

from tidings.models import Principal
from tidings.store import Planned, Removal
from tidings.store.protocol import position

from .test_store import ALICE, BOB, create, ids, new, request

CAROL = Principal("t2", "carol")


@pytest.mark.gen_test(timeout=30)
async def test_a_key_replaces_each_recipients_live_one_and_only_theirs(backend):
    store = backend.store
    a1, b1, wide1 = await create(backend, new(user="alice", key="build-7"),
                                 new(user="bob", key="build-7"), new(user=None, key="build-7"))
    other, = await create(backend, new("t2", "carol", key="build-7"))
    unkeyed, = await create(backend, new(user="alice"))
    await store.mark_read(ALICE, a1)
    assert await store.counts(ALICE) == {"total": 3, "unread": 2}

    [created] = await store.create_batch([request(new(user="alice", title="v2", key="build-7"))])
    a2 = created.notifications[0]
    assert a2["replaces"] == a1 and a2["key"] == "build-7"
    assert ids(await store.inbox(ALICE)) == [a2["id"], unkeyed, wide1]
    assert (await store.inbox(ALICE))[0]["replaces"] == a1
    assert ids(await store.after(ALICE, 0)) == [wide1, unkeyed, a2["id"]]
    assert await store.counts(ALICE) == {"total": 3, "unread": 3}  # a1 was read; a2 is not
    assert await store.by_type(ALICE) == {"info": 3}
    assert ids(await store.inbox(BOB)) == [wide1, b1]  # bob's own one stays
    assert ids(await store.inbox(CAROL)) == [other]  # another tenant's key is its own
    assert await store.removed([a1, a2["id"], b1], time.time()) == {a1: "replaced"}

    # One batch: each recipient's own previous one goes, and a second request with the same
    # key replaces the first of the same batch.
    first, second = await store.create_batch([
        request(new(user="alice", key="build-7"), new(user="bob", key="build-7")),
        request(new(user=None, key="build-7")),
    ])
    a3, b2 = first.notifications
    assert (a3["replaces"], b2["replaces"]) == (a2["id"], b1)
    assert second.notifications[0]["replaces"] == wide1
    one, two = await store.create_batch([request(new(user="bob", key="k2")),
                                         request(new(user="bob", key="k2"))])
    first_k2, second_k2 = one.notifications[0]["id"], two.notifications[0]
    assert "replaces" not in one.notifications[0] and second_k2["replaces"] == first_k2
    assert ids(await store.inbox(BOB)) == [second_k2["id"], second.notifications[0]["id"],
                                           b2["id"]]
    # No removal is written for a replaced one: `replaces` is the signal.
    assert await store.removals_after(ALICE, MAXIMUM, 0) == []


MAXIMUM = 2**63 - 1


@pytest.mark.gen_test(timeout=30)
async def test_a_recall_is_a_stream_entry_with_an_id_from_the_notification_sequence(backend):
    store = backend.store
    a1, wide, a2 = await create(backend, new(user="alice"), new(user=None), new(user="alice"))
    c1, = await create(backend, new("t2", "carol"))
    assert await store.recall("t2", a1) is None  # another tenant's
    assert await store.recall("t1", 999) is None

    removal, prev = await store.recall("t1", wide)
    assert removal == Removal(c1 + 1, wide, "t1", None, "recalled")
    assert prev == a2  # the tenant's previous entry
    assert removal.payload() == {"id": wide, "reason": "recalled", "event_id": c1 + 1}
    assert await store.recall("t1", wide) is None  # once
    assert await store.last_id() == removal.event_id
    assert (await store.positions(["t1", "t2"])) == {"t1": removal.event_id, "t2": c1}
    assert ids(await store.inbox(ALICE)) == [a2, a1]
    assert ids(await store.inbox(BOB)) == []
    assert await store.counts(BOB) == {"total": 0, "unread": 0}
    assert await store.counts(ALICE) == {"total": 2, "unread": 2}

    # The next notification comes after it, and chains to it.
    [created] = await store.create_batch([request(new(user="bob"))])
    b1 = created.notifications[0]["id"]
    assert b1 == removal.event_id + 1 and created.prev_ids == [removal.event_id]
    chain = await store.tenant_range("t1", 0, b1)
    assert [(position(e), p) for e, p in chain] == [(a1, 0), (wide, a1), (a2, wide),
                                                   (removal.event_id, a2),
                                                   (b1, removal.event_id)]
    assert chain[3][0] == removal
    assert [(position(e), p) for e, p in await store.tenant_range("t1", a2, b1, limit=1)] == \
        [(removal.event_id, a2)]
    assert [position(e) for e, _ in await store.tenant_range("t1", a1, b1, limit=3)] == \
        [wide, a2, removal.event_id]

    # A resume is told of removals of what it could have seen (ids up to its cursor) only.
    assert await store.removals_after(ALICE, a2, a2) == [removal]
    assert await store.removals_after(BOB, wide, 0) == [removal]
    assert await store.removals_after(ALICE, a1, a1) == []  # created after the cursor
    assert await store.removals_after(ALICE, b1, removal.event_id) == []
    assert await store.removals_after(CAROL, b1, 0) == []


@pytest.mark.gen_test(timeout=30)
async def test_expired_ones_leave_at_once_and_are_removed_in_batches(backend):
    store = backend.store
    now = time.time()
    soon, = await create(backend, new(user="alice", expires_at=now + 3600))
    past = await create(backend, *(new(user="alice", expires_at=now - 10) for _ in range(3)))
    wide, = await create(backend, new(user=None, expires_at=now - 5))
    c1, = await create(backend, new("t2", "carol", expires_at=now - 1))
    kept, = await create(backend, new(user="alice"))
    # Gone from reads at once, before any removal is written.
    assert ids(await store.inbox(ALICE)) == [kept, soon]
    assert ids(await store.after(ALICE, 0)) == [soon, kept]
    assert await store.counts(ALICE) == {"total": 2, "unread": 2}
    assert (await store.inbox(ALICE))[1]["expires_at"].endswith("Z")
    assert await store.removed([soon, past[0], kept], now) == {past[0]: "expired"}

    first = await store.expire(time.time(), limit=3)
    assert [r.notification_id for r, _ in first] == past
    assert [r.event_id for r, _ in first] == [kept + 1, kept + 2, kept + 3]
    assert [p for _, p in first] == [kept, kept + 1, kept + 2]
    rest = await store.expire(time.time(), limit=3)
    assert [(r.notification_id, r.tenant_id, r.user_id, r.reason) for r, _ in rest] == \
        [(wide, "t1", None, "expired"), (c1, "t2", "carol", "expired")]
    assert [p for _, p in rest] == [kept + 3, c1]
    assert await store.expire(time.time()) == []
    assert await store.counts(ALICE) == {"total": 2, "unread": 2}
    assert await store.removed([past[0]], 0) == {past[0]: "expired"}  # whatever the time now
    # A replace of an expired one that was removed already names none.
    [created] = await store.create_batch([request(new(user="alice", key="otp"))])
    assert "replaces" not in created.notifications[0]


@pytest.mark.gen_test(timeout=30)
async def test_two_processes_expire_each_notification_once(backend, open_another):
    other = await open_another()
    past = await create(backend, *(new(user="alice", expires_at=time.time() - 1)
                                   for _ in range(40)))
    results = await asyncio.gather(*(b.store.expire(time.time(), limit=7)
                                     for b in (backend, other, backend, other)))
    while True:
        more = await asyncio.gather(backend.store.expire(time.time(), limit=7),
                                    other.store.expire(time.time(), limit=7))
        results += more
        if not any(more):
            break
    removed = sorted(r.notification_id for batch in results for r, _ in batch)
    assert removed == past
    events = sorted(r.event_id for batch in results for r, _ in batch)
    assert len(set(events)) == 40 and events[0] > past[-1]
    chain = await backend.store.tenant_range("t1", past[-1], events[-1])
    assert [position(e) for e, _ in chain] == events
    assert all(prev == (past[-1] if i == 0 else events[i - 1])
               for i, (_, prev) in enumerate(chain))


@pytest.mark.gen_test(timeout=30)
async def test_unsent_deliveries_of_a_removed_notification_are_skipped_with_why(backend):
    store, queue = backend.store, backend.queue
    a1, a2, a3 = await create(backend, new(user="alice", key="k"), new(user="alice"),
                              new(user="alice", expires_at=time.time() - 1))
    planned = [Planned(n, "t1", "alice", "email", "queued", target="a@example.com",
                       next_attempt_at=time.time()) for n in (a1, a2, a3)]
    planned.append(Planned(a2, "t1", "alice", "sms", "sent", target="+14155550123"))
    assert await queue.add_planned(planned, await queue.planned_through(), a3)
    await create(backend, new(user="alice", key="k"))
    await store.recall("t1", a2)
    await store.expire(time.time())
    found = await queue.for_notifications([a1, a2, a3], "t1")
    status = {(n, d["channel"]): (d["status"], d["last_error"])
              for n, rows in found.items() for d in rows}
    assert status == {(a1, "email"): ("skipped", "replaced"),
                      (a2, "email"): ("skipped", "recalled"),
                      (a2, "sms"): ("sent", None),
                      (a3, "email"): ("skipped", "expired")}
