"""The channels' tables on PostgreSQL: the `Directory` (recipients, preferences, push
subscriptions, webhooks, templates) and the `DeliveryQueue` (one row per channel delivery),
with the same results as their SQLite versions.

Several processes share the queue: the plan cursor moves by compare-and-set, so a range of
notifications is planned once; a claim locks its rows with `FOR UPDATE SKIP LOCKED`, so two
processes never claim the same delivery, and gives it a lease, after which a `sending` row
whose claimant died is claimed again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from typing import Any

from ..models import iso
from .postgres import PgDatabase, Row, affected
from .protocol import DUE, LEASE, Delivery, Planned
from .sqlite_channels import DELIVERY_HISTORY, group_deliveries


def _delivery(row: Row) -> Delivery:
    return Delivery(row["id"], row["notification_id"], row["tenant_id"], row["user_id"],
                    row["channel"], row["target"], row["status"], row["attempts"],
                    row["digest"], bool(row["only_offline"]),
                    bool(row["unless_acknowledged"]))


class PostgresDirectory:
    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    # --- recipients and preferences ----------------------------------------------------
    async def put_recipient(self, tenant_id: str, user_id: str, fields: dict[str, Any]) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO recipients (tenant_id, user_id, email, phone, timezone, locale, "
                "updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                "ON CONFLICT (tenant_id, user_id) DO UPDATE SET email = excluded.email, "
                "phone = excluded.phone, timezone = excluded.timezone, "
                "locale = excluded.locale, updated_at = excluded.updated_at",
                tenant_id, user_id, fields["email"], fields["phone"], fields["timezone"],
                fields["locale"], time.time())

    async def recipient(self, tenant_id: str, user_id: str) -> dict[str, Any] | None:
        return await self.db.fetchrow(
            "SELECT email, phone, timezone, locale FROM recipients WHERE tenant_id = $1 "
            "AND user_id = $2", tenant_id, user_id)

    async def known_users(self, tenant_id: str) -> list[str]:
        """Users of a tenant that a channel can reach: with an address or a subscription."""
        rows = await self.db.fetch(
            "SELECT user_id FROM recipients WHERE tenant_id = $1 UNION "
            "SELECT user_id FROM push_subscriptions WHERE tenant_id = $1 ORDER BY 1",
            tenant_id)
        return [row["user_id"] for row in rows]

    async def put_preferences(self, tenant_id: str, user_id: str, body: dict[str, Any]) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO preferences (tenant_id, user_id, body, updated_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id, user_id) DO UPDATE SET "
                "body = excluded.body, updated_at = excluded.updated_at",
                tenant_id, user_id, json.dumps(body), time.time())

    async def preferences(self, tenant_id: str, user_id: str) -> dict[str, Any]:
        """Stored preferences of a user ('' for the tenant's defaults); {} when none."""
        row = await self.db.fetchrow(
            "SELECT body FROM preferences WHERE tenant_id = $1 AND user_id = $2",
            tenant_id, user_id)
        found: dict[str, Any] = json.loads(row["body"]) if row else {}
        return found

    async def in_app_preferences(self, tenant_id: str) -> dict[str, dict[str, Any]]:
        """The tenant's stored preferences that mention in_app, by owner ('' for defaults)."""
        rows = await self.db.fetch(
            "SELECT user_id, body FROM preferences WHERE tenant_id = $1 "
            "AND strpos(body, '\"in_app\"') > 0", tenant_id)
        return {row["user_id"]: json.loads(row["body"]) for row in rows}

    # --- push subscriptions, webhooks, templates ---------------------------------------
    async def add_subscription(self, tenant_id: str, user_id: str, endpoint: str, p256dh: str,
                               auth: str) -> bool:
        async with self.db.transaction() as conn:
            if await conn.fetchval(
                    "SELECT 1 FROM push_subscriptions WHERE endpoint = $1 "
                    "AND NOT (tenant_id = $2 AND user_id = $3) LIMIT 1",
                    endpoint, tenant_id, user_id):
                return False  # another user's, of this tenant or another
            status = await conn.execute(
                "INSERT INTO push_subscriptions (tenant_id, endpoint, user_id, p256dh, auth, "
                "created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, endpoint) "
                "DO UPDATE SET p256dh = excluded.p256dh, auth = excluded.auth "
                "WHERE push_subscriptions.user_id = excluded.user_id",
                tenant_id, endpoint, user_id, p256dh, auth, time.time())
            return bool(status == "INSERT 0 1")

    async def remove_subscription(self, tenant_id: str, endpoint: str,
                                  user_id: str | None = None) -> bool:
        async with self.db.transaction() as conn:
            if user_id is None:
                status = await conn.execute(
                    "DELETE FROM push_subscriptions WHERE tenant_id = $1 AND endpoint = $2",
                    tenant_id, endpoint)
            else:
                status = await conn.execute(
                    "DELETE FROM push_subscriptions WHERE tenant_id = $1 AND endpoint = $2 "
                    "AND user_id = $3", tenant_id, endpoint, user_id)
        return affected(status) > 0

    async def subscriptions(self, tenant_id: str, user_id: str) -> list[dict[str, str]]:
        return await self.db.fetch(
            "SELECT endpoint, p256dh, auth FROM push_subscriptions WHERE tenant_id = $1 "
            "AND user_id = $2", tenant_id, user_id)

    async def subscription(self, tenant_id: str, endpoint: str) -> dict[str, str] | None:
        return await self.db.fetchrow(
            "SELECT endpoint, p256dh, auth FROM push_subscriptions WHERE tenant_id = $1 "
            "AND endpoint = $2", tenant_id, endpoint)

    async def put_webhook(self, tenant_id: str, url: str, secret: str) -> None:
        # As on SQLite: a tenant's webhook keeps the secret it was first given.
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO webhooks (tenant_id, url, secret, created_at) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO UPDATE SET url = excluded.url",
                tenant_id, url, secret, time.time())

    async def webhook(self, tenant_id: str) -> dict[str, str] | None:
        return await self.db.fetchrow("SELECT url, secret FROM webhooks WHERE tenant_id = $1",
                                      tenant_id)

    async def delete_webhook(self, tenant_id: str) -> bool:
        async with self.db.transaction() as conn:
            status = await conn.execute("DELETE FROM webhooks WHERE tenant_id = $1", tenant_id)
        return affected(status) > 0

    async def put_template(self, tenant_id: str, type_: str, channel: str,
                           parts: dict[str, str]) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO templates (tenant_id, type, channel, subject, text, html, "
                "updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                "ON CONFLICT (tenant_id, type, channel) DO UPDATE SET "
                "subject = excluded.subject, text = excluded.text, html = excluded.html, "
                "updated_at = excluded.updated_at",
                tenant_id, type_, channel, parts["subject"], parts["text"], parts["html"],
                time.time())

    async def template(self, tenant_id: str, type_: str, channel: str) -> dict[str, str] | None:
        return await self.db.fetchrow(
            "SELECT subject, text, html FROM templates WHERE tenant_id = $1 AND type = $2 "
            "AND channel = $3", tenant_id, type_, channel)

    async def delete_template(self, tenant_id: str, type_: str, channel: str) -> bool:
        async with self.db.transaction() as conn:
            status = await conn.execute(
                "DELETE FROM templates WHERE tenant_id = $1 AND type = $2 AND channel = $3",
                tenant_id, type_, channel)
        return affected(status) > 0

    # --- the suppression list ----------------------------------------------------------
    async def suppress(self, tenant_id: str, address: str, reason: str,
                       detail: str | None = None) -> bool:
        async with self.db.transaction() as conn:
            status = await conn.execute(
                "INSERT INTO suppressions (tenant_id, address, reason, detail, created_at) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, address) DO NOTHING",
                tenant_id, address, reason, detail, time.time())
        return affected(status) == 1

    async def suppressed(self, tenant_id: str, address: str) -> bool:
        row = await self.db.fetchrow(
            "SELECT 1 AS found FROM suppressions WHERE tenant_id = $1 AND address = $2",
            tenant_id, address)
        return row is not None

    async def suppressions(self, tenant_id: str, after: str = "", limit: int = 100,
                           ) -> list[dict[str, Any]]:
        # COLLATE "C": the same byte order as SQLite's, whatever the database's locale.
        rows = await self.db.fetch(
            "SELECT address, reason, detail, created_at FROM suppressions WHERE tenant_id = $1 "
            'AND address COLLATE "C" > $2 ORDER BY address COLLATE "C" LIMIT $3',
            tenant_id, after, limit)
        return [{**row, "created_at": iso(row["created_at"])} for row in rows]

    async def unsuppress(self, tenant_id: str, address: str) -> bool:
        async with self.db.transaction() as conn:
            status = await conn.execute(
                "DELETE FROM suppressions WHERE tenant_id = $1 AND address = $2",
                tenant_id, address)
        return affected(status) > 0


_RETURNING = ("RETURNING d.id, d.notification_id, d.tenant_id, d.user_id, d.channel, d.target, "
              "d.status, d.attempts, d.digest, d.only_offline, d.unless_acknowledged, "
              "d.next_attempt_at")


class PostgresDeliveryQueue:
    def __init__(self, db: PgDatabase) -> None:
        self.db = db

    async def planned_through(self) -> int:
        row = await self.db.fetchrow("SELECT planned_through FROM delivery_cursor")
        return int(row["planned_through"]) if row else 0

    async def add_planned(self, planned: list[Planned], from_id: int, through_id: int) -> bool:
        """Compare-and-set on the cursor: of two processes planning the same range, the second
        waits on the cursor's row lock, then finds it moved and writes nothing."""
        now = time.time()
        async with self.db.transaction() as conn:
            status = await conn.execute(
                "UPDATE delivery_cursor SET planned_through = $2 WHERE planned_through = $1",
                from_id, through_id)
            if affected(status) != 1:
                return False
            if planned:
                columns: list[list[Any]] = [[] for _ in range(12)]
                for p in planned:
                    due = p.next_attempt_at if p.next_attempt_at is not None else \
                        (now if p.status in DUE else None)
                    row = (p.notification_id, p.tenant_id, p.user_id, p.channel, p.target,
                           p.status, due, p.last_error, p.digest, p.only_offline,
                           p.unless_acknowledged, now)
                    for column, value in zip(columns, row, strict=True):
                        column.append(value)
                await conn.execute(
                    "INSERT INTO deliveries (notification_id, tenant_id, user_id, channel, "
                    "target, status, next_attempt_at, last_error, digest, only_offline, "
                    "unless_acknowledged, created_at) SELECT * FROM unnest($1::bigint[], "
                    "$2::text[], $3::text[], $4::text[], $5::text[], $6::text[], "
                    "$7::double precision[], $8::text[], $9::text[], $10::boolean[], "
                    "$11::boolean[], $12::double precision[])", *columns)
        return True

    async def claim_due(self, now: float, limit: int = 50, lease: float = LEASE,
                        skip_tenants: Collection[str] = ()) -> list[Delivery]:
        """One statement takes due rows (and `sending` rows whose lease ran out) that no other
        transaction holds, skipping locked ones, and leases them; a second takes the rest of
        each claimed digest, as one email goes out for all of it."""
        async with self.db.transaction() as conn:
            rows = await conn.fetch(
                "WITH due AS MATERIALIZED (SELECT id FROM deliveries "
                "WHERE ((status IN ('queued', 'held') AND next_attempt_at <= $1) "
                "OR (status = 'sending' AND lease_until <= $1)) "
                "AND NOT (tenant_id = ANY($4::text[])) "
                "ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) "
                "UPDATE deliveries d SET status = 'sending', attempts = d.attempts + 1, "
                f"lease_until = $3 FROM due WHERE d.id = due.id {_RETURNING}",
                now, limit, now + lease, list(skip_tenants))
            rows = sorted(rows, key=lambda r: (r["next_attempt_at"] or 0.0, r["id"]))
            groups = sorted({(r["tenant_id"], r["user_id"], r["target"], r["digest"])
                             for r in rows if r["digest"]})
            if groups:
                rows += sorted(await conn.fetch(
                    "UPDATE deliveries d SET status = 'sending', attempts = d.attempts + 1, "
                    "lease_until = $6 WHERE d.id IN (SELECT x.id FROM deliveries x JOIN "
                    "unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS g(t, u, tg, dg) "
                    "ON x.tenant_id = g.t AND x.user_id = g.u AND x.target = g.tg "
                    "AND x.digest = g.dg WHERE x.status = 'held' AND x.next_attempt_at <= $1 "
                    f"FOR UPDATE OF x SKIP LOCKED) {_RETURNING}",
                    now, *(list(column) for column in zip(*groups, strict=True)), now + lease),
                    key=lambda r: r["id"])
        return [_delivery(dict(row)) for row in rows]

    async def next_due(self) -> float | None:
        row = await self.db.fetchrow(
            "SELECT least((SELECT min(next_attempt_at) FROM deliveries "
            "WHERE status IN ('queued', 'held')), (SELECT min(lease_until) FROM deliveries "
            "WHERE status = 'sending')) AS t")
        return row["t"] if row and row["t"] is not None else None

    async def finish(self, deliveries: list[Delivery], status: str, *,
                     error: str | None = None, provider_id: str | None = None,
                     retry_at: float | None = None) -> None:
        """Records an attempt's outcome: `sent`, `failed`, `skipped`, or `queued` again with
        `retry_at`. Every attempt is kept in delivery_attempts."""
        if not deliveries:
            return
        now = time.time()
        ids = [d.id for d in deliveries]
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE deliveries SET status = $1, last_error = $2, provider_id = $3, "
                "sent_at = $4, next_attempt_at = $5, lease_until = NULL "
                "WHERE id = ANY($6::bigint[])",
                status, error, provider_id, now if status == "sent" else None, retry_at, ids)
            if status != "skipped":
                await conn.execute(
                    "INSERT INTO delivery_attempts (delivery_id, attempt, at, status, error) "
                    # Not for a delivery that retention removed while it was being sent.
                    "SELECT i, a, $3, $4, $5 FROM unnest($1::bigint[], $2::integer[]) "
                    "AS x(i, a) WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.id = x.i) "
                    "ON CONFLICT (delivery_id, attempt) DO UPDATE SET "
                    "at = excluded.at, status = excluded.status, error = excluded.error",
                    ids, [d.attempts for d in deliveries], now,
                    "retry" if status == "queued" else status, error)

    async def release(self, deliveries: list[Delivery]) -> None:
        if not deliveries:
            return
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE deliveries SET status = 'queued', attempts = attempts - 1, "
                "next_attempt_at = $1, lease_until = NULL "
                "WHERE id = ANY($2::bigint[]) AND status = 'sending'",
                time.time(), [d.id for d in deliveries])

    async def for_notifications(self, notification_ids: list[int], tenant_id: str,
                                user_id: str | None = None) -> dict[int, list[dict[str, Any]]]:
        """Each notification's deliveries with every attempt, in one statement so that a
        delivery's status and its history come from the same snapshot."""
        if not notification_ids:
            return {}
        mine = "" if user_id is None else " AND d.user_id = $3"
        rows = await self.db.fetch(
            f"{DELIVERY_HISTORY} WHERE d.notification_id = ANY($1::bigint[]) "
            f"AND d.tenant_id = $2{mine} ORDER BY d.id, a.attempt",
            list(notification_ids), tenant_id, *([] if user_id is None else [user_id]))
        return group_deliveries(notification_ids, rows)

    async def tenant_of_sent(self, channel: str, provider_id: str) -> str | None:
        row = await self.db.fetchrow(
            "SELECT tenant_id FROM deliveries WHERE channel = $1 AND provider_id = $2 LIMIT 1",
            channel, provider_id)
        return str(row["tenant_id"]) if row else None
