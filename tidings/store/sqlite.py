"""The SQLite file: one writer connection, one reader connection, numbered migrations.

WAL mode lets the reader run while the writer commits. Every write goes through `write()`,
which serialises writers and wraps them in one transaction; effects (pushes) follow the commit.
A database that is locked, full or gone raises `StoreUnavailable`; a bug in SQL still raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from .protocol import StoreUnavailable
from .sqlite_schema import MIGRATIONS

log = logging.getLogger("tidings.db")

BUSY_TIMEOUT_MS = 4000  # a write waits this long for a lock held by another process ...
LOCK_WAIT = 5.0         # ... and this long for this process's writer before: under 10 s
Params = tuple[Any, ...] | dict[str, Any]
Row = dict[str, Any]
T = TypeVar("T")

# Primary result codes that mean "the database cannot serve now", not "the SQL is wrong":
# busy, locked, out of memory, read-only, I/O error, corrupt, full, cannot open, protocol.
_UNAVAILABLE = {5, 6, 7, 8, 10, 11, 13, 14, 15}


def _unavailable(e: sqlite3.Error) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _UNAVAILABLE


@contextlib.contextmanager
def _guard() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as e:
        if _unavailable(e):
            raise StoreUnavailable(f"the SQLite database cannot serve: {e}") from e
        raise


class Database:
    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self.writer = writer
        self.reader = reader
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str, synchronous: str = "NORMAL") -> Database:
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("--synchronous must be NORMAL or FULL")
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        writer = await aiosqlite.connect(path, isolation_level=None)
        reader = None
        try:
            await _configure(writer, synchronous)
            await _migrate(writer)
            reader = await aiosqlite.connect(path, isolation_level=None)
            await _configure(reader, synchronous)
        except BaseException:
            await writer.close()
            if reader is not None:
                await reader.close()
            raise
        return cls(writer, reader)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One transaction on the writer connection; commits on success, rolls back on error.

        A writer cancelled mid-way (a stop) must not leave its transaction open for the next:
        the rollback is queued behind whatever the cancelled writer had sent, and shielded."""
        try:  # behind a writer stuck on a lock held elsewhere, give up in time: 503, not a hang
            async with asyncio.timeout(LOCK_WAIT):  # not wait_for: it can swallow a cancel
                await self._write_lock.acquire()
        except TimeoutError:
            raise StoreUnavailable("the SQLite database is busy: another write is stuck") from None
        try:
            with _guard():
                try:
                    await self.writer.execute("BEGIN IMMEDIATE")
                    yield self.writer
                    await self.writer.execute("COMMIT")
                except BaseException:
                    await asyncio.shield(self.writer.rollback())  # a no-op after a COMMIT
                    raise
        finally:
            self._write_lock.release()

    async def transact(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)` in one transaction, run whole on the writer's thread: BEGIN
        IMMEDIATE, the statements, COMMIT (or ROLLBACK if it raises) are one hop there and
        back, where `write()` takes one per statement. It returns after the COMMIT."""
        writer = self.writer
        try:
            async with asyncio.timeout(LOCK_WAIT):
                await self._write_lock.acquire()
        except TimeoutError:
            raise StoreUnavailable("the SQLite database is busy: another write is stuck") from None
        try:
            with _guard():
                # On the writer's own thread, behind what it was given before; a cancelled
                # caller leaves it to finish (commit or roll back) on its own.
                result: T = await writer._execute(  # type: ignore[no-untyped-call]
                    _transaction, writer, work)
                return result
        finally:
            self._write_lock.release()

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """The rows as dicts: the query, its rows and the cursor's close are one hop to the
        reader's thread and back."""
        with _guard():
            rows: list[sqlite3.Row] = await self.reader._execute(  # type: ignore[no-untyped-call]
                _fetch, self.reader, sql, params, None)
        return [dict(row) for row in rows]  # here: the reader's thread keeps off the GIL

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        with _guard():
            rows: list[sqlite3.Row] = await self.reader._execute(  # type: ignore[no-untyped-call]
                _fetch, self.reader, sql, params, 1)
        return dict(rows[0]) if rows else None

    async def ping(self) -> bool:
        try:
            return await self.fetchone("SELECT 1 AS ok") is not None
        except (sqlite3.Error, StoreUnavailable, ValueError):
            return False

    async def close(self) -> None:
        async with self._write_lock:
            with contextlib.suppress(sqlite3.Error):
                await self.writer.execute("PRAGMA optimize")
            await self.reader.close()
            await self.writer.close()


def _fetch(reader: aiosqlite.Connection, sql: str, params: Params, size: int | None,
           ) -> list[sqlite3.Row]:
    cursor = reader._conn.execute(sql, params)  # on the reader's thread
    try:
        return cursor.fetchall() if size is None else cursor.fetchmany(size)
    finally:
        cursor.close()


def _transaction(writer: aiosqlite.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    conn = writer._conn  # on the writer's thread: its sqlite3 connection
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.rollback()
        raise
    return result


async def _configure(conn: aiosqlite.Connection, synchronous: str) -> None:
    conn.row_factory = sqlite3.Row
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute(f"PRAGMA synchronous={synchronous}")
    await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    await conn.execute("PRAGMA foreign_keys=ON")


async def _migrate(conn: aiosqlite.Connection) -> None:
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    version = row[0] if row else 0
    if version > len(MIGRATIONS):
        raise RuntimeError(f"the database is at schema version {version}, newer than this "
                           f"tidings ({len(MIGRATIONS)}); upgrade tidings")
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        log.info("migrating the database to schema version %d", number)
        await conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
