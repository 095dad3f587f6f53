"""Amazon SNS messages posted to an HTTP(S) endpoint: checked, and subscriptions confirmed.

A message is believed only when its signature verifies with the certificate that its
``SigningCertURL`` names (SignatureVersion 1: RSA with SHA-1; 2: RSA with SHA-256, over the
"Key\\nvalue\\n" lines of the fields SNS signs, in their order). That URL, and a subscription's
``SubscribeURL``, must be https on an ``sns.REGION.amazonaws.com`` host, so a forger cannot
name a certificate of its own; ``--sns-host`` adds one host (an emulator's, in tests), reached
over http or https. Every fetch goes through the outbound policy (public addresses only,
``--outbound-allow``), follows no redirect, and is bounded in time and size. Certificates are
kept once fetched.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import logging
import re
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from . import errors
from .channels.webhook import GuardedResolver
from .outbound import OutboundPolicy, refused

log = logging.getLogger("tidings.sns")

TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
_CONFIRMATION = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                 "Type")
SIGNED = {"Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
          "SubscriptionConfirmation": _CONFIRMATION, "UnsubscribeConfirmation": _CONFIRMATION}
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
# An AWS region's SNS host, as SNS names it (sns.us-east-1.amazonaws.com): not any name under
# amazonaws.com, so a caller cannot make tidings look up host after host.
_AWS_HOST = re.compile(r"^sns\.[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-[0-9]\.amazonaws\.com(\.cn)?$")
FETCHES = 2  # fetches under way at once; past that a post is told to come again (SNS retries)
CACHED_CERTS = 32
MAX_CERT = 64 * 1024
TIMEOUTS = (5.0, 10.0)  # connect, whole request


def invalid_signature(message: str, field: str | None = None) -> errors.TidingsError:
    return errors.TidingsError("invalid_signature", 403, message, field=field)


def parse(envelope: Any) -> dict[str, str]:
    """The SNS message's fields, checked for shape (a 400 naming the field), not yet trusted."""
    if not isinstance(envelope, dict):
        raise errors.invalid("body", "must be an SNS message (a JSON object)")
    kind = envelope.get("Type")
    if kind not in TYPES:
        raise errors.invalid("Type", f"must be one of {', '.join(TYPES)}")
    required = {k for k in SIGNED[kind] if k != "Subject"} | {
        "SignatureVersion", "Signature", "SigningCertURL"}
    message: dict[str, str] = {}
    for key in sorted(required | {"Subject"}):
        value = envelope.get(key)
        if key not in required:  # Subject: signed when SNS sent one
            if isinstance(value, str):
                message[key] = value
            continue
        if not isinstance(value, str) or not value:
            raise errors.invalid(key, "is required (a string)")
        message[key] = value
    if message["SignatureVersion"] not in _HASHES:
        raise errors.invalid("SignatureVersion", "must be 1 or 2")
    return message


def signed_text(message: dict[str, str]) -> bytes:
    """What SNS signs: "Key\\nvalue\\n" for each signed field present, in order."""
    return "".join(f"{key}\n{message[key]}\n" for key in SIGNED[message["Type"]]
                   if key in message).encode()


class SnsVerifier:
    def __init__(self, policy: OutboundPolicy, extra_host: str | None = None) -> None:
        self.policy = policy
        self.extra_host = (extra_host or "").lower() or None
        self._certs: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self._client: AsyncHTTPClient | None = None
        self._fetching = 0

    def trusted_url(self, url: str, field: str) -> str:
        """``url`` when SNS itself could have made it; else a 403 naming ``field``."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise invalid_signature(f"{field}: is not a URL", field) from None
        host = (parts.hostname or "").lower()
        if parts.scheme == "https" and _AWS_HOST.match(host):
            return url
        if self.extra_host and parts.scheme in ("http", "https") and \
                self.extra_host in (host, f"{host}:{port}"):
            return url
        raise invalid_signature(f"{field}: not an https URL of sns.REGION.amazonaws.com", field)

    async def verify(self, message: dict[str, str]) -> None:
        """Raises a 403 ``invalid_signature`` unless SNS signed this message."""
        url = self.trusted_url(message["SigningCertURL"], "SigningCertURL")
        key = self._certs.get(url)
        if key is None:
            key = self._public_key(await self.fetch(url, "SigningCertURL", MAX_CERT))
            self._certs[url] = key
            while len(self._certs) > CACHED_CERTS:
                self._certs.popitem(last=False)
        else:
            self._certs.move_to_end(url)
        try:
            signature = base64.b64decode(message["Signature"], validate=True)
        except (binascii.Error, ValueError):
            raise invalid_signature("Signature: is not base64", "Signature") from None
        algorithm = _HASHES[message["SignatureVersion"]]()
        try:
            key.verify(signature, signed_text(message), padding.PKCS1v15(), algorithm)
        except InvalidSignature:
            raise invalid_signature("Signature: does not match the message", "Signature") \
                from None

    @staticmethod
    def _public_key(pem: bytes) -> rsa.RSAPublicKey:
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise invalid_signature("SigningCertURL: is not a PEM certificate",
                                    "SigningCertURL") from None
        now = datetime.datetime.now(datetime.UTC)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise invalid_signature("SigningCertURL: the certificate is not valid now",
                                    "SigningCertURL")
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise invalid_signature("SigningCertURL: not an RSA certificate", "SigningCertURL")
        return key

    async def confirm(self, message: dict[str, str]) -> None:
        """Confirms a subscription by fetching its SubscribeURL, as AWS asks."""
        url = self.trusted_url(message["SubscribeURL"], "SubscribeURL")
        await self.fetch(url, "SubscribeURL", MAX_CERT)
        log.info("SNS subscription to %s confirmed", message["TopicArn"])

    async def fetch(self, url: str, field: str, limit: int) -> bytes:
        """A GET through the outbound policy: the body, or an error naming ``field`` (403
        when the destination is not allowed, 503 when it could not be fetched now)."""
        # Unauthenticated posts cause these fetches: a few at a time, never a queue, so a flood
        # cannot tie up the resolver threads that webhooks and web push share.
        if self._fetching >= FETCHES:
            raise errors.unavailable(f"{field}: busy fetching; try again")
        self._fetching += 1
        try:
            return await self._fetch(url, field, limit)
        finally:
            self._fetching -= 1

    async def _fetch(self, url: str, field: str, limit: int) -> bytes:
        if self._client is None:  # made on first use, on the running loop
            self._client = AsyncHTTPClient(force_instance=True,
                                           resolver=GuardedResolver(policy=self.policy))
        chunks: list[bytes] = []
        size = 0

        def keep(chunk: bytes) -> None:
            nonlocal size
            size += len(chunk)
            if size <= limit:
                chunks.append(chunk)

        request = HTTPRequest(url, follow_redirects=False, connect_timeout=TIMEOUTS[0],
                              request_timeout=TIMEOUTS[1], streaming_callback=keep,
                              headers={"User-Agent": "tidings-sns"})
        try:
            response = await self._client.fetch(request, raise_error=False)
        except Exception as e:  # refused, unresolvable, a malformed reply
            if refused(e):
                raise invalid_signature(f"{field}: destination not allowed", field) from None
            log.warning("SNS %s %s could not be fetched: %s", field, url, e)
            raise errors.unavailable(f"{field}: could not be fetched; try again") from None
        if response.code != 200 or size > limit:
            log.warning("SNS %s %s answered %d (%d bytes)", field, url, response.code, size)
            raise errors.unavailable(f"{field}: answered {response.code}; try again")
        return b"".join(chunks)

    async def aclose(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
