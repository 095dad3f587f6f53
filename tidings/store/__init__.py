"""Storage: a SQLite file by default, PostgreSQL when `--db` is a postgresql:// URL."""

from __future__ import annotations

from dataclasses import dataclass

from .protocol import (
    DUE,
    LEASE,
    Created,
    CreateRequest,
    Delivery,
    DeliveryQueue,
    Directory,
    Entry,
    Notification,
    Planned,
    ReceiptBook,
    Removal,
    ScheduleBook,
    Scheduled,
    Store,
    StoreUnavailable,
    position,
)

__all__ = ["DUE", "LEASE", "Backend", "Created", "CreateRequest", "Delivery", "DeliveryQueue",
           "Directory", "Entry", "Notification", "Planned", "ReceiptBook", "Removal",
           "ScheduleBook", "Scheduled", "Store", "StoreUnavailable", "is_postgres",
           "open_backend", "position"]


@dataclass
class Backend:
    """One database, seen through its seams."""

    store: Store
    directory: Directory
    queue: DeliveryQueue
    receipts: ReceiptBook
    schedule: ScheduleBook


def is_postgres(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


async def open_backend(db: str, synchronous: str = "NORMAL") -> Backend:
    """Opens (and migrates) the database that `--db` names."""
    if is_postgres(db):
        from .postgres import open_postgres
        return await open_postgres(db)
    from .sqlite import Database
    from .sqlite_channels import SQLiteDeliveryQueue, SQLiteDirectory
    from .sqlite_notifications import SQLiteStore
    from .sqlite_receipts import SQLiteReceiptBook
    from .sqlite_schedule import SQLiteScheduleBook
    database = await Database.open(db, synchronous)
    return Backend(SQLiteStore(database), SQLiteDirectory(database), SQLiteDeliveryQueue(database),
                   SQLiteReceiptBook(database), SQLiteScheduleBook(database))
