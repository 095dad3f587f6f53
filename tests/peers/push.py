"""A web-push service and the browsers subscribed to it, as real browsers and services behave.

The service checks the VAPID header (RFC 8292): an ES256 JWT signed by the key in ``k``,
``aud`` = its own origin, ``exp`` in the future (at most 24 h), ``sub`` present, and ``k``
equal to the application server key the subscription was made with. The browser side then
decrypts the aes128gcm body (RFC 8291) with the subscription's private key and auth secret,
as a service worker's ``push`` event would see it."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import time
from typing import Any

import http_ece
import jwt
import tornado.web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tidings.channels import PushSubscription

from .loop import Inbox, LoopThread


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


@dataclasses.dataclass
class Browser:
    """One subscription, with the secrets only the browser holds."""

    subscription: PushSubscription
    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes
    application_server_key: str


@dataclasses.dataclass
class PushMessage:
    endpoint: str
    payload: dict[str, Any]  # the decrypted JSON the service worker gets
    claims: dict[str, Any]  # the verified VAPID JWT
    ttl: int
    urgency: str | None


class _PushHandler(tornado.web.RequestHandler):
    def initialize(self, service: PushService) -> None:
        self.service = service

    def post(self, token: str) -> None:
        endpoint = self.service.origin + self.request.path
        browser = self.service.browsers.get(endpoint)
        if browser is None or endpoint in self.service.gone:
            self.set_status(410 if browser else 404)
            return
        try:
            message = self._receive(browser)
        except tornado.web.HTTPError as e:
            self.service.refusals.add(e.reason)
            raise
        self.service.inbox.add(message)
        self.set_status(201)
        self.set_header("Location", f"{self.service.origin}/message/{len(self.service.inbox)}")

    def _receive(self, browser: Browser) -> PushMessage:
        def refuse(status: int, reason: str) -> tornado.web.HTTPError:
            return tornado.web.HTTPError(status, reason=reason)

        scheme, _, params = self.request.headers.get("Authorization", "").partition(" ")
        fields = dict(p.strip().partition("=")[::2] for p in params.split(","))
        if scheme.lower() != "vapid" or not fields.get("t") or not fields.get("k"):
            raise refuse(401, "missing vapid authorization")
        if fields["k"] != browser.application_server_key:
            raise refuse(403, "key differs from the subscription's applicationServerKey")
        try:
            public_key = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), b64url_decode(fields["k"]))
            claims = jwt.decode(fields["t"], public_key, algorithms=["ES256"],
                                audience=self.service.origin,
                                options={"require": ["aud", "exp", "sub"]})
        except (ValueError, jwt.PyJWTError) as e:
            raise refuse(401, f"bad vapid token: {e}") from None
        if claims["exp"] > time.time() + 24 * 3600:
            raise refuse(401, "vapid exp more than 24 hours ahead")
        if self.request.headers.get("Content-Encoding") != "aes128gcm":
            raise refuse(415, "content-encoding must be aes128gcm")
        if "TTL" not in self.request.headers:
            raise refuse(400, "missing TTL")
        try:
            plain = http_ece.decrypt(self.request.body, private_key=browser.private_key,
                                     auth_secret=browser.auth_secret, version="aes128gcm")
        except Exception as e:  # http_ece raises plain Exceptions for bad ciphertext
            raise refuse(400, f"cannot decrypt: {type(e).__name__}") from None
        return PushMessage(browser.subscription.endpoint, json.loads(plain), claims,
                           int(self.request.headers["TTL"]), self.request.headers.get("Urgency"))


class PushService:
    def __init__(self) -> None:
        self.inbox = Inbox()
        self.browsers: dict[str, Browser] = {}
        self.gone: set[str] = set()
        self.refusals = Inbox()  # why a push was refused, for a test that expects one
        self._thread = LoopThread("push-peer")
        port = self._thread.serve(tornado.web.Application(
            [(r"/push/(\w+)", _PushHandler, {"service": self})]))

        self.origin = f"http://127.0.0.1:{port}"

    def subscribe(self, application_server_key: str) -> Browser:
        """What ``pushManager.subscribe({applicationServerKey})`` makes in a browser."""
        private_key = ec.generate_private_key(ec.SECP256R1())
        p256dh = private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        auth_secret = os.urandom(16)
        endpoint = f"{self.origin}/push/{os.urandom(8).hex()}"
        browser = Browser(PushSubscription(endpoint, b64url(p256dh), b64url(auth_secret)),
                          private_key, auth_secret, application_server_key)
        self.browsers[endpoint] = browser
        return browser

    def unsubscribe(self, endpoint: str) -> None:
        """The browser dropped it: the service answers 410 Gone from now on."""
        self.gone.add(endpoint)

    def close(self) -> None:
        self._thread.close()
