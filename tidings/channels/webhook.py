"""Webhooks: a signed POST of the notification JSON to a tenant's URL.

Header ``Tidings-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``. A
receiver checks it with :func:`verify_signature` (or the same few lines in its own language):
recompute the HMAC over the raw body it received, compare in constant time, and refuse a
timestamp older than five minutes so that a captured request cannot be replayed later.

The same request also carries the Standard Webhooks headers (https://www.standardwebhooks.com):
``webhook-id`` (the same on every retry of a delivery), ``webhook-timestamp`` and
``webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``, keyed with the
bytes that the secret's ``whsec_<base64>`` form encodes. So a receiver may instead verify with
the ``standardwebhooks`` library and the same secret::

    from standardwebhooks import Webhook
    payload = Webhook(secret).verify(raw_body, request_headers)  # raises if not genuine
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import socket
import time
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.netutil import Resolver

from ..outbound import FAILED, REFUSED, OutboundPolicy, refused
from .base import DeliveryError, Recipient, Rendered

HEADER = "Tidings-Signature"
TOLERANCE = 300  # seconds


class InvalidSignature(ValueError):
    """The request did not come from tidings, was changed on the way, or is a replay."""


def new_secret() -> str:
    """A signing secret for a tenant's webhook (shown to the admin once): ``whsec_`` and the
    standard base64 of 32 random bytes, the form Standard Webhooks libraries take."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def check_url(url: str, policy: OutboundPolicy | None = None) -> str:
    """Raises ValueError("url: ...") unless ``url`` is an absolute http(s) URL that the
    outbound policy does not refuse outright."""
    return (policy or OutboundPolicy()).check_url(url, "url")


class GuardedResolver(Resolver):
    """Tornado's resolver, asking the outbound policy about every address it returns: the
    HTTP client connects only to addresses checked here."""

    def initialize(self, policy: OutboundPolicy) -> None:
        self.policy = policy

    async def resolve(self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC,
                      ) -> list[tuple[int, Any]]:
        return await self.policy.resolve(host, port, family)


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``Tidings-Signature`` value for ``body``."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_digest(secret, t, body)}"


def standard_key(secret: str) -> bytes:
    """The HMAC key of ``webhook-signature``: the bytes of the base64 after ``whsec_``, decoded
    as the reference libraries decode it (characters outside the alphabet skipped, so secrets
    made before this form existed still verify with the Python library)."""
    encoded = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(encoded + "==") or secret.encode()
    except (binascii.Error, ValueError):
        return secret.encode()


def standard_headers(secret: str, message_id: str, body: bytes,
                     timestamp: int | None = None) -> dict[str, str]:
    """``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` for ``body``."""
    t = int(time.time()) if timestamp is None else timestamp
    signed = f"{message_id}.{t}.".encode() + body
    digest = hmac.new(standard_key(secret), signed, hashlib.sha256).digest()
    return {"webhook-id": message_id, "webhook-timestamp": str(t),
            "webhook-signature": "v1," + base64.b64encode(digest).decode()}


def message_id(message: Rendered) -> str:
    """The same for every try of one notification's webhook (one per notification), so a
    receiver can drop a repeat."""
    return f"ntf_{message.notification.get('id', '')}"


def verify_signature(secret: str, header: str | None, body: bytes, *,
                     tolerance: int = TOLERANCE, now: float | None = None) -> int:
    """Checks a ``Tidings-Signature`` header against the raw request body; returns its
    timestamp or raises InvalidSignature. Several ``v1`` values may be present (while a
    secret is being rotated); one match is enough."""
    t, candidates = None, []
    for item in (header or "").split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            t = int(value)
        elif key == "v1":
            candidates.append(value)
    if t is None or not candidates:
        raise InvalidSignature("malformed signature header")
    age = (time.time() if now is None else now) - t
    if abs(age) > tolerance:
        raise InvalidSignature(f"timestamp outside the {tolerance} s tolerance")
    expected = _digest(secret, t, body)
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise InvalidSignature("signature does not match the body")
    return t


def body_of(message: Rendered) -> bytes:
    return json.dumps(dict(message.notification), ensure_ascii=False,
                      separators=(",", ":")).encode()


class Webhook:
    """2xx: sent. 408, 429, 5xx, timeouts, refused connections: temporary. Other 4xx and
    redirects (not followed: the signature is for the URL the tenant gave): permanent."""

    name = "webhook"

    def __init__(self, connect_timeout: float = 5.0, request_timeout: float = 15.0,
                 policy: OutboundPolicy | None = None) -> None:
        self._connect_timeout, self._request_timeout = connect_timeout, request_timeout
        self.policy = policy or OutboundPolicy()
        self._client: AsyncHTTPClient | None = None

    def _http(self) -> AsyncHTTPClient:
        if self._client is None:  # made on first use, on the running loop
            self._client = AsyncHTTPClient(force_instance=True,
                                           resolver=GuardedResolver(policy=self.policy))
        return self._client

    async def send(self, recipient: Recipient, message: Rendered) -> str:
        target = recipient.webhook
        if target is None:
            raise DeliveryError("no webhook configured", permanent=True)
        try:
            self.policy.check_url(target.url, "url")
        except ValueError:
            raise DeliveryError(REFUSED, permanent=True) from None
        body = body_of(message)
        now = int(time.time())
        request = HTTPRequest(
            target.url, method="POST", body=body, follow_redirects=False,
            headers={"Content-Type": "application/json", "User-Agent": "tidings-webhook",
                     HEADER: sign(target.secret, body, now),
                     **standard_headers(target.secret, message_id(message), body, now)},
            connect_timeout=self._connect_timeout, request_timeout=self._request_timeout,
            streaming_callback=lambda chunk: None,  # the reply's body is not needed: don't keep it
        )
        try:
            response = await self._http().fetch(request, raise_error=False)
        except Exception as e:  # timeouts (599), refused, unresolvable, a malformed reply
            if refused(e):
                raise DeliveryError(REFUSED, permanent=True) from None
            # No errno nor address: a last_error must not map the network behind the URL.
            raise DeliveryError(FAILED, permanent=False) from None
        if 200 <= response.code < 300:
            return f"HTTP {response.code}"
        permanent = response.code < 500 and response.code not in (408, 429)
        raise DeliveryError(f"webhook answered {response.code} {response.reason}",
                            permanent=permanent)

    async def aclose(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
