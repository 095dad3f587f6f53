"""The dashboard, the demo page and tidings.js against the real server, in headless Chromium."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tidings.config import Secret, Settings

from ..clients import token
from .live_server import LiveServer

PASSWORD = "correct horse battery staple"
ACME_WS = '#tenant-rows tr[data-tenant="acme"] [data-field="websocket"]'


@pytest.fixture
def live(settings: Settings) -> Iterator[LiveServer]:
    server = LiveServer(settings.replace(admin_password=Secret(PASSWORD)))
    server.start()
    yield server
    server.shutdown()


def service() -> str:
    return token(user="backend", role="service")


def log_in(page, live: LiveServer) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{live.url}/admin")
    page.fill("#password", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(f"{live.url}/admin")


def open_demo(browser, live: LiveServer, transport: str = "auto"):  # type: ignore[no-untyped-def]
    page = browser.new_context(viewport={"width": 1100, "height": 760}).new_page()
    page.goto(f"{live.url}/demo?token={quote(token())}&tenant_id=acme&transport={transport}")
    page.wait_for_selector('#conn-status[data-state="live"]')
    return page


def test_login_required_refused_then_accepted(page, live) -> None:
    page.goto(f"{live.url}/admin")
    assert page.url.startswith(f"{live.url}/admin/login"), "redirected to the login page"

    page.fill("#password", "wrong")
    page.click("form button[type=submit]")
    assert page.inner_text("#login-error") == "Wrong password."

    page.fill("#password", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(f"{live.url}/admin")
    assert page.inner_text("h1") == "Overview"

    page.click("text=Log out")
    page.wait_for_url(f"{live.url}/admin/login")
    page.goto(f"{live.url}/admin")
    assert page.url.startswith(f"{live.url}/admin/login")


def test_overview_counts_a_client_in_and_out_without_reload(page, browser, live, screenshot) -> None:
    log_in(page, live)
    page.wait_for_selector('#live-status[data-state="live"]')
    page.evaluate("window.notReloaded = true")

    demo = open_demo(browser, live)
    started = time.monotonic()
    page.wait_for_function(f"() => document.querySelector('{ACME_WS}')?.textContent === '1'",
                           timeout=1500)  # a function: the page's CSP forbids eval
    connect_seen = time.monotonic() - started
    assert page.inner_text('#tenant-rows tr[data-tenant="acme"] [data-field="users_online"]') == "1"
    live.send(service(), broadcast=True, title="Deploy started")
    page.wait_for_function(
        """() => document.querySelector('#tenant-rows tr[data-tenant="acme"] [data-field="sent_last_minute"]')
           .textContent === '1'""")
    screenshot(page, "server-overview")

    demo.context.close()
    started = time.monotonic()
    page.wait_for_function(f"() => document.querySelector('{ACME_WS}').textContent === '0'",
                           timeout=1500)
    disconnect_seen = time.monotonic() - started
    assert page.evaluate("window.notReloaded") is True
    print(f"overview updated {connect_seen:.2f}s after connect, {disconnect_seen:.2f}s after disconnect")


def test_tenant_page_sends_a_test_notification(page, browser, live, screenshot) -> None:
    demo = open_demo(browser, live)
    log_in(page, live)
    page.goto(f"{live.url}/admin/tenants/acme")
    assert page.locator('#users tr[data-user="alice"]').count() == 1

    page.check('input[name="target"][value="user"]')
    page.fill("#user_id", "alice")
    page.fill("#title", "Hello from the dashboard")
    page.fill("#message", "Sent with the tenant page's form.")
    page.click("#send-form button[type=submit]")
    page.wait_for_selector("#send-result")
    assert "to 1 connection" in page.inner_text("#send-result")
    assert page.locator("#notifications tbody tr").count() == 1

    demo.wait_for_selector("#inbox li >> text=Hello from the dashboard")
    # The demo acknowledged what it showed; the page's receipts follow without a reload.
    row = "#notifications tbody tr:first-child [data-receipts]"
    page.wait_for_selector(f'{row} [data-field="acknowledged"] >> text="1"', timeout=10000)
    assert page.inner_text(f'{row} [data-field="pushed"]') == "1"
    assert page.inner_text(f'{row} [data-field="read"]') == "0"
    demo.click('#inbox li [data-action="read"]')
    page.wait_for_selector(f'{row} [data-field="read"] >> text="1"', timeout=10000)
    screenshot(page, "server-tenant")
    screenshot(demo, "server-demo", full_page=False)
    demo.context.close()


def test_demo_shows_a_posted_notification_and_badge_falls(page, live) -> None:
    page.goto(f"{live.url}/demo?token={quote(token())}&tenant_id=acme")
    page.wait_for_selector('#conn-status[data-state="live"]')
    assert page.inner_text("#unread-count") == "0"

    n = live.send(service(), user_id="alice", title="Build finished", message="main is green")
    page.wait_for_selector(f'#inbox li[data-id="{n["id"]}"]')
    assert page.inner_text("#unread-count") == "1"
    assert "Build finished" in page.inner_text("#toasts")

    page.click(f'#inbox li[data-id="{n["id"]}"] [data-action="read"]')
    page.wait_for_selector('#unread-count[data-count="0"]')
    page.wait_for_function("() => window.tidingsDemo.serverStats?.unread === 0")  # its stats_update
    # And a fresh REST call agrees.
    stats = page.evaluate("window.tidingsDemo.client.request('GET', '/api/notifications/stats')")
    assert stats["unread"] == 0


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_demo_connects_with_a_ticket_and_no_url_carries_the_token(page, live, transport) -> None:
    user = token()
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.on("websocket", lambda ws: urls.append(ws.url))
    earlier = live.send(service(), user_id="alice", title="Sent before the page opened")
    page.goto(f"{live.url}/demo?token={quote(user)}&tenant_id=acme&transport={transport}")
    page.wait_for_selector('#conn-status[data-state="live"]')
    page.wait_for_selector(f'#inbox li[data-id="{earlier["id"]}"]')  # from the snapshot
    assert page.inner_text("#unread-count") == "1"
    n = live.send(service(), user_id="alice", title="By ticket")
    page.wait_for_selector(f'#inbox li[data-id="{n["id"]}"]')

    assert "token" not in page.url  # moved out of the address bar
    streams = [u for u in urls if "/ws/notifications" in u or "/notifications/stream" in u]
    assert streams and all("ticket=" in u for u in streams)
    assert not any(user in u or "token=" in u for u in urls[1:])  # only the first load had it
    assert not [u for u in urls if "/api/notifications?" in u]  # no REST call for the inbox


def test_falls_back_to_sse_when_websockets_are_blocked(page, live) -> None:
    live.block_websockets()
    page.goto(f"{live.url}/demo?token={quote(token())}&tenant_id=acme")
    page.wait_for_selector('#conn-status[data-state="live"][data-transport="sse"]')
    n = live.send(service(), user_id="alice", title="Over SSE")
    page.wait_for_selector(f'#inbox li[data-id="{n["id"]}"]')


@pytest.mark.parametrize("transport", ["websocket", "sse"])
def test_restart_reconnects_and_shows_what_was_sent_meanwhile_once(page, live, transport) -> None:
    page.goto(f"{live.url}/demo?token={quote(token())}&tenant_id=acme&transport={transport}")
    page.wait_for_selector(f'#conn-status[data-state="live"][data-transport="{transport}"]')
    first = live.send(service(), user_id="alice", title="Before the restart")
    page.wait_for_selector(f'#inbox li[data-id="{first["id"]}"]')

    live.stop()
    page.wait_for_selector('#conn-status[data-state="offline"]')
    missed = live.create_offline("acme", user_id="alice", title="Sent while it was down")
    live.start()

    page.wait_for_selector(f'#inbox li[data-id="{missed["id"]}"]', timeout=20_000)
    page.wait_for_selector(f'#conn-status[data-state="live"][data-transport="{transport}"]')
    last = live.send(service(), user_id="alice", title="After the restart")
    page.wait_for_selector(f'#inbox li[data-id="{last["id"]}"]')

    ids = page.eval_on_selector_all("#inbox li", "items => items.map(li => Number(li.dataset.id))")
    assert ids == [last["id"], missed["id"], first["id"]], "each exactly once, newest first"
    assert page.inner_text("#unread-count") == "3"
