"""The channels' tables on SQLite: the `Directory` (recipients, preferences, push
subscriptions, webhooks, templates) and the `DeliveryQueue` (one row per channel delivery)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection
from typing import Any

from ..models import iso
from .protocol import DUE, LEASE, Delivery, Planned, ts
from .sqlite import Database, Row


def _delivery(row: Row) -> Delivery:
    return Delivery(row["id"], row["notification_id"], row["tenant_id"], row["user_id"],
                    row["channel"], row["target"], row["status"], row["attempts"],
                    row["digest"], bool(row["only_offline"]),
                    bool(row["unless_acknowledged"]))


class SQLiteDirectory:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- recipients and preferences ----------------------------------------------------
    async def put_recipient(self, tenant_id: str, user_id: str, fields: dict[str, Any]) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO recipients (tenant_id, user_id, email, phone, timezone, locale, "
                "updated_at) VALUES (:t, :u, :email, :phone, :timezone, :locale, :now) "
                "ON CONFLICT (tenant_id, user_id) DO UPDATE SET email = :email, phone = :phone, "
                "timezone = :timezone, locale = :locale, updated_at = :now",
                {"t": tenant_id, "u": user_id, "now": time.time(), **fields})

    async def recipient(self, tenant_id: str, user_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone(
            "SELECT email, phone, timezone, locale FROM recipients WHERE tenant_id = ? "
            "AND user_id = ?", (tenant_id, user_id))
        return dict(row) if row else None

    async def known_users(self, tenant_id: str) -> list[str]:
        """Users of a tenant that a channel can reach: with an address or a subscription."""
        rows = await self.db.fetchall(
            "SELECT user_id FROM recipients WHERE tenant_id = ? UNION "
            "SELECT user_id FROM push_subscriptions WHERE tenant_id = ? ORDER BY 1",
            (tenant_id, tenant_id))
        return [row["user_id"] for row in rows]

    async def put_preferences(self, tenant_id: str, user_id: str, body: dict[str, Any]) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO preferences (tenant_id, user_id, body, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, user_id) DO UPDATE SET body = excluded.body, "
                "updated_at = excluded.updated_at",
                (tenant_id, user_id, json.dumps(body), time.time()))

    async def preferences(self, tenant_id: str, user_id: str) -> dict[str, Any]:
        """Stored preferences of a user ('' for the tenant's defaults); {} when none."""
        row = await self.db.fetchone(
            "SELECT body FROM preferences WHERE tenant_id = ? AND user_id = ?",
            (tenant_id, user_id))
        return json.loads(row["body"]) if row else {}

    async def in_app_preferences(self, tenant_id: str) -> dict[str, dict[str, Any]]:
        """The tenant's stored preferences that mention in_app, by owner ('' for defaults)."""
        rows = await self.db.fetchall(
            "SELECT user_id, body FROM preferences WHERE tenant_id = ? "
            "AND instr(body, '\"in_app\"') > 0", (tenant_id,))
        return {row["user_id"]: json.loads(row["body"]) for row in rows}

    # --- push subscriptions, webhooks, templates ---------------------------------------
    async def add_subscription(self, tenant_id: str, user_id: str, endpoint: str, p256dh: str,
                               auth: str) -> bool:
        async with self.db.write() as conn:
            async with conn.execute(
                    "SELECT 1 FROM push_subscriptions WHERE endpoint = ? "
                    "AND NOT (tenant_id = ? AND user_id = ?) LIMIT 1",
                    (endpoint, tenant_id, user_id)) as found:
                if await found.fetchone() is not None:
                    return False  # another user's, of this tenant or another
            cursor = await conn.execute(
                "INSERT INTO push_subscriptions (tenant_id, endpoint, user_id, p256dh, auth, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, endpoint) "
                "DO UPDATE SET p256dh = excluded.p256dh, auth = excluded.auth "
                "WHERE push_subscriptions.user_id = excluded.user_id",
                (tenant_id, endpoint, user_id, p256dh, auth, time.time()))
            return cursor.rowcount == 1

    async def remove_subscription(self, tenant_id: str, endpoint: str,
                                  user_id: str | None = None) -> bool:
        async with self.db.write() as conn:
            cursor = await conn.execute(
                "DELETE FROM push_subscriptions WHERE tenant_id = ? AND endpoint = ?"
                + ("" if user_id is None else " AND user_id = ?"),
                (tenant_id, endpoint, *([] if user_id is None else [user_id])))
            return cursor.rowcount > 0

    async def subscriptions(self, tenant_id: str, user_id: str) -> list[dict[str, str]]:
        rows = await self.db.fetchall(
            "SELECT endpoint, p256dh, auth FROM push_subscriptions WHERE tenant_id = ? "
            "AND user_id = ?", (tenant_id, user_id))
        return [dict(row) for row in rows]

    async def subscription(self, tenant_id: str, endpoint: str) -> dict[str, str] | None:
        row = await self.db.fetchone(
            "SELECT endpoint, p256dh, auth FROM push_subscriptions WHERE tenant_id = ? "
            "AND endpoint = ?", (tenant_id, endpoint))
        return dict(row) if row else None

    async def put_webhook(self, tenant_id: str, url: str, secret: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO webhooks (tenant_id, url, secret, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (tenant_id) DO UPDATE SET url = excluded.url",
                (tenant_id, url, secret, time.time()))

    async def webhook(self, tenant_id: str) -> dict[str, str] | None:
        row = await self.db.fetchone("SELECT url, secret FROM webhooks WHERE tenant_id = ?",
                                     (tenant_id,))
        return dict(row) if row else None

    async def delete_webhook(self, tenant_id: str) -> bool:
        async with self.db.write() as conn:
            cursor = await conn.execute("DELETE FROM webhooks WHERE tenant_id = ?", (tenant_id,))
            return cursor.rowcount > 0

    async def put_template(self, tenant_id: str, type_: str, channel: str,
                           parts: dict[str, str]) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO templates (tenant_id, type, channel, subject, text, html, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, type, channel) DO UPDATE SET "
                "subject = excluded.subject, text = excluded.text, html = excluded.html, "
                "updated_at = excluded.updated_at",
                (tenant_id, type_, channel, parts["subject"], parts["text"], parts["html"],
                 time.time()))

    async def template(self, tenant_id: str, type_: str, channel: str) -> dict[str, str] | None:
        row = await self.db.fetchone(
            "SELECT subject, text, html FROM templates WHERE tenant_id = ? AND type = ? "
            "AND channel = ?", (tenant_id, type_, channel))
        return dict(row) if row else None

    async def delete_template(self, tenant_id: str, type_: str, channel: str) -> bool:
        async with self.db.write() as conn:
            cursor = await conn.execute(
                "DELETE FROM templates WHERE tenant_id = ? AND type = ? AND channel = ?",
                (tenant_id, type_, channel))
            return cursor.rowcount > 0

    # --- the suppression list ----------------------------------------------------------
    async def suppress(self, tenant_id: str, address: str, reason: str,
                       detail: str | None = None) -> bool:
        async with self.db.write() as conn:
            cursor = await conn.execute(
                "INSERT INTO suppressions (tenant_id, address, reason, detail, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id, address) DO NOTHING",
                (tenant_id, address, reason, detail, time.time()))
            return cursor.rowcount == 1

    async def suppressed(self, tenant_id: str, address: str) -> bool:
        row = await self.db.fetchone(
            "SELECT 1 AS found FROM suppressions WHERE tenant_id = ? AND address = ?",
            (tenant_id, address))
        return row is not None

    async def suppressions(self, tenant_id: str, after: str = "", limit: int = 100,
                           ) -> list[dict[str, Any]]:
        rows = await self.db.fetchall(
            "SELECT address, reason, detail, created_at FROM suppressions WHERE tenant_id = ? "
            "AND address > ? ORDER BY address LIMIT ?", (tenant_id, after, limit))
        return [{**row, "created_at": iso(row["created_at"])} for row in rows]

    async def unsuppress(self, tenant_id: str, address: str) -> bool:
        async with self.db.write() as conn:
            cursor = await conn.execute(
                "DELETE FROM suppressions WHERE tenant_id = ? AND address = ?",
                (tenant_id, address))
            return cursor.rowcount > 0


class SQLiteDeliveryQueue:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def planned_through(self) -> int:
        row = await self.db.fetchone("SELECT planned_through FROM delivery_cursor")
        return int(row["planned_through"]) if row else 0

    async def add_planned(self, planned: list[Planned], from_id: int, through_id: int) -> bool:
        return await self.db.transact(lambda conn: _add_planned(conn, planned, from_id,
                                                                through_id))

    async def claim_due(self, now: float, limit: int = 50, lease: float = LEASE,
                        skip_tenants: Collection[str] = ()) -> list[Delivery]:
        skip = list(skip_tenants)
        not_in = f" AND tenant_id NOT IN ({','.join('?' * len(skip))})" if skip else ""
        async with self.db.write() as conn:
            async with conn.execute(
                    "SELECT * FROM (SELECT * FROM deliveries WHERE status IN ('queued', 'held') "
                    "AND next_attempt_at <= ? UNION ALL SELECT * FROM deliveries "
                    f"WHERE status = 'sending' AND lease_until <= ?) WHERE true{not_in} "
                    "ORDER BY next_attempt_at LIMIT ?", (now, now, *skip, limit)) as cursor:
                rows = [_delivery(dict(row)) for row in await cursor.fetchall()]
            # A digest goes out as one email: take the rest of each claimed digest too.
            taken = {d.id for d in rows}
            for key in {(d.tenant_id, d.user_id, d.target, d.digest) for d in rows if d.digest}:
                async with conn.execute(
                        "SELECT * FROM deliveries WHERE status = 'held' AND tenant_id = ? "
                        "AND user_id = ? AND target = ? AND digest = ? AND next_attempt_at <= ?",
                        (*key, now)) as cursor:
                    rows += [d for d in (_delivery(dict(r)) for r in await cursor.fetchall())
                             if d.id not in taken]
            await conn.executemany(
                "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, "
                "lease_until = ? WHERE id = ?", [(now + lease, d.id) for d in rows])
        for d in rows:
            d.attempts += 1
            d.status = "sending"
        return rows

    async def next_due(self) -> float | None:
        row = await self.db.fetchone(
            "SELECT min(t) AS t FROM (SELECT min(next_attempt_at) AS t FROM deliveries "
            "WHERE status IN ('queued', 'held') UNION ALL SELECT min(lease_until) FROM "
            "deliveries WHERE status = 'sending')")
        return row["t"] if row and row["t"] is not None else None

    async def finish(self, deliveries: list[Delivery], status: str, *,
                     error: str | None = None, provider_id: str | None = None,
                     retry_at: float | None = None) -> None:
        """Records an attempt's outcome: `sent`, `failed`, `skipped`, or `queued` again with
        `retry_at`. Every attempt is kept in delivery_attempts."""
        now = time.time()
        async with self.db.write() as conn:
            await conn.executemany(
                "UPDATE deliveries SET status = ?, last_error = ?, provider_id = ?, "
                "sent_at = ?, next_attempt_at = ?, lease_until = NULL WHERE id = ?",
                [(status, error, provider_id, now if status == "sent" else None, retry_at,
                  d.id) for d in deliveries])
            if status != "skipped":
                await conn.executemany(
                    # Not for a delivery that retention removed while it was being sent.
                    "INSERT INTO delivery_attempts (delivery_id, attempt, at, status, error) "
                    "SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = ?) "
                    "ON CONFLICT (delivery_id, attempt) DO UPDATE SET "
                    "at = excluded.at, status = excluded.status, error = excluded.error",
                    [(d.id, d.attempts, now, "retry" if status == "queued" else status, error,
                      d.id) for d in deliveries])

    async def release(self, deliveries: list[Delivery]) -> None:
        async with self.db.write() as conn:
            await conn.executemany(
                "UPDATE deliveries SET status = 'queued', attempts = attempts - 1, "
                "next_attempt_at = ?, lease_until = NULL WHERE id = ? AND status = 'sending'",
                [(time.time(), d.id) for d in deliveries])

    async def for_notifications(self, notification_ids: list[int], tenant_id: str,
                                user_id: str | None = None) -> dict[int, list[dict[str, Any]]]:
        """Each notification's deliveries with every attempt, in one statement so that a
        delivery's status and its history come from the same snapshot."""
        if not notification_ids:
            return {}
        marks = ",".join("?" * len(notification_ids))
        mine = "" if user_id is None else " AND d.user_id = ?"
        rows = await self.db.fetchall(
            f"{DELIVERY_HISTORY} WHERE d.notification_id IN ({marks}) AND d.tenant_id = ?{mine} "
            "ORDER BY d.id, a.attempt",
            (*notification_ids, tenant_id, *([] if user_id is None else [user_id])))
        return group_deliveries(notification_ids, rows)

    async def tenant_of_sent(self, channel: str, provider_id: str) -> str | None:
        row = await self.db.fetchone(
            "SELECT tenant_id FROM deliveries WHERE channel = ? AND provider_id = ? LIMIT 1",
            (channel, provider_id))
        return str(row["tenant_id"]) if row else None


DELIVERY_HISTORY = (
    "SELECT d.id, d.notification_id, d.channel, d.user_id, d.status, d.attempts, d.last_error, "
    "d.next_attempt_at, d.sent_at, d.created_at, a.attempt AS attempt_number, a.at AS attempt_at, "
    "a.status AS attempt_status, a.error AS attempt_error "
    "FROM deliveries d LEFT JOIN delivery_attempts a ON a.delivery_id = d.id")


def _add_planned(conn: sqlite3.Connection, planned: list[Planned], from_id: int,
                 through_id: int) -> bool:
    """`add_planned`'s transaction, on the database's thread."""
    now = time.time()
    cursor = conn.execute(
        "UPDATE delivery_cursor SET planned_through = ? WHERE planned_through = ?",
        (through_id, from_id))
    if cursor.rowcount != 1:
        return False
    conn.executemany(
        "INSERT INTO deliveries (notification_id, tenant_id, user_id, channel, target, "
        "status, next_attempt_at, last_error, digest, only_offline, unless_acknowledged, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(p.notification_id, p.tenant_id, p.user_id, p.channel, p.target, p.status,
          p.next_attempt_at if p.next_attempt_at is not None else
          (now if p.status in DUE else None), p.last_error, p.digest,
          int(p.only_offline), int(p.unless_acknowledged), now) for p in planned])
    return True


def group_deliveries(notification_ids: list[int],
                     rows: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Rows of DELIVERY_HISTORY (one per attempt, ordered by delivery) in the API's shape,
    by notification."""
    found: dict[int, list[dict[str, Any]]] = {n: [] for n in notification_ids}
    current: dict[str, Any] = {}
    for row in rows:
        if current.get("id") != row["id"]:
            current = {
                "id": row["id"], "channel": row["channel"], "user_id": row["user_id"],
                "status": row["status"], "attempts": row["attempts"],
                "last_error": row["last_error"], "next_attempt_at": ts(row["next_attempt_at"]),
                "sent_at": ts(row["sent_at"]), "created_at": ts(row["created_at"]),
                "history": []}
            found[row["notification_id"]].append(current)
        if row["attempt_number"] is not None:
            current["history"].append({
                "attempt": row["attempt_number"], "at": iso(row["attempt_at"]),
                "status": row["attempt_status"], "error": row["attempt_error"]})
    return found
