"""Fixtures: the real server on a loopback port from the OS, and real clients for it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tornado.testing import bind_unused_port

from server import Server, resolve_secrets
from tidings.config import Secret, Settings

from .clients import SECRET, Api
from .services import postgres, redis  # noqa: F401  (session fixtures: real servers)

ROOT = Path(__file__).resolve().parent.parent

StartServer = Callable[..., Awaitable[Server]]


# The end-to-end tests run on both deployments: one process on SQLite with the in-process
# broker, and the several-process setup's PostgreSQL and Redis (real servers, tests/services.py).
DEPLOYMENTS = ("local", "shared")


@pytest.fixture(params=DEPLOYMENTS)
def deployment(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(tmp_path: Path, deployment: str, request: pytest.FixtureRequest) -> Settings:
    db, redis_url = str(tmp_path / "tidings.db"), None
    if deployment == "shared":
        pg, rd = request.getfixturevalue("postgres"), request.getfixturevalue("redis")
        rd.flush()
        db, redis_url = pg.fresh_database(), Secret(rd.url)
    return resolve_secrets(Settings(db=Secret(db), redis_url=redis_url,
                                    jwt_secret=Secret(SECRET),
                                    vapid_key=str(tmp_path / "vapid.pem"),
                                    cookie_secret=Secret("test-cookie-secret")))


@pytest.fixture
def start_server(io_loop: Any, settings: Settings) -> Iterator[StartServer]:
    """An async factory: `await start_server(heartbeat=1)` starts a real server with those
    settings changed; every server it started is stopped at the end of the test."""
    servers: list[Server] = []

    async def start(**changes: Any) -> Server:
        sock, _port = bind_unused_port()
        server = await Server.start(settings.replace(**changes), sockets=[sock])
        servers.append(server)
        return server

    yield start
    for server in servers:
        io_loop.run_sync(server.stop, timeout=10)


@pytest.fixture
def server(io_loop: Any, settings: Settings) -> Iterator[Server]:
    """A real server with the default test settings."""
    sock, _port = bind_unused_port()
    running = io_loop.run_sync(lambda: Server.start(settings, sockets=[sock]))
    yield running
    io_loop.run_sync(running.stop, timeout=10)


@pytest.fixture
def api(server: Server) -> Api:
    return Api(server.port)


class _ErrorLogs(logging.Handler):
    """Collects ERROR records: an unexpected server error fails the test that caused it."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def no_error_logs(request: pytest.FixtureRequest) -> Iterator[None]:
    handler = _ErrorLogs()
    logging.getLogger().addHandler(handler)
    yield
    logging.getLogger().removeHandler(handler)
    if "allow_error_logs" not in request.keywords:
        assert not handler.records, [r.getMessage() for r in handler.records]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_error_logs: the test provokes server errors")
