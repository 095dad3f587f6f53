"""No secret reaches a log, and the dashboard holds: every log record of a run at DEBUG is
scanned for each token and webhook secret used; the login throttle holds under a parallel
burst; `next` never leaves the site; HTML pages send their security headers; the cookie is
Secure behind a trusted proxy only; /metrics does not take a proxied request for a local one."""

import asyncio
import logging
import re
import time

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from .clients import WAIT, Api, SSEClient, token


class _Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        if record.exc_info:
            self.lines.append(logging.Formatter().formatException(record.exc_info))


@pytest.fixture
def capture_all():
    root = logging.getLogger()
    handler = _Everything()
    before = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    root.setLevel(before)


async def _login_form(api: Api) -> dict[str, str]:
    page = await api.call("GET", "/admin/login")
    xsrf = page.headers["Set-Cookie"].split("_xsrf=")[1].split(";")[0]
    return {"Cookie": f"_xsrf={xsrf}", "Content-Type": "application/x-www-form-urlencoded",
            "_xsrf": xsrf}


async def _login(api: Api, password: str, form: dict[str, str], next_: str = "",
                 headers: dict[str, str] | None = None):
    body = f"password={password}&_xsrf={form['_xsrf']}"
    query = f"?next={next_}" if next_ else ""
    return await api.http.fetch(
        api.base + "/admin/login" + query, method="POST", body=body, follow_redirects=False,
        raise_error=False, request_timeout=WAIT,
        headers={k: v for k, v in {**form, **(headers or {})}.items() if k != "_xsrf"})


@pytest.mark.allow_error_logs
@pytest.mark.gen_test(timeout=30)
async def test_no_token_or_secret_in_any_log_line(capture_all, start_server):
    server = await start_server(admin_password="pw", max_body_kib=8, log_level="DEBUG")
    api = Api(server.port)
    good, admin = token(user="carol"), token(user="root", role="admin")
    expired = token(user="carol", exp=int(time.time()) - 60)
    secrets = [good, admin, expired]
    made = await api.json("PUT", "/api/webhook", {"url": "https://hooks.example.com/x"}, admin,
                          expect=201)
    secrets.append(made["secret"])
    for name in ("token", "%74oken", "%54OKEN", "access_token", "ticket", "+token"):
        for tok in (good, expired):
            for path in ("/api/notifications", "/api/notifications/999", "/api/nowhere",
                         "/api/notifications/stream", "/admin", "/admin/tenants/acme",
                         "/demo", "/metrics", "/api/notifications/99999999999999999999"):
                await api.call("GET", f"{path}?{name}={tok}&since=x")
            await api.call("POST", f"/api/notifications?{name}={tok}", raw=b"{bad json")
            await api.call("POST", f"/api/notifications?{name}={tok}", raw=b"x" * 20_000)
            sse = await SSEClient.open(server.port, None, **{name.replace("%74", "t"): tok})
            sse.close()
            try:
                conn = await websocket_connect(HTTPRequest(
                    f"ws://127.0.0.1:{server.port}/ws/notifications?{name}={tok}&since=-1"))
                conn.close()
            except Exception:  # noqa: BLE001 - a refused upgrade is one of the paths
                pass
    # The admin redirect does not carry the token into `next`.
    response = await api.http.fetch(f"{api.base}/admin?token={good}&x=1",
                                    follow_redirects=False, raise_error=False)
    assert response.code == 302 and good not in response.headers["Location"]
    assert "x%3D1" in response.headers["Location"]
    text = "\n".join(capture_all.lines)
    assert "[redacted]" in text and "/api/notifications" in text  # the capture saw them
    for secret in secrets:
        assert secret not in text
        assert secret.split(".")[-1][-20:] not in text


@pytest.mark.gen_test(timeout=30)
async def test_security_headers_on_every_html_page(start_server):
    server = await start_server(admin_password="pw")
    api = Api(server.port)
    for path in ("/admin/login", "/demo", "/admin"):
        response = await api.http.fetch(api.base + path, follow_redirects=False,
                                        raise_error=False)
        csp = response.headers.get("Content-Security-Policy", "")
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp, path
        assert "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    page = await api.call("GET", "/demo")
    assert not re.search(rb"<script(?![^>]*\b(src|type=\"application/json\"))[^>]*>", page.body)


@pytest.mark.gen_test(timeout=30)
async def test_next_stays_on_this_server(start_server):
    server = await start_server(admin_password="pw")
    api = Api(server.port)
    form = await _login_form(api)
    for bad in ("//evil.example", "/%5Cevil.example", "/%5C%5Cevil.example",
                "/%09/evil.example", "/%0A/evil.example", "https://evil.example",
                "javascript:alert(1)", "%2F%2Fevil.example", "/%0D%0A/evil.example",
                "http:/evil.example"):
        response = await _login(api, "pw", form, bad)
        assert response.code == 302, (bad, response.code)
        assert response.headers["Location"] == "/admin", bad
    response = await _login(api, "pw", form, "/admin/tenants/acme%3Fa%3D1")
    assert response.headers["Location"] == "/admin/tenants/acme?a=1"


@pytest.mark.gen_test(timeout=30)
async def test_a_parallel_burst_of_wrong_logins_is_refused(start_server):
    server = await start_server(admin_password="pw")
    api = Api(server.port)
    form = await _login_form(api)
    burst = await asyncio.gather(*(_login(api, "nope", form) for _ in range(20)),
                                 _login(api, "pw", form))
    codes = [r.code for r in burst]
    assert codes.count(429) >= 15, codes
    assert codes[-1] != 302 or codes[:-1].count(401) < 3, codes
    assert all(int(r.headers["Retry-After"]) >= 1 for r in burst if r.code == 429)
    # Still refused right after, even with the right password.
    assert (await _login(api, "pw", form)).code == 429


@pytest.mark.gen_test(timeout=30)
async def test_cookie_secure_and_client_address_via_trusted_proxy_only(start_server):
    plain = await start_server(admin_password="pw")
    api = Api(plain.port)
    form = await _login_form(api)
    response = await _login(api, "pw", form, headers={"X-Forwarded-Proto": "https"})
    assert response.code == 302
    assert "secure" not in response.headers["Set-Cookie"].lower()  # no trusted proxy set
    # A proxied request from loopback is not a local scraper.
    metrics = await api.call("GET", "/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert metrics.code == 403
    assert (await api.call("GET", "/metrics")).code == 200
    assert (await api.call("GET", "/metrics", headers={
        "X-Forwarded-For": "203.0.113.9", "Authorization": "Bearer pw"})).code == 200

    proxied = await start_server(admin_password="pw", trusted_proxies=("127.0.0.1/32",))
    api = Api(proxied.port)
    form = await _login_form(api)
    response = await _login(api, "pw", form, headers={"X-Forwarded-Proto": "https"})
    assert response.code == 302
    assert "secure" in response.headers["Set-Cookie"].lower()
    assert (await api.call("GET", "/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
            ).code == 403
    # The throttle counts the forwarded client, not the proxy.
    for _ in range(3):
        await _login(api, "nope", form, headers={"X-Forwarded-For": "198.51.100.1"})
    assert (await _login(api, "nope", form, headers={"X-Forwarded-For": "198.51.100.1"})
            ).code == 429
    assert (await _login(api, "pw", form, headers={"X-Forwarded-For": "198.51.100.2"})
            ).code == 302
