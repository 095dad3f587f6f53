"""Numbered schema migrations. Append only: a released migration never changes.

`PRAGMA user_version` holds how many have run; each runs in its own transaction at start.
"""

MIGRATIONS: list[str] = [
    # 1: notifications, per-user read/delete receipts, the read-all watermark, idempotency keys.
    """
    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        tenant_id TEXT NOT NULL,
        user_id TEXT,                      -- NULL: a tenant-wide broadcast
        type TEXT NOT NULL,
        title TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '',
        data TEXT NOT NULL DEFAULT '{}',
        priority TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    -- An inbox page, a replay "after id N" and the counts walk one (tenant, user) range;
    -- the rowid (id) is the index's last column, so ranges come out in id order.
    CREATE INDEX notifications_inbox ON notifications (tenant_id, user_id);
    CREATE INDEX notifications_by_type ON notifications (tenant_id, user_id, type);

    -- Read and delete state per user, also for broadcasts (which are stored once).
    CREATE TABLE receipts (
        tenant_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        notification_id INTEGER NOT NULL REFERENCES notifications (id),
        read_at REAL,
        deleted_at REAL,
        PRIMARY KEY (tenant_id, user_id, notification_id)
    ) WITHOUT ROWID;

    -- "Read all" is a watermark, so it costs one row however large the inbox.
    CREATE TABLE read_marks (
        tenant_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        read_through INTEGER NOT NULL,
        read_at REAL NOT NULL,
        PRIMARY KEY (tenant_id, user_id)
    ) WITHOUT ROWID;

    CREATE TABLE idempotency_keys (
        tenant_id TEXT NOT NULL,
        key TEXT NOT NULL,
        notification_ids TEXT NOT NULL,    -- JSON list
        response TEXT,                     -- the first answer, once it is known
        created_at REAL NOT NULL,
        PRIMARY KEY (tenant_id, key)
    ) WITHOUT ROWID;
    """,
]
