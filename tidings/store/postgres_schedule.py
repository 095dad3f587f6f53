"""Scheduled notifications on PostgreSQL: the `ScheduleBook`, with the same results as on
SQLite. A claim locks its rows with `FOR UPDATE SKIP LOCKED`, so two processes claiming at
once take different entries."""

from __future__ import annotations

import json

from .. import errors
from .postgres import PgDatabase, Row, affected
from .protocol import LEASE, MAX_PENDING_SCHEDULED, Scheduled

_COLUMNS = "id, tenant_id, send_at, created_at, request"


def _entry(row: Row) -> Scheduled:
    return Scheduled(row["id"], row["tenant_id"], row["send_at"], row["created_at"],
                     json.loads(row["request"]))


class PostgresScheduleBook:
    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    async def add(self, entry: Scheduled, idempotency_key: str | None = None,
                  ) -> tuple[Scheduled, bool]:
        async with self.db.transaction() as conn:
            found = None if idempotency_key is None else await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM scheduled WHERE tenant_id = $1 "
                "AND idempotency_key = $2", entry.tenant_id, idempotency_key)
            if found is not None:
                return _entry(dict(found)), True
            pending = await conn.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM scheduled WHERE tenant_id = $1 AND "
                "status = 'pending' LIMIT $2) x", entry.tenant_id, MAX_PENDING_SCHEDULED)
            if pending >= MAX_PENDING_SCHEDULED:
                raise errors.too_many_scheduled(MAX_PENDING_SCHEDULED)
            inserted = await conn.fetchval(
                "INSERT INTO scheduled (id, tenant_id, request, send_at, created_at, "
                "idempotency_key) VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL "
                "DO NOTHING RETURNING id",
                entry.id, entry.tenant_id, json.dumps(entry.request, separators=(",", ":")),
                entry.send_at, entry.created_at, idempotency_key)
            if inserted is not None:
                return entry, False
            found = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM scheduled WHERE tenant_id = $1 "
                "AND idempotency_key = $2", entry.tenant_id, idempotency_key)
        assert found is not None  # the conflict was on that key
        return _entry(dict(found)), True

    async def pending(self, tenant_id: str, limit: int = 500) -> list[Scheduled]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM scheduled WHERE tenant_id = $1 AND status = 'pending' "
            "ORDER BY send_at, id LIMIT $2", tenant_id, limit)
        return [_entry(row) for row in rows]

    async def cancel(self, tenant_id: str, schedule_id: str, now: float) -> bool:
        async with self.db.transaction() as conn:
            status = await conn.execute(
                "UPDATE scheduled SET status = 'cancelled', done_at = $1 WHERE id = $2 "
                "AND tenant_id = $3 AND status = 'pending'", now, schedule_id, tenant_id)
        return affected(status) > 0

    async def claim(self, now: float, limit: int = 50, lease: float = LEASE,
                    ) -> list[Scheduled]:
        rows = await self.db.fetch(
            f"UPDATE scheduled SET claimed_until = $2 WHERE id IN (SELECT id FROM scheduled "
            "WHERE status = 'pending' AND send_at <= $1 AND (claimed_until IS NULL OR "
            "claimed_until <= $1) ORDER BY send_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) "
            f"RETURNING {_COLUMNS}", now, now + lease, limit)
        return sorted((_entry(row) for row in rows), key=lambda e: (e.send_at, e.id))

    async def next_due(self) -> float | None:
        row = await self.db.fetchrow(
            "SELECT min(greatest(send_at, coalesce(claimed_until, 0))) AS at FROM scheduled "
            "WHERE status = 'pending'")
        return row["at"] if row else None

    async def prune(self, older_than: float) -> int:
        async with self.db.transaction() as conn:
            status = await conn.execute(
                "DELETE FROM scheduled WHERE status <> 'pending' AND done_at < $1", older_than)
        return affected(status)
