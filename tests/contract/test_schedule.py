"""The ScheduleBook contract, and the create that sends an entry, on SQLite and PostgreSQL
alike; a second Backend on the same database stands for a second process."""

from __future__ import annotations

import asyncio
import time

import pytest

from tidings.errors import TidingsError
from tidings.models import NewNotification, Principal
from tidings.store import Backend, CreateRequest, Scheduled, postgres_schedule, sqlite_schedule

ALICE = Principal("t1", "alice")


def entry(id_: str, send_at: float, tenant: str = "t1", title: str = "later") -> Scheduled:
    return Scheduled(id_, tenant, send_at, time.time(), {"user_id": "alice", "title": title})


async def send(backend: Backend, schedule_id: str, title: str = "later") -> list[int]:
    """The create the scheduler makes for an entry: the ids it created (none: not pending)."""
    [created] = await backend.store.create_batch(
        [CreateRequest([NewNotification("t1", "alice", title)], schedule_id=schedule_id)])
    return [n["id"] for n in created.notifications]


@pytest.mark.gen_test(timeout=30)
async def test_add_list_cancel_and_idempotency_keys(backend):
    book, now = backend.schedule, time.time()
    assert await book.next_due() is None
    await book.add(entry("s2", now + 20))
    first, replayed = await book.add(entry("s1", now + 10), "key-1")
    assert (first.id, replayed) == ("s1", False)
    again, replayed = await book.add(entry("s9", now + 99, title="other"), "key-1")
    assert (again.id, again.request["title"], replayed) == ("s1", "later", True)
    other_tenant, replayed = await book.add(entry("s3", now + 5, tenant="t2"), "key-1")
    assert (other_tenant.id, replayed) == ("s3", False)  # keys are per tenant
    assert [e.id for e in await book.pending("t1")] == ["s1", "s2"]
    assert await book.next_due() == pytest.approx(now + 5)
    assert not await book.cancel("t2", "s1", now)  # another tenant's
    assert await book.cancel("t1", "s1", now)
    assert not await book.cancel("t1", "s1", now)  # cancelled already
    assert not await book.cancel("t1", "nope", now)
    assert [e.id for e in await book.pending("t1")] == ["s2"]
    # a cancelled entry keeps its key for a day, then housekeeping forgets it
    assert (await book.add(entry("s4", now + 1), "key-1"))[1] is True
    assert await book.prune(now + 1) == 1
    assert (await book.add(entry("s5", now + 1), "key-1"))[1] is False


@pytest.mark.gen_test(timeout=30)
async def test_claims_lease_entries_and_the_create_marks_them_sent_once(backend,
                                                                        open_another):
    other = await open_another()
    now = time.time()
    for i in range(6):
        await backend.schedule.add(entry(f"s{i}", now - 1 + i * 0.01))
    await backend.schedule.add(entry("later", now + 60))
    # two processes claiming at once take different entries; nothing not yet due
    mine, theirs = await asyncio.gather(backend.schedule.claim(now, 3, 10.0),
                                        other.schedule.claim(now, 3, 10.0))
    assert len(mine) == len(theirs) == 3
    assert not {e.id for e in mine} & {e.id for e in theirs}
    assert await backend.schedule.claim(now, 10, 10.0) == []  # leased
    assert await backend.schedule.next_due() == pytest.approx(now + 10, abs=0.5)
    # a claimant that died: after its lease another takes the entry over
    retaken = await other.schedule.claim(now + 10.5, 10, 10.0)
    assert sorted(e.id for e in retaken) == [f"s{i}" for i in range(6)]
    # sending: only the first create of an entry creates anything, whoever makes it
    first, second = await asyncio.gather(send(backend, "s0"), send(other, "s0"))
    assert sorted([len(first), len(second)]) == [0, 1]
    assert await send(backend, "s0") == []
    # a cancel that came first wins; an entry never added creates nothing
    assert await backend.schedule.cancel("t1", "s1", now)
    assert await send(other, "s1") == []
    assert await send(other, "unknown") == []
    assert len(await send(other, "s2")) == 1
    assert sorted(e.id for e in await backend.schedule.pending("t1")) == \
        ["later", "s3", "s4", "s5"]
    inbox = await backend.store.inbox(ALICE)
    assert len(inbox) == 2


@pytest.mark.gen_test(timeout=30)
async def test_group_and_actions_are_stored_returned_and_filtered(backend):
    actions = ({"label": "Open", "url": "https://example.com/b/7"},)
    created, *_ = await backend.store.create_batch([
        CreateRequest([NewNotification("t1", "alice", "a", group="build-7", actions=actions)]),
        CreateRequest([NewNotification("t1", None, "b", group="build-7")]),
        CreateRequest([NewNotification("t1", "alice", "c", group="build-8")]),
        CreateRequest([NewNotification("t1", "alice", "d")]),
    ])
    n = created.notifications[0]
    assert (n["group"], n["actions"]) == ("build-7", [dict(a) for a in actions])
    assert await backend.store.notification(n["id"]) == n
    titles = [x["title"] for x in await backend.store.inbox(ALICE, group="build-7")]
    assert titles == ["b", "a"]
    assert [x["title"] for x in await backend.store.inbox(ALICE, group="build-8")] == ["c"]
    plain = [x for x in await backend.store.inbox(ALICE) if x["title"] == "d"][0]
    assert "group" not in plain and "actions" not in plain
    assert [x["title"] for x in await backend.store.after(ALICE, 0)] == ["a", "b", "c", "d"]


@pytest.mark.gen_test(timeout=30)
async def test_a_tenant_has_a_bounded_number_of_pending_entries(backend, monkeypatch):
    for module in (sqlite_schedule, postgres_schedule):
        monkeypatch.setattr(module, "MAX_PENDING_SCHEDULED", 2)
    book, now = backend.schedule, time.time()
    await book.add(entry("s1", now + 10), "key-1")
    await book.add(entry("s2", now + 20))
    with pytest.raises(TidingsError) as refused:
        await book.add(entry("s3", now + 30))
    assert (refused.value.status, refused.value.code) == (429, "too_many_scheduled")
    assert (await book.add(entry("s9", now + 30), "key-1"))[1] is True  # a replay still answers
    await book.add(entry("s4", now + 30, tenant="t2"))  # another tenant has its own
    assert await book.cancel("t1", "s1", now)
    await book.add(entry("s5", now + 30))  # room again
