"""From settings to the channels that are on, checked once at start."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..outbound import OutboundPolicy
from .base import Channel, ConfigError
from .mail import SesEmail, SmtpEmail, check_sender
from .sms import SnsSms
from .webhook import Webhook
from .webpush import WebPush


def _check_endpoint(url: str | None) -> str | None:
    if url and (urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname):
        raise ConfigError("--aws-endpoint-url", "must be an http(s) URL like http://127.0.0.1:5000")
    return url or None


def _email(settings: Any, endpoint_url: str | None) -> Channel:
    url = str(settings.email_url)
    scheme = urlsplit(url).scheme
    if scheme not in ("smtp", "smtps", "ses"):
        raise ConfigError("--email-url", "must start with smtp://, smtps:// or ses://")
    sender = check_sender(settings.email_from)
    if scheme == "ses":
        return SesEmail.from_url(url, sender, endpoint_url)
    return SmtpEmail.from_url(url, sender)


def _sms(settings: Any, endpoint_url: str | None) -> Channel:
    url = str(settings.sms_url)
    if urlsplit(url).scheme != "sns":
        raise ConfigError("--sms-url", "use sns://REGION")
    return SnsSms.from_url(url, endpoint_url)


def build_channels(settings: Any) -> dict[str, Channel]:
    """The channels that are on, by name (``email``, ``sms``, ``push``, ``webhook``).

    ``settings`` needs ``email_url``, ``email_from``, ``sms_url``, ``aws_endpoint_url``,
    ``vapid_key`` and ``vapid_subject``. Webhooks need no setting (each tenant names its
    URL), so they are always on. Raises ConfigError naming the setting that cannot work."""
    endpoint_url = _check_endpoint(settings.aws_endpoint_url)
    policy = OutboundPolicy.from_settings(settings)
    channels: dict[str, Channel] = {"webhook": Webhook(policy=policy)}
    if settings.email_url:
        channels["email"] = _email(settings, endpoint_url)
    if settings.sms_url:
        channels["sms"] = _sms(settings, endpoint_url)
    if settings.vapid_subject:
        channels["push"] = WebPush.from_settings(settings.vapid_key, settings.vapid_subject,
                                                 policy)
    return channels


async def close_channels(channels: dict[str, Channel]) -> None:
    for channel in channels.values():
        await channel.aclose()
