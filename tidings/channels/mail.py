"""Email: one MIME builder, two transports (any SMTP server, or the SES API)."""

from __future__ import annotations

import logging
import socket
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.policy import Policy
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib

from . import aws
from .base import ConfigError, DeliveryError, Recipient, Rendered

log = logging.getLogger("tidings.channels")


class _AsIs(str):
    """A header written as it is, never folded: a long URL folded by the email package would
    become RFC 2047 encoded words, which mail providers do not read as a List-Unsubscribe
    link. The email package stores a value that has a ``name`` unchanged and asks it to fold
    itself, whichever policy writes the message (aiosmtplib uses its own)."""

    name: str

    def __new__(cls, name: str, value: str) -> _AsIs:
        if not value.isascii() or any(c in value for c in "\r\n"):
            raise ValueError(f"the {name} header must be one line of ASCII")
        header = super().__new__(cls, value)
        header.name = name
        return header

    def fold(self, *, policy: Policy) -> str:
        return f"{self.name}: {self}{policy.linesep}"


def build_message(sender: str, to: str, rendered: Rendered) -> EmailMessage:
    """multipart/alternative: the text part first, the HTML part (when there is one) last;
    with the rendered message's extra headers (List-Unsubscribe)."""
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["Subject"] = " ".join(rendered.subject.split())  # a template's newline never splits it
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=parseaddr(sender)[1].rpartition("@")[2] or None)
    for name, value in rendered.headers.items():
        msg[name] = _AsIs(name, value)
    msg.set_content(rendered.text)
    if rendered.html:
        msg.add_alternative(rendered.html, subtype="html")
    return msg


def message_for(sender: str, recipient: Recipient, rendered: Rendered) -> EmailMessage:
    if not recipient.email:
        raise DeliveryError("no email address", permanent=True)
    try:
        return build_message(sender, recipient.email, rendered)
    except (ValueError, TypeError) as e:  # e.g. a line break in the address
        raise DeliveryError(f"cannot build the message: {e}", permanent=True) from e


def check_sender(value: str | None) -> str:
    local, _, domain = parseaddr(value or "")[1].partition("@")
    if not value or not local or "." not in domain:
        raise ConfigError("--email-from", "required when email is on: an address like "
                                          "'Tidings <noreply@example.com>'")
    return value


class SmtpEmail:
    """One connection per message: simple, and fine at notification volumes.
    ``smtp://`` upgrades with STARTTLS when the server offers it; ``smtps://`` is TLS."""

    name = "email"

    def __init__(self, host: str, port: int, sender: str, *, tls: bool,
                 username: str | None = None, password: str | None = None,
                 timeout: float = 15.0) -> None:
        self.host, self.port, self.sender, self.tls = host, port, sender, tls
        self._username, self._password, self._timeout = username, password, timeout

    @classmethod
    def from_url(cls, url: str, sender: str) -> SmtpEmail:
        parts = urlsplit(url)
        try:
            port = parts.port or (465 if parts.scheme == "smtps" else 25)
        except ValueError:
            raise ConfigError("--email-url", "the port is not a number") from None
        host = parts.hostname
        if not host:
            raise ConfigError("--email-url", "no host: use smtp://[user:pass@]host[:port]")
        try:
            socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            raise ConfigError("--email-url", f'host "{host}" does not resolve') from None
        username = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        log.info("email: %s to %s:%d%s", parts.scheme, host, port,
                 " with login" if username else "")
        return cls(host, port, sender, tls=parts.scheme == "smtps",
                   username=username, password=password)

    async def send(self, recipient: Recipient, message: Rendered) -> str:
        msg = message_for(self.sender, recipient, message)
        try:
            await aiosmtplib.send(
                msg, hostname=self.host, port=self.port, use_tls=self.tls,
                username=self._username, password=self._password, timeout=self._timeout)
        except aiosmtplib.SMTPRecipientsRefused as e:
            permanent = all(r.code >= 500 for r in e.recipients)
            raise DeliveryError(f"recipient refused: {e.recipients[0]}", permanent) from e
        except aiosmtplib.SMTPResponseException as e:
            raise DeliveryError(f"SMTP {e.code}: {e.message}", permanent=e.code >= 500) from e
        except (aiosmtplib.SMTPException, OSError) as e:
            # The operator's mail host, port and errno are for the operator's log, not for
            # a tenant's delivery list.
            log.warning("SMTP server %s:%d unreachable: %s", self.host, self.port, e)
            raise DeliveryError("SMTP server unreachable", permanent=False) from e
        return str(msg["Message-ID"])

    async def aclose(self) -> None:
        pass


class SesEmail:
    """The SES v2 API with the same MIME message as SMTP (``Content.Raw``)."""

    name = "email"

    def __init__(self, client: Any, sender: str) -> None:
        self._client, self.sender = client, sender

    @classmethod
    def from_url(cls, url: str, sender: str, endpoint_url: str | None) -> SesEmail:
        region = urlsplit(url).netloc
        client = aws.make_client("sesv2", region, endpoint_url, "--email-url")
        log.info("email: SES in %s%s", region, " (emulator)" if endpoint_url else "")
        return cls(client, sender)

    async def send(self, recipient: Recipient, message: Rendered) -> str:
        msg = message_for(self.sender, recipient, message)
        reply = await aws.call(
            self._client.send_email,
            FromEmailAddress=self.sender,
            Destination={"ToAddresses": [str(msg["To"])]},
            Content={"Raw": {"Data": msg.as_bytes()}},
        )
        return str(reply["MessageId"])

    async def aclose(self) -> None:
        pass
