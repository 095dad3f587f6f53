"""With a million notifications on PostgreSQL, an inbox page, the unread count and a replay stay
index walks (tests/test_store.py shows the same for SQLite). The plans are printed (-s)."""

from __future__ import annotations

import json
import time
from typing import Any

import asyncpg
import pytest

from tidings.models import Principal
from tidings.store import open_backend

ROWS = 1_000_000
TENANTS = 20
USERS = 500           # per tenant: ~100 direct notifications each
BROADCAST_EVERY = 50  # 2 % are tenant-wide: ~1000 per tenant
RECEIPT_EVERY = 7     # one direct notification in 7 has been read
WHO = Principal("t3", "u7")


async def fill(url: str) -> None:
    """A bulk load in one statement (rows made by PostgreSQL itself), with the real schema's
    secondary indexes dropped during the load and made again from their own definitions."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("SET maintenance_work_mem = '256MB'")
        definitions = [row["indexdef"] for row in await conn.fetch(
            "SELECT indexdef FROM pg_indexes WHERE tablename IN ('notifications', 'receipts') "
            "AND indexname NOT LIKE '%pkey'")]
        assert len(definitions) >= 3, definitions
        for row in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename IN ('notifications', "
                "'receipts') AND indexname NOT LIKE '%pkey'"):
            await conn.execute(f'DROP INDEX "{row["indexname"]}"')
        # Row i belongs to tenant i % TENANTS; n = i / TENANTS is its number within the tenant.
        await conn.execute(f"""
            INSERT INTO notifications (id, tenant_id, user_id, type, title, message, data,
                                       priority, created_at)
            SELECT i + 1, 't' || (i % {TENANTS}),
                   CASE WHEN (i / {TENANTS}) % {BROADCAST_EVERY} = 0 THEN NULL
                        ELSE 'u' || ((i / {TENANTS}) % {USERS}) END,
                   (ARRAY['info', 'success', 'warning', 'error'])[i % 4 + 1],
                   'title ' || i, '', '{{}}', 'normal', {time.time() - ROWS} + i
            FROM generate_series(0, {ROWS - 1}) AS i""")
        await conn.execute(f"""
            INSERT INTO receipts (tenant_id, user_id, notification_id, read_at)
            SELECT tenant_id, user_id, id, created_at FROM notifications
            WHERE user_id IS NOT NULL AND id % {RECEIPT_EVERY} = 0""")
        await conn.execute("SELECT setval('notifications_id_seq', $1)", ROWS)
        await conn.execute("INSERT INTO tenant_positions SELECT tenant_id, max(id) "
                           "FROM notifications GROUP BY tenant_id")
        for definition in definitions:
            await conn.execute(definition)
        await conn.execute("VACUUM ANALYZE notifications")
        await conn.execute("VACUUM ANALYZE receipts")
    finally:
        await conn.close()


def scans(plan: Any) -> list[tuple[str, str, str]]:
    """Every (node type, relation, index condition) in a JSON plan."""
    found = []
    stack = [plan[0]["Plan"]]
    while stack:
        node = stack.pop()
        found.append((node["Node Type"], node.get("Relation Name", ""),
                      node.get("Index Cond", "") + node.get("Recheck Cond", "")))
        stack += node.get("Plans", [])
    return found


def whole_table_walks(nodes: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Scans of notifications or receipts that an index does not bound: a sequential scan, or
    an index walked from one end with a filter (the primary key backwards, say). Bounded: by
    the tenant, or from an id upwards (above the read-all watermark: the newest few), or a
    probe of one notification's receipts (the counts' look-up per notification that ended)."""
    return [n for n in nodes if n[1] in ("notifications", "receipts")
            and (n[0] == "Seq Scan" or ("tenant_id" not in n[2] and "(id > " not in n[2]
                                        and not n[2].startswith("(notification_id = n")))]


@pytest.mark.gen_test(timeout=120)
async def test_inbox_unread_and_replay_use_the_indexes_at_a_million_rows(postgres, opened):
    url = postgres.fresh_database()
    backend = await open_backend(url)
    opened.append(backend)
    started = time.perf_counter()
    await fill(url)
    loaded = time.perf_counter() - started
    store = backend.store
    db = store.db  # type: ignore[attr-defined]
    seen: list[tuple[str, tuple[Any, ...]]] = []
    fetch, fetchrow = db.fetch, db.fetchrow

    async def recording_fetch(sql: str, *args: Any) -> Any:
        seen.append((sql, args))
        return await fetch(sql, *args)

    async def recording_fetchrow(sql: str, *args: Any) -> Any:
        seen.append((sql, args))
        return await fetchrow(sql, *args)
    db.fetch, db.fetchrow = recording_fetch, recording_fetchrow
    try:
        page = await store.inbox(WHO, limit=50)
        assert len(page) == 50 and page == sorted(page, key=lambda n: -n["id"])
        assert {n["user_id"] for n in page} <= {"u7", None}
        before = await store.counts(WHO)
        assert before["total"] > 1000 and before["unread"] < before["total"]
        unread_page = [n for n in page if not n["read_at"]]
        await store.mark_read(WHO, unread_page[0]["id"])
        await store.delete(WHO, unread_page[1]["id"])
        await store.inbox(WHO, limit=50, before=page[-1]["id"])
        unread = await store.inbox(WHO, unread=True, limit=50)
        assert unread_page[0]["id"] not in {n["id"] for n in unread}
        counts = await store.counts(WHO)
        assert counts == {"total": before["total"] - 1, "unread": before["unread"] - 2}
        replay = await store.after(WHO, page[-1]["id"] - 20_000, 500)
        assert replay == sorted(replay, key=lambda n: n["id"]) and replay
        await store.mark_all_read(WHO)
        assert (await store.counts(WHO))["unread"] == 0
        await store.inbox(WHO, unread=True, limit=50)
    finally:
        db.fetch, db.fetchrow = fetch, fetchrow

    conn = await asyncpg.connect(url)
    try:
        print(f"\n{ROWS} notifications loaded and indexed in {loaded:.1f} s")
        shown = set()
        for sql, args in seen:
            started = time.perf_counter()
            await conn.fetch(sql, *args)
            took = time.perf_counter() - started
            # The plan for these values, and the generic one a prepared statement may settle on.
            for mode in ("force_custom_plan", "force_generic_plan"):
                await conn.execute(f"SET plan_cache_mode = {mode}")
                plan = json.loads(await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args))
                nodes = scans(plan)
                assert not whole_table_walks(nodes), (mode, sql, nodes)
                assert any("Index" in n[0] for n in nodes), (mode, sql, nodes)
            await conn.execute("RESET plan_cache_mode")
            assert took < 1.0, (sql, took)  # generous: index walks take milliseconds
            if sql not in shown:
                shown.add(sql)
                text = await conn.fetch("EXPLAIN " + sql, *args)
                print(f"\n-- {took * 1000:.1f} ms: {sql[:120]}...")
                print("\n".join(row[0] for row in text))
    finally:
        await conn.close()
