"""Channel settings: what is on, and a setting that cannot work stops the start, named."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.peers.aws import MotoPeer
from tests.peers.smtp import SmtpPeer
from tidings.channels import ConfigError, build_channels
from tidings.channels.mail import SesEmail, SmtpEmail
from tidings.channels.sms import SnsSms
from tidings.channels.webhook import Webhook
from tidings.channels.webpush import WebPush
from tidings.config import Secret, Settings

pytest_plugins = ["tests.peers.fixtures"]


def settings(tmp_path: Path, **changes: Any) -> Settings:
    return Settings(vapid_key=str(tmp_path / "vapid.pem")).replace(**changes)


def refused(tmp_path: Path, **changes: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        build_channels(settings(tmp_path, **changes))
    return str(caught.value)


def test_only_webhooks_are_on_by_default(tmp_path: Path) -> None:
    channels = build_channels(settings(tmp_path))
    assert list(channels) == ["webhook"] and isinstance(channels["webhook"], Webhook)
    assert not (tmp_path / "vapid.pem").exists()  # push is off: no key is made


def test_every_channel_on(tmp_path: Path, smtp_peer: SmtpPeer, aws_peer: MotoPeer) -> None:
    channels = build_channels(settings(
        tmp_path, email_url=Secret(smtp_peer.url), email_from="noreply@example.com",
        sms_url="sns://eu-west-1", aws_endpoint_url=aws_peer.endpoint_url,
        vapid_subject="https://example.com"))
    assert {name: type(c) for name, c in channels.items()} == {
        "webhook": Webhook, "email": SmtpEmail, "sms": SnsSms, "push": WebPush}
    assert isinstance(build_channels(settings(
        tmp_path, email_url="ses://us-east-1", email_from="noreply@example.com",
        aws_endpoint_url=aws_peer.endpoint_url))["email"], SesEmail)


def test_unresolvable_smtp_host(tmp_path: Path) -> None:
    message = refused(tmp_path, email_url=Secret("smtp://u:hunter2@nosuch.invalid:587"),
                      email_from="noreply@example.com")
    assert message == '--email-url: host "nosuch.invalid" does not resolve'


def test_password_never_in_the_error_or_the_log(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    build_channels(settings(tmp_path, email_url=Secret("smtp://u:hunter2@127.0.0.1:2525"),
                            email_from="noreply@example.com"))
    message = refused(tmp_path, email_url=Secret("smtp://u:hunter2@127.0.0.1:port"),
                      email_from="noreply@example.com")
    assert message.startswith("--email-url:")
    assert "hunter2" not in message and "hunter2" not in caplog.text
    assert "127.0.0.1:2525" in caplog.text


@pytest.mark.parametrize("url", ["http://mail.example.com", "mail.example.com", "smtp://",
                                 "ses://", "ses://mars-1"])
def test_bad_email_url(tmp_path: Path, url: str, aws_peer: MotoPeer) -> None:
    assert refused(tmp_path, email_url=Secret(url), email_from="a@example.com"
                   ).startswith("--email-url: ")


@pytest.mark.parametrize("sender", [None, "", "nobody", "Tidings <tidings@>"])
def test_email_needs_a_sender(tmp_path: Path, sender: str | None) -> None:
    assert refused(tmp_path, email_url=Secret("smtp://127.0.0.1"), email_from=sender
                   ).startswith("--email-from: required when email is on")


@pytest.mark.parametrize("url", ["sms://eu-west-1", "sns://", "sns://EU"])
def test_bad_sms_url(tmp_path: Path, url: str, aws_peer: MotoPeer) -> None:
    assert refused(tmp_path, sms_url=url).startswith("--sms-url: ")


def test_aws_without_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                 "AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert refused(tmp_path, sms_url="sns://eu-west-1") == \
        "--sms-url: no AWS credentials found (environment, ~/.aws or an instance role)"


def test_bad_aws_endpoint(tmp_path: Path) -> None:
    assert refused(tmp_path, sms_url="sns://eu-west-1", aws_endpoint_url="localhost:5000"
                   ).startswith("--aws-endpoint-url: ")


def test_malformed_vapid_key(tmp_path: Path) -> None:
    (tmp_path / "vapid.pem").write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n")
    assert refused(tmp_path, vapid_subject="mailto:ops@example.com").startswith(
        f"--vapid-key: {tmp_path / 'vapid.pem'} is not a PEM P-256")


def test_vapid_key_on_another_curve(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    (tmp_path / "vapid.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    assert refused(tmp_path, vapid_subject="mailto:ops@example.com").startswith("--vapid-key: ")


@pytest.mark.parametrize("subject", ["ops@example.com", "http://example.com", "mailto:",
                                     "https://example.com/contact"])  # py-vapid refuses a path
def test_bad_vapid_subject(tmp_path: Path, subject: str) -> None:
    assert refused(tmp_path, vapid_subject=subject).startswith("--vapid-subject: ")
