"""Real PostgreSQL and Redis servers for the tests, one of each per session.

Each starts on 127.0.0.1 on a free port, with its files in a temporary folder, and is stopped
(and the folder removed) at the end of the session, whether the tests passed or not. Nothing
is mocked: asyncpg and redis.asyncio talk to the real servers. ./scripts/test installs Debian's
`postgresql` and `redis-server` when they are missing.

TIDINGS_TEST_POSTGRES_URL and TIDINGS_TEST_REDIS_URL point the tests at servers that are
already running instead; those cannot be stopped from here, so `.stop()` and `.start()` skip
the test (an outage test calls them before it opens connections, or checks `.owned` first).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import pytest
from redis import Redis as SyncRedis
from redis.exceptions import RedisError

__all__ = ["PostgresServer", "RedisServer", "postgres", "redis"]

START_TIMEOUT = 30.0  # seconds for a server to accept connections
STOP_TIMEOUT = 30.0
POLL_INTERVAL = 0.02  # between two readiness probes
TEST_USER = "tidings-test"  # the system user PostgreSQL runs as when the tests run as root
INSTALL_HINT = "run ./scripts/test once: it installs Debian's postgresql and redis-server"

T = TypeVar("T")


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago (bind to 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_async(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Runs a coroutine to completion on its own loop in a worker thread, so that fixtures and
    tests may call this whether or not an event loop is running in the caller's thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_until(ready: Callable[[], bool], what: str, proc: subprocess.Popen[bytes] | None,
                log: Path | None) -> None:
    """Polls `ready` until it answers True, the process exits, or the deadline passes."""
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before accepting "
                               f"connections:\n{_tail(log) if log else ''}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not accept connections within {START_TIMEOUT:.0f} s:\n"
                               f"{_tail(log) if log else ''}")
        time.sleep(POLL_INTERVAL)


def _stop_process(proc: subprocess.Popen[bytes], first: signal.Signals) -> None:
    """Sends `first`, then SIGKILL if the process has not exited within STOP_TIMEOUT."""
    if proc.poll() is not None:
        return
    proc.send_signal(first)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


# --- PostgreSQL --------------------------------------------------------------------------------

def postgres_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/N/bin that has a server, else the directory of `initdb`
    on PATH, else None."""
    found = []
    for candidate in Path("/usr/lib/postgresql").glob("*/bin"):
        version = re.fullmatch(r"\d+(?:\.\d+)?", candidate.parent.name)
        if version and (candidate / "postgres").is_file() and (candidate / "initdb").is_file():
            found.append((float(candidate.parent.name), candidate))
    if found:
        return max(found)[1]
    initdb = shutil.which("initdb")
    if initdb and (Path(initdb).resolve().parent / "postgres").is_file():
        return Path(initdb).resolve().parent
    return None


def _unprivileged_user() -> pwd.struct_passwd:
    """The system user TEST_USER, made if absent; `nobody` if it cannot be made."""
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    subprocess.run([useradd, "--system", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", TEST_USER], capture_output=True, check=False)
    try:  # made now, or by a concurrent session a moment ago
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        return pwd.getpwnam("nobody")


async def _pg_execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _pg_accepts(url: str) -> bool:
    try:
        _run_async(lambda: _pg_execute(url, "SELECT 1"))
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False
    return True


class PostgresServer:
    """A PostgreSQL server for the session: `.url` of its `postgres` database, `.stop()` and
    `.start()` (same port, same data) for outage tests, `.fresh_database()` for one test."""

    def __init__(self, url: str, *, owned: bool) -> None:
        self.url = url
        self.owned = owned
        self._numbers = itertools.count(1)
        self._created: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._root: Path | None = None
        self._command: list[str] = []
        self._as_user: dict[str, Any] = {}

    @classmethod
    def launch(cls) -> PostgresServer:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            pytest.fail(f"PostgreSQL's initdb and postgres are not installed: {INSTALL_HINT}",
                        pytrace=False)
        port = free_port()
        server = cls(f"postgresql://tidings@127.0.0.1:{port}/postgres", owned=True)
        root = Path(tempfile.mkdtemp(prefix="tidings-postgres-"))
        server._root = root
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        as_user: dict[str, Any] = {"env": env, "cwd": root}
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            user = _unprivileged_user()
            os.chown(root, user.pw_uid, user.pw_gid)
            as_user.update(user=user.pw_uid, group=user.pw_gid, extra_groups=[])
        server._as_user = as_user
        try:
            subprocess.run([str(bin_dir / "initdb"), "--pgdata", str(root / "data"), "--username", "tidings",
                            "--auth", "trust", "--encoding", "UTF8", "--no-locale", "--no-sync"],
                           check=True, capture_output=True, **as_user)
        except subprocess.CalledProcessError as error:
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"initdb failed:\n{error.stdout.decode()}\n{error.stderr.decode()}") from None
        server._command = [
            str(bin_dir / "postgres"), "-D", str(root / "data"), "-p", str(port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200",
        ]
        try:
            server.start()
        except BaseException:
            server.close()
            raise
        return server

    @property
    def log(self) -> Path:
        assert self._root is not None
        return self._root / "postgres.log"

    def start(self) -> None:
        """Starts the stopped server again (same port, same data) and waits until it accepts
        connections."""
        if not self.owned:
            pytest.skip("TIDINGS_TEST_POSTGRES_URL names a server these tests cannot start or stop")
        if self._proc is not None and self._proc.poll() is None:
            return
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(self._command, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, **self._as_user)
        _wait_until(lambda: _pg_accepts(self.url), "postgres", self._proc, self.log)

    def stop(self) -> None:
        """Stops the server (fast shutdown: open connections are cut) and waits until it has
        exited, so that new connections are refused."""
        if not self.owned:
            pytest.skip("TIDINGS_TEST_POSTGRES_URL names a server these tests cannot start or stop")
        if self._proc is not None:
            _stop_process(self._proc, signal.SIGINT)

    def fresh_database(self) -> str:
        """Creates a new, empty database and returns its URL."""
        number = next(self._numbers)
        name = f"tidings_test_{number}" if self.owned else f"tidings_test_{os.getpid()}_{number}"
        _run_async(lambda: _pg_execute(self.url, f"DROP DATABASE IF EXISTS {name}",
                                       f"CREATE DATABASE {name}"))
        self._created.append(name)
        return urlsplit(self.url)._replace(path=f"/{name}").geturl()

    def close(self) -> None:
        """Stops the server and removes its folder (owned), or drops the databases this
        session made (external server)."""
        if self.owned:
            if self._proc is not None:
                _stop_process(self._proc, signal.SIGINT)
            if self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)
        elif self._created:
            drops = [f"DROP DATABASE IF EXISTS {name} WITH (FORCE)" for name in self._created]
            _run_async(lambda: _pg_execute(self.url, *drops))


# --- Redis -------------------------------------------------------------------------------------

def _redis_accepts(url: str) -> bool:
    try:
        with SyncRedis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except (OSError, RedisError):
        return False


class RedisServer:
    """A Redis server for the session: `.url`, `.stop()` and `.start()` (same port) for outage
    tests, `.flush()` to empty it between tests."""

    def __init__(self, url: str, *, owned: bool) -> None:
        self.url = url
        self.owned = owned
        self._proc: subprocess.Popen[bytes] | None = None
        self._root: Path | None = None
        self._command: list[str] = []

    @classmethod
    def launch(cls) -> RedisServer:
        binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file()
                                                  else None)
        if binary is None:
            pytest.fail(f"redis-server is not installed: {INSTALL_HINT}", pytrace=False)
        port = free_port()
        server = cls(f"redis://127.0.0.1:{port}/0", owned=True)
        server._root = Path(tempfile.mkdtemp(prefix="tidings-redis-"))
        server._command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(server._root),
                           "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""]
        try:
            server.start()
        except BaseException:
            server.close()
            raise
        return server

    @property
    def log(self) -> Path:
        assert self._root is not None
        return self._root / "redis.log"

    def start(self) -> None:
        """Starts the stopped server again on the same port and waits until it answers PING."""
        if not self.owned:
            pytest.skip("TIDINGS_TEST_REDIS_URL names a server these tests cannot start or stop")
        if self._proc is not None and self._proc.poll() is None:
            return
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(self._command, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, cwd=self._root)
        _wait_until(lambda: _redis_accepts(self.url), "redis-server", self._proc, self.log)

    def stop(self) -> None:
        """Stops the server (no save) and waits until it has exited."""
        if not self.owned:
            pytest.skip("TIDINGS_TEST_REDIS_URL names a server these tests cannot start or stop")
        if self._proc is not None:
            _stop_process(self._proc, signal.SIGTERM)

    def flush(self) -> None:
        """Empties the server (FLUSHALL), or only the URL's database on an external server."""
        with SyncRedis.from_url(self.url, socket_timeout=5) as client:
            if self.owned:
                client.flushall()
            else:
                client.flushdb()

    def close(self) -> None:
        if self._proc is not None:
            _stop_process(self._proc, signal.SIGTERM)
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)


# --- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (or TIDINGS_TEST_POSTGRES_URL's)."""
    external = os.environ.get("TIDINGS_TEST_POSTGRES_URL")
    if external:
        server = PostgresServer(external, owned=False)
        if not _pg_accepts(external):
            pytest.fail(f"TIDINGS_TEST_POSTGRES_URL={external} does not accept connections", pytrace=False)
    else:
        server = PostgresServer.launch()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    """The session's Redis server (or TIDINGS_TEST_REDIS_URL's)."""
    external = os.environ.get("TIDINGS_TEST_REDIS_URL")
    if external:
        server = RedisServer(external, owned=False)
        if not _redis_accepts(external):
            pytest.fail(f"TIDINGS_TEST_REDIS_URL={external} does not accept connections", pytrace=False)
    else:
        server = RedisServer.launch()
    try:
        yield server
    finally:
        server.close()
