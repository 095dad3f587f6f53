"""One suite, every implementation: `backend` is a fresh database of each kind in turn.

`kind` is "sqlite" (a file in tmp_path) or "postgres" (a new database on the session's real
PostgreSQL server). `open_another()` opens a second Backend on the very same database, as a
second process would; every Backend opened here is closed at the end of the test.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tidings.store import Backend, open_backend

OpenAnother = Callable[[], Awaitable[Backend]]


@pytest.fixture(params=["sqlite", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where the test's database is: a file path or a postgresql:// URL."""
    if kind == "sqlite":
        return str(tmp_path / "contract.db")
    return str(request.getfixturevalue("postgres").fresh_database())


@pytest.fixture
def opened(io_loop: Any) -> Iterator[list[Backend]]:
    """Every Backend the test opened, closed at its end."""
    backends: list[Backend] = []
    yield backends
    for backend in backends:
        io_loop.run_sync(backend.store.close, timeout=30)


@pytest.fixture
def backend(io_loop: Any, database: str, opened: list[Backend]) -> Backend:
    first: Backend = io_loop.run_sync(lambda: open_backend(database), timeout=30)
    opened.append(first)
    return first


@pytest.fixture
def open_another(database: str, opened: list[Backend]) -> OpenAnother:
    async def another() -> Backend:
        more = await open_backend(database)
        opened.append(more)
        return more
    return another


@pytest.fixture
def outage(kind: str, database: str, backend: Backend, request: pytest.FixtureRequest,
           ) -> Callable[[], contextlib.AbstractAsyncContextManager[None]]:
    """An async context manager during which the database cannot take writes.

    PostgreSQL: the server is stopped, and started again on the way out (always: the server is
    the session's). SQLite: another connection holds the file's write lock, and the store's
    writer waits 0.2 s for it instead of its usual 5 s.
    """
    @contextlib.asynccontextmanager
    async def postgres_down() -> AsyncIterator[None]:
        server = request.getfixturevalue("postgres")
        try:
            server.stop()
            yield
        finally:
            server.start()

    @contextlib.asynccontextmanager
    async def sqlite_locked() -> AsyncIterator[None]:
        writer = backend.store.db.writer  # type: ignore[attr-defined]
        holder = sqlite3.connect(database, isolation_level=None)
        try:
            await writer.execute("PRAGMA busy_timeout=200")
            holder.execute("BEGIN EXCLUSIVE")
            yield
        finally:
            if holder.in_transaction:
                holder.execute("ROLLBACK")
            holder.close()
            await writer.execute("PRAGMA busy_timeout=5000")

    return postgres_down if kind == "postgres" else sqlite_locked
