"""The notification store on SQLite: the `Store` protocol's default implementation.

A notification leaves the store as a JSON-ready dict in the contract's shape; `read_at` is
filled per user, from its receipt or from its read-all watermark.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from .. import errors
from ..connections import dumps
from ..models import Principal, iso
from ..validation import MAX_ID
from .protocol import (
    EXPIRED,
    RECALLED,
    REPLACED,
    TENANT_SETTINGS,
    Created,
    CreateRequest,
    Entry,
    Notification,
    Removal,
    actions_json,
    chain,
    doomed,
    gone,
    merge,
    position,
    shape,
    tenant_settings,
)
from .sqlite import Database, Row

_COLUMNS = "n.id, n.tenant_id, n.user_id, n.type, n.title, n.message, n.data, n.priority, " \
           "n.created_at, n.group_name, n.actions, n.key, n.replaces, n.expires_at, r.read_at"
_BARE_COLUMNS = _COLUMNS.replace(", r.read_at", ", NULL AS read_at")
_JOIN = ("LEFT JOIN receipts r ON r.tenant_id = n.tenant_id AND r.user_id = :user "
         "AND r.notification_id = n.id")
_LIVE = " AND n.removed IS NULL AND (n.expires_at IS NULL OR n.expires_at > :now)"
# Of one range of a user's notifications, those that left (or expired) and that the user had
# not deleted (`deleted`) or, above the read-all mark, neither read nor deleted (`unread`):
# the counts subtract them. The first term matches notifications_ending's own.
_ENDED = ("(SELECT count(*) FROM notifications n LEFT JOIN receipts r ON r.tenant_id = "
          "n.tenant_id AND r.user_id = :user AND r.notification_id = n.id "
          "WHERE n.tenant_id = :tenant AND n.user_id {} "
          "AND (n.expires_at IS NOT NULL OR n.removed IS NOT NULL) AND n.id <= :upto {} "
          "AND (n.removed IS NOT NULL OR n.expires_at <= :now) AND r.deleted_at IS NULL{})")
_ENDED_TOTAL = " + ".join(_ENDED.format(u, "", "") for u in ("= :user", "IS NULL"))
_ENDED_UNREAD = " + ".join(_ENDED.format(u, "AND n.id > :through", " AND r.read_at IS NULL")
                           for u in ("= :user", "IS NULL"))
# A user's counts; :through is the read-all mark, read in the same statement.
_COUNTS = (
    "SELECT "
    " (SELECT count(*) FROM notifications WHERE tenant_id = :tenant AND user_id = :user"
    "  AND id <= :upto)"
    " + (SELECT count(*) FROM notifications WHERE tenant_id = :tenant AND user_id IS NULL"
    "  AND id <= :upto) AS all_, "
    " (SELECT count(*) FROM notifications WHERE tenant_id = :tenant AND user_id = :user"
    "  AND id > :through AND id <= :upto)"
    " + (SELECT count(*) FROM notifications WHERE tenant_id = :tenant AND user_id IS NULL"
    "  AND id > :through AND id <= :upto) AS above, "
    " (SELECT count(*) FROM receipts WHERE tenant_id = :tenant AND user_id = :user"
    "  AND notification_id <= :upto AND deleted_at IS NOT NULL) AS deleted, "
    " (SELECT count(*) FROM receipts WHERE tenant_id = :tenant AND user_id = :user"
    "  AND notification_id > :through AND notification_id <= :upto"
    "  AND (read_at IS NOT NULL OR deleted_at IS NOT NULL)) AS gone_above, "
    f"{_ENDED_TOTAL} AS ended, {_ENDED_UNREAD} AS ended_unread"
).replace(":through", "(SELECT coalesce(max(read_through), 0) FROM read_marks "
                      "WHERE tenant_id = :tenant AND user_id = :user)")
_SKIP = ("UPDATE deliveries SET status = 'skipped', last_error = ? WHERE notification_id "
         "IN ({}) AND status IN ('queued', 'held')")


class SQLiteStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- writes: only here are transactions started --------------------------------------

    async def create_batch(self, requests: list[CreateRequest]) -> list[Created]:
        """Creates every request in one transaction (group commit); returns after COMMIT.

        The transaction runs on the database's thread in one hop (`Database.transact`); what
        is plain Python (encoding each request's data, shaping the notifications) is done on
        this thread before and after it, so that the database's thread holds the GIL as
        little as it can while the event loop serves sockets. Ids are given here rather than
        by SQLite, so that the batch is one `executemany`: the writer holds the database's
        write lock (BEGIN IMMEDIATE), so ids follow commit order, and `sqlite_sequence` holds
        the largest id ever given.
        """
        now = time.time()
        encoded = [_encoded(request) for request in requests]
        results, given = await self.db.transact(lambda conn: _create(conn, requests, encoded,
                                                                     now))
        created_at = iso(now)  # one timestamp for the whole batch, formatted once
        for request, created, ids in zip(requests, results, given, strict=True):
            if not ids:  # replayed, or a scheduled entry sent or cancelled meanwhile
                continue
            for item, (id_, replaces) in zip(request.items, ids, strict=True):
                created.notifications.append(shape(
                    id_, item.tenant_id, item.user_id, item.type, item.title, item.message,
                    item.data, item.priority, created_at, None, item.group, item.actions,
                    key=item.key, replaces=replaces, expires_at=item.expires_at))
        return results

    async def save_responses(self, tenant_keys: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Keeps the first answer of idempotent requests, so a retry gets exactly that answer."""
        async with self.db.write() as conn:
            await conn.executemany(
                "UPDATE idempotency_keys SET response = ? WHERE tenant_id = ? AND key = ?",
                [(json.dumps(r, separators=(",", ":")), t, k) for t, k, r in tenant_keys])

    async def mark_read(self, who: Principal, notification_id: int) -> None:
        await self._visible_or_404(who, notification_id)
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO receipts (tenant_id, user_id, notification_id, read_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, user_id, notification_id) DO UPDATE "
                "SET read_at = coalesce(receipts.read_at, excluded.read_at)",
                (who.tenant_id, who.user_id, notification_id, time.time()))

    async def mark_all_read(self, who: Principal) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO read_marks (tenant_id, user_id, read_through, read_at) "
                # WHERE true: without it SQLite parses ON CONFLICT as a join constraint.
                "SELECT ?, ?, coalesce(max(id), 0), ? FROM notifications WHERE true "
                "ON CONFLICT (tenant_id, user_id) DO UPDATE SET read_through = excluded.read_through, "
                "read_at = excluded.read_at",
                (who.tenant_id, who.user_id, time.time()))

    async def delete(self, who: Principal, notification_id: int) -> None:
        await self._visible_or_404(who, notification_id)
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO receipts (tenant_id, user_id, notification_id, deleted_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, user_id, notification_id) "
                "DO UPDATE SET deleted_at = excluded.deleted_at",
                (who.tenant_id, who.user_id, notification_id, time.time()))

    async def put_tenant_settings(self, tenant_id: str,
                                  changes: dict[str, int | None]) -> dict[str, Any]:
        names = [n for n in TENANT_SETTINGS if n in changes]
        async with self.db.write() as conn:
            await conn.execute("INSERT INTO tenants (tenant_id, updated_at) VALUES (?, ?) "
                               "ON CONFLICT (tenant_id) DO NOTHING", (tenant_id, time.time()))
            if names:
                sets = ", ".join(f"{n} = :{n}" for n in names)
                await conn.execute(f"UPDATE tenants SET {sets}, updated_at = :now "
                                   "WHERE tenant_id = :tenant",
                                   {**{n: changes[n] for n in names}, "now": time.time(),
                                    "tenant": tenant_id})
        return await self.tenant_settings(tenant_id)

    async def prune(self, tenant_id: str, *, older_than: float | None, keep: int | None,
                    limit: int = 500) -> int:
        """One batch of retention, under the writer's lock (BEGIN IMMEDIATE): another process
        pruning at the same time waits, then finds what is left."""
        async with self.db.write() as conn:
            cut = 0
            if keep is not None:  # the newest id beyond the newest `keep`: it and older go
                async with conn.execute(
                        "SELECT id FROM notifications WHERE tenant_id = ? ORDER BY id DESC "
                        "LIMIT 1 OFFSET ?", (tenant_id, keep)) as cursor:
                    found = await cursor.fetchone()
                cut = found[0] if found else 0
            async with conn.execute(
                    "SELECT id, created_at FROM notifications WHERE tenant_id = ? "
                    "ORDER BY id LIMIT ?", (tenant_id, limit)) as cursor:
                rows = [dict(row) for row in await cursor.fetchall()]
            ids = doomed(rows, older_than, cut)
            if not ids:
                return 0
            marks = ",".join("?" * len(ids))
            await conn.execute(
                f"DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM deliveries "
                f"WHERE notification_id IN ({marks}))", ids)
            await conn.execute(f"DELETE FROM deliveries WHERE notification_id IN ({marks})", ids)
            await conn.execute(f"DELETE FROM receipts WHERE tenant_id = ? AND notification_id "
                               f"IN ({marks})", (tenant_id, *ids))
            for table in ("pushes", "acks", "frame_acks", "notification_events"):
                await conn.execute(f"DELETE FROM {table} WHERE notification_id IN ({marks})", ids)
            await conn.execute(f"DELETE FROM notifications WHERE id IN ({marks})", ids)
            await conn.execute(
                "INSERT INTO tenants (tenant_id, pruned_through, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (tenant_id) DO UPDATE SET "
                "pruned_through = max(tenants.pruned_through, excluded.pruned_through)",
                (tenant_id, ids[-1], time.time()))
        return len(ids)

    async def recall(self, tenant_id: str, notification_id: int) -> tuple[Removal, int] | None:
        async with self.db.write() as conn:
            async with conn.execute(
                    "SELECT id, tenant_id, user_id FROM notifications WHERE id = ? "
                    "AND tenant_id = ? AND removed IS NULL", (notification_id, tenant_id)) as c:
                found = [tuple(row) for row in await c.fetchall()]
            if not found:
                return None
            return (await _remove(conn, found, RECALLED))[0]

    async def expire(self, now: float, limit: int = 500) -> list[tuple[Removal, int]]:
        async with self.db.write() as conn:
            async with conn.execute(
                    "SELECT id, tenant_id, user_id FROM notifications WHERE expires_at IS NOT "
                    "NULL AND removed IS NULL AND expires_at <= ? ORDER BY expires_at LIMIT ?",
                    (now, limit)) as cursor:
                found = sorted(tuple(row) for row in await cursor.fetchall())
            return await _remove(conn, found, EXPIRED) if found else []

    async def prune_idempotency_keys(self, older_than: float) -> int:
        async with self.db.write() as conn:
            cursor = await conn.execute("DELETE FROM idempotency_keys WHERE created_at < ?",
                                        (older_than,))
            return cursor.rowcount

    # --- reads ---------------------------------------------------------------------------

    async def _visible_or_404(self, who: Principal, notification_id: int) -> None:
        row = await self.db.fetchone(
            "SELECT 1 FROM notifications n " + _JOIN.replace(":user", "?") +
            " WHERE n.id = ? AND n.tenant_id = ? AND (n.user_id = ? OR n.user_id IS NULL) "
            "AND r.deleted_at IS NULL" + _LIVE.replace(":now", "?"),
            (who.user_id, notification_id, who.tenant_id, who.user_id, time.time()))
        if row is None:
            raise errors.not_found(f"notification {notification_id}")

    async def _read_mark(self, who: Principal) -> tuple[int, float | None]:
        row = await self.db.fetchone(
            "SELECT read_through, read_at FROM read_marks WHERE tenant_id = ? AND user_id = ?",
            (who.tenant_id, who.user_id))
        return (row["read_through"], row["read_at"]) if row else (0, None)

    async def _page(self, who: Principal, where: str, order: str, limit: int,
                    params: dict[str, Any]) -> list[Notification]:
        """Direct and tenant-wide notifications, each range walked in index order, then merged.

        Two ranges joined by UNION ALL keep every query an index walk of at most `limit` rows;
        an `OR` on user_id would make SQLite collect and sort the whole inbox.
        """
        through, read_at = await self._read_mark(who)
        params = {**params, "tenant": who.tenant_id, "user": who.user_id, "limit": limit,
                  "through": through, "now": time.time()}
        one = (f"SELECT * FROM (SELECT {_COLUMNS} FROM notifications n {_JOIN} "
               f"WHERE n.tenant_id = :tenant AND n.user_id {{}} AND r.deleted_at IS NULL "
               f"{_LIVE}{where} ORDER BY n.id {order} LIMIT :limit)")
        sql = (one.format("= :user") + " UNION ALL " + one.format("IS NULL") +
               f" ORDER BY id {order} LIMIT :limit")
        rows = await self.db.fetchall(sql, params)
        return [_row(row, through, read_at) for row in rows]

    async def inbox(self, who: Principal, *, unread: bool = False, limit: int = 50,
                    before: int | None = None, group: str | None = None,
                    ) -> list[Notification]:
        where = ""
        if before is not None:
            where += " AND n.id < :before"
        if unread:
            where += " AND n.id > :through AND r.read_at IS NULL"
        if group is not None:
            where += " AND n.group_name = :group"
        return await self._page(who, where, "DESC", limit, {"before": before, "group": group})

    async def after(self, who: Principal, after_id: int, limit: int = 500) -> list[Notification]:
        """What a reconnecting client missed: ids above `after_id`, oldest first."""
        return await self._page(who, " AND n.id > :after", "ASC", limit, {"after": after_id})

    async def counts(self, who: Principal, upto: int | None = None) -> dict[str, int]:
        """Total and unread (of ids up to `upto` when given), from index range counts;
        receipts (few per user) are subtracted. One statement: a connection's greeting
        waits for it."""
        p = {"tenant": who.tenant_id, "user": who.user_id,
             "upto": MAX_ID if upto is None else upto, "now": time.time()}
        row = await self.db.fetchone(_COUNTS, p)
        assert row is not None
        return {"total": row["all_"] - row["deleted"] - row["ended"],
                "unread": row["above"] - row["gone_above"] - row["ended_unread"]}

    async def by_type(self, who: Principal) -> dict[str, int]:
        p = {"tenant": who.tenant_id, "user": who.user_id, "now": time.time()}
        rows = await self.db.fetchall(
            "SELECT type, count(*) AS n FROM notifications n WHERE tenant_id = :tenant "
            f"AND (user_id = :user OR user_id IS NULL){_LIVE} GROUP BY type", p)
        result = {row["type"]: row["n"] for row in rows}
        for row in await self.db.fetchall(
                "SELECT n.type, count(*) AS n FROM receipts r JOIN notifications n "
                "ON n.id = r.notification_id WHERE r.tenant_id = :tenant AND r.user_id = :user "
                f"AND r.deleted_at IS NOT NULL{_LIVE} GROUP BY n.type", p):
            result[row["type"]] -= row["n"]
        return {t: n for t, n in sorted(result.items()) if n > 0}

    async def recent(self, tenant_id: str, limit: int = 20) -> list[Notification]:
        rows = await self.db.fetchall(
            f"SELECT {_BARE_COLUMNS}, n.removed FROM notifications n "
            "WHERE n.tenant_id = ? ORDER BY n.id DESC LIMIT ?", (tenant_id, limit))
        now = time.time()
        return [{**_row(row), "ended": gone(row["removed"], row["expires_at"], now)}
                for row in rows]

    async def notification(self, notification_id: int) -> Notification | None:
        row = await self.db.fetchone(f"SELECT {_BARE_COLUMNS} FROM notifications n "
                                     "WHERE n.id = ?", (notification_id,))
        return _row(row) if row else None

    async def unplanned(self, after_id: int, limit: int = 500) -> list[dict[str, Any]]:
        rows = await self.db.fetchall(
            "SELECT id, tenant_id, user_id, type, priority, channels, removed, expires_at "
            "FROM notifications WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
        return [{**row, "channels": json.loads(row["channels"]) if row["channels"] else None}
                for row in rows]

    async def tenant_range(self, tenant_id: str, after_id: int, through_id: int,
                           limit: int = 500) -> list[tuple[Entry, int]]:
        args = (tenant_id, after_id, through_id, limit)
        notifications = [_row(row) for row in await self.db.fetchall(
            f"SELECT {_BARE_COLUMNS} FROM notifications n WHERE n.tenant_id = ? AND n.id > ? "
            "AND n.id <= ? ORDER BY n.id LIMIT ?", args)]
        removals = [_removal(row) for row in await self.db.fetchall(
            "SELECT * FROM notification_events WHERE tenant_id = ? AND id > ? AND id <= ? "
            "ORDER BY id LIMIT ?", args)]
        entries = merge(notifications, removals, limit)
        if not entries:
            return []
        row = await self.db.fetchone(
            "SELECT max(coalesce((SELECT max(id) FROM notifications WHERE tenant_id = :t "
            "AND id < :s), 0), coalesce((SELECT max(id) FROM notification_events "
            "WHERE tenant_id = :t AND id < :s), 0)) AS prev",
            {"t": tenant_id, "s": position(entries[0])})
        return chain(entries, int(row["prev"]) if row else 0)

    async def removals_after(self, who: Principal, since: int, after_id: int,
                             limit: int = 500) -> list[Removal]:
        return [_removal(row) for row in await self.db.fetchall(
            "SELECT * FROM notification_events WHERE tenant_id = ? AND id > ? "
            "AND notification_id <= ? AND (user_id = ? OR user_id IS NULL) ORDER BY id LIMIT ?",
            (who.tenant_id, after_id, since, who.user_id, limit))]

    async def removed(self, notification_ids: list[int], now: float) -> dict[int, str]:
        if not notification_ids:
            return {}
        marks = ",".join("?" * len(notification_ids))
        rows = await self.db.fetchall(f"SELECT id, removed, expires_at FROM notifications "
                                      f"WHERE id IN ({marks})", tuple(notification_ids))
        reasons = {row["id"]: gone(row["removed"], row["expires_at"], now) for row in rows}
        return {id_: reason for id_, reason in reasons.items() if reason}

    async def positions(self, tenant_ids: list[str]) -> dict[str, int]:
        found = {t: 0 for t in tenant_ids}
        if tenant_ids:
            marks = ",".join("?" * len(tenant_ids))
            for row in await self.db.fetchall(
                    f"SELECT tenant_id, last_id FROM tenant_positions WHERE tenant_id IN "
                    f"({marks})", tuple(tenant_ids)):
                found[row["tenant_id"]] = row["last_id"]
        return found

    async def last_id(self) -> int:
        # From the tenants' positions, which retention leaves alone: max(id) of notifications
        # would fall when the newest ones are removed, and a good cursor would look unknown.
        row = await self.db.fetchone("SELECT coalesce(max(last_id), 0) AS id "
                                     "FROM tenant_positions")
        return int(row["id"]) if row else 0

    async def tenant_settings(self, tenant_id: str) -> dict[str, Any]:
        return tenant_settings(await self.db.fetchone(
            "SELECT retention_days, retention_count, pruned_through FROM tenants "
            "WHERE tenant_id = ?", (tenant_id,)))

    async def retention_tenants(self) -> list[dict[str, Any]]:
        return await self.db.fetchall(
            "SELECT tenant_id, retention_days, retention_count FROM tenants WHERE "
            "retention_days IS NOT NULL OR retention_count IS NOT NULL ORDER BY tenant_id")

    async def ping(self) -> bool:
        return await self.db.ping()

    async def close(self) -> None:
        await self.db.close()


def _encoded(request: CreateRequest) -> list[tuple[str, str | None, str | None]]:
    """Each item's data, channels and actions as stored. The items of one request share their
    data and actions: encoded once."""
    out: list[tuple[str, str | None, str | None]] = []
    last: tuple[Any, Any, str, str | None] = (None, None, "", None)
    for item in request.items:
        if last[0] is not item.data or last[1] is not item.actions:
            last = (item.data, item.actions, dumps(item.data), actions_json(item.actions))
        out.append((last[2], dumps(item.channels) if item.channels is not None else None,
                    last[3]))
    return out


Given = list[tuple[int, int | None]]  # per item of a request: its id, and the id it replaced


def _create(conn: sqlite3.Connection, requests: list[CreateRequest],
            encoded: list[list[tuple[str, str | None, str | None]]], now: float,
            ) -> tuple[list[Created], list[Given]]:
    """`create_batch`'s transaction, on the database's thread: the ids given to each fresh
    request's items (its `notifications` are left to fill), or what a replayed one answers."""
    results: list[Created] = []
    given: list[Given] = []
    rows: list[tuple[Any, ...]] = []
    keys: list[tuple[str, str, str, float]] = []
    tenants = sorted({r.items[0].tenant_id for r in requests})
    keyed: dict[tuple[str, str], dict[str | None, int]] = {}  # (tenant, key): user -> id
    replaced: list[int] = []
    found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'notifications'"
                         ).fetchone()
    next_id = (found[0] if found else 0) + 1
    marks = ",".join("?" * len(tenants))
    positions: dict[str, int] = {row[0]: row[1] for row in conn.execute(
        f"SELECT tenant_id, last_id FROM tenant_positions WHERE tenant_id IN ({marks})",
        tenants)}
    seen: dict[tuple[str, str], Created] = {}
    for request, stored in zip(requests, encoded, strict=True):
        ids: Given = []
        given.append(ids)
        if request.schedule_id is not None and not _mark_sent(conn, request.schedule_id, now):
            results.append(Created(notifications=[]))  # cancelled, or sent already
            continue
        key = (request.items[0].tenant_id, request.idempotency_key or "")
        if request.idempotency_key:
            earlier = seen.get(key) or _idempotent(conn, *key)
            if earlier is not None:
                results.append(earlier)
                continue
        created = Created(notifications=[])
        for item, (data, channels, actions) in zip(request.items, stored, strict=True):
            replaces = None
            if item.key is not None:  # the recipients' live one with this key goes
                live = keyed.get((item.tenant_id, item.key))
                if live is None:
                    live = keyed[(item.tenant_id, item.key)] = _keyed(conn, item.tenant_id,
                                                                      item.key)
                replaces = live.get(item.user_id)
                live[item.user_id] = next_id
                if replaces is not None:
                    replaced.append(replaces)
            rows.append((next_id, item.tenant_id, item.user_id, item.type, item.title,
                         item.message, data, item.priority, now, channels, item.group,
                         actions, item.key, replaces, item.expires_at))
            ids.append((next_id, replaces))
            created.prev_ids.append(positions.get(item.tenant_id, 0))
            positions[item.tenant_id] = next_id
            next_id += 1
        if request.idempotency_key:
            keys.append((key[0], key[1], dumps([i for i, _ in ids]), now))
            # The same list of notifications: filled once the transaction is over.
            seen[key] = Created(created.notifications, created.prev_ids, None, True)
        results.append(created)
    if rows:
        conn.executemany(
            "INSERT INTO notifications (id, tenant_id, user_id, type, title, message, data, "
            "priority, created_at, channels, group_name, actions, key, replaces, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        if replaced:
            marks = ",".join("?" * len(replaced))
            conn.execute(f"UPDATE notifications SET removed = ? WHERE id IN ({marks})",
                         (REPLACED, *replaced))
            conn.execute(_SKIP.format(marks), (REPLACED, *replaced))
        conn.executemany(
            "INSERT INTO tenant_positions (tenant_id, last_id) VALUES (?, ?) "
            "ON CONFLICT (tenant_id) DO UPDATE SET last_id = excluded.last_id",
            [(t, positions[t]) for t in tenants if t in positions])
    if keys:
        conn.executemany("INSERT INTO idempotency_keys (tenant_id, key, notification_ids, "
                         "created_at) VALUES (?, ?, ?, ?)", keys)
    return results, given


def _mark_sent(conn: sqlite3.Connection, schedule_id: str, now: float) -> bool:
    """Marks a pending scheduled entry sent; False when it is not pending any more."""
    cursor = conn.execute(
        "UPDATE scheduled SET status = 'sent', done_at = ? WHERE id = ? AND status = 'pending'",
        (now, schedule_id))
    return cursor.rowcount > 0


def _idempotent(conn: sqlite3.Connection, tenant_id: str, key: str) -> Created | None:
    row = conn.execute("SELECT notification_ids, response FROM idempotency_keys "
                       "WHERE tenant_id = ? AND key = ?", (tenant_id, key)).fetchone()
    if row is None:
        return None
    response = json.loads(row["response"]) if row["response"] else None
    notifications = []
    for notification_id in json.loads(row["notification_ids"]):
        found = conn.execute(f"SELECT {_BARE_COLUMNS} FROM notifications n WHERE id = ?",
                             (notification_id,)).fetchone()
        if found is not None:
            notifications.append(_row(dict(found)))
    return Created(notifications, [], response, True)


def _keyed(conn: sqlite3.Connection, tenant_id: str, key: str) -> dict[str | None, int]:
    """Each recipient's live notification with this key (None: the tenant-wide one)."""
    # No GROUP BY: with one, SQLite prefers an index ordered by user over notifications_key.
    rows = conn.execute("SELECT user_id, id FROM notifications WHERE tenant_id = ? AND key = ? "
                        "AND removed IS NULL ORDER BY id", (tenant_id, key)).fetchall()
    return {row[0]: row[1] for row in rows}  # the newest wins


def _row(row: Row, through: int = 0, marked_at: float | None = None) -> Notification:
    read_at = row["read_at"]
    if read_at is None and row["id"] <= through:
        read_at = marked_at
    return shape(row["id"], row["tenant_id"], row["user_id"], row["type"], row["title"],
                 row["message"], json.loads(row["data"]), row["priority"],
                 iso(row["created_at"]), read_at, row["group_name"],
                 json.loads(row["actions"]) if row["actions"] else None, key=row["key"],
                 replaces=row["replaces"], expires_at=row["expires_at"])


def _removal(row: Row) -> Removal:
    return Removal(row["id"], row["notification_id"], row["tenant_id"], row["user_id"],
                   row["reason"])


async def _remove(conn: Any, found: list[tuple[Any, ...]], reason: str,
                  ) -> list[tuple[Removal, int]]:
    """Marks notifications (id, tenant, user; in id order) removed and writes one removal
    each, with ids from the notifications' sequence (the writer holds the write lock, so
    they follow commit order), moving each tenant's position; unsent deliveries are skipped."""
    async with conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'notifications'") as c:
        seq = await c.fetchone()
    next_id = (seq[0] if seq else 0) + 1
    tenants = sorted({row[1] for row in found})
    async with conn.execute(f"SELECT tenant_id, last_id FROM tenant_positions WHERE tenant_id "
                            f"IN ({','.join('?' * len(tenants))})", tenants) as cursor:
        positions = {row[0]: row[1] for row in await cursor.fetchall()}
    now = time.time()
    removals: list[tuple[Removal, int]] = []
    for notification_id, tenant_id, user_id in found:
        removals.append((Removal(next_id, notification_id, tenant_id, user_id, reason),
                         positions.get(tenant_id, 0)))
        positions[tenant_id] = next_id
        next_id += 1
    ids = [row[0] for row in found]
    marks = ",".join("?" * len(ids))
    await conn.executemany(
        "INSERT INTO notification_events (id, tenant_id, user_id, notification_id, reason, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?)",
        [(r.event_id, r.tenant_id, r.user_id, r.notification_id, r.reason, now)
         for r, _ in removals])
    await conn.execute(f"UPDATE notifications SET removed = ? WHERE id IN ({marks})",
                       (reason, *ids))
    await conn.execute(_SKIP.format(marks), (reason, *ids))
    await conn.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'notifications'",
                       (next_id - 1,))
    await conn.executemany(
        "INSERT INTO tenant_positions (tenant_id, last_id) VALUES (?, ?) "
        "ON CONFLICT (tenant_id) DO UPDATE SET last_id = excluded.last_id",
        [(t, positions[t]) for t in tenants])
    return removals
