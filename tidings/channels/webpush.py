"""Web push (RFC 8030) with VAPID (RFC 8292) and aes128gcm payloads (RFC 8291), via pywebpush.

pywebpush has an async API (``webpush_async``, on aiohttp); one aiohttp session is kept so
that pushes to the same service reuse their connection."""

from __future__ import annotations

import base64
import datetime
import json
import logging
import os
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import aiohttp.abc
import py_vapid
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pywebpush import WebPushException, webpush_async

from ..outbound import FAILED, REFUSED, OutboundPolicy, refused
from .base import ConfigError, DeliveryError, Recipient, Rendered, SubscriptionGone

log = logging.getLogger("tidings.channels")

TTL = 24 * 3600  # how long the push service keeps a message for a browser that is offline
MAX_PAYLOAD = 3000  # push services take ~4 KiB after encryption; `data` is dropped above this
URGENCY = {"low": "low", "normal": "normal", "high": "high", "urgent": "high"}


def load_or_create_key(path: str) -> ec.EllipticCurvePrivateKey:
    """The VAPID private key at ``path``; made (P-256, PEM, mode 0600) when the file is missing.
    Browsers bind each subscription to this key, so it is kept across restarts."""
    try:
        with open(path, "rb") as f:
            pem = f.read()
    except FileNotFoundError:
        return _create_key(path)
    except OSError as e:
        raise ConfigError("--vapid-key", f"cannot read {path}: {e.strerror}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError("--vapid-key", f"{path} is not a PEM P-256 (prime256v1) private key; "
                                         "move it away to have a new one made")
    return key


def _create_key(path: str) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        # O_EXCL: if another start made it a moment ago, keep theirs.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_or_create_key(path)
    except OSError as e:
        raise ConfigError("--vapid-key", f"cannot create {path}: {e.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    log.info("web push: made a new VAPID key at %s", path)
    return key


def public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    """The application server key a page passes to ``pushManager.subscribe()``."""
    raw = key.public_key().public_bytes(serialization.Encoding.X962,
                                        serialization.PublicFormat.UncompressedPoint)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def push_ttl(notification: Any, now: float) -> int:
    """How long the push service may keep it for an offline browser: the day it is kept by
    default, or what is left until the notification expires (at least 0: deliver now or
    never)."""
    expires_at = notification.get("expires_at")
    if not expires_at:
        return TTL
    left = datetime.datetime.fromisoformat(expires_at).timestamp() - now
    return max(0, min(TTL, int(left)))


def payload(message: Rendered) -> str:
    """What the service worker receives: title and body, plus the notification's fields
    (its `group` and `actions` when it has them: a thread tag and buttons to show)."""
    n = message.notification
    body: dict[str, Any] = {
        "title": message.subject, "body": message.text,
        **{k: n[k] for k in ("id", "tenant_id", "type", "priority", "created_at", "group",
                             "actions") if k in n},
        "data": n.get("data"),
    }
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    if len(text.encode()) > MAX_PAYLOAD:
        body["data"] = None
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return text


class GuardedResolver(aiohttp.abc.AbstractResolver):
    """aiohttp's resolver, asking the outbound policy about every address: aiohttp connects
    only to what this returns. (aiohttp skips resolvers for literal IPs: ``send`` checks those
    itself, with the same policy.)"""

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        return [{"hostname": host, "host": addr[0], "port": addr[1], "family": fam,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}
                for fam, addr in await self.policy.resolve(host, port, family)]

    async def close(self) -> None:
        pass


class _NoRedirects:
    """What pywebpush needs of a session (``post``), never following a redirect: a push
    service that answers 3xx is not sent on to wherever it points."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    def post(self, url: str, **kwargs: Any) -> Any:
        return self.session.post(url, allow_redirects=False, **kwargs)


class WebPush:
    name = "push"

    def __init__(self, key: ec.EllipticCurvePrivateKey, subject: str,
                 timeout: float = 15.0, policy: OutboundPolicy | None = None) -> None:
        self._vapid = py_vapid.Vapid02(private_key=key)
        self.subject = subject
        self.public_key = public_key_b64(key)
        self._timeout = timeout
        self.policy = policy or OutboundPolicy()
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, key_path: str, subject: str,
                      policy: OutboundPolicy | None = None) -> WebPush:
        problem = "must be a contact like mailto:ops@example.com or https://example.com"
        if urlsplit(subject).scheme not in ("mailto", "https"):
            raise ConfigError("--vapid-subject", problem)
        push = cls(load_or_create_key(key_path), subject, policy=policy)
        try:  # py-vapid checks the subject's form when signing (no path after https://host)
            push._vapid.sign({"sub": subject, "aud": "https://push.example",
                              "exp": int(time.time()) + 60})
        except py_vapid.VapidException:
            raise ConfigError("--vapid-subject", problem) from None
        log.info("web push: on, VAPID key %s", key_path)
        return push

    async def send(self, recipient: Recipient, message: Rendered) -> str:
        sub = recipient.push
        if sub is None:
            raise DeliveryError("no push subscription", permanent=True)
        try:
            self.policy.check_url(sub.endpoint, "endpoint")
        except ValueError:
            raise DeliveryError(REFUSED, permanent=True) from None
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.policy))
            self._session = aiohttp.ClientSession(connector=connector)
        priority = str(message.notification.get("priority", "normal"))
        try:
            response = await webpush_async(
                sub.to_json(), payload(message),
                vapid_private_key=self._vapid,
                vapid_claims={"sub": self.subject},  # aud and exp are filled in per push
                ttl=push_ttl(message.notification, time.time()), timeout=self._timeout,
                headers={"Urgency": URGENCY.get(priority, "normal")},
                aiohttp_session=_NoRedirects(self._session),
            )
        except WebPushException as e:
            status = e.status_code
            if status is None:  # refused before sending: the subscription's keys are unusable
                raise DeliveryError(f"unusable push subscription: {e.message}", True) from e
            if status in (404, 410):
                raise SubscriptionGone(sub.endpoint, status) from e
            permanent = 300 <= status < 500 and status not in (408, 429)  # 3xx: not followed
            reason = e.response.reason if e.response is not None else ""
            raise DeliveryError(f"push service answered {status} {reason}".strip(),
                                permanent=permanent) from e
        except ValueError as e:  # from the encryption: the browser's key is not a P-256 point
            raise DeliveryError(f"unusable push subscription: {e}", permanent=True) from e
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            if refused(e):
                raise DeliveryError(REFUSED, permanent=True) from None
            raise DeliveryError(FAILED, permanent=False) from None  # no errno, no address
        assert not isinstance(response, str)  # a str only comes back with curl=True
        return response.headers.get("Location") or f"HTTP {response.status}"

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
