"""Who turned off the live push: `"in_app": false` for a notification type keeps it out of
that user's WebSocket and SSE streams (live and replayed); the inbox still keeps it.

The hub asks for every notification it fans out, so the answer comes from memory: each
tenant with a connection here has its in_app choices loaded when its stream opens, and
loaded again when its preferences change (here at once; on other processes when the broker
brings them word, and after a broker outage, when such word may have been lost).
"""

from __future__ import annotations

from typing import Any

from .store import Directory

Choices = dict[str, Any]  # notification type (or "default") -> the in_app value


class InAppChoices:
    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        # tenant -> owner ('' for the tenant's defaults) -> choices; only owners with any
        self._tenants: dict[str, dict[str, Choices]] = {}
        self._loads: dict[str, int] = {}  # the newest load of each tenant wins

    async def load(self, tenant_id: str) -> None:
        """Reads a tenant's in_app choices (again)."""
        number = self._loads[tenant_id] = self._loads.get(tenant_id, 0) + 1
        bodies = await self.directory.in_app_preferences(tenant_id)
        if self._loads.get(tenant_id) != number:
            return  # a later load started meanwhile (or the tenant was forgotten)
        found: dict[str, Choices] = {}
        for owner, body in bodies.items():
            choices = {type_: mapping["in_app"]
                       for type_, mapping in body.get("channels", {}).items()
                       if isinstance(mapping, dict) and "in_app" in mapping}
            if choices:
                found[owner] = choices
        self._tenants[tenant_id] = found

    def forget(self, tenant_id: str) -> None:
        self._tenants.pop(tenant_id, None)
        self._loads.pop(tenant_id, None)

    def any(self, tenant_id: str) -> bool:
        """Whether anyone of the tenant (or its defaults) chose anything for in_app: the
        common answer, no, saves a look-up per connection."""
        return bool(self._tenants.get(tenant_id))

    def muted(self, tenant_id: str, user_id: str, type_: str) -> bool:
        """Whether the user's merged preferences say `false` for in_app of this type: the
        user's choice for the type, the tenant's for it, then both for `default` (as
        preferences.merge and channel_value resolve it). "offline" pushes like true."""
        owners = self._tenants.get(tenant_id)
        if not owners:
            return False
        own, defaults = owners.get(user_id, {}), owners.get("", {})
        for key in (type_, "default"):
            for layer in (own, defaults):
                if key in layer:
                    return layer[key] is False
        return False
