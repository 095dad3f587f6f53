"""Plain data the domain passes around."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

ROLES = ("user", "admin", "service")
TYPES = ("info", "success", "warning", "error")
PRIORITIES = ("low", "normal", "high", "urgent")


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user of one tenant, with a role."""

    tenant_id: str
    user_id: str
    role: str = "user"

    @property
    def acts_for_tenant(self) -> bool:
        """Admin and service tokens act for the whole tenant: they send, and they read any
        user's profile, deliveries and the tenant's connection counts."""
        return self.role in ("admin", "service")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclasses.dataclass(frozen=True, slots=True)
class NewNotification:
    """A validated request to create one notification (user_id None: tenant-wide)."""

    tenant_id: str
    user_id: str | None
    title: str
    message: str = ""
    type: str = "info"
    priority: str = "normal"
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    channels: tuple[str, ...] | None = None
    group: str | None = None  # a thread's name, for clients to group by
    actions: tuple[dict[str, str], ...] = ()  # buttons: {"label", "url"}
    key: str | None = None           # replaces the recipients' live notification with this key
    expires_at: float | None = None  # unix seconds: leaves inboxes and replays after it


def iso(ts: float) -> str:
    """Unix seconds as the contract's UTC timestamp with milliseconds."""
    dt = datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
