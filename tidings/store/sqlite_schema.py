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

MIGRATIONS.append(
    # 2: channels: recipients' addresses, preferences, push subscriptions, tenant webhooks and
    # templates, and one delivery row per (notification, recipient, channel).
    """
    ALTER TABLE notifications ADD COLUMN channels TEXT;   -- JSON list narrowing preferences

    CREATE TABLE recipients (
        tenant_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        email TEXT,
        phone TEXT,
        timezone TEXT,
        locale TEXT,
        updated_at REAL NOT NULL,
        PRIMARY KEY (tenant_id, user_id)
    ) WITHOUT ROWID;

    CREATE TABLE preferences (
        tenant_id TEXT NOT NULL,
        user_id TEXT NOT NULL,             -- '': the tenant's defaults
        body TEXT NOT NULL,                -- JSON: channels, quiet_hours, digest
        updated_at REAL NOT NULL,
        PRIMARY KEY (tenant_id, user_id)
    ) WITHOUT ROWID;

    CREATE TABLE push_subscriptions (
        tenant_id TEXT NOT NULL,
        endpoint TEXT NOT NULL,
        user_id TEXT NOT NULL,
        p256dh TEXT NOT NULL,
        auth TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (tenant_id, endpoint)
    ) WITHOUT ROWID;
    CREATE INDEX push_subscriptions_user ON push_subscriptions (tenant_id, user_id);

    CREATE TABLE webhooks (
        tenant_id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        secret TEXT NOT NULL,
        created_at REAL NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE templates (
        tenant_id TEXT NOT NULL,
        type TEXT NOT NULL,
        channel TEXT NOT NULL,
        subject TEXT NOT NULL DEFAULT '',
        text TEXT NOT NULL DEFAULT '',
        html TEXT NOT NULL DEFAULT '',
        updated_at REAL NOT NULL,
        PRIMARY KEY (tenant_id, type, channel)
    ) WITHOUT ROWID;

    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        notification_id INTEGER NOT NULL REFERENCES notifications (id),
        tenant_id TEXT NOT NULL,
        user_id TEXT,                      -- NULL: the tenant's webhook for a broadcast
        channel TEXT NOT NULL,
        target TEXT,                       -- the push endpoint, for push
        status TEXT NOT NULL,              -- queued held sending sent failed skipped
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        next_attempt_at REAL,
        sent_at REAL,
        created_at REAL NOT NULL,
        provider_id TEXT,
        digest TEXT,                       -- hourly / daily: sent in one email per period
        only_offline INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at);
    CREATE TABLE delivery_attempts (
        delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
        attempt INTEGER NOT NULL,
        at REAL NOT NULL,
        status TEXT NOT NULL,              -- sent, failed, or retry
        error TEXT,
        PRIMARY KEY (delivery_id, attempt)
    ) WITHOUT ROWID;
    CREATE INDEX deliveries_notification ON deliveries (notification_id);

    -- Notifications up to this id have had their deliveries planned (resumed after a crash).
    CREATE TABLE delivery_cursor (only_row INTEGER PRIMARY KEY CHECK (only_row = 1),
                                  planned_through INTEGER NOT NULL);
    INSERT INTO delivery_cursor VALUES (1, (SELECT coalesce(max(id), 0) FROM notifications));
    """
)

MIGRATIONS.append(
    # 3: several processes. Each tenant's newest notification id (a fan-out receiver compares
    # it with what it got, to find a gap); a tenant's notifications in id order (to fill one);
    # a lease on a claimed delivery (another process takes it over when the lease runs out).
    """
    CREATE TABLE tenant_positions (
        tenant_id TEXT PRIMARY KEY,
        last_id INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO tenant_positions
        SELECT tenant_id, max(id) FROM notifications GROUP BY tenant_id;
    CREATE INDEX notifications_tenant ON notifications (tenant_id);

    ALTER TABLE deliveries ADD COLUMN lease_until REAL;
    CREATE INDEX deliveries_leased ON deliveries (status, lease_until);

    -- A push endpoint is one browser's: whose it is, whatever the tenant, is looked up.
    CREATE INDEX push_subscriptions_endpoint ON push_subscriptions (endpoint);
    """
)

MIGRATIONS.append(
    # 4: email done right. Each tenant's suppression list: addresses that bounced for good,
    # complained, or that an admin named; email is never sent to them. A sent delivery is found
    # by its provider's message id (an SES bounce names the message it is about).
    """
    CREATE TABLE suppressions (
        tenant_id TEXT NOT NULL,
        address TEXT NOT NULL,             -- lower case
        reason TEXT NOT NULL,              -- bounce, complaint or manual
        detail TEXT,
        created_at REAL NOT NULL,
        PRIMARY KEY (tenant_id, address)
    ) WITHOUT ROWID;
    CREATE INDEX deliveries_provider ON deliveries (channel, provider_id);
    """
)

MIGRATIONS.append(
    # 5: acknowledgements: which connection was pushed which notification, and which the user
    # acknowledged (connection_id '' stands for every SSE connection of the user); a channel
    # delivery that waits for an acknowledgement before it goes.
    """
    CREATE TABLE pushes (                  -- one row per notification and write, not per connection
        notification_id INTEGER NOT NULL,
        tenant_id TEXT NOT NULL,
        pushed_at REAL NOT NULL,
        connections TEXT NOT NULL          -- a line per connection: id, user, transport
    );
    CREATE INDEX pushes_notification ON pushes (notification_id);
    CREATE TABLE acks (
        notification_id INTEGER NOT NULL,
        user_id TEXT NOT NULL,
        connection_id TEXT NOT NULL,
        tenant_id TEXT NOT NULL,
        acknowledged_at REAL NOT NULL,
        PRIMARY KEY (notification_id, user_id, connection_id)
    ) WITHOUT ROWID;
    ALTER TABLE deliveries ADD COLUMN unless_acknowledged INTEGER NOT NULL DEFAULT 0;
    """
)

MIGRATIONS.append(
    # 6: retention. Each tenant's settings (how long it keeps its notifications) and the highest
    # id that retention removed (`pruned_through`: a resume cursor below it may have missed
    # some, and is told so). A tenant's receipts are looked up by notification when one is removed.
    """
    CREATE TABLE tenants (
        tenant_id TEXT PRIMARY KEY,
        retention_days INTEGER,            -- NULL: forever
        retention_count INTEGER,           -- NULL: no limit; else the newest N are kept
        pruned_through INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX receipts_notification ON receipts (tenant_id, notification_id);
    """
)

MIGRATIONS.append(
    # 7: schedule, group, actions. A notification's thread (`group_name`, filtered on) and its
    # buttons (`actions`, a JSON list); notifications to create later (`scheduled`): pending
    # until sent or cancelled, claimed with a lease so that one process sends each, and kept a
    # day after (an Idempotency-Key that comes again finds its first answer).
    """
    ALTER TABLE notifications ADD COLUMN group_name TEXT;
    ALTER TABLE notifications ADD COLUMN actions TEXT;
    CREATE INDEX notifications_group ON notifications (tenant_id, group_name, user_id)
        WHERE group_name IS NOT NULL;
    CREATE TABLE scheduled (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        request TEXT NOT NULL,             -- JSON: recipients and the notification's fields
        send_at REAL NOT NULL,
        created_at REAL NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',  -- pending, sent or cancelled
        claimed_until REAL,                -- a sender's lease; another may claim it after
        idempotency_key TEXT,
        done_at REAL                       -- when it was sent or cancelled
    );
    CREATE INDEX scheduled_due ON scheduled (send_at) WHERE status = 'pending';
    CREATE INDEX scheduled_tenant ON scheduled (tenant_id, send_at) WHERE status = 'pending';
    CREATE UNIQUE INDEX scheduled_key ON scheduled (tenant_id, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX scheduled_done ON scheduled (done_at) WHERE status <> 'pending';
    """
)

MIGRATIONS.append(
    # 8: lifecycle. A notification's `key` (a later one with the same key for the same
    # recipients replaces it, and names it in `replaces`), when it expires, and why it left
    # every inbox (`removed`: replaced, recalled or expired). A recall or an expiry is an entry
    # of the tenant's stream, a row of `notification_events` whose id is taken from the
    # notifications' sequence.
    """
    ALTER TABLE notifications ADD COLUMN key TEXT;
    ALTER TABLE notifications ADD COLUMN replaces INTEGER;
    ALTER TABLE notifications ADD COLUMN expires_at REAL;
    ALTER TABLE notifications ADD COLUMN removed TEXT;
    CREATE INDEX notifications_key ON notifications (tenant_id, key)
        WHERE key IS NOT NULL AND removed IS NULL;
    CREATE INDEX notifications_expiry ON notifications (expires_at)
        WHERE expires_at IS NOT NULL AND removed IS NULL;
    -- The counts subtract the few that left (or may have): a walk of those alone, and
    -- creates without a key or an expiry never write to it.
    CREATE INDEX notifications_ending ON notifications (tenant_id, user_id, id)
        WHERE expires_at IS NOT NULL OR removed IS NOT NULL;

    CREATE TABLE notification_events (
        id INTEGER PRIMARY KEY,            -- from the notifications' sequence
        tenant_id TEXT NOT NULL,
        user_id TEXT,                      -- NULL: the notification was tenant-wide
        notification_id INTEGER NOT NULL,
        reason TEXT NOT NULL,              -- recalled or expired
        created_at REAL NOT NULL
    );
    CREATE INDEX notification_events_tenant ON notification_events (tenant_id, id);
    CREATE INDEX notification_events_notification ON notification_events (notification_id);
    """
)

MIGRATIONS.append(
    # 9: acknowledgements from WebSocket frames, packed: a row per notification and write, a
    # line per frame that acknowledged it ("connection\tuser\tat"), as `pushes` are.
    """
    CREATE TABLE frame_acks (
        notification_id INTEGER NOT NULL,
        tenant_id TEXT NOT NULL,
        acks TEXT NOT NULL
    );
    CREATE INDEX frame_acks_notification ON frame_acks (notification_id);
    """
)
