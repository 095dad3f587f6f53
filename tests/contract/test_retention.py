"""The storage contract for retention: tenant settings, removal in batches with what refers to
the removed notifications, the `pruned_through` watermark, and two processes removing at once;
on SQLite and PostgreSQL alike (see conftest.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tidings.models import Principal

from .test_store import ALICE, create, ids, new, planned

T2 = Principal("t2", "alice")


async def age(backend, kind: str, notification_ids: list[int], seconds: float) -> None:
    """Makes notifications look `seconds` older than they are, as time passing would."""
    if kind == "postgres":
        async with backend.store.db.transaction() as conn:
            await conn.execute("UPDATE notifications SET created_at = created_at - $1 "
                               "WHERE id = ANY($2::bigint[])", seconds, notification_ids)
    else:
        marks = ",".join("?" * len(notification_ids))
        async with backend.store.db.write() as conn:
            await conn.execute(f"UPDATE notifications SET created_at = created_at - ? "
                               f"WHERE id IN ({marks})", (seconds, *notification_ids))


@pytest.mark.gen_test(timeout=30)
async def test_settings_default_to_forever_and_change_only_what_is_named(backend):
    store = backend.store
    forever = {"retention_days": None, "retention_count": None, "pruned_through": 0}
    assert await store.tenant_settings("t1") == forever
    assert await store.retention_tenants() == []
    assert await store.put_tenant_settings("t1", {"retention_days": 30}) == {
        **forever, "retention_days": 30}
    assert await store.put_tenant_settings("t1", {"retention_count": 100}) == {
        **forever, "retention_days": 30, "retention_count": 100}
    assert await store.put_tenant_settings("t2", {}) == forever
    assert await store.retention_tenants() == [
        {"tenant_id": "t1", "retention_days": 30, "retention_count": 100}]
    await store.put_tenant_settings("t1", {"retention_days": None, "retention_count": None})
    assert await store.retention_tenants() == []
    assert await store.tenant_settings("t1") == forever


@pytest.mark.gen_test(timeout=30)
async def test_keeping_the_newest_n_removes_the_oldest_in_batches_and_only_that_tenants(
        backend):
    store = backend.store
    made = []
    for i in range(7):  # direct and tenant-wide together, another tenant's in between
        made += await create(backend, new(user=None if i % 3 == 0 else "alice", title=f"{i}"))
        await create(backend, new("t2", "alice", title=f"other {i}"))
    other_tenant = ids(await store.inbox(T2, limit=100))
    await store.mark_read(ALICE, made[1])
    await store.delete(ALICE, made[2])
    last = await store.last_id()

    assert await store.prune("t1", older_than=None, keep=3, limit=3) == 3
    assert (await store.tenant_settings("t1"))["pruned_through"] == made[2]
    assert await store.prune("t1", older_than=None, keep=3, limit=3) == 1
    assert await store.prune("t1", older_than=None, keep=3, limit=3) == 0
    assert (await store.tenant_settings("t1"))["pruned_through"] == made[3]
    assert ids(await store.inbox(ALICE, limit=100)) == made[4:][::-1]
    assert ids(await store.after(ALICE, 0)) == made[4:]
    assert await store.counts(ALICE) == {"total": 3, "unread": 3}
    assert await store.notification(made[0]) is None
    # The other tenant's, and the positions that cursors are checked against, stay.
    assert ids(await store.inbox(T2, limit=100)) == other_tenant
    assert (await store.tenant_settings("t2"))["pruned_through"] == 0
    assert await store.last_id() == last
    # Everything, the newest included: the largest id given is still known.
    assert await store.prune("t1", older_than=None, keep=0) == 3
    assert await store.last_id() == last
    assert await store.positions(["t1"]) == {"t1": made[-1]}
    assert (await store.tenant_settings("t1"))["pruned_through"] == made[-1]
    fresh = await create(backend, new(title="after"))
    assert fresh[0] > last and ids(await store.after(ALICE, 0)) == fresh


@pytest.mark.gen_test(timeout=30)
async def test_age_removes_an_unbroken_run_of_the_oldest(backend, kind):
    store = backend.store
    made = [(await create(backend, new(title=f"{i}")))[0] for i in range(5)]
    await age(backend, kind, made[:2], 10 * 86400)
    await age(backend, kind, made[3:4], 10 * 86400)  # old, but after a young one: kept
    cutoff = time.time() - 86400
    assert await store.prune("t1", older_than=cutoff, keep=None) == 2
    assert ids(await store.after(ALICE, 0)) == made[2:]
    assert (await store.tenant_settings("t1"))["pruned_through"] == made[1]
    assert await store.prune("t1", older_than=cutoff, keep=None) == 0
    # Both limits: whichever removes more.
    assert await store.prune("t1", older_than=cutoff, keep=1) == 2
    assert ids(await store.after(ALICE, 0)) == made[4:]


@pytest.mark.gen_test(timeout=30)
async def test_removing_takes_the_deliveries_with_it_and_a_late_finish_is_harmless(backend):
    store, queue = backend.store, backend.queue
    made = await create(backend, new(), new(user="bob"))
    assert await queue.add_planned([planned(made[0]), planned(made[1], "bob")], 0, made[1])
    claimed = await queue.claim_due(time.time(), limit=10)
    assert len(claimed) == 2
    await queue.finish(claimed, "queued", error="try again", retry_at=time.time() - 1)
    assert await store.prune("t1", older_than=None, keep=1) == 1
    found = await queue.for_notifications(made, "t1")
    assert found[made[0]] == [] and len(found[made[1]]) == 1
    # The sender of a removed delivery finishes it: nothing is written, nothing raises.
    gone = [d for d in claimed if d.notification_id == made[0]]
    await queue.finish(gone, "sent", provider_id="x")
    await queue.finish(gone, "failed", error="boom")
    assert [d.notification_id for d in await queue.claim_due(time.time() + 60)] == [made[1]]


@pytest.mark.gen_test(timeout=60)
async def test_two_processes_pruning_at_once_remove_each_notification_once(
        backend, open_another):
    other = await open_another()
    made = []
    for _ in range(6):
        made += await create(backend, *[new(title=f"{i}") for i in range(50)])
    removed = await asyncio.gather(*[
        b.store.prune("t1", older_than=None, keep=20, limit=40)
        for _ in range(4) for b in (backend, other)])
    rest = 0
    while n := await other.store.prune("t1", older_than=None, keep=20, limit=40):
        rest += n
    assert sum(removed) + rest == len(made) - 20
    assert ids(await backend.store.after(ALICE, 0)) == made[-20:]
    assert (await backend.store.tenant_settings("t1"))["pruned_through"] == made[-21]
