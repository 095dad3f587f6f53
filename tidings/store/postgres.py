"""The PostgreSQL database: an asyncpg pool, numbered migrations, and the `Store` on it.

Every call takes a connection from the pool for as long as it needs it; writes run in one
transaction each. When PostgreSQL does not answer (stopped, unreachable, out of connections or
disk), every call raises `StoreUnavailable` within `DEADLINE` seconds, never a driver error,
and never hangs; when it is back, the pool opens new connections by itself. A bug in SQL (a
syntax error, an unknown column) still raises as it is.

Ids are given in commit order across every process: `create_batch` takes one global advisory
lock for its whole transaction, takes its ids from the sequence under that lock and commits
before letting go of it. So when id N is visible, every id below N that will ever exist is
visible too; a reader (a replay "after N", a fan-out receiver filling a gap, "read all" up to
the largest id) never sees an id that a slower transaction commits later below one it has
already seen. The price is that creates are serialised across processes, as they are on one
SQLite file; a batch holds the lock for a few milliseconds, and batches group many creates.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import asyncpg

from .. import errors
from ..models import Principal, iso
from ..validation import MAX_ID
from .postgres_schema import MIGRATIONS
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
    StoreUnavailable,
    actions_json,
    chain,
    doomed,
    gone,
    merge,
    position,
    shape,
    tenant_settings,
)

if TYPE_CHECKING:
    from . import Backend

log = logging.getLogger("tidings.db")

Row = dict[str, Any]

POOL_MIN = 1
POOL_MAX = 10
CONNECT_TIMEOUT = 3.0   # seconds to open one connection
ACQUIRE_TIMEOUT = 3.0   # seconds to get a connection from the pool (opening one included)
COMMAND_TIMEOUT = 5.0   # seconds for one statement
DEADLINE = 8.0          # seconds for a whole transaction, so a call answers within 10 s
MIGRATION_TIMEOUT = 3600.0  # seconds for one migration statement (indexes on big tables)

# Advisory lock keys (any fixed bigints, the same in every process of a deployment).
MIGRATION_LOCK = 0x7469_6469_6E67_7301  # "tidings" + 1: migrations at start
CREATE_LOCK = 0x7469_6469_6E67_7302     # "tidings" + 2: ids given and committed in order
RETENTION_LOCK = 0x7469_6472            # with the tenant's hash: one pruner per tenant at once

# SQLSTATE classes that mean "the database cannot serve now", not "the SQL is wrong":
# 08 connection exception, 53 insufficient resources (disk full, out of memory, too many
# connections), 57 operator intervention (shutting down, cannot connect now, query canceled),
# 58 system error (I/O), and 40 (serialization failure, deadlock): try again.
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58", "40")


def _unavailable(e: BaseException) -> bool:
    if isinstance(e, (OSError, TimeoutError, asyncpg.PostgresConnectionError,
                      asyncpg.exceptions.ConnectionDoesNotExistError)):
        return True
    if isinstance(e, asyncpg.PostgresError):
        return str(getattr(e, "sqlstate", "") or "")[:2] in _UNAVAILABLE_CLASSES
    if isinstance(e, asyncpg.InterfaceError):
        # The connection was closed under a call ("connection is closed", "the underlying
        # connection is closed"); other interface errors are bugs and stay as they are.
        return "closed" in str(e)
    return False


@contextlib.contextmanager
def _guard() -> Iterator[None]:
    try:
        yield
    except StoreUnavailable:
        raise
    except Exception as e:
        if _unavailable(e):
            raise StoreUnavailable(f"the PostgreSQL database cannot serve: "
                                   f"{type(e).__name__}: {e}") from e
        raise


def safe_url(url: str) -> str:
    """The URL without its credentials, for messages: host, port and database only."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"postgresql://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


class PgDatabase:
    """The pool, and the few ways this package uses it: reads on any connection, writes in
    one transaction."""

    def __init__(self, pool: asyncpg.Pool, where: str) -> None:
        self.pool = pool
        self.where = where  # the URL without credentials

    @classmethod
    async def open(cls, url: str) -> PgDatabase:
        where = safe_url(url)
        try:
            pool = await asyncpg.create_pool(
                url, min_size=POOL_MIN, max_size=POOL_MAX, command_timeout=COMMAND_TIMEOUT,
                timeout=CONNECT_TIMEOUT)
        except Exception as e:
            if _unavailable(e):
                raise StoreUnavailable(f"cannot connect to {where}: {type(e).__name__}") from e
            raise
        db = cls(pool, where)
        try:
            await db.migrate()
        except BaseException:
            await db.close()
            raise
        return db

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        with _guard():
            async with asyncio.timeout(DEADLINE), \
                    self.pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                yield conn

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """One transaction; commits on success, rolls back on error. A transaction that
        cannot finish within DEADLINE is cut (and rolled back) as unavailable."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        async with self.connection() as conn:
            return [dict(row) for row in await conn.fetch(sql, *args)]

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        async with self.connection() as conn:
            row = await conn.fetchrow(sql, *args)
        return dict(row) if row is not None else None

    async def ping(self) -> bool:
        try:
            return await self.fetchrow("SELECT 1 AS ok") is not None
        except StoreUnavailable:
            return False

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), timeout=DEADLINE)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self.pool.terminate()

    async def migrate(self) -> None:
        """Runs the migrations this database has not had, each in its own transaction under
        an advisory lock: processes starting together take turns, and each sees the others'
        work. A database newer than this code refuses to start."""
        while True:
            # Not under DEADLINE: a migration may rebuild an index on a large table.
            with _guard():
                async with self.pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn, \
                        conn.transaction():
                    if not await self._migrate_one(conn):
                        return

    async def _migrate_one(self, conn: asyncpg.Connection) -> bool:
        """Runs the next migration; False when there was none to run."""
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK,
                           timeout=MIGRATION_TIMEOUT)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (only_row INTEGER PRIMARY KEY "
            "CHECK (only_row = 1), version INTEGER NOT NULL)")
        version = await conn.fetchval("SELECT version FROM schema_version") or 0
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"the database is at schema version {version}, newer than this "
                f"tidings ({len(MIGRATIONS)}); upgrade tidings")
        if version == len(MIGRATIONS):
            return False
        number = version + 1
        log.info("migrating the PostgreSQL database %s to schema version %d",
                 self.where, number)
        await conn.execute(MIGRATIONS[number - 1], timeout=MIGRATION_TIMEOUT)
        await conn.execute(
            "INSERT INTO schema_version (only_row, version) VALUES (1, $1) "
            "ON CONFLICT (only_row) DO UPDATE SET version = excluded.version", number)
        return True


async def open_postgres(url: str) -> Backend:
    """Opens (and migrates) the PostgreSQL database that a postgresql:// URL names."""
    from . import Backend
    from .postgres_channels import PostgresDeliveryQueue, PostgresDirectory
    from .postgres_receipts import PostgresReceiptBook
    from .postgres_schedule import PostgresScheduleBook
    db = await PgDatabase.open(url)
    return Backend(PostgresStore(db), PostgresDirectory(db), PostgresDeliveryQueue(db),
                   PostgresReceiptBook(db), PostgresScheduleBook(db))


# --- the notification store ------------------------------------------------------------------

_COLUMNS = "n.id, n.tenant_id, n.user_id, n.type, n.title, n.message, n.data, n.priority, " \
           "n.created_at, n.group_name, n.actions, n.key, n.replaces, n.expires_at, r.read_at"
_BARE_COLUMNS = _COLUMNS.replace(", r.read_at", ", NULL::double precision AS read_at")
_JOIN = ("LEFT JOIN receipts r ON r.tenant_id = n.tenant_id AND r.user_id = $2 "
         "AND r.notification_id = n.id")
_LIVE = " AND n.removed IS NULL AND (n.expires_at IS NULL OR n.expires_at > ${})"
# Of one range of a user's notifications, those that left (or expired) and that the user had
# not deleted (`deleted`) or, above the read-all mark, neither read nor deleted (`unread`):
# the counts subtract them. The first term matches notifications_ending's own.
_ENDED = ("(SELECT count(*) FROM notifications n LEFT JOIN receipts r ON r.tenant_id = "
          "n.tenant_id AND r.user_id = $2 AND r.notification_id = n.id "
          "WHERE n.tenant_id = $1 AND n.user_id {} "
          "AND (n.expires_at IS NOT NULL OR n.removed IS NOT NULL) AND n.id <= $4 {} "
          "AND (n.removed IS NOT NULL OR n.expires_at <= $5) AND r.deleted_at IS NULL{})")
_ENDED_TOTAL = " + ".join(_ENDED.format(u, "", "") for u in ("= $2", "IS NULL"))
_ENDED_UNREAD = " + ".join(_ENDED.format(u, "AND n.id > $3", " AND r.read_at IS NULL")
                           for u in ("= $2", "IS NULL"))
# A user's counts ($1 tenant, $2 user, $3 up to, $4 now); the read-all mark is read in the
# same statement.
_COUNTS = (
    "SELECT "
    " (SELECT count(*) FROM notifications WHERE tenant_id = $1 AND user_id = $2"
    "  AND id <= $4)"
    " + (SELECT count(*) FROM notifications WHERE tenant_id = $1 AND user_id IS NULL"
    "  AND id <= $4) AS all_, "
    " (SELECT count(*) FROM notifications WHERE tenant_id = $1 AND user_id = $2"
    "  AND id > $3 AND id <= $4)"
    " + (SELECT count(*) FROM notifications WHERE tenant_id = $1 AND user_id IS NULL"
    "  AND id > $3 AND id <= $4) AS above, "
    " (SELECT count(*) FROM receipts WHERE tenant_id = $1 AND user_id = $2"
    "  AND notification_id <= $4 AND deleted_at IS NOT NULL) AS deleted, "
    " (SELECT count(*) FROM receipts WHERE tenant_id = $1 AND user_id = $2"
    "  AND notification_id > $3 AND notification_id <= $4"
    "  AND (read_at IS NOT NULL OR deleted_at IS NOT NULL)) AS gone_above, "
    f"{_ENDED_TOTAL} AS ended, {_ENDED_UNREAD} AS ended_unread"
).replace("$3", "(SELECT coalesce(max(read_through), 0) FROM read_marks "
                "WHERE tenant_id = $1 AND user_id = $2)").replace("$4", "$3").replace("$5", "$4")
_SKIP = ("UPDATE deliveries SET status = 'skipped', last_error = $2 "
         "WHERE notification_id = ANY($1::bigint[]) AND status IN ('queued', 'held')")


class PostgresStore:
    """The `Store` protocol on PostgreSQL, with the same results as `SQLiteStore`."""

    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    # --- writes ------------------------------------------------------------------------

    async def create_batch(self, requests: list[CreateRequest]) -> list[Created]:
        """Creates every request in one transaction (group commit); returns after COMMIT.

        The transaction first takes the global CREATE_LOCK, so ids are allocated and
        committed in id order across processes (see the module's docstring): that is what
        lets a replay or a fan-out receiver trust "everything up to N is there". Under the
        lock the idempotency keys are looked up (a concurrent request with the same key waits
        and then finds this one's), the batch's ids come from the sequence in one round trip,
        and the rows go in with one statement.
        """
        now = time.time()
        created_at = iso(now)  # one timestamp for the whole batch, formatted once
        tenants = sorted({r.items[0].tenant_id for r in requests})
        async with self.db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", CREATE_LOCK)
            earlier = await self._idempotent(conn, requests)
            # Scheduled entries being sent: created only if still pending, marked sent here.
            gone = await _mark_sent(conn, requests, now)
            count = 0
            seen_keys: set[tuple[str, str]] = set()
            for request in requests:
                if request.schedule_id is not None and request.schedule_id in gone:
                    continue
                key = (request.items[0].tenant_id, request.idempotency_key or "")
                if request.idempotency_key and (key in earlier or key in seen_keys):
                    continue
                if request.idempotency_key:
                    seen_keys.add(key)
                count += len(request.items)
            ids: list[int] = []
            if count:
                ids = sorted(r[0] for r in await conn.fetch(
                    "SELECT nextval('notifications_id_seq') FROM generate_series(1, $1)",
                    count))
            positions = {row["tenant_id"]: row["last_id"] for row in await conn.fetch(
                "SELECT tenant_id, last_id FROM tenant_positions WHERE tenant_id = ANY($1)",
                tenants)}
            results: list[Created] = []
            columns: list[list[Any]] = [[] for _ in range(15)]
            keyed: dict[tuple[str, str], dict[str | None, int]] = {}  # (tenant, key): user -> id
            replaced: list[int] = []
            keys: list[tuple[str, str, str]] = []
            seen: dict[tuple[str, str], Created] = {}
            next_ids = iter(ids)
            for request in requests:
                if request.schedule_id is not None and request.schedule_id in gone:
                    results.append(Created(notifications=[]))  # cancelled, or sent already
                    continue
                key = (request.items[0].tenant_id, request.idempotency_key or "")
                if request.idempotency_key:
                    found = seen.get(key) or earlier.get(key)
                    if found is not None:
                        results.append(found)
                        continue
                created = Created(notifications=[])
                for item in request.items:
                    id_ = next(next_ids)
                    replaces = None
                    if item.key is not None:  # the recipients' live one with this key goes
                        live = keyed.get((item.tenant_id, item.key))
                        if live is None:
                            live = keyed[(item.tenant_id, item.key)] = await _keyed(
                                conn, item.tenant_id, item.key)
                        replaces = live.get(item.user_id)
                        live[item.user_id] = id_
                        if replaces is not None:
                            replaced.append(replaces)
                    row = (id_, item.tenant_id, item.user_id, item.type, item.title,
                           item.message, json.dumps(item.data, separators=(",", ":")),
                           item.priority, now,
                           json.dumps(item.channels) if item.channels is not None else None,
                           item.group, actions_json(item.actions), item.key, replaces,
                           item.expires_at)
                    for column, value in zip(columns, row, strict=True):
                        column.append(value)
                    created.notifications.append(shape(
                        id_, item.tenant_id, item.user_id, item.type, item.title,
                        item.message, item.data, item.priority, created_at, None, item.group,
                        item.actions, key=item.key, replaces=replaces,
                        expires_at=item.expires_at))
                    created.prev_ids.append(positions.get(item.tenant_id, 0))
                    positions[item.tenant_id] = id_
                if request.idempotency_key:
                    keys.append((key[0], key[1],
                                 json.dumps([n["id"] for n in created.notifications])))
                    seen[key] = Created(created.notifications, created.prev_ids, None, True)
                results.append(created)
            if ids:
                await conn.execute(
                    "INSERT INTO notifications (id, tenant_id, user_id, type, title, message, "
                    "data, priority, created_at, channels, group_name, actions, key, replaces, "
                    "expires_at) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], "
                    "$4::text[], $5::text[], $6::text[], $7::text[], $8::text[], "
                    "$9::double precision[], $10::text[], $11::text[], $12::text[], "
                    "$13::text[], $14::bigint[], $15::double precision[])", *columns)
                if replaced:
                    await conn.execute("UPDATE notifications SET removed = $2 "
                                       "WHERE id = ANY($1::bigint[])", replaced, REPLACED)
                    await conn.execute(_SKIP, replaced, REPLACED)
                moved = [t for t in tenants if t in positions]
                await conn.execute(
                    "INSERT INTO tenant_positions (tenant_id, last_id) "
                    "SELECT * FROM unnest($1::text[], $2::bigint[]) "
                    "ON CONFLICT (tenant_id) DO UPDATE SET last_id = excluded.last_id",
                    moved, [positions[t] for t in moved])
            if keys:
                await conn.execute(
                    "INSERT INTO idempotency_keys (tenant_id, key, notification_ids, created_at) "
                    "SELECT t, k, i, $4 FROM unnest($1::text[], $2::text[], $3::text[]) "
                    "AS x(t, k, i) ON CONFLICT (tenant_id, key) DO NOTHING",
                    [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], now)
        return results

    async def _idempotent(self, conn: asyncpg.Connection, requests: list[CreateRequest],
                          ) -> dict[tuple[str, str], Created]:
        """The earlier requests with these requests' idempotency keys, as a replay answers."""
        wanted = sorted({(r.items[0].tenant_id, r.idempotency_key) for r in requests
                         if r.idempotency_key})
        if not wanted:
            return {}
        rows = await conn.fetch(
            "SELECT k.tenant_id, k.key, k.notification_ids, k.response FROM idempotency_keys k "
            "JOIN unnest($1::text[], $2::text[]) AS w(tenant_id, key) "
            "ON k.tenant_id = w.tenant_id AND k.key = w.key",
            [w[0] for w in wanted], [w[1] for w in wanted])
        if not rows:
            return {}
        all_ids = sorted({i for row in rows for i in json.loads(row["notification_ids"])})
        stored = {row["id"]: _row(dict(row)) for row in await conn.fetch(
            f"SELECT {_BARE_COLUMNS} FROM notifications n WHERE n.id = ANY($1::bigint[])",
            all_ids)}
        found: dict[tuple[str, str], Created] = {}
        for row in rows:
            notifications = [stored[i] for i in json.loads(row["notification_ids"])
                             if i in stored]
            response = json.loads(row["response"]) if row["response"] else None
            found[(row["tenant_id"], row["key"])] = Created(notifications, [], response, True)
        return found

    async def save_responses(self, tenant_keys: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Keeps the first answer of idempotent requests, so a retry gets exactly that answer."""
        if not tenant_keys:
            return
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE idempotency_keys k SET response = x.r FROM unnest($1::text[], "
                "$2::text[], $3::text[]) AS x(t, k, r) WHERE k.tenant_id = x.t AND k.key = x.k",
                [t for t, _, _ in tenant_keys], [k for _, k, _ in tenant_keys],
                [json.dumps(r, separators=(",", ":")) for _, _, r in tenant_keys])

    async def mark_read(self, who: Principal, notification_id: int) -> None:
        await self._visible_or_404(who, notification_id)
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO receipts (tenant_id, user_id, notification_id, read_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, user_id, notification_id) "
                "DO UPDATE SET read_at = coalesce(receipts.read_at, excluded.read_at)",
                who.tenant_id, who.user_id, notification_id, time.time())

    async def mark_all_read(self, who: Principal) -> None:
        # Ids are committed in order, so every id up to the largest visible one is there:
        # the watermark never covers a notification that commits after it.
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO read_marks (tenant_id, user_id, read_through, read_at) "
                "SELECT $1, $2, coalesce(max(id), 0), $3 FROM notifications "
                "ON CONFLICT (tenant_id, user_id) DO UPDATE SET "
                "read_through = excluded.read_through, read_at = excluded.read_at",
                who.tenant_id, who.user_id, time.time())

    async def delete(self, who: Principal, notification_id: int) -> None:
        await self._visible_or_404(who, notification_id)
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO receipts (tenant_id, user_id, notification_id, deleted_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, user_id, notification_id) "
                "DO UPDATE SET deleted_at = excluded.deleted_at",
                who.tenant_id, who.user_id, notification_id, time.time())

    async def put_tenant_settings(self, tenant_id: str,
                                  changes: dict[str, int | None]) -> dict[str, Any]:
        names = [n for n in TENANT_SETTINGS if n in changes]
        async with self.db.transaction() as conn:
            await conn.execute("INSERT INTO tenants (tenant_id, updated_at) VALUES ($1, $2) "
                               "ON CONFLICT (tenant_id) DO NOTHING", tenant_id, time.time())
            if names:
                sets = ", ".join(f"{n} = ${i}" for i, n in enumerate(names, start=3))
                await conn.execute(f"UPDATE tenants SET {sets}, updated_at = $2 "
                                   "WHERE tenant_id = $1", tenant_id, time.time(),
                                   *[changes[n] for n in names])
        return await self.tenant_settings(tenant_id)

    async def prune(self, tenant_id: str, *, older_than: float | None, keep: int | None,
                    limit: int = 500) -> int:
        """One batch of retention. A per-tenant advisory lock makes a second process pruning
        the same tenant wait, then find what is left (each statement sees what committed
        before it); creates take other locks and never wait for it."""
        async with self.db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))",
                               RETENTION_LOCK, tenant_id)
            cut = 0
            if keep is not None:  # the newest id beyond the newest `keep`: it and older go
                cut = await conn.fetchval(
                    "SELECT id FROM notifications WHERE tenant_id = $1 ORDER BY id DESC "
                    "LIMIT 1 OFFSET $2", tenant_id, keep) or 0
            rows = [dict(row) for row in await conn.fetch(
                "SELECT id, created_at FROM notifications WHERE tenant_id = $1 "
                "ORDER BY id LIMIT $2", tenant_id, limit)]
            ids = doomed(rows, older_than, cut)
            if not ids:
                return 0
            # Their deliveries locked first: a send finishing meanwhile then records its
            # attempt before these deletes see it, or finds its delivery gone.
            await conn.execute("SELECT 1 FROM deliveries WHERE notification_id = "
                               "ANY($1::bigint[]) FOR UPDATE", ids)
            await conn.execute(
                "DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM deliveries "
                "WHERE notification_id = ANY($1::bigint[]))", ids)
            await conn.execute("DELETE FROM deliveries WHERE notification_id = ANY($1::bigint[])",
                               ids)
            await conn.execute("DELETE FROM receipts WHERE tenant_id = $2 "
                               "AND notification_id = ANY($1::bigint[])", ids, tenant_id)
            for table in ("pushes", "acks", "frame_acks", "notification_events"):
                await conn.execute(
                    f"DELETE FROM {table} WHERE notification_id = ANY($1::bigint[])", ids)
            await conn.execute("DELETE FROM notifications WHERE id = ANY($1::bigint[])", ids)
            await conn.execute(
                "INSERT INTO tenants (tenant_id, pruned_through, updated_at) VALUES ($1, $2, $3) "
                "ON CONFLICT (tenant_id) DO UPDATE SET "
                "pruned_through = greatest(tenants.pruned_through, excluded.pruned_through)",
                tenant_id, ids[-1], time.time())
        return len(ids)

    async def recall(self, tenant_id: str, notification_id: int) -> tuple[Removal, int] | None:
        async with self.db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", CREATE_LOCK)
            found = [tuple(row) for row in await conn.fetch(
                "SELECT id, tenant_id, user_id FROM notifications WHERE id = $1 "
                "AND tenant_id = $2 AND removed IS NULL", notification_id, tenant_id)]
            if not found:
                return None
            return (await _remove(conn, found, RECALLED))[0]

    async def expire(self, now: float, limit: int = 500) -> list[tuple[Removal, int]]:
        async with self.db.transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", CREATE_LOCK)
            found = sorted(tuple(row) for row in await conn.fetch(
                "SELECT id, tenant_id, user_id FROM notifications WHERE expires_at IS NOT NULL "
                "AND removed IS NULL AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
                now, limit))
            return await _remove(conn, found, EXPIRED) if found else []

    async def prune_idempotency_keys(self, older_than: float) -> int:
        async with self.db.transaction() as conn:
            status = await conn.execute("DELETE FROM idempotency_keys WHERE created_at < $1",
                                        older_than)
        return affected(status)

    # --- reads ---------------------------------------------------------------------------

    async def _visible_or_404(self, who: Principal, notification_id: int) -> None:
        row = await self.db.fetchrow(
            f"SELECT 1 AS ok FROM notifications n {_JOIN} WHERE n.id = $3 AND n.tenant_id = $1 "
            "AND (n.user_id = $2 OR n.user_id IS NULL) AND r.deleted_at IS NULL" +
            _LIVE.format(4), who.tenant_id, who.user_id, notification_id, time.time())
        if row is None:
            raise errors.not_found(f"notification {notification_id}")

    async def _read_mark(self, who: Principal) -> tuple[int, float | None]:
        row = await self.db.fetchrow(
            "SELECT read_through, read_at FROM read_marks WHERE tenant_id = $1 AND user_id = $2",
            who.tenant_id, who.user_id)
        return (row["read_through"], row["read_at"]) if row else (0, None)

    async def _page(self, who: Principal, order: str, limit: int, *,
                    before: int | None = None, after: int | None = None,
                    unread: bool = False, group: str | None = None) -> list[Notification]:
        """Direct and tenant-wide notifications, each range walked in index order, then merged.

        Two ranges joined by UNION ALL keep every query an index walk of at most `limit` rows;
        an `OR` on user_id would collect and sort the whole inbox.
        """
        through, read_at = await self._read_mark(who)
        params: list[Any] = [who.tenant_id, who.user_id, limit, time.time()]
        where = _LIVE.format(4)
        if before is not None:
            params.append(before)
            where += f" AND n.id < ${len(params)}::bigint"
        if after is not None:
            params.append(after)
            where += f" AND n.id > ${len(params)}::bigint"
        if unread:
            params.append(through)
            where += f" AND n.id > ${len(params)}::bigint AND r.read_at IS NULL"
        if group is not None:
            params.append(group)
            where += f" AND n.group_name = ${len(params)}"
        one = (f"(SELECT {_COLUMNS} FROM notifications n {_JOIN} "
               f"WHERE n.tenant_id = $1 AND n.user_id {{}} AND r.deleted_at IS NULL"
               f"{where} ORDER BY n.id {order} LIMIT $3)")
        sql = (one.format("= $2") + " UNION ALL " + one.format("IS NULL") +
               f" ORDER BY id {order} LIMIT $3")
        rows = await self.db.fetch(sql, *params)
        return [_row(row, through, read_at) for row in rows]

    async def inbox(self, who: Principal, *, unread: bool = False, limit: int = 50,
                    before: int | None = None, group: str | None = None,
                    ) -> list[Notification]:
        return await self._page(who, "DESC", limit, before=before, unread=unread, group=group)

    async def after(self, who: Principal, after_id: int, limit: int = 500) -> list[Notification]:
        """What a reconnecting client missed: ids above `after_id`, oldest first."""
        return await self._page(who, "ASC", limit, after=after_id)

    async def counts(self, who: Principal, upto: int | None = None) -> dict[str, int]:
        """Total and unread (of ids up to `upto` when given), from index range counts;
        receipts (few per user) are subtracted. One statement: a connection's greeting
        waits for it."""
        row = await self.db.fetchrow(_COUNTS, who.tenant_id, who.user_id,
                                     MAX_ID if upto is None else upto, time.time())
        assert row is not None
        return {"total": row["all_"] - row["deleted"] - row["ended"],
                "unread": row["above"] - row["gone_above"] - row["ended_unread"]}

    async def by_type(self, who: Principal) -> dict[str, int]:
        now = time.time()
        rows = await self.db.fetch(
            "SELECT type, count(*) AS n FROM notifications n WHERE tenant_id = $1 "
            f"AND (user_id = $2 OR user_id IS NULL){_LIVE.format(3)} GROUP BY type",
            who.tenant_id, who.user_id, now)
        result = {row["type"]: row["n"] for row in rows}
        for row in await self.db.fetch(
                "SELECT n.type, count(*) AS n FROM receipts r JOIN notifications n "
                "ON n.id = r.notification_id WHERE r.tenant_id = $1 AND r.user_id = $2 "
                f"AND r.deleted_at IS NOT NULL{_LIVE.format(3)} GROUP BY n.type",
                who.tenant_id, who.user_id, now):
            result[row["type"]] -= row["n"]
        return {t: n for t, n in sorted(result.items()) if n > 0}

    async def recent(self, tenant_id: str, limit: int = 20) -> list[Notification]:
        rows = await self.db.fetch(
            f"SELECT {_BARE_COLUMNS}, n.removed FROM notifications n "
            "WHERE n.tenant_id = $1 ORDER BY n.id DESC LIMIT $2", tenant_id, limit)
        now = time.time()
        return [{**_row(row), "ended": gone(row["removed"], row["expires_at"], now)}
                for row in rows]

    async def notification(self, notification_id: int) -> Notification | None:
        row = await self.db.fetchrow(f"SELECT {_BARE_COLUMNS} FROM notifications n "
                                     "WHERE n.id = $1", notification_id)
        return _row(row) if row else None

    async def unplanned(self, after_id: int, limit: int = 500) -> list[dict[str, Any]]:
        rows = await self.db.fetch(
            "SELECT id, tenant_id, user_id, type, priority, channels, removed, expires_at "
            "FROM notifications WHERE id > $1 ORDER BY id LIMIT $2", after_id, limit)
        return [{**row, "channels": json.loads(row["channels"]) if row["channels"] else None}
                for row in rows]

    async def tenant_range(self, tenant_id: str, after_id: int, through_id: int,
                           limit: int = 500) -> list[tuple[Entry, int]]:
        args = (tenant_id, after_id, through_id, limit)
        notifications = [_row(row) for row in await self.db.fetch(
            f"SELECT {_BARE_COLUMNS} FROM notifications n WHERE n.tenant_id = $1 "
            "AND n.id > $2 AND n.id <= $3 ORDER BY n.id LIMIT $4", *args)]
        removals = [_removal(row) for row in await self.db.fetch(
            "SELECT * FROM notification_events WHERE tenant_id = $1 AND id > $2 AND id <= $3 "
            "ORDER BY id LIMIT $4", *args)]
        entries = merge(notifications, removals, limit)
        if not entries:
            return []
        row = await self.db.fetchrow(
            "SELECT greatest(coalesce((SELECT max(id) FROM notifications WHERE tenant_id = $1 "
            "AND id < $2), 0), coalesce((SELECT max(id) FROM notification_events "
            "WHERE tenant_id = $1 AND id < $2), 0)) AS prev", tenant_id, position(entries[0]))
        return chain(entries, int(row["prev"]) if row else 0)

    async def removals_after(self, who: Principal, since: int, after_id: int,
                             limit: int = 500) -> list[Removal]:
        return [_removal(row) for row in await self.db.fetch(
            "SELECT * FROM notification_events WHERE tenant_id = $1 AND id > $2 "
            "AND notification_id <= $3 AND (user_id = $4 OR user_id IS NULL) "
            "ORDER BY id LIMIT $5", who.tenant_id, after_id, since, who.user_id, limit)]

    async def removed(self, notification_ids: list[int], now: float) -> dict[int, str]:
        if not notification_ids:
            return {}
        rows = await self.db.fetch("SELECT id, removed, expires_at FROM notifications "
                                   "WHERE id = ANY($1::bigint[])", notification_ids)
        reasons = {row["id"]: gone(row["removed"], row["expires_at"], now) for row in rows}
        return {id_: reason for id_, reason in reasons.items() if reason}

    async def positions(self, tenant_ids: list[str]) -> dict[str, int]:
        found = {t: 0 for t in tenant_ids}
        if tenant_ids:
            for row in await self.db.fetch(
                    "SELECT tenant_id, last_id FROM tenant_positions "
                    "WHERE tenant_id = ANY($1::text[])", list(tenant_ids)):
                found[row["tenant_id"]] = row["last_id"]
        return found

    async def last_id(self) -> int:
        # From the tenants' positions, which retention leaves alone: max(id) of notifications
        # would fall when the newest ones are removed, and a good cursor would look unknown.
        row = await self.db.fetchrow("SELECT coalesce(max(last_id), 0) AS id "
                                     "FROM tenant_positions")
        return int(row["id"]) if row else 0

    async def tenant_settings(self, tenant_id: str) -> dict[str, Any]:
        return tenant_settings(await self.db.fetchrow(
            "SELECT retention_days, retention_count, pruned_through FROM tenants "
            "WHERE tenant_id = $1", tenant_id))

    async def retention_tenants(self) -> list[dict[str, Any]]:
        return await self.db.fetch(
            "SELECT tenant_id, retention_days, retention_count FROM tenants WHERE "
            "retention_days IS NOT NULL OR retention_count IS NOT NULL ORDER BY tenant_id")

    async def ping(self) -> bool:
        return await self.db.ping()

    async def close(self) -> None:
        await self.db.close()


async def _mark_sent(conn: asyncpg.Connection, requests: list[CreateRequest],
                     now: float) -> set[str]:
    """Marks the requests' pending scheduled entries sent; returns the ids of those that are
    not pending any more (cancelled, or sent by another process)."""
    wanted = [r.schedule_id for r in requests if r.schedule_id is not None]
    if not wanted:
        return set()
    marked = {row["id"] for row in await conn.fetch(
        "UPDATE scheduled SET status = 'sent', done_at = $2 WHERE id = ANY($1::text[]) "
        "AND status = 'pending' RETURNING id", wanted, now)}
    return set(wanted) - marked


def affected(status: str) -> int:
    """The row count of a command's status string ("UPDATE 3", "INSERT 0 1", "DELETE 0")."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0


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


async def _keyed(conn: asyncpg.Connection, tenant_id: str, key: str) -> dict[str | None, int]:
    """Each recipient's live notification with this key (None: the tenant-wide one)."""
    return {row["user_id"]: row["id"] for row in await conn.fetch(
        "SELECT user_id, max(id) AS id FROM notifications WHERE tenant_id = $1 AND key = $2 "
        "AND removed IS NULL GROUP BY user_id", tenant_id, key)}


async def _remove(conn: asyncpg.Connection, found: list[tuple[Any, ...]], reason: str,
                  ) -> list[tuple[Removal, int]]:
    """Marks notifications (id, tenant, user; in id order) removed and writes one removal
    each, with ids from the notifications' sequence (the caller holds CREATE_LOCK, so they
    commit in order), moving each tenant's position; unsent deliveries are skipped."""
    ids = sorted(r[0] for r in await conn.fetch(
        "SELECT nextval('notifications_id_seq') FROM generate_series(1, $1)", len(found)))
    tenants = sorted({row[1] for row in found})
    positions = {row["tenant_id"]: row["last_id"] for row in await conn.fetch(
        "SELECT tenant_id, last_id FROM tenant_positions WHERE tenant_id = ANY($1)", tenants)}
    removals: list[tuple[Removal, int]] = []
    for event_id, (notification_id, tenant_id, user_id) in zip(ids, found, strict=True):
        removals.append((Removal(event_id, notification_id, tenant_id, user_id, reason),
                         positions.get(tenant_id, 0)))
        positions[tenant_id] = event_id
    gone_ids = [row[0] for row in found]
    await conn.execute(
        "INSERT INTO notification_events (id, tenant_id, user_id, notification_id, reason, "
        "created_at) SELECT e, t, u, n, $5, $6 FROM unnest($1::bigint[], $2::text[], "
        "$3::text[], $4::bigint[]) AS x(e, t, u, n)",
        [r.event_id for r, _ in removals], [r.tenant_id for r, _ in removals],
        [r.user_id for r, _ in removals], gone_ids, reason, time.time())
    await conn.execute("UPDATE notifications SET removed = $2 WHERE id = ANY($1::bigint[])",
                       gone_ids, reason)
    await conn.execute(_SKIP, gone_ids, reason)
    await conn.execute(
        "INSERT INTO tenant_positions (tenant_id, last_id) "
        "SELECT * FROM unnest($1::text[], $2::bigint[]) "
        "ON CONFLICT (tenant_id) DO UPDATE SET last_id = excluded.last_id",
        tenants, [positions[t] for t in tenants])
    return removals
