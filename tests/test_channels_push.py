"""Web push with VAPID against a local push service that verifies and decrypts like a browser's."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.peers.loop import run
from tests.peers.push import PushService, b64url_decode
from tidings.channels import (
    Channel,
    DeliveryError,
    PushSubscription,
    Recipient,
    Rendered,
    SubscriptionGone,
    build_channels,
    close_channels,
    render,
)
from tidings.channels.webpush import TTL, WebPush, push_ttl
from tidings.config import Settings
from tidings.models import iso

pytest_plugins = ["tests.peers.fixtures"]

NOTIFICATION = {"id": 42, "tenant_id": "acme", "user_id": "alice", "type": "error",
                "title": "Deploy failed", "message": "rollback started", "data": {"run": 9},
                "priority": "urgent", "created_at": "2026-11-24T04:00:00.123Z"}
SUBJECT = "mailto:ops@example.com"


def push_channel(tmp_path: Path) -> WebPush:
    channels = build_channels(Settings(vapid_subject=SUBJECT, outbound_allow=("127.0.0.1",),
                                       vapid_key=str(tmp_path / "vapid.pem")))
    push = channels["push"]
    assert isinstance(push, WebPush)
    return push


def send(channel: Channel, *recipients: Recipient, message: Rendered | None = None) -> list[str]:
    async def go() -> list[str]:
        try:
            rendered = message or render(NOTIFICATION, "push")
            return [await channel.send(r, rendered) for r in recipients]
        finally:
            await close_channels({"push": channel})
    return run(go())


def test_push_is_signed_encrypted_and_decrypted_by_the_browser(
        push_service: PushService, tmp_path: Path) -> None:
    push = push_channel(tmp_path)
    phone, laptop = (push_service.subscribe(push.public_key) for _ in range(2))

    ids = send(push, Recipient("alice", push=phone.subscription),
               Recipient("alice", push=laptop.subscription))

    first, second = push_service.inbox.wait(2)
    assert [first.endpoint, second.endpoint] == [phone.subscription.endpoint,
                                                 laptop.subscription.endpoint]
    assert first.payload == {"title": "Deploy failed", "body": "rollback started", "id": 42,
                             "tenant_id": "acme", "type": "error", "priority": "urgent",
                             "created_at": "2026-11-24T04:00:00.123Z", "data": {"run": 9}}
    assert first.claims["sub"] == SUBJECT
    assert first.claims["aud"] == push_service.origin
    assert first.claims["exp"] > time.time()
    assert first.urgency == "high" and first.ttl > 0
    assert ids == [f"{push_service.origin}/message/1", f"{push_service.origin}/message/2"]


def test_gone_subscription_raises_subscription_gone(push_service: PushService,
                                                    tmp_path: Path) -> None:
    push = push_channel(tmp_path)
    browser = push_service.subscribe(push.public_key)
    push_service.unsubscribe(browser.subscription.endpoint)

    with pytest.raises(SubscriptionGone) as caught:
        send(push, Recipient("alice", push=browser.subscription))
    assert caught.value.endpoint == browser.subscription.endpoint
    assert caught.value.permanent
    assert len(push_service.inbox) == 0


def test_unknown_endpoint_raises_subscription_gone(push_service: PushService,
                                                   tmp_path: Path) -> None:
    push = push_channel(tmp_path)
    browser = push_service.subscribe(push.public_key)
    forgotten = PushSubscription(push_service.origin + "/push/0000", browser.subscription.p256dh,
                                 browser.subscription.auth)
    with pytest.raises(SubscriptionGone):
        send(push, Recipient("alice", push=forgotten))


def test_key_is_kept_across_starts_and_private(push_service: PushService,
                                               tmp_path: Path) -> None:
    first = push_channel(tmp_path)
    mode = stat.S_IMODE(os.stat(tmp_path / "vapid.pem").st_mode)
    assert mode == 0o600
    browser = push_service.subscribe(first.public_key)

    again = push_channel(tmp_path)  # a restart: same key, so old subscriptions still work
    assert again.public_key == first.public_key
    send(again, Recipient("alice", push=browser.subscription))
    assert len(push_service.inbox.wait(1)) == 1


def test_public_key_is_an_uncompressed_p256_point(tmp_path: Path) -> None:
    key = push_channel(tmp_path).public_key
    assert "=" not in key  # base64url without padding, as pushManager.subscribe() takes it
    raw = b64url_decode(key)
    assert len(raw) == 65 and raw[0] == 4
    ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)  # a point on the curve


def test_a_different_key_is_refused_by_the_push_service(push_service: PushService,
                                                        tmp_path: Path) -> None:
    browser = push_service.subscribe(push_channel(tmp_path / "a").public_key)
    other = push_channel(tmp_path / "b")  # e.g. the key file was lost and made anew
    with pytest.raises(DeliveryError) as caught:
        send(other, Recipient("alice", push=browser.subscription))
    assert caught.value.permanent and "403" in str(caught.value)
    assert "applicationServerKey" in push_service.refusals.wait(1)[0]


def test_push_service_unreachable_is_temporary(push_service: PushService,
                                               tmp_path: Path) -> None:
    push = push_channel(tmp_path)
    browser = push_service.subscribe(push.public_key)
    push_service.close()
    with pytest.raises(DeliveryError) as caught:
        send(push, Recipient("alice", push=browser.subscription))
    assert not caught.value.permanent and not isinstance(caught.value, SubscriptionGone)


def test_unusable_subscription_keys_are_permanent(push_service: PushService,
                                                  tmp_path: Path) -> None:
    push = push_channel(tmp_path)
    browser = push_service.subscribe(push.public_key)
    broken = PushSubscription(browser.subscription.endpoint, "BAAA" * 21 + "A", "A" * 22)
    with pytest.raises(DeliveryError) as caught:
        send(push, Recipient("alice", push=broken))
    assert caught.value.permanent and "unusable push subscription" in str(caught.value)
    assert len(push_service.inbox) == 0


@pytest.mark.parametrize("body, problem", [
    ({"endpoint": "ftp://x/y", "keys": {}}, "endpoint"),
    ({"endpoint": "https://push.example/x"}, "keys"),
    ({"endpoint": "https://push.example/x", "keys": {"p256dh": "AAAA", "auth": "A" * 22}},
     "keys.p256dh"),
])
def test_subscription_json_is_checked(body: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match=f"^{problem}:"):
        PushSubscription.from_json(body)


def test_a_notification_that_expires_is_pushed_with_the_time_it_has_left(
        push_service: PushService, tmp_path: Path) -> None:
    push = push_channel(tmp_path)
    browser = push_service.subscribe(push.public_key)
    expiring = {**NOTIFICATION, "expires_at": iso(time.time() + 90)}
    send(push, Recipient("alice", push=browser.subscription), message=render(expiring, "push"))
    [got] = push_service.inbox.wait(1)
    assert 80 <= got.ttl <= 90
    assert push_ttl(NOTIFICATION, time.time()) == TTL  # no expiry: the default day
    assert push_ttl({"expires_at": iso(time.time() - 5)}, time.time()) == 0
