"""Scheduled notifications on SQLite: the `ScheduleBook`. Every write holds the file's write
lock (BEGIN IMMEDIATE), so a claim's read and update are one step for every process."""

from __future__ import annotations

import json
from typing import Any

from .. import errors
from .protocol import LEASE, MAX_PENDING_SCHEDULED, Scheduled
from .sqlite import Database, Row

_COLUMNS = "id, tenant_id, send_at, created_at, request"


def _entry(row: Row | Any) -> Scheduled:
    return Scheduled(row["id"], row["tenant_id"], row["send_at"], row["created_at"],
                     json.loads(row["request"]))


class SQLiteScheduleBook:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, entry: Scheduled, idempotency_key: str | None = None,
                  ) -> tuple[Scheduled, bool]:
        async with self.db.write() as conn:
            if idempotency_key is not None:
                async with conn.execute(
                        f"SELECT {_COLUMNS} FROM scheduled WHERE tenant_id = ? "
                        "AND idempotency_key = ?", (entry.tenant_id, idempotency_key)) as cursor:
                    found = await cursor.fetchone()
                if found is not None:
                    return _entry(found), True
            async with conn.execute(
                    "SELECT count(*) FROM (SELECT 1 FROM scheduled WHERE tenant_id = ? AND "
                    "status = 'pending' LIMIT ?)", (entry.tenant_id, MAX_PENDING_SCHEDULED),
            ) as cursor:
                [pending] = await cursor.fetchone()  # type: ignore[misc]
            if pending >= MAX_PENDING_SCHEDULED:
                raise errors.too_many_scheduled(MAX_PENDING_SCHEDULED)
            await conn.execute(
                "INSERT INTO scheduled (id, tenant_id, request, send_at, created_at, "
                "idempotency_key) VALUES (?, ?, ?, ?, ?, ?)",
                (entry.id, entry.tenant_id, json.dumps(entry.request, separators=(",", ":")),
                 entry.send_at, entry.created_at, idempotency_key))
        return entry, False

    async def pending(self, tenant_id: str, limit: int = 500) -> list[Scheduled]:
        rows = await self.db.fetchall(
            f"SELECT {_COLUMNS} FROM scheduled WHERE tenant_id = ? AND status = 'pending' "
            "ORDER BY send_at, id LIMIT ?", (tenant_id, limit))
        return [_entry(row) for row in rows]

    async def cancel(self, tenant_id: str, schedule_id: str, now: float) -> bool:
        async with self.db.write() as conn:
            cursor = await conn.execute(
                "UPDATE scheduled SET status = 'cancelled', done_at = ? WHERE id = ? "
                "AND tenant_id = ? AND status = 'pending'", (now, schedule_id, tenant_id))
            return cursor.rowcount > 0

    async def claim(self, now: float, limit: int = 50, lease: float = LEASE,
                    ) -> list[Scheduled]:
        async with self.db.write() as conn:
            async with conn.execute(
                    f"SELECT {_COLUMNS} FROM scheduled WHERE status = 'pending' "
                    "AND send_at <= ? AND (claimed_until IS NULL OR claimed_until <= ?) "
                    "ORDER BY send_at, id LIMIT ?", (now, now, limit)) as cursor:
                rows = await cursor.fetchall()
            entries = [_entry(row) for row in rows]
            if entries:
                await conn.executemany(
                    "UPDATE scheduled SET claimed_until = ? WHERE id = ?",
                    [(now + lease, e.id) for e in entries])
        return entries

    async def next_due(self) -> float | None:
        row = await self.db.fetchone(
            "SELECT min(max(send_at, coalesce(claimed_until, 0))) AS at FROM scheduled "
            "WHERE status = 'pending'")
        return row["at"] if row else None

    async def prune(self, older_than: float) -> int:
        async with self.db.write() as conn:
            cursor = await conn.execute(
                "DELETE FROM scheduled WHERE status <> 'pending' AND done_at < ?", (older_than,))
            return cursor.rowcount
