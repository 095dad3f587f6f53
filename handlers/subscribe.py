"""What the WebSocket and SSE handlers share before a stream starts."""

from __future__ import annotations

from typing import Any

from tidings import errors, validation
from tidings.connections import Connection
from tidings.models import Principal

from .base import ServicesMixin


class SubscribeMixin(ServicesMixin):
    async def admit(self) -> Principal:
        """Authenticates (a ticket, else a token) and applies the connection limits per user
        and per tenant (counted on every process), before any upgrade."""
        who = await self.identify()
        settings, presence = self.services.settings, self.services.presence
        per_user, per_tenant = settings.max_connections_per_user, \
            settings.max_connections_per_tenant
        if per_user and (await presence.user(who.tenant_id, who.user_id))["total"] >= per_user:
            raise errors.too_many_connections(per_user)
        if per_tenant and (await presence.tenant(who.tenant_id))["total"] >= per_tenant:
            raise errors.too_many_connections(per_tenant, "tenant")
        return who

    async def identify(self) -> Principal:
        """The ticket's principal when the URL carries `ticket` (spending it), else the
        token's. The tenant named by the request must be the ticket's, as for a token."""
        ticket = self.get_query_argument("ticket", None)  # type: ignore[attr-defined]
        if ticket is None:
            return self.authenticate()
        named = [*self.request.headers.get_list("X-Tenant-ID"),  # type: ignore[attr-defined]
                 *self.get_query_arguments("tenant_id")]  # type: ignore[attr-defined]
        return await self.services.tickets.redeem(ticket, named)

    def resume_cursor(self) -> int | None:
        """`since`, `Last-Event-ID` or `last_event_id`: the last id the client has seen."""
        request = self.request  # type: ignore[attr-defined]
        raw = (self.get_query_argument("since", None)  # type: ignore[attr-defined]
               or request.headers.get("Last-Event-ID")
               or self.get_query_argument("last_event_id", None))  # type: ignore[attr-defined]
        return validation.cursor(raw, "since")

    def snapshot_size(self) -> int | None:
        """`?snapshot=N`: how many of the newest notifications `connected` carries (1–50)."""
        raw = self.get_query_argument("snapshot", None, strip=False)  # type: ignore[attr-defined]
        return validation.snapshot(raw)

    async def hello(self, conn: Connection, last_id: int, snapshot: int | None,
                    ) -> dict[str, Any]:
        """The `connected` payload. `last_id` is where the connection starts: every
        notification of its user after that id reaches it, so a client with no cursor yet
        resumes from it and a drop before its first notification loses nothing. The counts
        and `recent` are as of `last_id`, so nothing in them comes again live."""
        who = Principal(conn.tenant_id, conn.user_id)
        store = self.services.store
        hello: dict[str, Any] = {
            "connection_id": conn.id, "user_id": conn.user_id, "tenant_id": conn.tenant_id,
            "last_id": last_id, **await store.counts(who, upto=last_id)}
        if snapshot:
            hello["recent"] = await store.inbox(who, limit=snapshot, before=last_id + 1)
        return hello
