"""Settings as data: one table feeds ``--help``, the environment variables and the README."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit


class Secret(str):
    """A string whose repr never shows its value, so it cannot leak through a log of settings."""

    def __repr__(self) -> str:
        return "Secret('**********')" if self else "Secret('')"


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    kind: Callable[[str], Any] = str
    flag_only: bool = False  # a switch: no value, no environment variable

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "TIDINGS_" + self.name.upper()


def _bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"{port} is not a TCP port (0 to 65535)")
    return port


def _seconds(value: str) -> float:
    seconds = float(value)
    if not 0 < seconds <= 86400:
        raise ValueError(f"{value} is not a number of seconds between 0 and 86400")
    return seconds


def _event_loop(value: str) -> str:
    value = value.lower()
    if value not in ("uvloop", "asyncio"):
        raise ValueError(f"expected uvloop or asyncio, got {value!r}")
    return value


def _log_format(value: str) -> str:
    value = value.lower()
    if value not in ("text", "json"):
        raise ValueError(f"expected text or json, got {value!r}")
    return value


def _public_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment or not value.isascii():
        raise ValueError(f"expected an http(s) URL like https://notify.example.com, got {value!r}")
    return value.strip().rstrip("/")


def _origins(value: str) -> tuple[str, ...]:
    return tuple(o.strip().rstrip("/") for o in value.split(",") if o.strip())


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "127.0.0.1", "Address to listen on (0.0.0.0 for every interface)."),
    Setting("port", 8888, "TCP port to listen on.", _port),
    Setting("db", "data/tidings.db", "SQLite database file, created with its folder on first "
            "start; or a postgresql://user:pass@host:port/dbname URL for PostgreSQL (several "
            "processes).", Secret),
    Setting("redis_url", None, "redis://host:port/N: fan-out and presence through Redis, so "
            "that several processes serve the same clients. In-process when not set.", Secret),
    Setting("jwt_secret", None, "HS256 secret that signs client tokens. Required unless --dev "
            "or --jwt-public-key is given.", Secret),
    Setting("jwt_public_key", None, "PEM file with an RSA or EC public key: accept RS256/ES256 "
            "tokens signed by your identity provider."),
    Setting("jwt_audience", None, "When set, tokens must carry this `aud` claim."),
    Setting("jwt_issuer", None, "When set, tokens must carry this `iss` claim."),
    Setting("heartbeat", 30.0, "Seconds between heartbeats (WebSocket pings, SSE heartbeat "
            "events); a WebSocket peer that has not answered a ping by the next heartbeat is "
            "dropped, and so is a client that takes nothing of its replay for two.", float),
    Setting("housekeeping_interval", 60.0, "Seconds between housekeeping runs, which remove "
            "what each tenant's retention (PUT /api/tenant) no longer keeps and what has "
            "expired (telling connections), a few hundred notifications per transaction so "
            "that creates never wait long.", _seconds),
    Setting("max_connections_per_tenant", 0, "Open connections allowed per tenant across both "
            "transports and every process; 0 means unlimited.", int),
    Setting("max_connections_per_user", 0, "Open connections allowed per user across both "
            "transports; 0 means unlimited.", int),
    Setting("max_pending_kib", 1024, "Output a connection may have queued before it is dropped "
            "as too slow (it reconnects with its resume cursor).", int),
    Setting("max_body_kib", 1024, "Largest request body accepted; a larger one is refused with "
            "413 before it is read.", int),
    Setting("tenant_rate", 0.0, "Creates per second allowed per tenant (bursts of twice that); "
            "past it 429 with Retry-After. 0 means unlimited.", float),
    Setting("outbound_allow", (), "Comma-separated hosts, host:port pairs or CIDRs that webhooks "
            "and push may reach although they are loopback, private or reserved (an internal "
            "receiver); every other outbound request goes to public addresses only.", _origins),
    Setting("trusted_proxies", (), "Comma-separated CIDRs of reverse proxies whose "
            "X-Forwarded-For and X-Forwarded-Proto are believed (client address, https); "
            "from any other peer they are ignored.", _origins),
    Setting("allowed_origins", (), "Comma-separated origins (https://app.example.com) whose "
            "pages may open WebSockets; the server's own host is always allowed; * allows any.",
            _origins),
    Setting("event_loop", "uvloop", "uvloop (libuv under asyncio, faster sockets and timers) or "
            "asyncio (the standard library's loop).", _event_loop),
    Setting("synchronous", "NORMAL", "SQLite synchronous mode: NORMAL survives a killed process, "
            "FULL also survives a power cut at some cost per commit.", str.upper),
    Setting("admin_password", None, "Password of the /admin dashboard; without it the dashboard "
            "login is disabled.", Secret),
    Setting("cookie_secret", None, "Key that signs dashboard cookies; made and kept under the "
            "database folder when not set.", Secret),
    Setting("email_url", None, "Email transport: smtp://[user:pass@]host[:port] (STARTTLS when "
            "offered), smtps://... (TLS) or ses://REGION. Email is off without it.", Secret),
    Setting("email_from", None, "Sender address of emails; required when email is on."),
    Setting("public_url", None, "The address at which browsers and mail readers reach this "
            "server (https://notify.example.com, behind a proxy its public one), for the links "
            "tidings puts in emails: every email's one-click List-Unsubscribe link. "
            "http://HOST:PORT of this process when not set.", _public_url),
    Setting("sns_host", None, "A host (or host:port) trusted, besides AWS's own "
            "sns.REGION.amazonaws.com, to serve the SNS signing certificates and subscription "
            "confirmations of SES bounce and complaint notifications: an emulator in tests. "
            "Never needed with AWS.", str.lower),
    Setting("sms_url", None, "SMS transport: sns://REGION. SMS is off without it."),
    Setting("aws_endpoint_url", None, "Endpoint of an AWS emulator for SES/SNS; AWS itself when "
            "not set. Credentials come from the standard AWS chain."),
    Setting("vapid_key", "data/vapid_private.pem", "PEM file with the VAPID private key for web "
            "push; made on first start and kept."),
    Setting("vapid_subject", None, "Contact for push services (mailto: or https:); web push is "
            "off without it."),
    Setting("log_level", "INFO", "Log level: DEBUG, INFO, WARNING or ERROR.", str.upper),
    Setting("log_format", "text", "Log format: text (a line each), or json (one object a line: "
            "time, level, logger, message, and tenant, user, connection and notification ids "
            "as keys of their own).", _log_format),
    Setting("dev", False, "Development mode: makes and keeps a JWT secret and an admin "
            "password under the database folder, prints a sample token, the demo page and a "
            "one-time dashboard login link, and allows webhooks to loopback. Never use it in "
            "production.", _bool,
            flag_only=True),
)


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8888
    db: str = "data/tidings.db"
    redis_url: Secret | None = None
    jwt_secret: Secret | None = None
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    heartbeat: float = 30.0
    housekeeping_interval: float = 60.0
    max_connections_per_tenant: int = 0
    max_connections_per_user: int = 0
    max_pending_kib: int = 1024
    max_body_kib: int = 1024
    tenant_rate: float = 0.0
    outbound_allow: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    event_loop: str = "uvloop"
    synchronous: str = "NORMAL"
    admin_password: Secret | None = None
    cookie_secret: Secret | None = None
    email_url: Secret | None = None
    email_from: str | None = None
    public_url: str | None = None
    sns_host: str | None = None
    sms_url: str | None = None
    aws_endpoint_url: str | None = None
    vapid_key: str = "data/vapid_private.pem"
    vapid_subject: str | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    dev: bool = False

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def add_arguments(parser: argparse.ArgumentParser, names: Sequence[str] | None = None) -> None:
    """Adds one flag per setting (or per named one); its help names the environment variable
    and the default."""
    for s in SETTINGS:
        if names is not None and s.name not in names:
            continue
        if s.flag_only:
            parser.add_argument(s.flag, action="store_true", default=None, help=s.help)
            continue
        default = ",".join(s.default) if isinstance(s.default, tuple) else s.default
        shown = "none" if default in (None, "") else default
        parser.add_argument(
            s.flag, dest=s.name, default=None, metavar=s.name.upper(),
            help=f"{s.help} [env {s.env}; default {shown}]",
        )


def load(args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None,
         ) -> Settings:
    """Flags win over the environment, which wins over the defaults."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for s in SETTINGS:
        raw = getattr(args, s.name, None) if args is not None else None
        if raw is None and not s.flag_only:
            raw = environ.get(s.env)
        if raw is None:
            continue
        if isinstance(raw, bool):
            values[s.name] = raw
            continue
        try:
            values[s.name] = s.kind(raw)
        except ValueError as e:
            raise SystemExit(f"{s.flag} / {s.env}: {e}") from None
    return Settings(**values)


def flags_table(settings: Sequence[Setting] = SETTINGS) -> str:
    """The settings as a Markdown table, for the README (a test keeps the two in step)."""
    rows = ["| flag | env | default | what |", "|---|---|---|---|"]
    for s in settings:
        default = ",".join(s.default) if isinstance(s.default, tuple) else s.default
        shown = "off" if s.flag_only else ("none" if default in (None, "", ()) else f"`{default}`")
        env = "" if s.flag_only else f"`{s.env}`"
        rows.append(f"| `{s.flag}` | {env} | {shown} | {s.help} |")
    return "\n".join(rows)
