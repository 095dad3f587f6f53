"""The REST API: parse, one domain call, write."""

from __future__ import annotations

import hmac
import ipaddress
import re
import time

from tidings import errors, receipts, validation
from tidings.limits import RateLimiter
from tidings.metrics import CONTENT_TYPE
from tidings.openapi import document
from tidings.tickets import TTL

from .base import BaseHandler

MAX_IDEMPOTENCY_KEY = 255
CONNECTION_ID = re.compile(r"(ss-[0-9a-f]{8}-[0-9]{1,18})?")  # '' (every SSE connection) or one


class NotificationsHandler(BaseHandler):
    async def post(self) -> None:
        who = self.authenticate()
        if not who.acts_for_tenant:
            raise errors.forbidden("only admin and service tokens may send notifications")
        key = self.request.headers.get("Idempotency-Key")
        if key is not None and not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
            raise errors.invalid("Idempotency-Key", f"must be 1 to {MAX_IDEMPOTENCY_KEY} "
                                                    "characters")
        body = self.json_body()
        items, as_list = validation.notifications(body, who.tenant_id)
        send_at = validation.send_at(body.get("send_at"), time.time())
        if send_at is not None and ("ttl" in body or "expires_at" in body):
            # A scheduled notification's `ttl` counts from when it is sent, and its
            # `expires_at` must come after that.
            items, as_list = validation.notifications(body, who.tenant_id, now=send_at)
        wait = self.settings["tenant_rate"].take(who.tenant_id, len(items))  # per notification
        if wait:
            raise errors.rate_limited(RateLimiter.retry_after(wait))
        if send_at is not None:
            scheduled, replayed = await self.services.scheduler.schedule(items, as_list,
                                                                         send_at, key)
            if replayed:
                self.set_header("Idempotent-Replayed", "true")
            self.write_json({"scheduled": scheduled}, 202)
            return
        published = await self.services.publisher.create(items, key)
        if published.replayed:
            self.set_header("Idempotent-Replayed", "true")
        body: dict[str, object] = {"delivery": published.delivery}
        if as_list:
            body["notifications"] = published.notifications
        else:
            body["notification"] = published.notifications[0]
        self.write_json(body, 201)

    async def get(self) -> None:
        who = self.authenticate()
        limit = validation.limit(self.get_query_argument("limit", None))
        before = validation.cursor(self.get_query_argument("before", None), "before")
        unread = validation.flag(self.get_query_argument("unread", None), "unread")
        group = validation.group(self.get_query_argument("group", None))
        page = await self.services.store.inbox(who, unread=unread, limit=limit, before=before,
                                               group=group)
        next_before = page[-1]["id"] if len(page) == limit else None
        self.write_json({"notifications": page, "next_before": next_before})


class ScheduledHandler(BaseHandler):
    async def get(self) -> None:
        who = self.authenticate()
        if not who.acts_for_tenant:
            raise errors.forbidden("only admin and service tokens may see what is scheduled")
        self.write_json({"scheduled": await self.services.scheduler.pending(who.tenant_id)})


class ScheduledEntryHandler(BaseHandler):
    async def delete(self, schedule_id: str) -> None:
        who = self.authenticate()
        if not who.acts_for_tenant:
            raise errors.forbidden("only admin and service tokens may cancel what is "
                                   "scheduled")
        await self.services.scheduler.cancel(who.tenant_id, schedule_id)
        self.no_content()


class NotificationHandler(BaseHandler):
    async def delete(self, notification_id: str) -> None:
        who = self.authenticate()
        nid = validation.whole_id(notification_id, "id")
        if who.acts_for_tenant:  # a recall: gone for every recipient
            await self.services.publisher.recall(who, nid)
        else:  # from the user's own inbox only
            await self.services.store.delete(who, nid)
            await self.services.publisher.send_stats(who)
        self.no_content()


class AckHandler(BaseHandler):
    async def post(self) -> None:
        who = self.authenticate()
        body = self.json_body()
        ids = receipts.ack_ids(body.get("ids"))
        connection_id = body.get("connection_id", "")
        if not isinstance(connection_id, str) or not CONNECTION_ID.fullmatch(connection_id):
            raise errors.invalid("connection_id", "must be a connection_id from `connected`")
        unknown = set(body) - {"ids", "connection_id"}
        if unknown:
            raise errors.invalid(sorted(unknown)[0], "unknown field; expected ids or "
                                                     "connection_id")
        self.services.receipts.acknowledged(who, ids, connection_id)
        self.no_content()


class ReceiptsHandler(BaseHandler):
    async def get(self, notification_id: str) -> None:
        who = self.authenticate()
        nid = validation.whole_id(notification_id, "id")
        found = await self.services.store.notification(nid)
        mine = None if who.acts_for_tenant else who.user_id
        if found is None or found["tenant_id"] != who.tenant_id or \
                mine is not None and found["user_id"] not in (None, mine):
            raise errors.not_found(f"notification {notification_id}")
        entries = await self.services.receipts.of(who.tenant_id, [nid], mine)
        self.write_json({"receipts": entries[nid]})


class TicketsHandler(BaseHandler):
    async def post(self) -> None:
        who = self.authenticate()
        ticket = await self.services.tickets.issue(who)
        self.write_json({"ticket": ticket, "expires_in": TTL}, 201)


class ReadHandler(BaseHandler):
    async def post(self, notification_id: str) -> None:
        who = self.authenticate()
        nid = validation.whole_id(notification_id, "id")
        stats = await self.services.publisher.mark_read(who, nid)
        self.write_json({"id": nid, "stats": stats})


class ReadAllHandler(BaseHandler):
    async def post(self) -> None:
        who = self.authenticate()
        await self.services.store.mark_all_read(who)
        stats = await self.services.publisher.send_stats(who)
        self.write_json({"stats": stats})


class StatsHandler(BaseHandler):
    async def get(self) -> None:
        who = self.authenticate()
        counts = await self.services.store.counts(who)
        counts["by_type"] = await self.services.store.by_type(who)  # type: ignore[assignment]
        self.write_json(counts)


class ConnectionsHandler(BaseHandler):
    async def get(self) -> None:
        who = self.authenticate()
        presence = self.services.presence
        if who.acts_for_tenant:
            stats = await presence.tenant(who.tenant_id)
        else:
            stats = await presence.user(who.tenant_id, who.user_id)
        self.write_json({"tenant_id": who.tenant_id, **stats})


class HealthHandler(BaseHandler):
    async def get(self) -> None:
        problems = await self.services.health()
        if problems:
            self.write_json({"status": "unavailable", "problems": problems}, 503)
            return
        self.write_json({"status": "ok"})


class MetricsHandler(BaseHandler):
    """Prometheus text format, for scrapers on loopback or with the admin password."""

    async def get(self) -> None:
        password = self.services.settings.admin_password
        bearer = self.request.headers.get("Authorization", "")
        # Loopback only when no proxy stands between: a forwarded request is judged by the
        # address it was forwarded for (and only a trusted proxy's word is taken for that).
        forwarded = "X-Forwarded-For" in self.request.headers
        client = ipaddress.ip_address(self.client_ip() or "0.0.0.0")
        local = client.is_loopback and (not forwarded or self._from_proxy())
        given = bearer.encode()
        expected = f"Bearer {password}".encode()
        if not local and not (password and hmac.compare_digest(given, expected)):
            raise errors.forbidden("metrics are served on loopback or with the admin password")
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(await self.services.metrics.scrape())


class OpenAPIHandler(BaseHandler):
    def get(self) -> None:
        self.write_json(document())

