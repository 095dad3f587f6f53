"""An aiosmtpd SMTP server that keeps what it receives, and can be taken down and brought back.

With ``tls=True`` it offers STARTTLS with a self-signed certificate for 127.0.0.1
(``cert_file``: trust it through ``SSL_CERT_FILE``) and requires a login."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import email
import email.policy
import ipaddress
import ssl
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .loop import Inbox, LoopThread

USERNAME, PASSWORD = "mailer", "s3cret:/@pass"  # characters that need quoting in a URL


@dataclasses.dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage  # parsed with the modern policy: get_body(), get_content()
    tls: bool
    login: str | None


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


class _Handler:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        login = session.auth_data.login.decode() if session.authenticated else None
        self.inbox.add(Received(str(envelope.mail_from), list(envelope.rcpt_tos),
                                message, tls=server._tls_protocol is not None, login=login))
        return "250 OK queued"


def _authenticate(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                  auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and \
        (auth_data.login, auth_data.password) == (USERNAME.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


class _Server(SMTP):
    def __init__(self, disconnects: Inbox, live: set[SMTP], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._disconnects = disconnects
        self._live = live

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._live.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._live.discard(self)
        self._disconnects.add(exc)


class SmtpPeer:
    def __init__(self, tmp_dir: Path, tls: bool = False) -> None:
        self.inbox = Inbox()
        self.disconnects = Inbox()  # a client that has fully hung up (TLS shutdown included)
        self.tls = tls
        self._tls_context: ssl.SSLContext | None = None
        self.cert_file: Path | None = None
        if tls:
            self.cert_file, key_file = self_signed(tmp_dir)
            self._tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls_context.load_cert_chain(self.cert_file, key_file)
        self._thread = LoopThread("smtp-peer")
        self._live: set[SMTP] = set()  # open client sessions, closed with the peer
        self._server: asyncio.Server | None = None
        self.port = 0
        self.up()

    @property
    def url(self) -> str:
        if self.tls:
            return f"smtp://{USERNAME}:{quote(PASSWORD, safe='')}@127.0.0.1:{self.port}"
        return f"smtp://127.0.0.1:{self.port}"

    def _protocol(self) -> SMTP:
        if self.tls:
            return _Server(self.disconnects, self._live, handler=_Handler(self.inbox),
                           hostname="peer.test",
                           tls_context=self._tls_context, require_starttls=True,
                           authenticator=_authenticate, auth_required=True)
        return _Server(self.disconnects, self._live, handler=_Handler(self.inbox),
                       hostname="peer.test")

    def up(self) -> None:
        """Listens (again, on the same port after :meth:`down`)."""
        async def start() -> asyncio.Server:
            return await asyncio.get_running_loop().create_server(
                self._protocol, "127.0.0.1", self.port)
        self._server = self._thread.run(start())
        self.port = self._server.sockets[0].getsockname()[1]

    def down(self) -> None:
        """Stops listening: a client now gets 'connection refused'."""
        async def stop(server: asyncio.Server) -> None:
            server.close()
            await server.wait_closed()
        if self._server is not None:
            self._thread.run(stop(self._server))
            self._server = None

    def close(self) -> None:
        self.down()

        async def hang_up() -> None:
            for session in list(self._live):
                if session.transport is not None:
                    session.transport.close()
            await asyncio.sleep(0)  # let connection_lost run
        self._thread.run(hang_up())
        self._thread.close()
