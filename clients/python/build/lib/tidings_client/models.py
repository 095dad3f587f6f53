"""Typed results: what the REST API and the streams answer, as dataclasses."""

from __future__ import annotations

import dataclasses
from typing import Any

_NOTIFICATION_FIELDS = ("id", "tenant_id", "user_id", "type", "title", "message", "data",
                        "priority", "created_at", "read_at")


@dataclasses.dataclass(frozen=True)
class Notification:
    id: int
    tenant_id: str
    user_id: str | None  # None: a tenant-wide broadcast
    type: str
    title: str
    message: str = ""
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    priority: str = "normal"
    created_at: str = ""
    read_at: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # fields newer servers add

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Notification:
        known = {k: raw[k] for k in _NOTIFICATION_FIELDS if k in raw}
        known["message"] = known.get("message") or ""
        known["data"] = known.get("data") or {}
        extra = {k: v for k, v in raw.items() if k not in _NOTIFICATION_FIELDS}
        return cls(**known, extra=extra)

    def to_json(self) -> dict[str, Any]:
        value = {k: getattr(self, k) for k in _NOTIFICATION_FIELDS}
        return {**value, **self.extra}


@dataclasses.dataclass(frozen=True)
class Created:
    """The answer to a create: one notification per recipient, and the live connections
    they reached. ``replayed``: an earlier request with the same idempotency key made them."""

    notifications: list[Notification]
    delivery: dict[str, int]
    replayed: bool = False

    @property
    def notification(self) -> Notification:
        return self.notifications[0]

    @property
    def ids(self) -> list[int]:
        return [n.id for n in self.notifications]

    @classmethod
    def from_json(cls, raw: dict[str, Any], replayed: bool = False) -> Created:
        items = raw.get("notifications") or [raw["notification"]]
        return cls([Notification.from_json(n) for n in items], raw.get("delivery") or {},
                   replayed)


@dataclasses.dataclass(frozen=True)
class Inbox:
    notifications: list[Notification]
    next_before: int | None  # pass as `before` for the next (older) page; None: no more

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Inbox:
        return cls([Notification.from_json(n) for n in raw["notifications"]],
                   raw.get("next_before"))


@dataclasses.dataclass(frozen=True)
class Stats:
    total: int
    unread: int
    by_type: dict[str, int] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Stats:
        return cls(int(raw.get("total", 0)), int(raw.get("unread", 0)), raw.get("by_type") or {})


@dataclasses.dataclass(frozen=True)
class Delivery:
    id: int
    channel: str
    user_id: str | None
    status: str
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: str | None = None
    sent_at: str | None = None
    created_at: str | None = None

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Delivery:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


@dataclasses.dataclass(frozen=True)
class Webhook:
    url: str
    secret: str | None = None  # given once, when the webhook is first made

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Webhook:
        return cls(raw["url"], raw.get("secret"))


@dataclasses.dataclass(frozen=True)
class Template:
    subject: str = ""
    text: str = ""
    html: str = ""

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Template:
        return cls(raw.get("subject") or "", raw.get("text") or "", raw.get("html") or "")


@dataclasses.dataclass(frozen=True)
class Event:
    """One event of a subscription. ``type`` is "notification" (then ``notification`` is
    set), or, with ``events=True``, "connected", "stats_update", "notification_deleted",
    "reset" (``data`` holds the server's object). ``transport``: "websocket" or "sse"."""

    type: str
    data: dict[str, Any]
    transport: str
    notification: Notification | None = None

    @property
    def id(self) -> int | None:
        return self.notification.id if self.notification is not None else None
