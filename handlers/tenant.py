"""REST for a tenant's own settings: `/api/tenant` (retention)."""

from __future__ import annotations

from tidings import errors, retention
from tidings.models import Principal

from .base import BaseHandler


def _admin(who: Principal) -> None:
    if not who.is_admin:
        raise errors.forbidden("only a tenant admin may do this")


class TenantHandler(BaseHandler):
    async def get(self) -> None:
        who = self.authenticate()
        _admin(who)
        found = await self.services.store.tenant_settings(who.tenant_id)
        self.write_json({"tenant_id": who.tenant_id, **found})

    async def put(self) -> None:
        who = self.authenticate()
        _admin(who)
        changes = retention.validate(self.json_body())
        found = await self.services.store.put_tenant_settings(who.tenant_id, changes)
        self.services.retention.wake()  # a tighter limit takes effect now, not in a minute
        self.write_json({"tenant_id": who.tenant_id, **found})
