"""With a million notifications, an inbox page, the unread count and a replay stay index walks."""

import re
import sqlite3
import time

import pytest

from tidings.models import Principal
from tidings.store.sqlite import Database
from tidings.store.sqlite_notifications import SQLiteStore
from tidings.store.sqlite_schema import MIGRATIONS

ROWS = 1_000_000
TENANTS = 20
USERS = 500          # per tenant: ~100 direct notifications each
BROADCAST_EVERY = 50  # 2 % are tenant-wide: ~1000 per tenant
WHO = Principal("t3", "u7")

# A full pass over a table or an index: what must not happen on notifications or receipts.
FULL_SCAN = re.compile(r"^SCAN (n|r|notifications|receipts)\b")


def fill(path: str) -> None:
    """A bulk load in one statement (rows made by SQLite itself, far faster than from Python),
    with no journal and no fsync; the schema is the real one, made first."""
    conn = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS:
        conn.executescript(script)
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS)}")
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    # Row i belongs to tenant i % TENANTS; n = i / TENANTS is its number within the tenant.
    conn.execute(f"""
        WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq LIMIT {ROWS})
        INSERT INTO notifications (tenant_id, user_id, type, title, message, data, priority,
                                   created_at)
        SELECT 't' || (i % {TENANTS}),
               CASE WHEN (i / {TENANTS}) % {BROADCAST_EVERY} = 0 THEN NULL
                    ELSE 'u' || ((i / {TENANTS}) % {USERS}) END,
               CASE i % 4 WHEN 0 THEN 'info' WHEN 1 THEN 'success' WHEN 2 THEN 'warning'
                          ELSE 'error' END,
               'title ' || i, '', '{{}}', 'normal', {time.time() - ROWS} + i
        FROM seq""")
    conn.close()


@pytest.fixture(scope="module")
def big_db(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("store") / "big.db")
    fill(path)
    return path


@pytest.mark.gen_test(timeout=60)
async def test_inbox_unread_and_replay_use_the_indexes(big_db):
    db = await Database.open(big_db)
    store = SQLiteStore(db)
    seen: list[tuple[str, object]] = []
    fetchall, fetchone = db.fetchall, db.fetchone

    async def recording_fetchall(sql, params=()):
        seen.append((sql, params))
        return await fetchall(sql, params)

    async def recording_fetchone(sql, params=()):
        seen.append((sql, params))
        return await fetchone(sql, params)
    db.fetchall, db.fetchone = recording_fetchall, recording_fetchone
    try:
        page = await store.inbox(WHO, limit=50)
        assert len(page) == 50 and page == sorted(page, key=lambda n: -n["id"])
        assert {n["user_id"] for n in page} <= {"u7", None}
        await store.mark_read(WHO, page[3]["id"])
        await store.delete(WHO, page[4]["id"])
        await store.inbox(WHO, limit=50, before=page[-1]["id"])
        unread = await store.inbox(WHO, unread=True, limit=50)
        assert page[3]["id"] not in {n["id"] for n in unread}
        counts = await store.counts(WHO)
        assert counts["unread"] == counts["total"] - 1 and counts["total"] > 1000
        replay = await store.after(WHO, page[-1]["id"] - 20_000, 500)
        assert replay == sorted(replay, key=lambda n: n["id"]) and replay
        await store.mark_all_read(WHO)
        assert (await store.counts(WHO))["unread"] == 0
        await store.inbox(WHO, unread=True, limit=50)
    finally:
        db.fetchall, db.fetchone = fetchall, fetchone
        await db.close()

    plain = sqlite3.connect(big_db)
    try:
        for sql, params in seen:
            started = time.perf_counter()
            plain.execute(sql, params).fetchall()
            took = time.perf_counter() - started
            plan = [row[3] for row in plain.execute("EXPLAIN QUERY PLAN " + sql, params)]
            scans = [step for step in plan if FULL_SCAN.match(step)]
            assert not scans, (sql, plan)
            assert took < 1.0, (sql, took)  # generous: index walks take milliseconds
    finally:
        plain.close()
