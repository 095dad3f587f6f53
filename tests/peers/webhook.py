"""A tenant's webhook receiver: verifies ``Tidings-Signature`` the way the docs tell
receivers to and the Standard Webhooks headers with the ``standardwebhooks`` library, keeps
what it accepted, and answers with a status a test can choose."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import tornado.web
from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from tidings.channels import InvalidSignature, WebhookTarget, new_secret, verify_signature

from .loop import Inbox, LoopThread


@dataclasses.dataclass
class Hook:
    notification: dict[str, Any]
    timestamp: int
    headers: dict[str, str]


class _HookHandler(tornado.web.RequestHandler):
    def initialize(self, receiver: WebhookReceiver) -> None:
        self.receiver = receiver

    def post(self) -> None:
        header = self.request.headers.get("Tidings-Signature")
        try:
            timestamp = verify_signature(self.receiver.secret, header, self.request.body)
        except InvalidSignature as e:
            self.receiver.refusals.add(str(e))
            raise tornado.web.HTTPError(401, reason="bad signature") from None
        try:
            StandardWebhook(self.receiver.secret).verify(self.request.body,
                                                         dict(self.request.headers))
        except WebhookVerificationError as e:
            self.receiver.refusals.add(f"standard webhooks: {e}")
            raise tornado.web.HTTPError(401, reason="bad signature") from None
        if self.receiver.status >= 300:
            raise tornado.web.HTTPError(self.receiver.status)
        self.receiver.inbox.add(Hook(json.loads(self.request.body), timestamp,
                                     dict(self.request.headers)))
        self.set_status(self.receiver.status)


class WebhookReceiver:
    def __init__(self) -> None:
        self.secret = new_secret()
        self.status = 204  # what it answers a verified request with
        self.inbox = Inbox()
        self.refusals = Inbox()
        self._thread = LoopThread("webhook-peer")
        port = self._thread.serve(tornado.web.Application(
            [(r"/hook", _HookHandler, {"receiver": self})]))

        self.url = f"http://127.0.0.1:{port}/hook"

    @property
    def target(self) -> WebhookTarget:
        return WebhookTarget(self.url, self.secret)

    def close(self) -> None:
        self._thread.close()
