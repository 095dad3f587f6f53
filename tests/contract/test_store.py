"""The storage contract: every method of Store, Directory and DeliveryQueue, run against SQLite
and PostgreSQL alike (see conftest.py), with a second Backend on the same database standing in
for a second process where concurrency matters."""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import time
from typing import Any

import asyncpg
import pytest

from tidings.errors import TidingsError
from tidings.models import NewNotification, Principal
from tidings.store import Backend, CreateRequest, Planned, StoreUnavailable, open_backend
from tidings.store.postgres_schema import MIGRATIONS as PG_MIGRATIONS
from tidings.store.sqlite_schema import MIGRATIONS as SQLITE_MIGRATIONS

from ..clients import eventually

ALICE = Principal("t1", "alice")
BOB = Principal("t1", "bob")


def new(tenant: str = "t1", user: str | None = "alice", title: str = "hello",
        type_: str = "info", **more: Any) -> NewNotification:
    return NewNotification(tenant, user, title, type=type_, **more)


def request(*items: NewNotification, key: str | None = None) -> CreateRequest:
    return CreateRequest(list(items), key)


async def create(backend: Backend, *items: NewNotification, key: str | None = None) -> list[int]:
    [created] = await backend.store.create_batch([request(*items, key=key)])
    return [n["id"] for n in created.notifications]


def ids(notifications: list[dict[str, Any]]) -> list[int]:
    return [n["id"] for n in notifications]


# --- creating: ids, stream positions, idempotency ----------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_ids_increase_and_each_tenant_chains_its_previous_id(backend):
    store = backend.store
    assert await store.last_id() == 0
    assert await store.positions(["t1", "t2"]) == {"t1": 0, "t2": 0}
    first = await store.create_batch([
        request(new("t1", "alice"), new("t1", "bob")),
        request(new("t2", "carol")),
        request(new("t1", None)),
    ])
    second = await store.create_batch([request(new("t2", "carol")), request(new("t1", "bob"))])
    got = [n["id"] for c in first + second for n in c.notifications]
    assert got == sorted(got) and len(set(got)) == 6
    a1, b1, c1, bc1 = got[:4]
    c2, b2 = got[4:]
    assert first[0].prev_ids == [0, a1]
    assert first[1].prev_ids == [0]
    assert first[2].prev_ids == [b1]
    assert second[0].prev_ids == [c1]
    assert second[1].prev_ids == [bc1]
    assert await store.positions(["t1", "t2", "t3"]) == {"t1": b2, "t2": c2, "t3": 0}
    assert await store.last_id() == b2
    shaped = first[0].notifications[0]
    assert shaped == {**shaped, "tenant_id": "t1", "user_id": "alice", "type": "info",
                      "title": "hello", "message": "", "data": {}, "priority": "normal",
                      "read_at": None}
    assert await store.notification(a1) == shaped
    assert await store.notification(10_000) is None
    # tenant_range returns each notification with the same previous id the create gave.
    chain = await store.tenant_range("t1", 0, b2)
    assert [(n["id"], prev) for n, prev in chain] == [(a1, 0), (b1, a1), (bc1, b1), (b2, bc1)]
    assert ids([n for n, _ in await store.tenant_range("t1", a1, bc1)]) == [b1, bc1]
    assert ids([n for n, _ in await store.tenant_range("t1", 0, b2, limit=2)]) == [a1, b1]
    assert [(n["id"], p) for n, p in await store.tenant_range("t2", 0, b2)] == [(c1, 0), (c2, c1)]


@pytest.mark.gen_test(timeout=30)
async def test_an_idempotency_key_creates_once_in_one_batch_and_across_batches(backend):
    store = backend.store
    first, again, other_tenant = await store.create_batch([
        request(new(title="one"), new(user="bob", title="two"), key="k"),
        request(new(title="dup"), key="k"),
        request(new("t2", "carol"), key="k"),
    ])
    assert not first.replayed and not other_tenant.replayed
    assert again.replayed and ids(again.notifications) == ids(first.notifications)
    assert other_tenant.notifications[0]["id"] > first.notifications[-1]["id"]
    # Across batches: the stored notifications come back, and the first answer once saved.
    [later] = await store.create_batch([request(new(title="three"), key="k")])
    assert later.replayed and later.replayed_response is None
    assert [n["title"] for n in later.notifications] == ["one", "two"]
    assert later.notifications == first.notifications
    await store.save_responses([("t1", "k", {"notifications": ids(first.notifications)})])
    [saved] = await store.create_batch([request(new(), key="k")])
    assert saved.replayed_response == {"notifications": ids(first.notifications)}
    assert await store.last_id() == other_tenant.notifications[0]["id"]
    assert ids(await store.inbox(ALICE)) == [first.notifications[0]["id"]]
    # Pruned keys are forgotten: the same key creates again.
    assert await store.prune_idempotency_keys(time.time() - 3600) == 0
    assert await store.prune_idempotency_keys(time.time() + 1) == 2
    [fresh] = await store.create_batch([request(new(), key="k")])
    assert not fresh.replayed and fresh.notifications[0]["id"] > other_tenant.notifications[0]["id"]


@pytest.mark.gen_test(timeout=60)
async def test_two_instances_creating_with_one_key_at_once_create_one_notification(
        backend, open_another):
    other = await open_another()
    for round_ in range(5):
        key = f"k{round_}"
        a, b = await asyncio.gather(
            backend.store.create_batch([request(new(title=f"a{round_}"), key=key)]),
            other.store.create_batch([request(new(title=f"b{round_}"), key=key)]))
        assert sorted([a[0].replayed, b[0].replayed]) == [False, True]
        assert ids(a[0].notifications) == ids(b[0].notifications)
    assert len(await backend.store.inbox(ALICE)) == 5
    assert (await other.store.counts(ALICE))["total"] == 5


@pytest.mark.gen_test(timeout=90)
async def test_concurrent_creates_from_two_instances_take_ids_in_commit_order(
        backend, open_another):
    other = await open_another()
    given: dict[int, int] = {}  # id -> the previous id of its tenant, as create_batch said

    async def writer(instance: Backend, name: str) -> list[int]:
        mine: list[int] = []
        for i in range(30):
            results = await instance.store.create_batch([
                request(new("t1", name, title=f"{name}{i}")),
                request(new("t2" if i % 3 else "t1", None, title=f"{name}{i}b"),
                        new("t1", "bob")),
            ])
            for created in results:
                for n, prev in zip(created.notifications, created.prev_ids, strict=True):
                    given[n["id"]] = prev
                    mine.append(n["id"])
        return mine

    first, second = await asyncio.gather(writer(backend, "alice"), writer(other, "carol"))
    assert first == sorted(first) and second == sorted(second)
    assert not set(first) & set(second) and len(given) == 180
    last = max(given)
    for tenant in ("t1", "t2"):
        chain = await backend.store.tenant_range(tenant, 0, last, limit=1000)
        previous = 0
        for n, prev in chain:
            assert prev == previous == given[n["id"]], (tenant, n["id"])
            previous = n["id"]
        assert (await other.store.positions([tenant]))[tenant] == previous
    assert len(await backend.store.tenant_range("t1", 0, last, limit=1000)) + \
        len(await backend.store.tenant_range("t2", 0, last, limit=1000)) == 180


# --- reading: inbox, counts, replay -----------------------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_inbox_merges_direct_and_tenant_wide_newest_first(backend):
    store = backend.store
    a1, = await create(backend, new(user="alice", title="a1"))
    _bob, = await create(backend, new(user="bob"))
    wide, = await create(backend, new(user=None, title="all"))
    _other_tenant, = await create(backend, new("t2", None))
    a2, a3 = await create(backend, new(user="alice", type_="error"), new(user="alice"))
    assert ids(await store.inbox(ALICE)) == [a3, a2, wide, a1]
    assert ids(await store.inbox(ALICE, limit=2)) == [a3, a2]
    assert ids(await store.inbox(ALICE, before=a2)) == [wide, a1]
    assert ids(await store.inbox(ALICE, before=a2, limit=1)) == [wide]
    assert ids(await store.inbox(BOB)) == [wide, _bob]
    assert await store.counts(ALICE) == {"total": 4, "unread": 4}
    assert await store.by_type(ALICE) == {"error": 1, "info": 3}

    await store.mark_read(ALICE, wide)
    await store.mark_read(ALICE, wide)  # twice: the first read time stays
    page = await store.inbox(ALICE)
    read = [n for n in page if n["read_at"]]
    assert ids(read) == [wide]
    assert (await store.inbox(ALICE))[2]["read_at"] == read[0]["read_at"]
    assert ids(await store.inbox(ALICE, unread=True)) == [a3, a2, a1]
    assert (await store.inbox(BOB))[0]["read_at"] is None  # a broadcast is read per user
    assert await store.counts(ALICE) == {"total": 4, "unread": 3}

    await store.delete(ALICE, a2)
    assert ids(await store.inbox(ALICE)) == [a3, wide, a1]
    assert await store.counts(ALICE) == {"total": 3, "unread": 2}
    assert await store.by_type(ALICE) == {"info": 3}
    for missing in (a2, _bob, _other_tenant, 10_000):  # deleted, another's, another tenant's
        with pytest.raises(TidingsError) as caught:
            await store.mark_read(ALICE, missing)
        assert caught.value.status == 404
        with pytest.raises(TidingsError):
            await store.delete(ALICE, missing)

    await store.mark_all_read(ALICE)
    assert await store.counts(ALICE) == {"total": 3, "unread": 0}
    assert await store.inbox(ALICE, unread=True) == []
    assert all(n["read_at"] for n in await store.inbox(ALICE))
    assert await store.counts(BOB) == {"total": 2, "unread": 2}
    a4, = await create(backend, new(user="alice"))
    assert ids(await store.inbox(ALICE, unread=True)) == [a4]
    assert await store.counts(ALICE) == {"total": 4, "unread": 1}


@pytest.mark.gen_test(timeout=30)
async def test_after_replays_oldest_first_without_deleted_ones(backend):
    store = backend.store
    made = []
    for i in range(6):
        made += await create(backend, new(user=None if i % 2 else "alice", title=str(i)))
    await create(backend, new(user="bob"))
    await store.delete(ALICE, made[2])
    assert ids(await store.after(ALICE, 0)) == [made[0], made[1], made[3], made[4], made[5]]
    assert ids(await store.after(ALICE, made[1])) == [made[3], made[4], made[5]]
    assert ids(await store.after(ALICE, made[1], limit=2)) == [made[3], made[4]]
    assert await store.after(ALICE, made[5]) == []
    await store.mark_read(ALICE, made[3])
    assert [bool(n["read_at"]) for n in await store.after(ALICE, made[1])] == [True, False, False]


@pytest.mark.gen_test(timeout=30)
async def test_recent_unplanned_and_ping(backend):
    store = backend.store
    assert await store.ping()
    one, = await create(backend, new(user="alice", data={"k": [1, "é"]}, priority="high"))
    two, three = await create(backend, new(user=None, channels=("email", "sms")),
                              new("t2", "x"))
    assert ids(await store.recent("t1")) == [two, one]
    assert ids(await store.recent("t1", limit=1)) == [two]
    assert (await store.recent("t1"))[1]["data"] == {"k": [1, "é"]}
    assert [n["ended"] for n in await store.recent("t1")] == [None, None]  # both live
    assert (await store.notification(one))["priority"] == "high"
    assert [{k: v for k, v in n.items() if k not in ("removed", "expires_at")}
            for n in await store.unplanned(0)] == [
        {"id": one, "tenant_id": "t1", "user_id": "alice", "type": "info", "priority": "high",
         "channels": None},
        {"id": two, "tenant_id": "t1", "user_id": None, "type": "info", "priority": "normal",
         "channels": ["email", "sms"]},
        {"id": three, "tenant_id": "t2", "user_id": "x", "type": "info", "priority": "normal",
         "channels": None}]
    assert ids(await store.unplanned(one, limit=1)) == [two]
    assert await store.recall("t1", one) is not None  # still listed, marked
    assert [(n["id"], n["ended"]) for n in await store.recent("t1")] == [(two, None),
                                                                        (one, "recalled")]


# --- the directory -----------------------------------------------------------------------------

@pytest.mark.gen_test(timeout=30)
async def test_directory_keeps_addresses_preferences_subscriptions_webhooks_templates(backend):
    d = backend.directory
    assert await d.recipient("t1", "alice") is None
    fields = {"email": "a@example.com", "phone": None, "timezone": "Europe/Paris", "locale": "fr"}
    await d.put_recipient("t1", "alice", fields)
    await d.put_recipient("t1", "alice", {**fields, "phone": "+33100000000"})
    assert await d.recipient("t1", "alice") == {**fields, "phone": "+33100000000"}
    assert await d.recipient("t2", "alice") is None

    assert await d.preferences("t1", "alice") == {}
    await d.put_preferences("t1", "", {"channels": {"email": "always"}})
    await d.put_preferences("t1", "alice", {"digest": "daily"})
    await d.put_preferences("t1", "alice", {"digest": "hourly"})
    assert await d.preferences("t1", "alice") == {"digest": "hourly"}
    assert await d.preferences("t1", "") == {"channels": {"email": "always"}}

    assert await d.add_subscription("t1", "bob", "https://push/1", "k1", "a1")
    assert await d.add_subscription("t1", "bob", "https://push/2", "k2", "a2")
    assert await d.add_subscription("t1", "bob", "https://push/1", "k1b", "a1b")  # renewed
    assert not await d.add_subscription("t1", "mallory", "https://push/1", "km", "am")
    assert not await d.add_subscription("t2", "bob", "https://push/1", "km", "am")  # tenant
    assert sorted(await d.subscriptions("t1", "bob"), key=lambda s: s["endpoint"]) == [
        {"endpoint": "https://push/1", "p256dh": "k1b", "auth": "a1b"},
        {"endpoint": "https://push/2", "p256dh": "k2", "auth": "a2"}]
    assert await d.subscription("t1", "https://push/2") == \
        {"endpoint": "https://push/2", "p256dh": "k2", "auth": "a2"}
    assert await d.subscription("t2", "https://push/2") is None
    assert await d.known_users("t1") == ["alice", "bob"]
    assert await d.known_users("t2") == []
    assert not await d.remove_subscription("t1", "https://push/2", user_id="alice")
    assert await d.remove_subscription("t1", "https://push/2", user_id="bob")
    assert await d.remove_subscription("t1", "https://push/1")
    assert not await d.remove_subscription("t1", "https://push/1")
    assert await d.subscriptions("t1", "bob") == []
    assert await d.known_users("t1") == ["alice"]

    assert await d.webhook("t1") is None
    await d.put_webhook("t1", "https://hooks/1", "s1")
    await d.put_webhook("t1", "https://hooks/2", "s2")  # the URL changes, the secret stays
    assert await d.webhook("t1") == {"url": "https://hooks/2", "secret": "s1"}
    assert await d.delete_webhook("t1")
    assert not await d.delete_webhook("t1")
    assert await d.webhook("t1") is None

    parts = {"subject": "S {{ title }}", "text": "T", "html": "<p>H</p>"}
    assert await d.template("t1", "info", "email") is None
    await d.put_template("t1", "info", "email", parts)
    await d.put_template("t1", "info", "email", {**parts, "text": "T2"})
    assert await d.template("t1", "info", "email") == {**parts, "text": "T2"}
    assert await d.template("t1", "info", "sms") is None
    assert await d.delete_template("t1", "info", "email")
    assert not await d.delete_template("t1", "info", "email")


# --- the delivery queue ------------------------------------------------------------------------


def planned(notification_id: int, user: str = "alice", channel: str = "email",
            **more: Any) -> Planned:
    return Planned(notification_id, "t1", user, channel, more.pop("status", "queued"),
                   target=more.pop("target", f"{user}@example.com"), **more)


@pytest.mark.gen_test(timeout=30)
async def test_the_suppression_list_is_per_tenant_in_address_order(backend):
    d = backend.directory
    assert not await d.suppressed("t1", "b@example.com")
    assert await d.suppress("t1", "b@example.com", "bounce", "General")
    assert not await d.suppress("t1", "b@example.com", "complaint")  # the first reason stays
    assert await d.suppress("t1", "a@example.com", "manual")
    assert await d.suppress("t1", "c_@example.com", "complaint", "abuse")
    assert await d.suppress("t2", "z@example.com", "bounce")
    assert await d.suppressed("t1", "b@example.com")
    assert not await d.suppressed("t2", "b@example.com")  # another tenant's list
    listed = await d.suppressions("t1")
    assert [(s["address"], s["reason"], s["detail"]) for s in listed] == [
        ("a@example.com", "manual", None), ("b@example.com", "bounce", "General"),
        ("c_@example.com", "complaint", "abuse")]
    assert all(s["created_at"].endswith("Z") for s in listed)
    page = await d.suppressions("t1", after="a@example.com", limit=1)
    assert [s["address"] for s in page] == ["b@example.com"]
    assert [s["address"] for s in await d.suppressions("t2")] == ["z@example.com"]
    assert not await d.unsuppress("t2", "b@example.com")
    assert await d.unsuppress("t1", "b@example.com")
    assert not await d.unsuppress("t1", "b@example.com")
    assert not await d.suppressed("t1", "b@example.com")
    assert await d.suppress("t1", "b@example.com", "complaint")  # it may come back


@pytest.mark.gen_test(timeout=30)
async def test_a_sent_delivery_is_found_by_its_provider_id(backend):
    made = await create(backend, new(), new(tenant="t2"))
    rows = [planned(made[0]), Planned(made[1], "t2", "alice", "email", "queued",
                                      target="alice@example.com")]
    assert await backend.queue.add_planned(rows, 0, made[1])
    claimed = await backend.queue.claim_due(time.time() + 1, limit=10)
    by_tenant = {d.tenant_id: d for d in claimed}
    await backend.queue.finish([by_tenant["t1"]], "sent", provider_id="ses-1")
    await backend.queue.finish([by_tenant["t2"]], "sent", provider_id="ses-2")
    assert await backend.queue.tenant_of_sent("email", "ses-1") == "t1"
    assert await backend.queue.tenant_of_sent("email", "ses-2") == "t2"
    assert await backend.queue.tenant_of_sent("sms", "ses-1") is None
    assert await backend.queue.tenant_of_sent("email", "ses-3") is None


@pytest.mark.gen_test(timeout=60)
async def test_the_plan_cursor_moves_once_when_two_processes_plan_the_same_range(
        backend, open_another):
    other = await open_another()
    made = await create(backend, new(), new(user="bob"))
    assert await backend.queue.planned_through() == 0
    rows = [planned(made[0]), planned(made[1], "bob")]
    results = await asyncio.gather(backend.queue.add_planned(rows, 0, made[1]),
                                   other.queue.add_planned(rows, 0, made[1]))
    assert sorted(results) == [False, True]
    assert await other.queue.planned_through() == made[1]
    assert not await backend.queue.add_planned(rows, 0, made[1])  # a stale cursor
    found = await backend.queue.for_notifications(made, "t1")
    assert [len(found[n]) for n in made] == [1, 1]
    assert await backend.queue.add_planned([], made[1], made[1] + 5)
    assert await backend.queue.planned_through() == made[1] + 5


@pytest.mark.gen_test(timeout=60)
async def test_two_processes_claiming_at_once_never_take_the_same_delivery(
        backend, open_another):
    other = await open_another()
    made = await create(backend, *[new(user=f"u{i}") for i in range(40)])
    now = time.time()
    rows = [planned(n, f"u{i}") for i, n in enumerate(made)]
    rows.append(planned(made[0], "u0", channel="sms", status="held", next_attempt_at=now + 3600))
    rows.append(planned(made[1], "u1", channel="push", status="skipped", last_error="no address"))
    assert await backend.queue.add_planned(rows, 0, made[-1])
    assert await backend.queue.next_due() <= time.time()

    claimed: list[list[int]] = [[], []]

    async def claimer(index: int, instance: Backend) -> None:
        while batch := await instance.queue.claim_due(time.time(), limit=3):
            claimed[index] += [d.id for d in batch]
            assert all(d.status == "sending" and d.attempts == 1 for d in batch)

    await asyncio.gather(claimer(0, backend), claimer(1, other), claimer(0, backend),
                         claimer(1, other))
    everything = claimed[0] + claimed[1]
    assert len(everything) == len(set(everything)) == 40
    # Nothing is due now but the leases and the held one (an hour away).
    due = await backend.queue.next_due()
    assert due is not None and now < due <= time.time() + 3600


@pytest.mark.gen_test(timeout=30)
async def test_a_lease_that_ran_out_is_claimed_again_and_release_gives_it_back(
        backend, open_another):
    other = await open_another()
    made = await create(backend, new())
    assert await backend.queue.add_planned([planned(made[0])], 0, made[0])
    now = time.time()
    [d] = await backend.queue.claim_due(now, lease=30)
    assert d.attempts == 1 and d.status == "sending" and d.target == "alice@example.com"
    assert await other.queue.claim_due(now + 29) == []   # the lease holds
    [again] = await other.queue.claim_due(now + 31, lease=30)  # its claimant died
    assert again.id == d.id and again.attempts == 2
    await other.queue.release([again])  # given back due now, the attempt not counted
    [third] = await backend.queue.claim_due(time.time())
    assert third.id == d.id and third.attempts == 2
    await backend.queue.release([])
    await backend.queue.finish([third], "sent", provider_id="p-1")
    await backend.queue.release([third])  # only a `sending` one goes back
    assert await backend.queue.claim_due(time.time() + 10_000) == []


@pytest.mark.gen_test(timeout=30)
async def test_claims_skip_the_tenants_named(backend):
    made = await create(backend, new(), new())
    rows = [planned(made[0]), Planned(made[1], "t2", "gina", "email", "queued",
                                      target="gina@example.com")]
    assert await backend.queue.add_planned(rows, 0, made[1])
    [d] = await backend.queue.claim_due(time.time(), skip_tenants=["t1"])
    assert d.tenant_id == "t2"
    assert await backend.queue.claim_due(time.time(), skip_tenants=["t1", "t2"]) == []
    [e] = await backend.queue.claim_due(time.time())
    assert e.tenant_id == "t1"


@pytest.mark.gen_test(timeout=30)
async def test_finish_keeps_every_attempt_and_retries_at_their_time(backend):
    queue = backend.queue
    one, two = await create(backend, new(), new(user="bob"))
    wide, = await create(backend, new(user=None))
    assert await queue.add_planned(
        [planned(one), planned(two, "bob"), planned(wide, channel="webhook", user=None,
                                                     target=None),
         planned(one, channel="sms", status="skipped", last_error="no phone")], 0, wide)
    now = time.time()
    claimed = {d.notification_id: d for d in await queue.claim_due(now)}
    assert set(claimed) == {one, two, wide}
    await queue.finish([claimed[one]], "queued", error="timeout", retry_at=now + 60)
    await queue.finish([claimed[two]], "failed", error="refused")
    await queue.finish([claimed[wide]], "sent", provider_id="hook-1")
    assert await queue.claim_due(now + 59) == []
    [retry] = await queue.claim_due(now + 61)
    assert retry.id == claimed[one].id and retry.attempts == 2
    await queue.finish([retry], "sent", provider_id="m-1")

    found = await queue.for_notifications([one, two, wide, 10_000], "t1")
    assert found[10_000] == []
    email, sms = found[one]
    assert email["channel"] == "email" and email["status"] == "sent"
    assert email["attempts"] == 2 and email["sent_at"] and email["created_at"]
    assert [(h["attempt"], h["status"], h["error"]) for h in email["history"]] == [
        (1, "retry", "timeout"), (2, "sent", None)]
    assert sms["status"] == "skipped" and sms["last_error"] == "no phone"
    assert sms["history"] == [] and sms["next_attempt_at"] is None
    [failed] = found[two]
    assert failed["status"] == "failed" and failed["sent_at"] is None
    assert [(h["attempt"], h["status"], h["error"]) for h in failed["history"]] == [
        (1, "failed", "refused")]
    assert found[wide][0]["user_id"] is None and found[wide][0]["status"] == "sent"
    assert set(email) == {"id", "channel", "user_id", "status", "attempts", "last_error",
                          "next_attempt_at", "sent_at", "created_at", "history"}
    mine = await queue.for_notifications([one, two], "t1", user_id="bob")
    assert mine[one] == [] and [d["user_id"] for d in mine[two]] == ["bob"]
    assert await queue.for_notifications([one], "t2") == {one: []}
    assert await queue.for_notifications([], "t1") == {}


@pytest.mark.gen_test(timeout=30)
async def test_a_claimed_digest_comes_whole(backend):
    queue = backend.queue
    made = await create(backend, *[new(title=str(i)) for i in range(4)], new(user="bob"))
    now = time.time()
    rows = [planned(n, status="held", digest="hourly", next_attempt_at=now - 10 + i)
            for i, n in enumerate(made[:4])]
    rows.append(planned(made[4], "bob", status="held", digest="hourly", next_attempt_at=now))
    assert await queue.add_planned(rows, 0, made[-1])
    first = await queue.claim_due(now, limit=1)
    assert sorted(d.notification_id for d in first) == made[:4]
    assert all(d.status == "sending" and d.attempts == 1 and d.digest == "hourly"
               for d in first)
    [bobs] = await queue.claim_due(now)
    assert bobs.user_id == "bob"


# --- failures and start-up ---------------------------------------------------------------------

@pytest.mark.gen_test(timeout=120)
async def test_an_unreachable_store_raises_store_unavailable_and_recovers(
        backend, kind, outage):
    store = backend.store
    before, = await create(backend, new())
    async with outage():
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.create_batch([request(new(title="lost"))])
        with pytest.raises(StoreUnavailable):
            await store.mark_all_read(ALICE)
        with pytest.raises(StoreUnavailable):
            await backend.queue.add_planned([], 0, before)
        if kind == "postgres":  # SQLite's reader is not locked out by a writer
            with pytest.raises(StoreUnavailable):
                await store.inbox(ALICE)
            assert not await store.ping()
        assert time.monotonic() - started < 30  # each call well within 10 s
    made: list[int] = []

    async def back() -> bool:  # the pool reconnects by itself
        try:
            made.extend(await create(backend, new(title="back")))
        except StoreUnavailable:
            return False
        return True
    await eventually(back, timeout=30, step=0.2)
    after, = made
    assert await store.ping()
    assert [n["title"] for n in await store.inbox(ALICE)] == ["back", "hello"]
    assert after > before


@pytest.mark.gen_test(timeout=60)
async def test_each_call_gives_up_within_ten_seconds(backend, kind, outage):
    if kind == "sqlite":
        pytest.skip("timed by SQLite's busy timeout, shortened by the outage fixture")
    async with outage():
        for call in (lambda: backend.store.counts(ALICE),
                     lambda: backend.store.create_batch([request(new())]),
                     lambda: backend.queue.claim_due(time.time())):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await call()
            assert time.monotonic() - started < 10


@pytest.mark.gen_test(timeout=30)
async def test_a_bug_in_sql_still_raises_as_itself(backend, kind):
    db = backend.store.db
    if kind == "postgres":
        with pytest.raises(asyncpg.UndefinedColumnError):
            await db.fetch("SELECT no_such_column FROM notifications")
        with pytest.raises(asyncpg.PostgresSyntaxError):
            async with db.transaction() as conn:
                await conn.execute("SELEC 1")
    else:
        with pytest.raises(sqlite3.OperationalError):
            await db.fetchall("SELECT no_such_column FROM notifications")
    assert await backend.store.ping()


@pytest.mark.gen_test(timeout=30)
async def test_a_database_newer_than_the_code_refuses_to_start(backend, kind, database):
    if kind == "postgres":
        async with backend.store.db.transaction() as conn:
            await conn.execute("UPDATE schema_version SET version = $1", len(PG_MIGRATIONS) + 1)
    else:
        async with backend.store.db.write() as conn:
            await conn.execute(f"PRAGMA user_version={len(SQLITE_MIGRATIONS) + 1}")
    with pytest.raises(RuntimeError, match="newer than this tidings"):
        await open_backend(database)


@pytest.mark.gen_test(timeout=60)
async def test_processes_starting_together_migrate_once(postgres, opened):
    url = postgres.fresh_database()
    backends = await asyncio.gather(*[open_backend(url) for _ in range(4)])
    opened.extend(backends)
    async with backends[0].store.db.connection() as conn:
        assert await conn.fetchval("SELECT version FROM schema_version") == len(PG_MIGRATIONS)
        assert await conn.fetchval("SELECT count(*) FROM schema_version") == 1
    assert PG_MIGRATIONS and len(PG_MIGRATIONS) == len(SQLITE_MIGRATIONS)
    await create(backends[3], new())
    assert await backends[1].store.last_id() == 1


@pytest.mark.gen_test(timeout=60)
async def test_credentials_never_reach_a_log_line_or_an_error(postgres, opened, caplog):
    secret = "s3cr3t-pa55"
    url = postgres.fresh_database().replace("tidings@", f"tidings:{secret}@")
    with caplog.at_level(logging.DEBUG):
        backend = await open_backend(url)  # trust authentication ignores the password
        opened.append(backend)
        await create(backend, new())
        with pytest.raises(StoreUnavailable) as caught:  # nothing listens on port 1
            await open_backend(f"postgresql://tidings:{secret}@127.0.0.1:1/nowhere")
    assert secret not in str(caught.value)
    assert "migrating" in caplog.text
    assert secret not in caplog.text


@pytest.mark.gen_test(timeout=60)
async def test_a_call_stuck_behind_a_lock_gives_up_within_ten_seconds(backend, kind, database):
    if kind != "postgres":
        pytest.skip("SQLite's busy timeout is the same bound: see the outage test")
    holder = await asyncpg.connect(database)
    try:
        await holder.execute("BEGIN; LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await backend.store.create_batch([request(new(title="stuck"))])
        assert time.monotonic() - started < 10
    finally:
        await holder.execute("ROLLBACK")
        await holder.close()
    assert await create(backend, new(title="free"))  # the pool's connection still serves
    assert [n["title"] for n in await backend.store.inbox(ALICE)] == ["free"]


@pytest.mark.gen_test(timeout=30)
async def test_a_server_that_never_answers_fails_the_start_within_ten_seconds(opened):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, says nothing
        port = silent.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await open_backend(f"postgresql://tidings@127.0.0.1:{port}/nowhere")
        assert time.monotonic() - started < 10
