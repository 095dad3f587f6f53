"""What every delivery channel shares: the data it is given, the one method it has, its errors."""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit


class ConfigError(Exception):
    """A channel setting that cannot work; raised at start so the server refuses to run."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class DeliveryError(Exception):
    """A send that did not happen. ``permanent``: trying again cannot help (bad address,
    refused content); otherwise the provider was unreachable or busy and a retry may work."""

    MAX_MESSAGE = 300  # it becomes a delivery's last_error: a peer's reply text is cut short

    def __init__(self, message: str, permanent: bool) -> None:
        if len(message) > self.MAX_MESSAGE:
            message = message[:self.MAX_MESSAGE - 1] + "…"
        super().__init__(message)
        self.permanent = permanent


class SubscriptionGone(DeliveryError):
    """The push service answered 404 or 410: the browser dropped this subscription for good,
    so the caller removes it."""

    def __init__(self, endpoint: str, status: int) -> None:
        super().__init__(f"push subscription gone (HTTP {status})", permanent=True)
        self.endpoint = endpoint


def _b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


@dataclasses.dataclass(frozen=True, slots=True)
class PushSubscription:
    """A browser's ``PushSubscription``: where to POST, and the keys to encrypt for."""

    endpoint: str
    p256dh: str  # base64url of the browser's P-256 public key (65 bytes, uncompressed)
    auth: str  # base64url of the 16-byte auth secret

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> PushSubscription:
        """Checks the JSON a browser gives (``subscription.toJSON()``); raises ValueError whose
        message starts with the field at fault."""
        endpoint = body.get("endpoint")
        if not isinstance(endpoint, str) or urlsplit(endpoint).scheme not in ("https", "http") \
                or not urlsplit(endpoint).hostname:
            raise ValueError("endpoint: must be the push service's http(s) URL")
        keys = body.get("keys")
        if not isinstance(keys, Mapping):
            raise ValueError("keys: must be an object with p256dh and auth")
        for name, size in (("p256dh", 65), ("auth", 16)):
            value = keys.get(name)
            try:
                raw = _b64url_decode(value) if isinstance(value, str) else b""
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != size or (name == "p256dh" and raw[0] != 4):
                raise ValueError(f"keys.{name}: not a base64url {size}-byte key")
        return cls(endpoint, keys["p256dh"], keys["auth"])

    def to_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookTarget:
    """A tenant's webhook: where to POST, and the secret that signs it."""

    url: str
    secret: str

    def __repr__(self) -> str:  # the secret never reaches a log line
        return f"WebhookTarget(url={self.url!r}, secret='**********')"


@dataclasses.dataclass(frozen=True, slots=True)
class Recipient:
    """One destination of one delivery. Channels read only the field they need.

    ``push`` holds a single subscription: a user with three browsers gets three push
    deliveries, so a retry never repeats a browser that already has the message."""

    user_id: str | None
    email: str | None = None
    phone: str | None = None  # E.164
    push: PushSubscription | None = None
    webhook: WebhookTarget | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Rendered:
    """A notification made ready for a channel: templates fill subject/text/html;
    ``notification`` is the notification's JSON (the webhook body, the push payload's data);
    ``headers`` go into an email as they are."""

    subject: str = ""
    text: str = ""
    html: str = ""
    notification: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # Extra email headers, ASCII only (List-Unsubscribe and List-Unsubscribe-Post).
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


class Channel(Protocol):
    """One way out: email, sms, push or webhook."""

    name: str

    async def send(self, recipient: Recipient, message: Rendered) -> str:
        """Delivers once and returns the provider's id for it; raises DeliveryError."""
        ...

    async def aclose(self) -> None:
        """Releases connections; called once at shutdown."""
        ...
