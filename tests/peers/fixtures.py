"""pytest fixtures for the channel peers; a test module takes them with
``pytest_plugins = ["tests.peers.fixtures"]``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .aws import FAKE_CREDENTIALS, MotoPeer
from .push import PushService
from .smtp import SmtpPeer
from .sns import SnsPeer
from .webhook import WebhookReceiver


@pytest.fixture
def smtp_peer(tmp_path: Path) -> Iterator[SmtpPeer]:
    """Plain SMTP, no login; ``.down()`` / ``.up()`` take it away and back on the same port."""
    peer = SmtpPeer(tmp_path)
    yield peer
    peer.close()


@pytest.fixture
def smtp_tls_peer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpPeer]:
    """STARTTLS with a certificate trusted through SSL_CERT_FILE, and a required login."""
    peer = SmtpPeer(tmp_path, tls=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(peer.cert_file))
    yield peer
    peer.close()


@pytest.fixture(scope="session")
def _moto() -> Iterator[MotoPeer]:
    peer = MotoPeer()  # slow to start: one per run, reset for each test
    yield peer
    peer.close()


@pytest.fixture
def aws_peer(_moto: MotoPeer, monkeypatch: pytest.MonkeyPatch) -> MotoPeer:
    """moto for SES and SNS, emptied, with fake credentials in this test's environment only."""
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    _moto.reset()
    return _moto


@pytest.fixture
def push_service() -> Iterator[PushService]:
    peer = PushService()
    yield peer
    peer.close()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    peer = WebhookReceiver()
    yield peer
    peer.close()


@pytest.fixture
def sns_peer() -> Iterator[SnsPeer]:
    """Signs SNS messages and serves their certificate and SubscribeURL on loopback."""
    peer = SnsPeer()
    yield peer
    peer.close()
