"""Receipts on PostgreSQL, with the same results as `SQLiteReceiptBook`."""

from __future__ import annotations

from typing import Any

from .postgres import PgDatabase
from .protocol import (
    ACKS_PER_RECIPIENT,
    Ack,
    FrameAcks,
    Push,
    frame_ack_ids,
    frame_ack_lines,
    pack_frame_acks,
)
from .sqlite_receipts import assemble, first_acks, owned

_RECEIPTS = """
SELECT 'push' AS kind, notification_id, NULL AS user_id, connections AS connection_id,
  NULL AS transport, pushed_at AS at
  FROM pushes WHERE tenant_id = $1 AND notification_id = ANY($2::bigint[])
UNION ALL
SELECT 'ack', notification_id, user_id, connection_id, NULL, acknowledged_at
  FROM acks WHERE tenant_id = $1 AND notification_id = ANY($2::bigint[]){mine}
UNION ALL
SELECT 'frames', notification_id, NULL, acks, NULL, NULL
  FROM frame_acks WHERE tenant_id = $1 AND notification_id = ANY($2::bigint[])
UNION ALL
SELECT 'read', notification_id, user_id, NULL, NULL, read_at
  FROM receipts WHERE tenant_id = $1 AND notification_id = ANY($2::bigint[]){mine}
  AND read_at IS NOT NULL
UNION ALL
SELECT 'read', n.id, m.user_id, NULL, NULL, m.read_at
  FROM notifications n JOIN read_marks m ON m.tenant_id = n.tenant_id
  AND m.read_through >= n.id AND (n.user_id IS NULL OR n.user_id = m.user_id)
  WHERE n.tenant_id = $1 AND n.id = ANY($2::bigint[]){mine_mark}
"""


class PostgresReceiptBook:
    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    async def record(self, pushes: list[Push], acks: list[Ack],
                     frames: list[FrameAcks]) -> None:
        lines = frame_ack_lines(frames)  # grouped before the transaction begins
        async with self.db.transaction() as conn:
            if pushes:  # one array per field, in the fields' order
                await conn.execute(
                    "INSERT INTO pushes (notification_id, tenant_id, pushed_at, connections) "
                    "SELECT * FROM unnest($1::bigint[], $2::text[], $3::double precision[], "
                    "$4::text[])", *map(list, zip(*pushes, strict=True)))
            if not acks and not frames:
                return
            owners = {row[0]: (row[1], row[2]) for row in await conn.fetch(
                "SELECT id, tenant_id, user_id FROM notifications WHERE id = ANY($1::bigint[])",
                list({a.notification_id for a in acks}.union(frame_ack_ids(lines))))}
            packed = pack_frame_acks(lines, owners)
            if packed:
                await conn.execute(
                    "INSERT INTO frame_acks (notification_id, tenant_id, acks) "
                    "SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])",
                    *map(list, zip(*packed, strict=True)))
            if acks:  # the user's, the first of each and the bound, within the batch too
                acks = owned(acks, owners)
                pairs = list({(a.notification_id, a.user_id): None for a in acks})
                known: dict[tuple[int, str], set[str]] = {}
                for row in await conn.fetch(
                        "SELECT a.notification_id, a.user_id, a.connection_id "
                        "FROM unnest($1::bigint[], $2::text[]) AS p (n, u) JOIN acks a "
                        "ON a.notification_id = p.n AND a.user_id = p.u",
                        [n for n, _ in pairs], [u for _, u in pairs]):
                    known.setdefault((row[0], row[1]), set()).add(row[2])
                acks = first_acks(acks, known)
            if acks:
                await conn.execute(
                    "INSERT INTO acks (notification_id, tenant_id, user_id, connection_id, "
                    "acknowledged_at) SELECT a.* FROM unnest($1::bigint[], $2::text[], "
                    "$3::text[], $4::text[], $5::double precision[]) AS a(n, t, u, c, at) "
                    "JOIN notifications x ON x.id = a.n AND x.tenant_id = a.t "
                    "AND (x.user_id = a.u OR x.user_id IS NULL) WHERE (SELECT count(*) FROM "
                    "acks y WHERE y.notification_id = a.n AND y.user_id = a.u) < $6 "
                    "ON CONFLICT DO NOTHING", *map(list, zip(*acks, strict=True)),
                    ACKS_PER_RECIPIENT)

    async def receipts(self, tenant_id: str, notification_ids: list[int],
                       user_id: str | None = None) -> dict[int, list[dict[str, Any]]]:
        if not notification_ids:
            return {}
        mine = "" if user_id is None else " AND user_id = $3"
        mine_mark = "" if user_id is None else " AND m.user_id = $3"
        rows = await self.db.fetch(
            _RECEIPTS.format(mine=mine, mine_mark=mine_mark), tenant_id, list(notification_ids),
            *([] if user_id is None else [user_id]))
        return assemble(notification_ids, rows, user_id)

    async def acknowledged(self, notification_id: int, user_id: str) -> bool:
        row = await self.db.fetchrow(
            "SELECT 1 FROM acks WHERE notification_id = $1 AND user_id = $2 UNION ALL "
            "SELECT 1 FROM frame_acks WHERE notification_id = $1 "
            "AND strpos(acks, chr(9) || $2 || chr(9)) > 0 LIMIT 1",  # the user field
            notification_id, user_id)
        return row is not None
