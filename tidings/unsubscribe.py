"""One-click unsubscribe (RFC 8058): a signed link per recipient and notification type.

Every email carries ``List-Unsubscribe: <{public url}/unsubscribe/{token}>`` and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click``. The token is the tenant, the user and
the notification type, with an HMAC-SHA256 over them keyed with a key derived from the
server's secret: it cannot be made for, or turned into, another user, type or tenant, and
needs no expiry (unsubscribing twice changes nothing). A POST to the link turns that type's
email off in the user's preferences; a GET only shows a page that asks (mail scanners open
links). A digest, which mixes types, carries the link for ``default``: every type without a
setting of its own.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json

from . import errors, preferences
from .store import Directory

PATH = "/unsubscribe/"
ALL_TYPES = "default"
_PURPOSE = b"tidings/unsubscribe/v1"  # the derived key signs nothing else
_MAC_BYTES = 16
MAX_HEADER_URL = 900  # a header line may hold 998 characters; a longer link is left out


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def invalid_link(why: str) -> errors.TidingsError:
    return errors.TidingsError("invalid_signature", 403, f"this unsubscribe link is not "
                               f"valid: {why}", field="token")


@dataclasses.dataclass(frozen=True, slots=True)
class Unsubscription:
    """Whose email of which type a link turns off."""

    tenant_id: str
    user_id: str
    type: str


class UnsubscribeLinks:
    """Makes and reads the signed links. ``base_url`` is the server's public address
    (``--public-url``); when it is not set, the server fills in the address it listens on."""

    def __init__(self, secret: str, base_url: str | None = None) -> None:
        self._key = hmac.new(secret.encode(), _PURPOSE, hashlib.sha256).digest()
        self.base_url = base_url.rstrip("/") if base_url else None

    def _mac(self, payload: str) -> bytes:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).digest()[:_MAC_BYTES]

    def token(self, target: Unsubscription) -> str:
        body = json.dumps([target.tenant_id, target.user_id, target.type],
                          separators=(",", ":"), ensure_ascii=False)
        payload = _b64(body.encode())
        return f"{payload}.{_b64(self._mac(payload))}"

    def url(self, target: Unsubscription) -> str:
        return f"{self.base_url or ''}{PATH}{self.token(target)}"

    def headers(self, target: Unsubscription) -> dict[str, str]:
        """The two RFC 8058 headers for an email to this user about this type."""
        url = self.url(target)
        if len(url) > MAX_HEADER_URL:  # ids of hundreds of characters: no link at all
            return {}
        return {"List-Unsubscribe": f"<{url}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}

    def read(self, token: str) -> Unsubscription:
        """The unsubscription a token stands for; a 403 ``invalid_signature`` naming what is
        wrong when it is malformed or was not signed by this server."""
        payload, dot, mac = token.partition(".")
        if not dot or not payload or not mac:
            raise invalid_link("it is malformed")
        try:
            given = _unb64(mac)
        except (binascii.Error, ValueError):
            raise invalid_link("it is malformed") from None
        if not hmac.compare_digest(given, self._mac(payload)):
            raise invalid_link("the signature does not match")
        try:
            tenant_id, user_id, type_ = json.loads(_unb64(payload))
        except (binascii.Error, ValueError, TypeError):
            raise invalid_link("it is malformed") from None
        return Unsubscription(str(tenant_id), str(user_id), str(type_))


async def unsubscribe(directory: Directory, target: Unsubscription) -> None:
    """Turns email off for that type in the user's preferences, as a PUT of
    ``{"channels": {type: {"email": false}}}`` by the user would."""
    change = preferences.validate({"channels": {target.type: {"email": False}}})
    stored = await directory.preferences(target.tenant_id, target.user_id)
    await directory.put_preferences(target.tenant_id, target.user_id,
                                    preferences.apply(stored, change))
