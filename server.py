"""tidings: a self-hosted, multi-tenant, real-time notification server.

    python server.py [flags]            start the server (every flag has a TIDINGS_* variable)
    python server.py token --tenant T --user U [--role R] [--ttl S]
                                        print a signed token for the configured secret
    tidings notify / tidings tail       the command line client (tidings_client.cli)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import tornado.httpserver
import tornado.netutil

from handlers import make_app
from handlers.bodylimit import BodyLimit
from tidings import config, logs
from tidings.auth import mint
from tidings.channels import ConfigError
from tidings.config import Settings
from tidings.models import ROLES
from tidings.redis_url import redacted
from tidings.services import Services, data_dir, kept_secret
from tidings.store import is_postgres

log = logging.getLogger("tidings")

DEV_SECRET_FILE = "dev-jwt-secret"
DEV_ADMIN_FILE = "dev-admin-password"
COOKIE_SECRET_FILE = "cookie-secret"
SHUTDOWN_GRACE = 3.0
TOKEN_SETTINGS = ("jwt_secret", "jwt_audience", "jwt_issuer", "db", "dev")  # what `token` reads


def dev_secret(settings: Settings) -> Settings:
    """With --dev and no secret: the development JWT secret, made once and kept."""
    if settings.dev and not settings.jwt_secret:
        settings = settings.replace(jwt_secret=kept_secret(settings, DEV_SECRET_FILE))
    return settings


def dev_admin_password(settings: Settings) -> Settings:
    """With --dev and no admin password: one made once and kept, so the dashboard opens."""
    if settings.dev and not settings.admin_password:
        settings = settings.replace(admin_password=kept_secret(settings, DEV_ADMIN_FILE, 18))
    return settings


def resolve_secrets(settings: Settings) -> Settings:
    """Fills in the secrets the server may make and keep: with --dev the JWT secret and the
    admin password; the cookie key."""
    settings = dev_admin_password(dev_secret(settings))
    if not settings.cookie_secret:
        settings = settings.replace(cookie_secret=kept_secret(settings, COOKIE_SECRET_FILE))
    return settings


class Server:
    """A running tidings: services, the HTTP server and its sockets. Used by main and tests."""

    def __init__(self, services: Services, http: tornado.httpserver.HTTPServer,
                 port: int) -> None:
        self.services = services
        self.http = http
        self.port = port
        self.stopping = False
        self.stopped = asyncio.Event()

    @classmethod
    async def start(cls, settings: Settings, sockets: list | None = None) -> Server:
        # The port first: a taken port fails before anything is opened that must be closed.
        quiet_libraries()
        if sockets is None:
            sockets = tornado.netutil.bind_sockets(settings.port, settings.host)
        try:
            services = await Services.open(settings)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        limit = settings.max_body_kib
        http = tornado.httpserver.HTTPServer(BodyLimit(make_app(services), limit),
                                             xheaders=False, max_body_size=limit * 1024)
        http.add_sockets(sockets)
        port = sockets[0].getsockname()[1]
        if services.links.base_url is None:  # no --public-url: this process's own address
            services.links.base_url = own_url(settings.host, port)
            if services.channels.get("email"):
                log.warning("no --public-url: the unsubscribe links in emails point at %s",
                            services.links.base_url)
        return cls(services, http, port)

    async def stop(self) -> None:
        """Stops accepting, tells every client (WebSocket 1001, SSE stream ended), finishes
        the creates already queued and closes the database."""
        if self.stopping:
            return
        self.stopping = True
        self.http.stop()
        registry = self.services.registry
        for conn in list(registry.all()):
            conn.close("shutdown")
        await self.services.publisher.stop()
        # Closing handshakes finish on their own: wait for the last one, within the grace.
        emptied = asyncio.Event()

        def check(_tenant_id: str = "") -> None:
            if registry.stats()["total"] == 0:
                emptied.set()

        registry.listen(check)
        check()
        try:
            await asyncio.wait_for(emptied.wait(), SHUTDOWN_GRACE)
        except TimeoutError:
            log.warning("some clients did not finish closing within %.0fs; dropping them",
                        SHUTDOWN_GRACE)
            for conn in list(registry.all()):
                conn.drop()
        finally:
            registry.unlisten(check)
        try:
            await asyncio.wait_for(self.http.close_all_connections(), SHUTDOWN_GRACE)
        except TimeoutError:
            log.warning("some HTTP connections did not close within %.0fs", SHUTDOWN_GRACE)
        await self.services.close()
        self.stopped.set()


def own_url(host: str, port: int) -> str:
    """http://HOST:PORT of this process; a wildcard address as the loopback one."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def describe_db(db: str) -> str:
    """The database for a log line: a PostgreSQL URL without its password."""
    return f"PostgreSQL {redacted(db)}" if is_postgres(db) else f"database {db}"


# Libraries whose DEBUG lines carry SQL parameters, request bodies or headers (webhook
# secrets, tokens): never below WARNING, whatever --log-level says.
QUIET_LOGGERS = ("aiosqlite", "asyncio", "botocore", "boto3", "s3transfer", "urllib3",
                 "asyncpg", "redis", "aiohttp", "aiosmtplib", "mail.log", "hpack", "httpx",
                 "httpcore")


def quiet_libraries() -> None:
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))


def setup_logging(level: str, fmt: str = "text") -> None:
    logs.setup(level, fmt)
    quiet_libraries()


async def serve(settings: Settings) -> None:
    try:
        server = await Server.start(settings)
    except OSError as e:
        raise SystemExit(f"tidings: cannot start: {settings.host}:{settings.port}: "
                         f"{e.strerror or e}") from None
    except (ValueError, RuntimeError, ConfigError) as e:
        raise SystemExit(f"tidings: cannot start: {e}") from None
    # What the start made (modules, settings, the app) lives as long as the process: the
    # collector's full passes skip it (measured: fan-out +10 %, its CPU per delivery -10 %).
    gc.collect()
    gc.freeze()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda s=signum: asyncio.ensure_future(shutdown(s)))

    async def shutdown(signum: int) -> None:
        log.info("%s received: shutting down", signal.Signals(signum).name)
        await server.stop()

    # The loop that runs, by its module (uvloop, asyncio), not the setting that asked for it.
    running = type(loop).__module__.split(".")[0]
    log.info("tidings listening on http://%s:%d (%s, %s%s)", settings.host, server.port,
             describe_db(settings.db), running,
             f", Redis {redacted(settings.redis_url)}" if settings.redis_url else "")
    if settings.dev:
        token = mint(str(settings.jwt_secret), "demo", "alice", role="admin", ttl=86400)
        base = f"http://{settings.host}:{server.port}"
        link = server.services.dashboard.login_links.issue()
        print(f"\n  --dev: a sample admin token for tenant 'demo', user 'alice' (24 h):\n\n"
              f"  {token}\n\n  demo page: {base}/demo?token={token}&tenant_id=demo\n"
              f"\n  dashboard: {base}/admin (password in "
              f"{data_dir(settings) / DEV_ADMIN_FILE})\n"
              f"  one-time login link (1 h): {base}/admin/login?once={link}\n", flush=True)
    await server.stopped.wait()
    log.info("stopped")


def token_command(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="tidings token", description="Print an HS256 token signed with the configured "
        "secret (--jwt-secret or TIDINGS_JWT_SECRET; with --dev, the kept development secret).")
    parser.add_argument("--tenant", required=True, help="the tenant_id claim")
    parser.add_argument("--user", required=True, help="the sub claim: the user id")
    parser.add_argument("--role", default="user", choices=ROLES, help="the role claim "
                        "(default user)")
    parser.add_argument("--ttl", type=float, default=3600, help="seconds until it expires "
                        "(default 3600)")
    config.add_arguments(parser, TOKEN_SETTINGS)
    args = parser.parse_args(argv)
    settings = dev_secret(config.load(args))
    if not settings.jwt_secret:
        parser.error("no secret: give --jwt-secret (or TIDINGS_JWT_SECRET), or --dev")
    print(mint(str(settings.jwt_secret), args.tenant, args.user, args.role, args.ttl,
               settings.jwt_audience, settings.jwt_issuer))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tidings", description="A self-hosted, multi-tenant, real-time notification "
        "server. Every flag can also be set by the environment variable named in its help; "
        "flags win.", epilog="Subcommands: 'tidings token --tenant T --user U [--role R] "
        "[--ttl S]' prints a signed token (see 'tidings token --help'); 'tidings notify' "
        "sends a notification and 'tidings tail' prints them as they arrive (see their "
        "--help).")
    config.add_arguments(parser)
    return parser


def client_command(argv: Sequence[str]) -> None:
    """`tidings notify` and `tidings tail`: the client's command line, which lives in
    clients/python so that machines without the server can have it (`tidings-client`)."""
    try:
        from tidings_client.cli import main as client_main
    except ImportError:
        raise SystemExit("tidings: notify and tail need the Python client: "
                         "pip install clients/python") from None
    raise SystemExit(client_main(argv, prog="tidings"))


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["token"]:
        return token_command(argv[1:])
    if argv[:1] in (["notify"], ["tail"]):
        return client_command(argv)
    settings = config.load(build_parser().parse_args(argv))
    setup_logging(settings.log_level, settings.log_format)
    settings = resolve_secrets(settings)
    if not settings.jwt_secret and not settings.jwt_public_key:
        raise SystemExit("tidings: no --jwt-secret (TIDINGS_JWT_SECRET) or --jwt-public-key "
                         "is set; give one, or start with --dev to try it out")
    run(serve(settings), settings.event_loop)


def run(main_coroutine: Coroutine[Any, Any, None], event_loop: str) -> None:
    """Runs the server on uvloop (the default) or on the standard library's loop."""
    if event_loop == "asyncio":
        return asyncio.run(main_coroutine)
    try:
        import uvloop
    except ImportError:
        main_coroutine.close()
        raise SystemExit("tidings: uvloop is not installed (pip install uvloop); or start "
                         "with --event-loop asyncio") from None
    uvloop.run(main_coroutine)


if __name__ == "__main__":
    main()
