"""tidings behind Debian's nginx running contrib/nginx/tidings.conf, and the systemd unit.

nginx runs as the test's own process (its prefix, pid, logs and temporary files in tmp_path)
on free loopback ports, with TLS from a self-signed certificate. It reaches tidings from
127.0.0.2 (proxy_bind), the only trusted proxy; the test's client is 127.0.0.1, so what
tidings records shows whose X-Forwarded-* it believed.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from server import SHUTDOWN_GRACE
from tidings.config import SETTINGS, Secret, Settings

from .clients import WAIT, SSEClient, WSClient, eventually, token
from .peers.smtp import self_signed

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "contrib" / "nginx" / "tidings.conf"
UNIT = ROOT / "contrib" / "systemd" / "tidings.service"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PROXY_IP = "127.0.0.2"  # nginx's address towards tidings; the client is 127.0.0.1
PASSWORD = "correct horse battery staple"
SPOOFED = "203.0.113.9"
AT_ONCE = 2.0  # a buffered SSE event would wait for the buffer or the stream's end


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def substitute(text: str, pattern: str, replacement: str, count: int = 1) -> str:
    """Replaces a line of a contrib file; fails when it is no longer there as expected."""
    new, n = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert n == count, f"expected {count} match(es) of {pattern!r}, found {n}"
    return new


def site_for_test(upstream: int, https: int, http: int, cert: Path, key: Path) -> str:
    """The contrib site with only its addresses, ports and certificate changed."""
    text = SITE.read_text()
    text = substitute(text, r"^(\s*server )127\.0\.0\.1:8888;", rf"\g<1>127.0.0.1:{upstream};")
    text = substitute(text, r"^(\s*listen )443 ssl http2;", rf"\g<1>127.0.0.1:{https} ssl http2;")
    text = substitute(text, r"^(\s*listen )80;", rf"\g<1>127.0.0.1:{http};")
    text = substitute(text, r"^\s*listen \[::\]:(80|443).*\n", "", count=2)  # loopback only
    text = substitute(text, r"^(\s*ssl_certificate )\s*\S+;", rf"\g<1>{cert};")
    text = substitute(text, r"^(\s*ssl_certificate_key )\s*\S+;", rf"\g<1>{key};")
    return text


class Nginx:
    """Debian's nginx in the foreground, with everything it writes under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.https, self.http = free_port(), free_port()
        self.cert, self.key = self_signed(root)
        self.tls = ssl.create_default_context(cafile=str(self.cert))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.https}"

    def start(self, upstream: int) -> None:
        site = self.root / "tidings.conf"
        site.write_text(site_for_test(upstream, self.https, self.http, self.cert, self.key))
        temp = self.root / "temp"
        temp.mkdir()
        # As root, nginx's workers would become `nobody`, who cannot read tmp_path.
        user = "user root;" if os.geteuid() == 0 else ""
        conf = self.root / "nginx.conf"
        conf.write_text(f"""
{user}
worker_processes 1;
pid {self.root}/nginx.pid;
events {{ worker_connections 128; }}
http {{
    access_log {self.root}/access.log;
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    # Towards tidings from an address of its own, so tidings can tell nginx from the client.
    proxy_bind {PROXY_IP};
    include {site};
}}
""")
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.root), "-c", str(conf), "-e", str(self.error_log),
             "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @property
    def error_log(self) -> Path:
        return self.root / "error.log"

    async def ready(self) -> None:
        http = AsyncHTTPClient()

        async def answers() -> bool:
            assert self.proc is not None
            assert self.proc.poll() is None, f"nginx exited: {self.errors()}"
            try:
                r = await http.fetch(f"{self.base}/healthz", ssl_options=self.tls,
                                     raise_error=False, request_timeout=1)
            except OSError:
                return False  # not listening yet
            return r.code == 200
        await eventually(answers, timeout=15, step=0.05)

    def errors(self) -> str:
        return self.error_log.read_text() if self.error_log.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)  # fast shutdown: open sockets are closed
        try:
            self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def deployment() -> str:
    return "local"  # nginx is in front of one process; the store plays no part here


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    if not os.path.exists(NGINX):
        pytest.skip("nginx not found: scripts/test installs Debian's nginx")
    (tmp_path / "nginx").mkdir()
    proxy = Nginx(tmp_path / "nginx")
    yield proxy
    proxy.stop()


async def behind(start_server, nginx: Nginx):  # type: ignore[no-untyped-def]
    server = await start_server(trusted_proxies=(PROXY_IP,), admin_password=Secret(PASSWORD))
    nginx.start(server.port)
    await nginx.ready()
    return server


async def fetch(url: str, tls: ssl.SSLContext | None = None, **kw) -> HTTPResponse:  # type: ignore[no-untyped-def]
    return await AsyncHTTPClient().fetch(url, ssl_options=tls, raise_error=False,
                                         request_timeout=WAIT, follow_redirects=False, **kw)


async def post_notification(nginx: Nginx, user: str = "alice") -> int:
    r = await fetch(f"{nginx.base}/api/notifications", nginx.tls, method="POST",
                    headers={"Authorization": f"Bearer {token(user='backend', role='service')}",
                             "Content-Type": "application/json"},
                    body=json.dumps({"user_id": user, "title": "Through nginx"}))
    assert r.code == 201, (r.code, r.body)
    return int(json.loads(r.body)["notification"]["id"])


@pytest.mark.gen_test(timeout=40)
async def test_a_websocket_through_nginx_gets_a_notification(start_server, nginx) -> None:
    server = await behind(start_server, nginx)
    ws = await WSClient.open(nginx.https, token(), tls=nginx.tls)
    try:
        # The connection is the client's (X-Forwarded-For from the trusted nginx), not nginx's.
        assert [c.remote_ip for c in server.services.registry.all()] == ["127.0.0.1"]
        sent = await post_notification(nginx)
        assert [n["id"] for n in await ws.notifications(1)] == [sent]
    finally:
        ws.close()


@pytest.mark.gen_test(timeout=40)
async def test_an_sse_event_through_nginx_arrives_at_once(start_server, nginx) -> None:
    server = await behind(start_server, nginx)
    sse = await SSEClient.open(nginx.https, token(), tls=nginx.tls)
    try:
        assert sse.status == 200, sse.body
        assert sse.headers["content-type"].startswith("text/event-stream")
        await sse.next_of("connected", timeout=AT_ONCE)
        assert [c.remote_ip for c in server.services.registry.all()] == ["127.0.0.1"]
        sent = await post_notification(nginx)
        # A few hundred bytes: nginx buffering them would hold them far longer than this.
        assert [n["id"] for n in await sse.notifications(1, timeout=AT_ONCE)] == [sent]
    finally:
        sse.close()


async def log_in(base: str, tls: ssl.SSLContext | None = None,
                 headers: dict[str, str] | None = None) -> HTTPResponse:
    """GET the login form for its XSRF cookie, then POST the password with it."""
    page = await fetch(f"{base}/admin/login", tls, headers=headers)
    assert page.code == 200, page.code
    xsrf = re.search(r"_xsrf=([^;]+)", page.headers["Set-Cookie"])
    assert xsrf, page.headers
    form = urlencode({"_xsrf": xsrf.group(1), "password": PASSWORD})
    return await fetch(f"{base}/admin/login", tls, method="POST", body=form,
                       headers={**(headers or {}), "Cookie": f"_xsrf={xsrf.group(1)}",
                                "Content-Type": "application/x-www-form-urlencoded"})


def admin_cookie(response: HTTPResponse) -> str:
    cookies = [c for c in response.headers.get_list("Set-Cookie")
               if c.startswith("tidings_admin=")]
    assert len(cookies) == 1, response.headers
    return cookies[0]


def logged_in_from(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [m.split(" from ")[1] for m in caplog.messages if m.startswith("dashboard login from")]


@pytest.mark.gen_test(timeout=40)
async def test_dashboard_login_through_nginx_is_https_and_the_clients(start_server, nginx,
                                                                     caplog) -> None:
    caplog.set_level(logging.INFO)
    server = await behind(start_server, nginx)

    # Through nginx (TLS here, X-Forwarded-Proto https): a Secure cookie that opens the
    # overview, and the login is the client's. A forged X-Forwarded-For from the client is
    # left of the address nginx saw, which is not a trusted proxy: it is not believed.
    signed_in = await log_in(nginx.base, nginx.tls, headers={"X-Forwarded-For": SPOOFED})
    assert signed_in.code == 302, (signed_in.code, signed_in.body)
    cookie = admin_cookie(signed_in)
    assert "Secure" in cookie.split("; ")
    overview = await fetch(f"{nginx.base}/admin", nginx.tls,
                           headers={"Cookie": cookie.split(";")[0]})
    assert overview.code == 200 and b"<h1>Overview</h1>" in overview.body
    # Its sample curl line names the address the browser used, https (Host as nginx sets it).
    assert b"curl -X POST https://127.0.0.1/api/notifications" in overview.body
    access = [r.getMessage() for r in caplog.records if r.name == "tornado.access"]
    assert any(m.startswith("200 GET /admin (127.0.0.1)") for m in access), access

    # Straight to tidings, from a peer that is no trusted proxy: its forwarded headers are
    # ignored, so plain HTTP gets no Secure cookie and the address is the peer's.
    direct = await log_in(f"http://127.0.0.1:{server.port}", headers={
        "X-Forwarded-Proto": "https", "X-Forwarded-For": SPOOFED})
    assert direct.code == 302, (direct.code, direct.body)
    assert "Secure" not in admin_cookie(direct).split("; ")

    # nginx reached tidings from 127.0.0.2: the first login's 127.0.0.1 came from its header.
    assert logged_in_from(caplog) == ["127.0.0.1", "127.0.0.1"]


@pytest.mark.gen_test(timeout=40)
async def test_plain_http_is_sent_to_https(start_server, nginx) -> None:
    await behind(start_server, nginx)
    r = await fetch(f"http://127.0.0.1:{nginx.http}/admin?x=1")
    assert r.code == 301
    assert r.headers["Location"] == "https://127.0.0.1/admin?x=1"


# --- the files themselves against tidings' settings ------------------------------------

def locations(text: str) -> dict[str, str]:
    """Each `location ... { }` block's body by its path (the blocks hold no nested braces)."""
    text = re.sub(r"#.*", "", text)
    return {m[1].strip(): m[2] for m in re.finditer(r"location\s+([^{]+)\{([^}]*)\}", text)}


def test_the_nginx_timeouts_and_body_limit_fit_tidings_defaults() -> None:
    text, defaults = SITE.read_text(), Settings()
    blocks = locations(text)
    streams = {"/ws/": blocks["/ws/"], "= /admin/ws": blocks["= /admin/ws"],
               "= /api/notifications/stream": blocks["= /api/notifications/stream"]}
    for path, block in streams.items():
        timeouts = re.findall(r"proxy_read_timeout\s+(\d+)s;", block)
        assert timeouts and int(timeouts[0]) > 2 * defaults.heartbeat, path
    assert re.search(r"proxy_buffering\s+off;", streams["= /api/notifications/stream"])
    body = re.search(r"client_max_body_size\s+(\d+)k;", text)
    assert body and int(body[1]) == defaults.max_body_kib


def unit_values(text: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_the_systemd_unit_stops_gracefully_and_names_real_settings(tmp_path: Path) -> None:
    values = unit_values(UNIT.read_text())
    assert values["KillSignal"] == ["SIGTERM"]  # what server.py stops gracefully on
    seconds = int(values["TimeoutStopSec"][0].rstrip("s"))
    assert seconds > 2 * SHUTDOWN_GRACE  # the clients' grace, then the connections'
    assert values["Restart"] == ["on-failure"]
    assert values["EnvironmentFile"] and values["StateDirectory"] == ["tidings"]
    known = {s.env for s in SETTINGS}
    for assignment in values["Environment"]:
        name = assignment.partition("=")[0]
        assert name in known or not name.startswith("TIDINGS_"), name

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed: the unit's syntax is not checked")
    # The unit as installed, but for a command and environment file that exist here.
    unit = tmp_path / "tidings.service"
    text = substitute(UNIT.read_text(), r"^ExecStart=.*$", f"ExecStart={sys.executable}")
    unit.write_text(substitute(text, r"^EnvironmentFile=.*$", "EnvironmentFile=-/dev/null"))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True,
                            timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if "tidings.service" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr
