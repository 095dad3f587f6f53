"""The dashboard's socket and pages, at the protocol level (the browser tests drive them too)."""

import asyncio
import json

import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from handlers import admin
from server import resolve_secrets
from tidings.config import Settings
from tidings.limits import LoginGuard

from .clients import WAIT, Api, eventually, token


@pytest.fixture
def settings(settings):
    """A webhook on loopback gives the tenant page deliveries to show: allowed here."""
    return settings.replace(outbound_allow=("127.0.0.1",))


@pytest.mark.gen_test
async def test_admin_socket_without_login_closes_with_4401(start_server):
    server = await start_server(admin_password="pw")
    conn = await websocket_connect(f"ws://127.0.0.1:{server.port}/admin/ws",
                                   connect_timeout=WAIT)
    assert await conn.read_message() is None
    assert conn.close_code == 4401  # the page reads it and goes to the login
    conn.close()


@pytest.mark.gen_test
async def test_admin_pages_redirect_to_login(server, api):
    response = await api.call("GET", "/admin")
    assert response.code == 200 and b"Sign in" in response.body  # followed the redirect
    assert response.effective_url.endswith("/admin/login?next=%2Fadmin")


def test_login_guard_refuses_past_three_failures_for_a_doubling_time_and_forgets_on_success():
    now = [1000.0]
    guard = LoginGuard(clock=lambda: now[0])
    for expected in (1, 2, 3):
        assert guard.begin("10.0.0.1") == 0
        assert guard.end("10.0.0.1", succeeded=False) == expected
    assert guard.begin("10.0.0.1") == 1.0  # locked for 1 s after the third
    assert guard.begin("10.0.0.2") == 0  # per address
    guard.end("10.0.0.2", succeeded=True)
    now[0] += 1.0
    assert guard.begin("10.0.0.1") == 0
    assert guard.end("10.0.0.1", succeeded=False) == 4
    assert guard.begin("10.0.0.1") == 2.0  # then 2 s, and so on
    now[0] += 2.0
    assert guard.begin("10.0.0.1") == 0
    assert guard.end("10.0.0.1", succeeded=True) == 0
    assert guard.begin("10.0.0.1") == 0  # a success forgets


def test_login_guard_counts_attempts_under_way():
    guard = LoginGuard()
    assert [guard.begin("a") for _ in range(4)] == [0, 0, 0, 1.0]  # three may run at once


def test_login_guard_keeps_a_bounded_table():
    guard = LoginGuard(max_keys=3)
    for ip in ("a", "b", "c", "d"):
        for _ in range(3):
            guard.begin(ip)
            guard.end(ip, succeeded=False)
    assert guard.begin("a") == 0 and guard.begin("d") > 0  # the oldest went first


@pytest.mark.gen_test
async def test_wrong_password_is_refused_and_counted_right_one_resets(start_server):
    server = await start_server(admin_password="pw")
    api = Api(server.port)
    page = await api.call("GET", "/admin/login")
    xsrf = page.headers["Set-Cookie"].split("_xsrf=")[1].split(";")[0]
    headers = {"Cookie": f"_xsrf={xsrf}", "Content-Type": "application/x-www-form-urlencoded"}

    wrong = await api.call("POST", "/admin/login", raw=f"password=nope&_xsrf={xsrf}".encode(),
                           headers=headers)
    assert wrong.code == 401 and b"Wrong password." in wrong.body

    right = await api.http.fetch(api.base + "/admin/login", method="POST", headers=headers,
                                 body=f"password=pw&_xsrf={xsrf}", follow_redirects=False,
                                 raise_error=False)
    assert right.code == 302 and "tidings_admin=" in right.headers["Set-Cookie"]
    assert server.services.dashboard.logins.begin("127.0.0.1") == 0  # forgotten


@pytest.mark.gen_test
async def test_tenant_page_lists_each_notification_with_its_deliveries(server, api):
    admin = token(role="admin", user="root")
    await api.json("PUT", "/api/webhook", {"url": "http://127.0.0.1:9/hook"}, admin, expect=201)
    first = (await api.send(admin, user_id="alice", title="one"))["notification"]
    second = (await api.send(admin, broadcast=True, title="two"))["notification"]

    async def both_planned() -> bool:
        recent = await server.services.dashboard.recent("acme")
        return all(n["deliveries"] for n in recent)

    await eventually(both_planned)
    recent = {n["id"]: n for n in await server.services.dashboard.recent("acme")}
    assert set(recent) == {first["id"], second["id"]}
    for n in recent.values():
        assert [d["channel"] for d in n["deliveries"]] == ["webhook"]
        assert n["delivery"] == {"websocket": 0, "sse": 0}
    assert await server.services.dashboard.recent("nobody") == []


@pytest.mark.gen_test(timeout=30)
async def test_tenant_page_marks_what_was_replaced_recalled_or_expired(start_server):
    """An admin looking at recent notifications sees which ones left the inboxes and why,
    rather than a list that looks as if they were all still there (or a recall that seems to
    have done nothing)."""
    server = await start_server(admin_password="pw")
    api = Api(server.port)
    service = token(role="service", user="backend")
    send = api.send

    async def sent(**body):
        return (await send(service, **body))["notification"]

    live = await sent(user_id="alice", title="still here")
    recalled = await sent(user_id="alice", title="sent by mistake")
    await api.json("DELETE", f"/api/notifications/{recalled['id']}", tok=service, expect=204)
    building = await sent(user_id="alice", title="build running", key="build-7")
    passed = await sent(user_id="alice", title="build passed", key="build-7")
    expiring = await sent(user_id="alice", title="code 123456", ttl=1)

    async def recent() -> dict:
        return {n["id"]: n for n in await server.services.dashboard.recent("acme")}

    async def expired() -> bool:  # its ttl of a second has passed
        return (await recent())[expiring["id"]]["ended"] == "expired"

    await eventually(expired)
    found = await recent()
    assert found[live["id"]]["ended"] is None and found[passed["id"]]["ended"] is None
    assert found[recalled["id"]]["ended"] == "recalled"
    assert found[expiring["id"]]["ended"] == "expired"
    assert found[building["id"]]["ended"] == "replaced"
    assert found[building["id"]]["replaced_by"] == passed["id"]

    cookie = await _login(api, "pw")
    html = (await api.call("GET", "/admin/tenants/acme", headers={"Cookie": cookie})).body.decode()

    def row(n):
        return html.split(f'<tr data-id="{n["id"]}"')[1].split("</tr>")[0]

    assert "data-ended" not in row(live) and "<strong>still here</strong>" in row(live)
    assert 'data-ended="recalled"' in row(recalled) and "<s>sent by mistake</s>" in row(recalled)
    assert 'data-ended="expired"' in row(expiring) and ">expired</span>" in row(expiring)
    assert 'data-ended="replaced"' in row(building)
    assert f"replaced by #{passed['id']}" in row(building)
    assert "data-ended" not in row(passed) and f"replaces #{building['id']}" in row(passed)
    # The user's inbox agrees: only the live ones.
    inbox = await api.json("GET", "/api/notifications", tok=token(user="alice"))
    assert [n["id"] for n in inbox["notifications"]] == [passed["id"], live["id"]]


@pytest.mark.allow_error_logs
@pytest.mark.gen_test
async def test_a_page_that_fails_logs_its_uri_without_the_token(server, api, monkeypatch, caplog):
    def broken(self):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    monkeypatch.setattr(admin.DemoHandler, "get", broken)
    secret = token(user="alice")
    response = await api.call("GET", f"/demo?token={secret}&tenant_id=acme")
    assert response.code == 500
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "uncaught exception in GET /demo?token=[redacted]" in logged
    assert secret not in logged


@pytest.mark.gen_test(timeout=60)
async def test_with_2000_tenants_a_push_about_one_tenant_stays_small(start_server):
    server = await start_server(admin_password="pw")
    api = Api(server.port)
    await asyncio.gather(*(api.send(token(tenant=f"t{i:04}", user="svc", role="service"),
                                    user_id="u", title="hello") for i in range(2000)))
    cookie = await _login(api, "pw")
    conn = await websocket_connect(HTTPRequest(f"ws://127.0.0.1:{server.port}/admin/ws",
                                               headers={"Cookie": cookie}))
    first = json.loads(await conn.read_message())
    assert first["type"] == "overview" and len(first["tenants"]) == 2000
    await api.send(token(tenant="t0042", user="svc", role="service"), user_id="u", title="again")
    while True:  # pushes about the warm-up may come first; the one naming t0042 is the test
        raw = await asyncio.wait_for(conn.read_message(), 5)
        push = json.loads(raw)
        assert push["type"] == "changes"
        assert len(raw.encode()) < 8 * 1024, len(raw)
        if any(t["tenant_id"] == "t0042" for t in push["tenants"]):
            break
    [row] = [t for t in push["tenants"] if t["tenant_id"] == "t0042"]
    assert row["sent_last_minute"] == 2 and push["tenant_count"] == 2000
    conn.close()


async def _login(api: Api, password: str) -> str:
    page = await api.call("GET", "/admin/login")
    xsrf = page.headers["Set-Cookie"].split("_xsrf=")[1].split(";")[0]
    headers = {"Cookie": f"_xsrf={xsrf}", "Content-Type": "application/x-www-form-urlencoded"}
    right = await api.http.fetch(api.base + "/admin/login", method="POST", headers=headers,
                                 body=f"password={password}&_xsrf={xsrf}",
                                 follow_redirects=False, raise_error=False)
    return right.headers["Set-Cookie"].split(";")[0]


def test_dev_makes_and_keeps_an_admin_password(tmp_path):
    settings = Settings(db=str(tmp_path / "t.db"), dev=True)
    first = resolve_secrets(settings)
    assert first.admin_password and len(first.admin_password) >= 20
    kept = tmp_path / "dev-admin-password"
    assert kept.read_text().strip() == first.admin_password
    assert kept.stat().st_mode & 0o777 == 0o600
    assert resolve_secrets(settings).admin_password == first.admin_password  # kept
    assert resolve_secrets(Settings(db=str(tmp_path / "t.db"))).admin_password is None


@pytest.mark.gen_test
async def test_a_one_time_login_link_signs_in_once(start_server, caplog):
    server = await start_server(admin_password="pw")
    api = Api(server.port)
    link = server.services.dashboard.login_links.issue()
    first = await api.http.fetch(f"{api.base}/admin/login?once={link}", follow_redirects=False,
                                 raise_error=False)
    assert first.code == 302 and first.headers["Location"] == "/admin"
    cookie = first.headers["Set-Cookie"].split(";")[0]
    overview = await api.call("GET", "/admin", headers={"Cookie": cookie})
    assert overview.code == 200 and b"Sign in" not in overview.body
    again = await api.http.fetch(f"{api.base}/admin/login?once={link}", follow_redirects=False,
                                 raise_error=False)
    assert again.code == 400 and "tidings_admin=" not in again.headers.get("Set-Cookie", "")
    assert link not in caplog.text  # redacted from the access log
