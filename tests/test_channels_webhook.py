"""Webhooks: signed POSTs to a receiver that verifies them, and the verify function itself."""

from __future__ import annotations

import base64
import json
import time

import pytest
from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError
from tornado.testing import bind_unused_port

from tests.peers.loop import run
from tests.peers.webhook import WebhookReceiver
from tidings.channels import (
    DeliveryError,
    InvalidSignature,
    Recipient,
    WebhookTarget,
    render,
    sign,
    verify_signature,
)
from tidings.channels.webhook import Webhook, new_secret, standard_headers
from tidings.outbound import OutboundPolicy

pytest_plugins = ["tests.peers.fixtures"]

NOTIFICATION = {"id": 42, "tenant_id": "acme", "user_id": "alice", "type": "info",
                "title": "Build finished", "message": "main is green ✓", "data": {"build": 7},
                "priority": "normal", "created_at": "2026-11-24T04:00:00.123Z",
                "read_at": None}
SECRET = "whsec_test"
LOOPBACK = OutboundPolicy(["127.0.0.1"])  # the receivers here listen on loopback


def send(target: WebhookTarget) -> str:
    return run(Webhook(policy=LOOPBACK).send(Recipient("alice", webhook=target),
                              render(NOTIFICATION, "webhook")))


def test_webhook_posts_the_signed_notification(webhook_receiver: WebhookReceiver) -> None:
    before = int(time.time())
    assert send(webhook_receiver.target) == "HTTP 204"

    [hook] = webhook_receiver.inbox.wait(1)
    assert hook.notification == NOTIFICATION
    assert before <= hook.timestamp <= time.time()
    assert hook.headers["Content-Type"] == "application/json"


def test_standard_webhooks_headers_verify_and_keep_their_id_across_tries(
        webhook_receiver: WebhookReceiver) -> None:
    # The receiver refuses anything that the standardwebhooks library does not verify.
    assert send(webhook_receiver.target) == "HTTP 204"
    assert send(webhook_receiver.target) == "HTTP 204"  # a retry of the same delivery
    first, again = webhook_receiver.inbox.wait(2)
    assert first.headers["Webhook-Id"] == again.headers["Webhook-Id"] == "ntf_42"
    assert first.headers["Webhook-Signature"].startswith("v1,")
    assert int(first.headers["Webhook-Timestamp"]) == first.timestamp
    assert list(webhook_receiver.refusals.items) == []


def test_secrets_are_in_the_standard_form_and_old_ones_still_verify(
        webhook_receiver: WebhookReceiver) -> None:
    made = new_secret()
    assert made.startswith("whsec_") and len(base64.b64decode(made[6:], validate=True)) == 32
    # A secret made before the standard form (urlsafe alphabet) still verifies both ways.
    webhook_receiver.secret = "whsec_" + "-_Ab" * 10 + "xy"
    assert send(webhook_receiver.target) == "HTTP 204"
    assert len(webhook_receiver.inbox.wait(1)) == 1


def test_a_wrong_standard_signature_is_refused(webhook_receiver: WebhookReceiver) -> None:
    body = b'{"id":1}'
    headers = standard_headers("whsec_" + base64.b64encode(b"k" * 32).decode(), "ntf_1", body)
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(webhook_receiver.secret).verify(body, headers)
    StandardWebhook("whsec_" + base64.b64encode(b"k" * 32).decode()).verify(body, headers)


def test_wrong_secret_is_refused_by_the_receiver(webhook_receiver: WebhookReceiver) -> None:
    with pytest.raises(DeliveryError) as caught:
        send(WebhookTarget(webhook_receiver.url, "whsec_not_theirs"))
    assert caught.value.permanent and "401" in str(caught.value)
    assert webhook_receiver.refusals.wait(1) == ["signature does not match the body"]
    assert len(webhook_receiver.inbox) == 0


@pytest.mark.parametrize("status, permanent", [(500, False), (503, False), (429, False),
                                               (408, False), (404, True), (410, True)])
def test_status_decides_whether_to_retry(webhook_receiver: WebhookReceiver, status: int,
                                         permanent: bool) -> None:
    webhook_receiver.status = status
    with pytest.raises(DeliveryError) as caught:
        send(webhook_receiver.target)
    assert caught.value.permanent is permanent and str(status) in str(caught.value)


def test_unreachable_receiver_is_temporary() -> None:
    sock, port = bind_unused_port()
    sock.close()  # nothing listens there now
    with pytest.raises(DeliveryError) as caught:
        send(WebhookTarget(f"http://127.0.0.1:{port}/hook", SECRET))
    assert not caught.value.permanent


BODY = json.dumps(NOTIFICATION).encode()


def test_verify_accepts_a_fresh_signature() -> None:
    header = sign(SECRET, BODY)
    assert abs(verify_signature(SECRET, header, BODY) - time.time()) < 5


def test_verify_accepts_any_of_several_signatures() -> None:
    t = int(time.time())
    header = sign(SECRET, BODY, t) + ",v1=" + "0" * 64
    assert verify_signature(SECRET, header, BODY) == t


@pytest.mark.parametrize("header, body, reason", [
    (sign(SECRET, BODY), BODY.replace(b"green", b"red!!"), "does not match"),
    (sign("whsec_other", BODY), BODY, "does not match"),
    (sign(SECRET, BODY, int(time.time()) - 600), BODY, "tolerance"),  # a replay
    (sign(SECRET, BODY, int(time.time()) + 600), BODY, "tolerance"),
    ("v1=" + sign(SECRET, BODY).split("v1=")[1], BODY, "malformed"),
    ("t=123", BODY, "malformed"),
    (None, BODY, "malformed"),
])
def test_verify_refuses(header: str | None, body: bytes, reason: str) -> None:
    with pytest.raises(InvalidSignature, match=reason):
        verify_signature(SECRET, header, body)


def test_verify_refuses_an_old_signature_that_was_valid_when_made() -> None:
    t = int(time.time())
    header = sign(SECRET, BODY, t)
    assert verify_signature(SECRET, header, BODY, now=t + 299) == t
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify_signature(SECRET, header, BODY, now=t + 301)
