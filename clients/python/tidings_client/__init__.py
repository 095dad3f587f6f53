"""The Python client of tidings: REST (``Tidings``, ``AsyncTidings``), a reconnecting
subscriber (``AsyncTidings.subscribe``) and the ``tidings-client`` command line."""

from .client import AsyncTidings, Tidings
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    TidingsError,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from .models import Created, Delivery, Event, Inbox, Notification, Stats, Template, Webhook

__all__ = [
    "AsyncTidings", "BadRequest", "Conflict", "Created", "Delivery", "Event", "Forbidden",
    "Inbox", "NotFound", "Notification", "PayloadTooLarge", "RateLimited", "ServerError",
    "Stats", "Template", "Tidings", "TidingsError", "Unauthorized", "Unavailable",
    "Unreachable", "Webhook",
]
