"""Receipts on SQLite: which connection was pushed a notification, which acknowledged it, and
who read it (from the read state the inbox keeps)."""

from __future__ import annotations

from typing import Any

from .protocol import (
    ACKS_PER_RECIPIENT,
    Ack,
    FrameAcks,
    Push,
    frame_ack_ids,
    frame_ack_lines,
    pack_frame_acks,
    ts,
    unpack_lines,
)
from .sqlite import Database, Row

# One statement, so pushes, acknowledgements and reads come from one snapshot. A read is an
# explicit one (receipts) or a read-all mark at or past the id; for a direct notification only
# its recipient's mark counts.
_RECEIPTS = """
SELECT 'push' AS kind, notification_id, NULL AS user_id, connections AS connection_id,
  NULL AS transport, pushed_at AS at
  FROM pushes WHERE tenant_id = :tenant AND notification_id IN ({ids})
UNION ALL
SELECT 'ack', notification_id, user_id, connection_id, NULL, acknowledged_at
  FROM acks WHERE tenant_id = :tenant AND notification_id IN ({ids}){mine}
UNION ALL
SELECT 'frames', notification_id, NULL, acks, NULL, NULL
  FROM frame_acks WHERE tenant_id = :tenant AND notification_id IN ({ids})
UNION ALL
SELECT 'read', notification_id, user_id, NULL, NULL, read_at
  FROM receipts WHERE tenant_id = :tenant AND notification_id IN ({ids}){mine}
  AND read_at IS NOT NULL
UNION ALL
SELECT 'read', n.id, m.user_id, NULL, NULL, m.read_at
  FROM notifications n JOIN read_marks m ON m.tenant_id = n.tenant_id
  AND m.read_through >= n.id AND (n.user_id IS NULL OR n.user_id = m.user_id)
  WHERE n.tenant_id = :tenant AND n.id IN ({ids}){mine_mark}
"""


class SQLiteReceiptBook:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, pushes: list[Push], acks: list[Ack],
                     frames: list[FrameAcks]) -> None:
        lines = frame_ack_lines(frames)  # grouped before the write lock is taken
        async with self.db.write() as conn:
            # The rows are the tuples themselves, in their fields' order.
            await conn.executemany(
                "INSERT INTO pushes (notification_id, tenant_id, pushed_at, connections) "
                "VALUES (?, ?, ?, ?)", pushes)
            if not acks and not frames:
                return
            # What a statement per row would ask (is the notification the user's; how many
            # does the user have of it already), asked once for the whole batch: two lookups
            # by key, then the inserts alone.
            ids = ",".join(str(int(n)) for n in {a.notification_id for a in acks}.union(
                frame_ack_ids(lines)))
            async with conn.execute("SELECT id, tenant_id, user_id FROM notifications "
                                    f"WHERE id IN ({ids})") as cursor:
                owners = {row[0]: (row[1], row[2]) for row in await cursor.fetchall()}
            await conn.executemany(
                "INSERT INTO frame_acks (notification_id, tenant_id, acks) VALUES (?, ?, ?)",
                pack_frame_acks(lines, owners))
            acks = owned(acks, owners)
            pairs = list({(a.notification_id, a.user_id): None for a in acks})
            known: dict[tuple[int, str], set[str]] = {}
            for start in range(0, len(pairs), 400):  # 800 parameters a statement at most
                some = pairs[start:start + 400]
                async with conn.execute(
                        "WITH p (n, u) AS (VALUES " + ",".join(["(?, ?)"] * len(some)) + ") "
                        "SELECT a.notification_id, a.user_id, a.connection_id FROM p "
                        "JOIN acks a ON a.notification_id = p.n AND a.user_id = p.u",
                        [x for pair in some for x in pair]) as cursor:
                    for n, user, connection in await cursor.fetchall():
                        known.setdefault((n, user), set()).add(connection)
            await conn.executemany(
                "INSERT INTO acks (notification_id, tenant_id, user_id, connection_id, "
                "acknowledged_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                first_acks(acks, known))

    async def receipts(self, tenant_id: str, notification_ids: list[int],
                       user_id: str | None = None) -> dict[int, list[dict[str, Any]]]:
        if not notification_ids:
            return {}
        ids = ",".join(str(int(i)) for i in notification_ids)
        mine = "" if user_id is None else " AND user_id = :user"
        mine_mark = "" if user_id is None else " AND m.user_id = :user"
        rows = await self.db.fetchall(
            _RECEIPTS.format(ids=ids, mine=mine, mine_mark=mine_mark),
            {"tenant": tenant_id, "user": user_id})
        return assemble(notification_ids, rows, user_id)

    async def acknowledged(self, notification_id: int, user_id: str) -> bool:
        row = await self.db.fetchone(
            "SELECT 1 FROM acks WHERE notification_id = :n AND user_id = :user UNION ALL "
            "SELECT 1 FROM frame_acks WHERE notification_id = :n "
            "AND instr(acks, char(9) || :user || char(9)) > 0 LIMIT 1",  # the user field
            {"n": notification_id, "user": user_id})
        return row is not None


def owned(acks: list[Ack], owners: dict[int, tuple[str, str | None]]) -> list[Ack]:
    """The acknowledgements of notifications of the user (or the user's tenant, for a
    broadcast); `owners` holds each notification's tenant and user."""
    return [a for a in acks if (owner := owners.get(a.notification_id)) is not None
            and owner[0] == a.tenant_id and owner[1] in (None, a.user_id)]


def first_acks(acks: list[Ack], known: dict[tuple[int, str], set[str]]) -> list[Ack]:
    """The first acknowledgement of each notification, user and connection, and at most
    ACKS_PER_RECIPIENT per notification and user, counting the connections already stored
    (`known`, which this fills in)."""
    kept = []
    for a in acks:
        have = known.get((a.notification_id, a.user_id))
        if have is None:
            known[a.notification_id, a.user_id] = {a.connection_id}
        elif a.connection_id in have or len(have) >= ACKS_PER_RECIPIENT:
            continue
        else:
            have.add(a.connection_id)
        kept.append(a)
    return kept


def assemble(notification_ids: list[int], rows: list[Row],
             user_id: str | None = None) -> dict[int, list[dict[str, Any]]]:
    """Rows of kind push / ack / read into the API's receipts: per notification, per user
    (only `user_id`'s when given), the earliest read and acknowledgement, and each connection
    pushed it. An acknowledgement naming no connection ('') marks every SSE connection of the
    user; one naming a connection that was not pushed it marks only the user."""
    users: dict[int, dict[str, dict[str, Any]]] = {n: {} for n in notification_ids}
    acks: list[Row | dict[str, Any]] = []

    def entry_of(notification_id: int, user: str) -> dict[str, Any]:
        return users[notification_id].setdefault(user, {
            "user_id": user, "read_at": None, "acknowledged_at": None, "connections": {}})

    for row in rows:
        if row["kind"] == "frames":  # packed: a line per frame, its connection, user, time
            for connection_id, user, at in unpack_lines(row["connection_id"]):
                if user_id is None or user == user_id:
                    entry_of(row["notification_id"], user)
                    acks.append({"notification_id": row["notification_id"], "user_id": user,
                                 "connection_id": connection_id, "at": float(at)})
            continue
        if row["kind"] == "push":  # packed: the connections of one write
            for connection_id, user, transport in unpack_lines(row["connection_id"]):
                if user_id is not None and user != user_id:
                    continue
                connections = entry_of(row["notification_id"], user)["connections"]
                known = connections.get(connection_id)
                if known is None or row["at"] < known["pushed_at"]:
                    connections[connection_id] = {
                        "connection_id": connection_id, "transport": transport,
                        "pushed_at": row["at"], "acknowledged_at": None}
            continue
        entry = entry_of(row["notification_id"], row["user_id"])
        if row["kind"] == "read":
            entry["read_at"] = _earliest(entry["read_at"], row["at"])
        else:
            acks.append(row)
    for row in acks:  # after every push is known
        entry = users[row["notification_id"]][row["user_id"]]
        entry["acknowledged_at"] = _earliest(entry["acknowledged_at"], row["at"])
        if row["connection_id"]:  # a connection it was pushed to, else only the user's mark
            conn = entry["connections"].get(row["connection_id"])
            if conn is not None:
                conn["acknowledged_at"] = _earliest(conn["acknowledged_at"], row["at"])
        else:
            for conn in entry["connections"].values():
                if conn["transport"] == "sse":
                    conn["acknowledged_at"] = _earliest(conn["acknowledged_at"], row["at"])
    return {n: [_shaped(e) for _, e in sorted(found.items())] for n, found in users.items()}


def _earliest(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else min(a, b)


def _shaped(entry: dict[str, Any]) -> dict[str, Any]:
    connections = sorted(entry["connections"].values(),
                         key=lambda c: (c["pushed_at"] or 0, c["connection_id"]))
    return {"user_id": entry["user_id"], "read_at": ts(entry["read_at"]),
            "acknowledged_at": ts(entry["acknowledged_at"]),
            "connections": [{**c, "pushed_at": ts(c["pushed_at"]),
                             "acknowledged_at": ts(c["acknowledged_at"])} for c in connections]}
