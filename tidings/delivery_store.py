"""All SQL of the channels: recipients, preferences, push subscriptions, webhooks, templates
and delivery rows. Like `store.py`, only this module starts transactions for these tables."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from .db import Database
from .models import iso

# Statuses: queued -> sending -> sent | failed, or back to queued for a retry; held waits for
# quiet hours or a digest; skipped was never tried (the reason is in last_error).
DUE = ("queued", "held")


@dataclass
class Delivery:
    id: int
    notification_id: int
    tenant_id: str
    user_id: str | None
    channel: str
    target: str | None
    status: str
    attempts: int
    digest: str | None
    only_offline: bool

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Delivery:
        return cls(row["id"], row["notification_id"], row["tenant_id"], row["user_id"],
                   row["channel"], row["target"], row["status"], row["attempts"],
                   row["digest"], bool(row["only_offline"]))


@dataclass
class Planned:
    """A delivery row to create."""

    notification_id: int
    tenant_id: str
    user_id: str | None
    channel: str
    status: str
    target: str | None = None
    next_attempt_at: float | None = None
    last_error: str | None = None
    digest: str | None = None
    only_offline: bool = False


def _ts(value: float | None) -> str | None:
    return iso(value) if value else None


class DeliveryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- recipients and preferences ----------------------------------------------------
    async def put_recipient(self, tenant_id: str, user_id: str, fields: dict[str, Any]) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO recipients (tenant_id, user_id, email, phone, timezone, locale, "
                "updated_at) VALUES (:t, :u, :email, :phone, :timezone, :locale, :now) "
                "ON CONFLICT DO UPDATE SET email = :email, phone = :phone, "
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
                "VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET body = excluded.body, "
                "updated_at = excluded.updated_at",
                (tenant_id, user_id, json.dumps(body), time.time()))

    async def preferences(self, tenant_id: str, user_id: str) -> dict[str, Any]:
        """Stored preferences of a user ('' for the tenant's defaults); {} when none."""
        row = await self.db.fetchone(
            "SELECT body FROM preferences WHERE tenant_id = ? AND user_id = ?",
            (tenant_id, user_id))
        return json.loads(row["body"]) if row else {}

    # --- push subscriptions, webhooks, templates ---------------------------------------
    async def add_subscription(self, tenant_id: str, user_id: str, endpoint: str, p256dh: str,
                               auth: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO push_subscriptions (tenant_id, endpoint, user_id, p256dh, auth, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                "user_id = excluded.user_id, p256dh = excluded.p256dh, auth = excluded.auth",
                (tenant_id, endpoint, user_id, p256dh, auth, time.time()))

    async def remove_subscription(self, tenant_id: str, endpoint: str,
                                  user_id: str | None = None) -> bool:
        async with self.db.write() as conn:
            cursor = await conn.execute(
                "DELETE FROM push_subscriptions WHERE tenant_id = ? AND endpoint = ? "
                "AND (? IS NULL OR user_id = ?)", (tenant_id, endpoint, user_id, user_id))
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
                "ON CONFLICT DO UPDATE SET url = excluded.url",
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
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
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

    # --- deliveries --------------------------------------------------------------------
    async def planned_through(self) -> int:
        row = await self.db.fetchone("SELECT planned_through FROM delivery_cursor")
        return int(row["planned_through"]) if row else 0

    async def unplanned(self, after_id: int, limit: int = 500) -> list[dict[str, Any]]:
        """Notifications whose deliveries are not planned yet, oldest first: just what planning
        reads (the worker loads the whole notification when it sends)."""
        rows = await self.db.fetchall(
            "SELECT id, tenant_id, user_id, type, priority, channels FROM notifications "
            "WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
        return [{"id": row[0], "tenant_id": row[1], "user_id": row[2], "type": row[3],
                 "priority": row[4], "channels": json.loads(row[5]) if row[5] else None}
                for row in rows]

    async def add_planned(self, planned: list[Planned], through_id: int) -> None:
        """Creates the rows and moves the cursor in one transaction: planned exactly once."""
        now = time.time()
        async with self.db.write() as conn:
            await conn.executemany(
                "INSERT INTO deliveries (notification_id, tenant_id, user_id, channel, target, "
                "status, next_attempt_at, last_error, digest, only_offline, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(p.notification_id, p.tenant_id, p.user_id, p.channel, p.target, p.status,
                  p.next_attempt_at if p.next_attempt_at is not None else
                  (now if p.status in DUE else None), p.last_error, p.digest,
                  int(p.only_offline), now) for p in planned])
            await conn.execute(
                "UPDATE delivery_cursor SET planned_through = max(planned_through, ?)",
                (through_id,))

    async def claim_due(self, now: float, limit: int = 50) -> list[Delivery]:
        """Marks due deliveries `sending` (one more attempt) and returns them."""
        async with self.db.write() as conn:
            async with conn.execute(
                    "SELECT * FROM deliveries WHERE status IN ('queued', 'held') "
                    "AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?",
                    (now, limit)) as cursor:
                rows = [Delivery.from_row(row) for row in await cursor.fetchall()]
            # A digest goes out as one email: take the rest of each claimed digest too.
            taken = {d.id for d in rows}
            for key in {(d.tenant_id, d.user_id, d.target, d.digest) for d in rows if d.digest}:
                async with conn.execute(
                        "SELECT * FROM deliveries WHERE status = 'held' AND tenant_id = ? "
                        "AND user_id = ? AND target = ? AND digest = ? AND next_attempt_at <= ?",
                        (*key, now)) as cursor:
                    rows += [d for d in map(Delivery.from_row, await cursor.fetchall())
                             if d.id not in taken]
            await conn.executemany(
                "UPDATE deliveries SET status = 'sending', attempts = attempts + 1 "
                "WHERE id = ?", [(d.id,) for d in rows])
        for d in rows:
            d.attempts += 1
        return rows

    async def next_due(self) -> float | None:
        row = await self.db.fetchone(
            "SELECT min(next_attempt_at) AS t FROM deliveries WHERE status IN ('queued', 'held')")
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
                "sent_at = ?, next_attempt_at = ? WHERE id = ?",
                [(status, error, provider_id, now if status == "sent" else None, retry_at,
                  d.id) for d in deliveries])
            if status != "skipped":
                await conn.executemany(
                    "INSERT OR REPLACE INTO delivery_attempts (delivery_id, attempt, at, "
                    "status, error) VALUES (?, ?, ?, ?, ?)",
                    [(d.id, d.attempts, now, "retry" if status == "queued" else status, error)
                     for d in deliveries])

    async def resume_interrupted(self) -> int:
        """At start: sends cut off by a stop go again (the provider may not have them)."""
        async with self.db.write() as conn:
            cursor = await conn.execute(
                "UPDATE deliveries SET status = 'queued', next_attempt_at = ? "
                "WHERE status = 'sending'", (time.time(),))
            return cursor.rowcount

    async def for_notification(self, notification_id: int, tenant_id: str,
                               user_id: str | None = None) -> list[dict[str, Any]]:
        return (await self.for_notifications([notification_id], tenant_id, user_id))[
            notification_id]

    async def for_notifications(self, notification_ids: list[int], tenant_id: str,
                                user_id: str | None = None) -> dict[int, list[dict[str, Any]]]:
        """Each notification's deliveries with every attempt: two queries however many."""
        if not notification_ids:
            return {}
        marks = ",".join("?" * len(notification_ids))
        rows = await self.db.fetchall(
            "SELECT id, notification_id, channel, user_id, status, attempts, last_error, "
            f"next_attempt_at, sent_at, created_at FROM deliveries WHERE notification_id IN "
            f"({marks}) AND tenant_id = ? AND (? IS NULL OR user_id = ?) ORDER BY id",
            (*notification_ids, tenant_id, user_id, user_id))
        history: dict[int, list[dict[str, Any]]] = {}
        for attempt in await self.db.fetchall(
                "SELECT a.delivery_id, a.attempt, a.at, a.status, a.error FROM delivery_attempts a "
                f"JOIN deliveries d ON d.id = a.delivery_id WHERE d.notification_id IN ({marks}) "
                "ORDER BY a.delivery_id, a.attempt", tuple(notification_ids)):
            history.setdefault(attempt["delivery_id"], []).append(
                {"attempt": attempt["attempt"], "at": iso(attempt["at"]),
                 "status": attempt["status"], "error": attempt["error"]})
        found: dict[int, list[dict[str, Any]]] = {n: [] for n in notification_ids}
        for row in rows:
            delivery = {k: row[k] for k in row.keys() if k != "notification_id"}
            found[row["notification_id"]].append({
                **delivery, "next_attempt_at": _ts(row["next_attempt_at"]),
                "sent_at": _ts(row["sent_at"]), "created_at": _ts(row["created_at"]),
                "history": history.get(row["id"], [])})
        return found

    async def notification(self, notification_id: int) -> dict[str, Any] | None:
        row = await self.db.fetchone(
            "SELECT id, tenant_id, user_id, type, title, message, data, priority, created_at "
            "FROM notifications WHERE id = ?", (notification_id,))
        if row is None:
            return None
        return {**dict(row), "data": json.loads(row["data"]),
                "created_at": iso(row["created_at"]), "read_at": None}
