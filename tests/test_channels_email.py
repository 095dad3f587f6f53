"""Email over SMTP against a real aiosmtpd server on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.peers.loop import run
from tests.peers.smtp import USERNAME, SmtpPeer
from tidings.channels import (
    Channel,
    DeliveryError,
    Recipient,
    build_channels,
    close_channels,
    render,
)
from tidings.config import Secret, Settings

pytest_plugins = ["tests.peers.fixtures"]

NOTIFICATION = {"id": 42, "tenant_id": "acme", "user_id": "alice", "type": "warning",
                "title": "Disk <almost> full", "message": "sda1 at 93% — Ünïcödé",
                "data": {}, "priority": "high", "created_at": "2026-11-24T04:00:00.123Z"}
ALICE = Recipient("alice", email="alice@example.com")


def email_channel(url: str, tmp_path: Path) -> Channel:
    settings = Settings(email_url=Secret(url), email_from="Tidings <noreply@example.com>",
                        vapid_key=str(tmp_path / "vapid.pem"))
    return build_channels(settings)["email"]


def send(channel: Channel, recipient: Recipient = ALICE, peer: SmtpPeer | None = None) -> str:
    """Sends on a fresh loop; with ``peer``, keeps the loop until the peer saw the client
    hang up, so a TLS shutdown still under way is not cut off by the loop's end."""
    hung_up = len(peer.disconnects) + 1 if peer else 0

    async def go() -> str:
        try:
            return await channel.send(recipient, render(NOTIFICATION, "email"))
        finally:
            await close_channels({"email": channel})
            if peer is not None:
                await peer.disconnects.arrived(hung_up)
    return run(go())


def test_smtp_delivers_multipart_text_and_html(smtp_peer: SmtpPeer, tmp_path: Path) -> None:
    message_id = send(email_channel(smtp_peer.url, tmp_path))

    [got] = smtp_peer.inbox.wait(1)
    msg = got.message
    assert got.rcpt_tos == ["alice@example.com"]
    assert got.mail_from == "noreply@example.com"
    assert msg["Subject"] == "Disk <almost> full"
    assert msg["To"] == "alice@example.com"
    assert msg["Message-ID"] == message_id
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert "Disk <almost> full" in text and "sda1 at 93% — Ünïcödé" in text
    assert "<h2>Disk &lt;almost&gt; full</h2>" in html  # escaped in HTML, not in text
    assert not got.tls


def test_smtp_uses_starttls_when_offered_and_logs_in(smtp_tls_peer: SmtpPeer,
                                                     tmp_path: Path) -> None:
    send(email_channel(smtp_tls_peer.url, tmp_path), peer=smtp_tls_peer)

    [got] = smtp_tls_peer.inbox.wait(1)
    assert got.tls and got.login == USERNAME
    assert got.message["Subject"] == "Disk <almost> full"


def test_smtp_down_is_temporary_then_up_delivers(smtp_peer: SmtpPeer, tmp_path: Path) -> None:
    channel = email_channel(smtp_peer.url, tmp_path)
    smtp_peer.down()
    with pytest.raises(DeliveryError) as caught:
        send(channel)
    assert not caught.value.permanent
    assert len(smtp_peer.inbox) == 0

    smtp_peer.up()
    send(channel)
    assert smtp_peer.inbox.wait(1)[0].rcpt_tos == ["alice@example.com"]


def test_smtp_wrong_password_is_permanent(smtp_tls_peer: SmtpPeer, tmp_path: Path) -> None:
    url = smtp_tls_peer.url.replace(f"{USERNAME}:", f"{USERNAME}x:")
    with pytest.raises(DeliveryError) as caught:
        send(email_channel(url, tmp_path), peer=smtp_tls_peer)
    assert caught.value.permanent and "535" in str(caught.value)


def test_recipient_without_email_is_permanent(smtp_peer: SmtpPeer, tmp_path: Path) -> None:
    channel = email_channel(smtp_peer.url, tmp_path)
    with pytest.raises(DeliveryError) as caught:
        send(channel, Recipient("bob"))
    assert caught.value.permanent
