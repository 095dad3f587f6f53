"""Email over the SES API and SMS over the SNS API, against moto in server mode."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest
from tornado.testing import bind_unused_port

from tests.peers.aws import REGION, MotoPeer
from tests.peers.loop import run
from tidings.channels import (
    Channel,
    DeliveryError,
    Recipient,
    Rendered,
    build_channels,
    close_channels,
    render,
)
from tidings.config import Secret, Settings

pytest_plugins = ["tests.peers.fixtures"]

NOTIFICATION = {"id": 7, "tenant_id": "acme", "user_id": "alice", "type": "info",
                "title": "Build finished", "message": "main is green", "data": {"build": 7},
                "priority": "normal", "created_at": "2026-11-24T04:00:00.123Z"}
ALICE = Recipient("alice", email="alice@example.com", phone="+14155550123")
SENDER = "noreply@example.com"


def channels_for(peer: MotoPeer, tmp_path: Path) -> dict[str, Channel]:
    return build_channels(Settings(
        email_url=Secret(f"ses://{REGION}"), email_from=f"Tidings <{SENDER}>",
        sms_url=f"sns://{REGION}", aws_endpoint_url=peer.endpoint_url,
        vapid_key=str(tmp_path / "vapid.pem")))


def send(channels: dict[str, Channel], name: str, recipient: Recipient,
         message: Rendered) -> str:
    async def go() -> str:
        try:
            return await channels[name].send(recipient, message)
        finally:
            await close_channels(channels)
    return run(go())


def test_ses_sends_the_mime_message(aws_peer: MotoPeer, tmp_path: Path) -> None:
    aws_peer.verify_sender(SENDER)
    channels = channels_for(aws_peer, tmp_path)

    message_id = send(channels, "email", ALICE, render(NOTIFICATION, "email"))

    [sent] = aws_peer.sent_emails()
    assert sent["id"] == message_id
    assert "alice@example.com" in sent["destinations"]
    msg = email.message_from_string(sent["raw_data"], policy=email.policy.default)
    assert msg["Subject"] == "Build finished"
    assert msg["From"] == f"Tidings <{SENDER}>"
    text, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert text is not None and "main is green" in text.get_content()
    assert html is not None and "<h2>Build finished</h2>" in html.get_content()


def test_ses_unverified_sender_is_permanent(aws_peer: MotoPeer, tmp_path: Path) -> None:
    channels = channels_for(aws_peer, tmp_path)
    with pytest.raises(DeliveryError) as caught:
        send(channels, "email", ALICE, render(NOTIFICATION, "email"))
    assert caught.value.permanent and "MessageRejected" in str(caught.value)
    assert aws_peer.sent_emails() == []


def test_sns_sends_the_sms(aws_peer: MotoPeer, tmp_path: Path) -> None:
    channels = channels_for(aws_peer, tmp_path)

    message_id = send(channels, "sms", ALICE, render(NOTIFICATION, "sms"))

    assert aws_peer.sent_sms() == [{"message_id": message_id, "phone_number": "+14155550123",
                                    "message": "Build finished: main is green"}]


def test_sms_is_cut_to_what_sns_takes(aws_peer: MotoPeer, tmp_path: Path) -> None:
    channels = channels_for(aws_peer, tmp_path)
    send(channels, "sms", ALICE, Rendered(text="ü" * 1000))  # 2000 bytes
    [sms] = aws_peer.sent_sms()
    assert len(sms["message"].encode()) <= 1600 and sms["message"].endswith("…")


def test_sms_without_phone_is_permanent(aws_peer: MotoPeer, tmp_path: Path) -> None:
    channels = channels_for(aws_peer, tmp_path)
    bob = Recipient("bob", phone="0415 555")  # not E.164
    with pytest.raises(DeliveryError) as caught:
        send(channels, "sms", bob, render(NOTIFICATION, "sms"))
    assert caught.value.permanent
    assert aws_peer.sent_sms() == []


def test_aws_unreachable_is_temporary(aws_peer: MotoPeer, tmp_path: Path) -> None:
    sock, port = bind_unused_port()
    sock.close()  # nothing listens there now
    channels = build_channels(Settings(
        sms_url=f"sns://{REGION}", aws_endpoint_url=f"http://127.0.0.1:{port}",
        vapid_key=str(tmp_path / "vapid.pem")))
    with pytest.raises(DeliveryError) as caught:
        send(channels, "sms", ALICE, render(NOTIFICATION, "sms"))
    assert not caught.value.permanent
